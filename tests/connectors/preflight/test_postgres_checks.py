"""Every PostgreSQL source check of `dbmazz check`: made to fail on a real server, fixed by running what it prints
exactly as printed (or, for a configuration fix, by changing what it says), then `dbmazz check` says ok AND setup,
the initial load, a first capture and a first apply into a sink work as the same least-privilege role, the sink
equal to the source row by row.

The server-wide checks that need a restart (``wal_level``, free replication slots, a free WAL sender) are in the
last test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch, set_up_source
from dbmazz_connectors.snapshots import plan_snapshot, run_snapshot
from dbmazz_connectors.sources.postgres import PostgresSource
from infra.postgres import PostgresServer
from tests.connectors.sources.postgres._pg import capture
from tests.connectors.values._canon import differences, duckdb_rows, pg_rows

from ..schema_evolution._compare import T
from ._check import dbmazz_check

COLUMNS = {"id": T("int32"), "v": T("string")}
PLAIN = (
    "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY, v text);"
    "INSERT INTO t SELECT g, 't' || g FROM generate_series(1, 20) g;"
    "INSERT INTO u SELECT g, 'u' || g FROM generate_series(1, 20) g"
)
PARTITIONED = (
    "CREATE TABLE parts (id int, at date, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
    "CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
    "CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
    "INSERT INTO parts SELECT g, date '2024-01-01' + g * 10, 'p' || g FROM generate_series(1, 60) g"
)


@dataclass
class Case:
    check: str  # Problem.check
    message: str  # in Problem.message
    breaks: str = ""  # SQL run by the superuser after the tables are ready (``{role}``: the role, quoted)
    tables: list[str] = field(default_factory=lambda: ["public.t", "public.u"])
    ddl: str = PLAIN
    options: dict = field(default_factory=dict)  # the source's options (slot, columns, ...)
    config_fix: Callable[[str, dict, list[str]], tuple[dict, list[str]]] | None = (
        None  # (fix, options, tables)
    )
    grant: bool = True  # SELECT and the publication, as docs/operations.md says


def _columns_from(fix: str, options: dict, tables: list[str]) -> tuple[dict, list[str]]:
    """The `columns:` mapping the fix prints, as it prints it."""
    return {**options, "columns": json.loads(re.search(r"columns: (\{.*?\}\}) ", fix).group(1))}, tables


CASES = {
    "replication attribute": Case(
        "privilege", "to have the REPLICATION attribute", "ALTER ROLE {role} NOREPLICATION"
    ),
    "schema usage": Case(
        "privilege", "expected USAGE on schema public", "REVOKE ALL ON SCHEMA public FROM PUBLIC"
    ),
    "table select": Case("privilege", "expected SELECT on public.u", "REVOKE SELECT ON u FROM {role}"),
    "replica identity nothing": Case(
        "replica_identity", "found NOTHING", "ALTER TABLE u REPLICA IDENTITY NOTHING"
    ),
    "replica identity full (configured)": Case(
        "replica_identity",
        "expected REPLICA IDENTITY FULL on public.t",
        options={"replica_identity_full": ["public.t"]},
    ),
    "partition replica identity": Case(
        "replica_identity",
        "on every partition of public.parts, found NOTHING on public.parts_b",
        "ALTER PUBLICATION dbmazz_p1 SET (publish_via_partition_root = true); "
        "ALTER TABLE parts_b REPLICA IDENTITY NOTHING",
        tables=["public.parts"],
        ddl=PARTITIONED,
    ),
    "partition replica identity full (configured)": Case(
        "replica_identity",
        "expected REPLICA IDENTITY FULL on every partition of public.parts (configured)",
        "ALTER PUBLICATION dbmazz_p1 SET (publish_via_partition_root = true); ALTER TABLE parts REPLICA IDENTITY FULL",
        tables=["public.parts"],
        ddl=PARTITIONED,
        options={"replica_identity_full": True},
    ),
    "publication via the partition root": Case(
        "publication", "as their root (publish_via_partition_root)", tables=["public.parts"], ddl=PARTITIONED
    ),
    "publication operations": Case(
        "publication",
        "to publish insert, update, delete and truncate",
        "ALTER PUBLICATION dbmazz_p1 SET (publish = 'insert, update')",
    ),
    "publication lacks a table": Case(
        "publication", "to contain public.u", "ALTER PUBLICATION dbmazz_p1 DROP TABLE u"
    ),
    "no publication, role cannot create it": Case(
        "publication", "expected publication dbmazz_p1 to exist", "DROP PUBLICATION dbmazz_p1"
    ),
    "unmappable column type": Case(
        "type",
        "cannot map column public.u.p of type point",
        ddl=PLAIN + "; ALTER TABLE u ADD COLUMN p point",
        config_fix=_columns_from,
    ),
    "columns named but absent": Case(
        "columns",
        "expected columns nope in public.u",
        options={"columns": {"public.u": {"exclude": ["nope"]}}},
        config_fix=lambda fix, o, t: ({**o, "columns": {}}, t),
    ),
    "missing table": Case(
        "table",
        "expected table public.ghost to exist",
        tables=["public.t", "public.ghost"],
        config_fix=lambda fix, o, t: (o, [x for x in t if x != "public.ghost"]),
    ),
    "slot of another plugin": Case(
        "slot",
        "to be a logical pgoutput slot, found logical test_decoding",
        "SELECT pg_create_logical_replication_slot('dbmazz_p1', 'test_decoding')",
    ),
    "slot in another database": Case(
        "slot",
        "expected slot dbmazz_p1 in database",
        config_fix=lambda fix, o, t: ({**o, "slot": "dbmazz_p1_here"}, t),
    ),
}


def _statements(fix: str) -> str:
    """What a fix asks to run: after "as <who>: ", before a trailing "(or ...)" / "then restart"."""
    statement = fix.split(": ", 1)[1] if fix.startswith("as ") else fix
    return re.split(r" \(or |; then ", statement)[0]


def _replicate(pg_db, source: PostgresSource, changelog, tmp_path, tables: list[str]) -> None:
    """Setup, the initial load, a first capture and a first apply (DuckDB): the sink equals the source."""
    set_up_source(source)
    run_snapshot(source, changelog, plan_snapshot(source, changelog, "p1", tables, reason="initial load"))
    with pg_db.connect() as conn:
        for table in tables:
            name = table.split(".")[1]
            conn.execute(f"UPDATE {name} SET v = 'changed' WHERE id = 3")
            conn.execute(f"DELETE FROM {name} WHERE id = 4")
            conn.execute(
                f"INSERT INTO {name} (id, {'at, ' if name == 'parts' else ''}v) VALUES "
                f"(100, {'DATE 2025-06-01, ' if name == 'parts' else ''}'new')".replace(
                    "DATE 2025-06-01", "'2025-06-01'"
                )
            )
    capture(source, changelog)
    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p1"})
    sink.connect()
    try:
        for manifest in changelog.batches("p1"):
            apply_batch(changelog, sink, "p1", manifest.batch_id)
        with pg_db.connect() as conn:
            for table in tables:
                expected = pg_rows(conn, f'"public"."{table.split(".")[1]}"', COLUMNS)
                assert not differences(expected, duckdb_rows(sink, table, COLUMNS), table)
                assert expected[3]["v"] == "changed" and 4 not in expected and 100 in expected
    finally:
        sink.disconnect()


@pytest.mark.parametrize("name", list(CASES))
def test_a_failing_check_fixed_as_printed_then_the_pipeline_works(
    name, pg_db, capture_role, changelog, tmp_path, monkeypatch, capsys
):
    case = CASES[name]
    role = psycopg.sql.Identifier(capture_role.name)
    with pg_db.connect() as conn:
        conn.execute(case.ddl)
    if case.grant:
        capture_role.grant(case.tables if "public.ghost" not in case.tables else ["public.t"])
    other_db_slot = name == "slot in another database"
    if other_db_slot:
        with psycopg.connect(pg_db.server.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot('dbmazz_p1', 'pgoutput')")
    try:
        with pg_db.connect() as conn:
            if case.breaks:
                conn.execute(case.breaks.format(role=role.as_string(conn)))
        url = pg_db.url_as(capture_role.name, "x").replace(":x@", "@")
        code, out = dbmazz_check(
            tmp_path, monkeypatch, capsys, url, capture_role.password, case.tables, **case.options
        )
        assert code == 1 and f"[{case.check}] " in out and case.message in out, out
        source = capture_role.source(case.tables, **case.options)
        problems = source.preflight()
        source.disconnect()
        assert [p.check for p in problems] == [case.check], problems
        (problem,) = problems
        options, tables = case.options, case.tables
        if case.config_fix is None:
            with psycopg.connect(pg_db.url, autocommit=True) as superuser:
                superuser.execute(_statements(problem.fix))  # exactly as printed
        else:
            options, tables = case.config_fix(problem.fix, options, tables)
        code, out = dbmazz_check(tmp_path, monkeypatch, capsys, url, capture_role.password, tables, **options)
        assert (code, out.splitlines()[0]) == (0, "p1: ok"), out
        source = capture_role.source(tables, **options)
        try:
            _replicate(pg_db, source, changelog, tmp_path, tables)
        finally:
            source.disconnect()
    finally:
        if other_db_slot:
            with psycopg.connect(pg_db.server.url(), autocommit=True) as conn:
                conn.execute("SELECT pg_drop_replication_slot('dbmazz_p1')")


def test_server_settings_fixed_as_printed_then_the_pipeline_works(tmp_path, monkeypatch, capsys):
    """``wal_level``, free replication slots (one for the pipeline, one while a snapshot is read) and a free WAL
    sender (a snapshot reads through a replication connection): each printed ``ALTER SYSTEM`` run as printed,
    then the restart it asks for."""
    import secrets

    from tests.connectors.sources.postgres._pg import CaptureRole
    from tests.fixtures.servers import PgDatabase

    with PostgresServer(
        settings={"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "0"}
    ) as server:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
        db = PgDatabase(server, "shop")
        role = CaptureRole(db, "cap_server", secrets.token_hex(8))
        with db.connect() as conn:
            conn.execute(PLAIN)
            conn.execute(f"CREATE ROLE {role.name} LOGIN REPLICATION PASSWORD '{role.password}'")
        role.grant(["public.t", "public.u"])
        url = db.url_as(role.name, "x").replace(":x@", "@")
        seen = []
        for _ in range(3):  # each fix as printed, then the restart it asks for, until the check is ok
            code, out = dbmazz_check(
                tmp_path, monkeypatch, capsys, url, role.password, ["public.t", "public.u"]
            )
            if code == 0:
                break
            source = role.source(["public.t", "public.u"])
            problems = source.preflight()
            source.disconnect()
            seen += [p.check for p in problems]
            with psycopg.connect(server.url(), autocommit=True) as conn:
                for problem in problems:
                    assert "; then restart PostgreSQL" in problem.fix, problem
                    conn.execute(_statements(problem.fix))
            server.restart()
        assert out.strip() == "p1: ok" and sorted(seen) == ["slots", "wal_level", "wal_senders"], (seen, out)
        source = role.source(["public.t", "public.u"])
        try:
            _replicate(db, source, ChangeLog(str(tmp_path / "changelog")), tmp_path, ["public.t", "public.u"])
        finally:
            source.disconnect()
