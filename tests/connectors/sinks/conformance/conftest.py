"""One ``SinkUnderTest`` fixture per sink; ``conformance_sink`` runs the kit (test_conformance.py) over all of them.

Wiring a sink in: write a ``<name>_sink_under_test`` fixture below and add ``<name>`` to ``SINKS``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from dbmazz_connectors.core import ConfigError, TransientError
from infra._common import free_port

from .kit import BadConfig, Crash, KillPoint, SinkUnderTest, TypeMatrix, connected

SINKS = ["duckdb", "postgres", "clickhouse", "starrocks", "out_of_tree", "out_of_tree_toolkit"]
SECRET = "s3cr3t-Pa55-conformance"
HOOKS = "tests.connectors.sinks.conformance._kill"

# one transaction per batch: dead before COMMIT is batch 4 not applied at all, after it applied whole
SQL_KILL_POINTS = (
    KillPoint("ALTER TABLE", "before", False),
    KillPoint('INSERT INTO "public"."orders"', "before", False),
    KillPoint('INSERT INTO "_dbmazz"."applied_batches"', "before", False),
    KillPoint("COMMIT", "after", True),
)
KILL_POINTS = {
    # the file sink.duckdb is the catalog "sink": the sink names tables by catalog, schema and table
    "duckdb": (
        KillPoint("ALTER TABLE", "before", False),
        KillPoint('INSERT INTO "sink"."public"."orders"', "before", False),
        KillPoint('INSERT INTO "sink"."_dbmazz"."applied_batches"', "before", False),
        KillPoint("COMMIT", "after", True),
    ),
    "postgres": SQL_KILL_POINTS,
    "clickhouse": (
        KillPoint("ALTER TABLE", "before", False),  # the added column, before any row of the batch
        KillPoint("INSERT INTO orders", "after", False),  # the rows, before the applied record
        KillPoint("INSERT INTO _dbmazz_applied_batches", "after", True),
    ),
    "starrocks": (
        KillPoint("ALTER TABLE", "before", False),
        # the first Stream Load committed, the others not sent: re-applied, its label says it is done
        KillPoint("LOAD orders", None, False, {"loads_already_done": 1}),
        KillPoint("INSERT INTO _dbmazz_applied_batches", "after", True),
    ),
    "out_of_tree": (
        KillPoint("ALTER TABLE", "before", False),
        KillPoint('INSERT INTO "public.orders"', "before", False),
        KillPoint("INSERT INTO _dbmazz_applied", "before", False),
        KillPoint("COMMIT", "after", True),
    ),
}
KILL_POINTS["out_of_tree_toolkit"] = KILL_POINTS["out_of_tree"]  # the same SQLite layout, on the sink toolkit


def _values(expected: dict) -> dict:
    return {column: values for column, (_native, values) in expected.items()}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every kit test once per sink; a test taking ``kill_point`` once per kill point of each sink."""
    if "conformance_sink" not in metafunc.fixturenames:
        return
    if "kill_point" in metafunc.fixturenames:
        cases = [(name, point) for name in SINKS for point in KILL_POINTS[name]]
        metafunc.parametrize(
            ("conformance_sink", "kill_point"),
            cases,
            indirect=["conformance_sink"],
            ids=[f"{name}-{point.kill_at}" for name, point in cases],
        )
    else:
        metafunc.parametrize("conformance_sink", SINKS, indirect=True)


@pytest.fixture
def conformance_sink(request) -> SinkUnderTest:
    """The sink under test: ``<name>_sink_under_test`` for each name of ``SINKS``."""
    return request.getfixturevalue(f"{request.param}_sink_under_test")


def _unknown_option(config: dict) -> BadConfig:
    return BadConfig("unknown option", {**config, "no_such_option": 1}, ConfigError, "unknown option")


@pytest.fixture
def duckdb_sink_under_test(tmp_path) -> Iterator[SinkUnderTest]:
    from ..duckdb.test_types import EXPECTED

    def config(pipeline: str) -> dict:
        return {"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": pipeline}

    def read_rows(sink, schema):
        cols = ", ".join(sink.q(c) for c in schema.column_names)
        return sink.fetchall(f"SELECT {cols} FROM {sink.q(schema.schema)}.{sink.q(schema.name)} ORDER BY 1")

    def read_type(sink, column):
        return [
            r[0] for r in sink.fetchall(f'SELECT CAST("{column}" AS VARCHAR) FROM public.types ORDER BY id')
        ]

    # a file, no login: no wrong password, and nothing to be unreachable (its lock wait is in ../duckdb/test_lock.py)
    bad = (
        _unknown_option(config("p")),
        BadConfig(
            "missing folder",
            {"url": f"duckdb:///{tmp_path}/nope/s.duckdb"},
            ConfigError,
            f"expected the folder {tmp_path}/nope to exist",
        ),
    )
    make_sink, close = connected(config, lambda sink: sink.con.execute("SET TimeZone = 'UTC'"))
    yield SinkUnderTest(
        "duckdb",
        config,
        make_sink,
        read_rows,
        bad,
        Crash(f"{HOOKS}:sql_hooks"),
        TypeMatrix(_values(EXPECTED), read_type),
    )
    close()


@pytest.fixture
def postgres_sink_under_test(pg_db) -> Iterator[SinkUnderTest]:
    from ..postgres.test_types import EXPECTED

    def config(pipeline: str) -> dict:
        return {
            "url": pg_db.sink_url,
            "pipeline": pipeline,
        }  # the sink role: CREATE on the database and public

    def read_rows(sink, schema):
        cols = ", ".join(sink.q(c) for c in schema.column_names)
        return sink.fetchall(f"SELECT {cols} FROM {sink.q(schema.schema)}.{sink.q(schema.name)} ORDER BY 1")

    def read_type(sink, column):
        return [r[0] for r in sink.fetchall(f'SELECT "{column}"::text FROM public.types ORDER BY id')]

    role, port = urlsplit(pg_db.sink_url).username, free_port()
    bad = (
        _unknown_option(config("p")),
        BadConfig(
            "wrong password",
            {"url": pg_db.url_as(role, SECRET)},
            ConfigError,
            f"refused the login of {role}@127.0.0.1",
            SECRET,
        ),
        BadConfig(
            "unreachable",
            {"url": f"postgresql://{role}:{SECRET}@127.0.0.1:{port}/x", "connect_timeout": 3},
            TransientError,
            f"cannot reach 127.0.0.1:{port}",
            SECRET,
        ),
    )
    make_sink, close = connected(config)
    yield SinkUnderTest(
        "postgres",
        config,
        make_sink,
        read_rows,
        bad,
        Crash(f"{HOOKS}:sql_hooks"),
        TypeMatrix(_values(EXPECTED), read_type),
    )
    close()


@pytest.fixture
def clickhouse_sink_under_test(ch_db) -> Iterator[SinkUnderTest]:
    from ..clickhouse.test_types import EXPECTED

    def config(pipeline: str) -> dict:
        return {
            "url": ch_db.url,
            "pipeline": pipeline,
        }  # the least-privilege user of tests/fixtures/clickhouse.py

    def read_rows(sink, schema):
        """What a user queries: the ``<table>_current`` view (FINAL, live rows only)."""
        cols = ", ".join(sink.q(c) for c in schema.column_names)
        data = sink.client.query_arrow(f"SELECT {cols} FROM {sink.q(schema.name + '_current')} ORDER BY 1")
        return [tuple(row.values()) for row in data.to_pylist()]

    def read_type(sink, column):
        expr = f"hex({column})" if column == "c_binary" else f"toString({column})"
        return [r[0] for r in sink.query_rows(f"SELECT {expr} FROM types_current ORDER BY id")]

    user, port = urlsplit(ch_db.url).username, free_port()
    bad = (
        _unknown_option(config("p")),
        BadConfig(
            "wrong password",
            {"url": ch_db.url_as(user, SECRET)},
            ConfigError,
            f"refused user {user} (wrong password or unknown user)",
            SECRET,
        ),
        BadConfig(
            "unreachable",
            {"url": f"clickhouse://{user}:{SECRET}@127.0.0.1:{port}/default"},
            TransientError,
            f"cannot reach {user}@127.0.0.1:{port}/default over HTTP",
            SECRET,
        ),
    )
    make_sink, close = connected(config)
    yield SinkUnderTest(
        "clickhouse",
        config,
        make_sink,
        read_rows,
        bad,
        Crash(f"{HOOKS}:clickhouse_hooks"),
        TypeMatrix(_values(EXPECTED), read_type),
    )
    close()


@pytest.fixture
def starrocks_sink_under_test(sr_db) -> Iterator[SinkUnderTest]:
    from ..starrocks._read import current_rows
    from ..starrocks.test_types import EXPECTED

    def config(pipeline: str) -> dict:
        return {"url": sr_db.url, "pipeline": pipeline}

    def read_type(sink, column):
        return [r[0] for r in sink.query_rows(f"SELECT {column} FROM types_current ORDER BY id")]

    user, port = urlsplit(sr_db.url).username, free_port()
    bad = (
        _unknown_option(config("p")),
        BadConfig(
            "wrong password",
            {"url": sr_db.url_as(user, SECRET)},
            ConfigError,
            f"refused user {user} (wrong password or unknown user)",
            SECRET,
        ),
        BadConfig(
            "unreachable",
            {"url": f"starrocks://{user}:{SECRET}@127.0.0.1:{port}/db"},
            TransientError,
            f"cannot reach {user}@127.0.0.1:{port}/db over the MySQL protocol",
            SECRET,
        ),
    )
    make_sink, close = connected(config)
    yield SinkUnderTest(
        "starrocks",
        config,
        make_sink,
        lambda sink, schema: current_rows(sink, schema, schema.name),
        bad,
        Crash(f"{HOOKS}:starrocks_hooks"),
        TypeMatrix(_values(EXPECTED), read_type, "NaN and infinity are refused (../starrocks)"),
    )
    close()


@pytest.fixture(scope="session")
def sqlite_entry_point(tmp_path_factory) -> Iterator[str]:
    """Install the out-of-tree sink as a package would: a ``*.dist-info`` with ``entry_points.txt`` in a folder on
    ``sys.path``, which ``importlib.metadata`` (and so ``create_sink``) discovers. Nothing in core knows it."""
    site = tmp_path_factory.mktemp("site")
    info = site / "dbmazz_sqlite_example-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dbmazz-sqlite-example\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[dbmazz.sinks]\nsqlite = tests.connectors.sinks.conformance.oot_sink:SqliteSink\n"
        "sqlitekit = tests.connectors.sinks.conformance.oot_sink.toolkit_sink:SqliteToolkitSink\n"
    )
    sys.path.insert(0, str(site))
    yield str(site)
    sys.path.remove(str(site))


@pytest.fixture
def out_of_tree_sink_under_test(tmp_path, sqlite_entry_point) -> Iterator[SinkUnderTest]:
    """The SQLite example implementing the raw Sink protocol (oot_sink/sink.py)."""
    yield from _sqlite_under_test("out_of_tree", "sqlite", tmp_path, sqlite_entry_point)


@pytest.fixture
def out_of_tree_toolkit_sink_under_test(tmp_path, sqlite_entry_point) -> Iterator[SinkUnderTest]:
    """The SQLite example written on the sink toolkit's SinkBase (oot_sink/toolkit_sink.py), out of tree too."""
    yield from _sqlite_under_test("out_of_tree_toolkit", "sqlitekit", tmp_path, sqlite_entry_point)


def _sqlite_under_test(name: str, kind: str, tmp_path, sqlite_entry_point) -> Iterator[SinkUnderTest]:
    from .._types import TYPE_CASES

    def config(pipeline: str) -> dict:
        return {"type": kind, "url": f"sqlite:///{tmp_path}/sink.db", "pipeline": pipeline}

    def read_type(sink, column):
        return [r[0] for r in sink.read("public.types", [column])]

    # Python's date/datetime end at 0001..9999: the infinity sentinels of c_date, c_ts, c_tstz are out of reach
    held = [c for c in TYPE_CASES if c not in ("c_date", "c_ts", "c_tstz")]
    types = TypeMatrix(
        {c: TYPE_CASES[c][1].to_pylist() for c in held},
        read_type,
        "c_date, c_ts, c_tstz: infinity has no Python value",
    )
    bad = (
        _unknown_option(config("p")),
        BadConfig(
            "missing folder",
            {"type": kind, "url": f"sqlite:///{tmp_path}/nope/s.db"},
            ConfigError,
            f"expected the folder {tmp_path}/nope to exist",
        ),
    )
    path = os.pathsep.join(p for p in (sqlite_entry_point, os.environ.get("PYTHONPATH")) if p)
    make_sink, close = connected(config)
    yield SinkUnderTest(
        name,
        config,
        make_sink,
        lambda sink, schema: sink.read(schema.qualified_name, schema.column_names),
        bad,
        Crash(f"{HOOKS}:sql_hooks", {"PYTHONPATH": path}),
        types,
    )
    close()
