"""Secrets: a pipeline whose passwords are distinctive strings runs through check, setup, capture and apply (in
Dagster), and through failures (wrong password, unreachable host, missing privilege). The passwords appear in no
log line, no run metadata or event, no error text (with its causes), no change-log file (Parquet key-value metadata
included) and no sink table. Redaction does not hide the server's own words: MySQL's ``(using password: YES)``.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pymysql
import pytest
import yaml

from dbmazz_connectors.cli import main as cli_main
from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core.errors import DbmazzError
from dbmazz_connectors.core.registry import create_source
from infra._common import free_port
from infra.shop import SHOP_TABLES, create_replication_role, create_shop, seed_customers, seed_orders
from tests.fixtures.clickhouse import SINK_PASSWORD, SINK_USER
from tests.pipelines._harness import ShopPipeline, churn

SECRET = "Zq7-secret-pw-x9"
WRONG = SECRET + "-wrong"  # a mistyped password is a secret too (it is usually one letter off the real one)


class Evidence:
    """Every text a user or an operator could read, by where it came from."""

    def __init__(self, *secrets: str) -> None:
        self.secrets = secrets
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, text: object) -> None:
        self.items.append((where, text if isinstance(text, str) else repr(text)))

    def exception(self, where: str, exc: BaseException) -> None:
        """The message, the hint, and the whole chain of causes as a traceback prints it."""
        self.add(where, "".join(traceback.format_exception(exc)))
        for attr in ("message", "hint"):
            if getattr(exc, attr, None):
                self.add(f"{where}.{attr}", getattr(exc, attr))

    def files(self, where: str, root: Path) -> None:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            self.add(f"{where}:{path.relative_to(root)}", path.read_bytes().decode("latin-1"))
            if path.suffix == ".parquet":
                meta = pq.read_metadata(path)
                self.add(f"{where}:{path.name} key-value metadata", meta.metadata)
                self.add(f"{where}:{path.name} schema metadata", pq.read_schema(path).metadata)
                self.add(f"{where}:{path.name} rows", pq.read_table(path).to_pylist())

    def dagster(self, instance: dg.DagsterInstance) -> int:
        runs = instance.get_runs()
        for run in runs:
            self.add(f"run {run.run_id}", dg.serialize_value(run))
            for entry in instance.all_logs(run.run_id):
                self.add(f"run {run.run_id} event", dg.serialize_value(entry))
        return len(runs)

    def duckdb(self, path: Path) -> None:
        with duckdb.connect(str(path), read_only=True) as conn:
            tables = conn.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
            for schema, table in tables:
                self.add(
                    f"duckdb {schema}.{table}", conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
                )

    def assert_clean(self) -> None:
        assert self.items
        leaks = [
            (where, text[max(0, text.find(s) - 200) : text.find(s) + 50])
            for where, text in self.items
            for s in self.secrets
            if s in text
        ]
        assert not leaks, f"a password leaked into {len(leaks)} place(s): {leaks[:5]}"

    def text(self) -> str:
        return "\n".join(text for _, text in self.items)


def _instance(tmp_path: Path):
    """A Dagster instance whose storage (runs, events, compute logs) is files under tmp_path/dagster, to search."""
    (tmp_path / "dagster").mkdir(exist_ok=True)
    return dg.instance_for_test(temp_dir=str(tmp_path / "dagster"))


def _config_file(path: Path, pipeline: PipelineConfig) -> str:
    body = {
        "source": pipeline.source,
        "tables": pipeline.tables,
        "sinks": pipeline.sinks,
        "changelog": pipeline.changelog,
    }
    path.write_text(yaml.safe_dump({"pipelines": {pipeline.name: body}}))
    return str(path)


def _check_cli(evidence: Evidence, where: str, path: Path, pipeline: PipelineConfig, capfd) -> str:
    code = cli_main(["check", _config_file(path, pipeline)])
    out, err = capfd.readouterr()
    evidence.add(f"{where} (dbmazz check, exit {code})", out + err)
    return out + err


def _try_source(evidence: Evidence, where: str, pipeline: PipelineConfig) -> Exception | None:
    """Connect, preflight and read with this config: what fails goes to the evidence."""
    try:
        source = create_source(pipeline.source_config())
        source.connect()
        try:
            evidence.add(f"{where} preflight", [str(p) for p in source.preflight()])
            start = source.current_position()
            evidence.add(f"{where} changes", list(source.read_changes(start, source.current_position())))
        finally:
            source.disconnect()
    except Exception as exc:  # noqa: BLE001 - any failure's text is evidence
        evidence.exception(where, exc)
        return exc
    return None


def test_postgres_to_duckdb_never_shows_the_password(pg_db, tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    evidence = Evidence(SECRET, WRONG)
    create_shop(pg_db.url)
    role = f"cap_{pg_db.name}"
    create_replication_role(pg_db.url, role, SECRET, f"dbmazz_{pg_db.name}", SHOP_TABLES)
    monkeypatch.setenv("SECRET_PG_PW", SECRET)
    duckdb_path = tmp_path / "shop.duckdb"
    # the password through ${VAR} inside the url: the resolved url is the likeliest thing to end up in a message
    source = {
        "url": f"postgresql://{role}:${{SECRET_PG_PW}}@127.0.0.1:{pg_db.server.port}/{pg_db.name}",
        "slot": f"dbmazz_{pg_db.name}",
        "publication": f"dbmazz_{pg_db.name}",
    }
    pipeline = PipelineConfig(
        name="shop",
        source=source,
        tables=SHOP_TABLES,
        sinks={"duckdb": {"url": f"duckdb:///{duckdb_path}", "lock_wait_seconds": 2}},
        changelog=str(tmp_path / "changelog"),
    )
    out = _check_cli(evidence, "check", tmp_path / "ok.yaml", pipeline, capfd)
    assert "shop: ok" in out, out

    shop = ShopPipeline(pipeline, pg_db.url, duckdb_path)
    defs = shop.definitions()
    with _instance(tmp_path) as instance:
        seed_customers(pg_db.url)
        launched = shop.drive(defs, instance)  # set up, initial load
        seed_orders(pg_db.url, 50)
        launched += shop.drive(defs, instance)  # capture, apply
        assert launched and all(run.success for run in launched), launched
        assert shop.sink_rows("public.orders") == shop.source_rows("public.orders")

        # a batch whose run meets a wrong password (the env changed between the sensor's request and the run)
        churn(pg_db.url, 2)
        request = shop.tick(defs, instance).run_requests[0]
        monkeypatch.setenv("SECRET_PG_PW", WRONG)
        failed = shop.run_batch(defs, instance, request.partition_key, raise_on_error=False)
        assert not failed.success
        try:
            shop.tick(defs, instance)  # the sensor with the wrong password
        except Exception as exc:  # noqa: BLE001 - whatever it raises is evidence
            evidence.exception("sensor tick, wrong password", exc)
        assert evidence.dagster(instance) >= 3
        evidence.files("dagster home", tmp_path / "dagster")
        events = "\n".join(text for where, text in evidence.items if where.startswith("run "))
        assert "password authentication failed" in events, "the failed run's error is part of the evidence"

    failures = {
        "wrong password": pipeline,
        "unreachable host": pipeline.model_copy(
            update={
                "source": {
                    **source,
                    "url": source["url"].replace(f":{pg_db.server.port}/", f":{free_port()}/"),
                }
            }
        ),
        "malformed url": pipeline.model_copy(
            update={
                "source": {
                    **source,
                    "url": source["url"].replace(f":{pg_db.server.port}/", f":{pg_db.server.port}x/"),
                }
            }
        ),
    }
    for where, config in failures.items():
        assert isinstance(_try_source(evidence, where, config), DbmazzError), where
        _check_cli(evidence, f"check, {where}", tmp_path / "bad.yaml", config, capfd)
    assert "password authentication failed" in evidence.text()

    monkeypatch.setenv("SECRET_PG_PW", SECRET)
    with pg_db.connect() as conn:  # missing privilege: no SELECT on one table, no REPLICATION
        conn.execute(f'REVOKE SELECT ON public.orders FROM "{role}"')
        conn.execute(f'ALTER ROLE "{role}" NOREPLICATION')
    out = _check_cli(evidence, "check, missing privilege", tmp_path / "priv.yaml", pipeline, capfd)
    assert "problem" in out, out
    _try_source(evidence, "missing privilege", pipeline)

    evidence.files("change log", tmp_path / "changelog")
    evidence.duckdb(duckdb_path)
    out, err = capfd.readouterr()
    evidence.add("stdout/stderr", out + err)
    evidence.add("log records", caplog.text)
    evidence.add("log records (messages with args)", [r.getMessage() for r in caplog.records])
    evidence.assert_clean()


@pytest.fixture
def full_row_metadata(mysql_db):
    admin = pymysql.connect(**mysql_db.server.connect_kwargs())
    with admin.cursor() as cur:
        cur.execute(
            "SET GLOBAL binlog_row_metadata = 'FULL'"
        )  # the documented requirement (the suite's setting)
    yield admin
    admin.close()


def test_mariadb_to_clickhouse_never_shows_the_password(
    mysql_db, ch_db, full_row_metadata, tmp_path, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    admin = full_row_metadata
    ch_password = SINK_PASSWORD  # the sink's least-privilege user (tests/fixtures/clickhouse.py)
    evidence = Evidence(SECRET, WRONG, ch_password)
    user = f"sec_{mysql_db.name[-8:]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE TABLE `{mysql_db.name}`.orders (id INT PRIMARY KEY, note VARCHAR(64))")
        cur.execute(f"INSERT INTO `{mysql_db.name}`.orders VALUES (1, 'first'), (2, 'second')")
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'")
        cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'")
        cur.execute(f"GRANT SELECT ON `{mysql_db.name}`.* TO '{user}'@'%'")
    monkeypatch.setenv("SECRET_MY_PW", SECRET)
    monkeypatch.setenv("SECRET_CH_PW", ch_password)
    source = {"url": mysql_db.server.url("", user=user), "password_env": "SECRET_MY_PW"}
    sink = {"url": ch_db.server.url(ch_db.name, user=SINK_USER, password=""), "password_env": "SECRET_CH_PW"}
    pipeline = PipelineConfig(
        name="shop_my",
        source=source,
        tables=[f"{mysql_db.name}.orders"],
        sinks={"clickhouse": sink},
        changelog=str(tmp_path / "changelog"),
    )
    try:
        out = _check_cli(evidence, "check", tmp_path / "ok.yaml", pipeline, capfd)
        assert "shop_my: ok" in out, out
        shop = ShopPipeline(pipeline, "", tmp_path / "unused.duckdb")
        defs = shop.definitions()
        with _instance(tmp_path) as instance:
            launched = shop.drive(defs, instance)  # set up, initial load
            with admin.cursor() as cur:
                cur.execute(f"INSERT INTO `{mysql_db.name}`.orders VALUES (3, 'third')")
                cur.execute(f"UPDATE `{mysql_db.name}`.orders SET note = 'changed' WHERE id = 1")
            launched += shop.drive(defs, instance)
            assert launched and all(run.success for run in launched), launched
            client = ch_db.client()
            assert sorted(client.query("SELECT id, note FROM orders FINAL").result_rows) == [
                (1, "changed"),
                (2, "second"),
                (3, "third"),
            ]
            with admin.cursor() as cur:
                cur.execute(f"INSERT INTO `{mysql_db.name}`.orders VALUES (4, 'fourth')")
            request = shop.tick(defs, instance).run_requests[0]
            monkeypatch.setenv("SECRET_MY_PW", WRONG)
            assert not shop.run_batch(defs, instance, request.partition_key, raise_on_error=False).success
            monkeypatch.setenv("SECRET_MY_PW", SECRET)
            monkeypatch.setenv("SECRET_CH_PW", WRONG)  # the sink's password wrong: the apply fails
            failed = shop.run_batch(defs, instance, request.partition_key, raise_on_error=False)
            assert not failed.success
            monkeypatch.setenv("SECRET_CH_PW", ch_password)
            assert shop.run_batch(defs, instance, request.partition_key).success  # the re-run converges
            assert evidence.dagster(instance) >= 3
            evidence.files("dagster home", tmp_path / "dagster")
            events = "\n".join(text for where, text in evidence.items if where.startswith("run "))
            assert "Access denied for user" in events, "the runs' failures are part of the evidence"
            assert f"refused user {SINK_USER} (wrong password or unknown user)" in events, (
                "the apply failure is evidence"
            )
        for table in client.query("SHOW TABLES").result_rows:
            evidence.add(f"clickhouse {table[0]}", client.query(f"SELECT * FROM `{table[0]}`").result_rows)

        monkeypatch.setenv("SECRET_MY_PW", WRONG)
        wrong = _try_source(evidence, "wrong password", pipeline)
        assert wrong is not None and "(using password: YES)" in str(wrong), "the server's own words are kept"
        _check_cli(evidence, "check, wrong password", tmp_path / "bad.yaml", pipeline, capfd)
        monkeypatch.setenv("SECRET_MY_PW", SECRET)
        unreachable = pipeline.model_copy(
            update={
                "source": {
                    **source,
                    "url": mysql_db.server.url("", user=user).replace(
                        f":{mysql_db.server.port}/", f":{free_port()}/"
                    ),
                }
            }
        )
        assert _try_source(evidence, "unreachable host", unreachable) is not None
        _check_cli(evidence, "check, unreachable host", tmp_path / "bad.yaml", unreachable, capfd)
        malformed = pipeline.model_copy(
            update={
                "source": {
                    **source,
                    "url": mysql_db.server.url("", user=user).replace(f":{mysql_db.server.port}/", ":33o6/"),
                }
            }
        )
        assert "url is not valid: Port could not be cast" in str(
            _try_source(evidence, "malformed url", malformed)
        )
        with admin.cursor() as cur:
            cur.execute(f"REVOKE REPLICATION SLAVE ON *.* FROM '{user}'@'%'")
        out = _check_cli(evidence, "check, missing privilege", tmp_path / "priv.yaml", pipeline, capfd)
        assert "problem" in out, out
        _try_source(evidence, "missing privilege", pipeline)
        assert "(using password: YES)" in evidence.text()
        assert "(using password: ***" not in evidence.text()

        evidence.files("change log", tmp_path / "changelog")
        out, err = capfd.readouterr()
        evidence.add("stdout/stderr", out + err)
        evidence.add("log records", caplog.text)
        evidence.add("log records (messages with args)", [r.getMessage() for r in caplog.records])
        evidence.assert_clean()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_the_search_finds_a_password_wherever_it_is_planted(tmp_path):
    """The evidence search itself: a password planted in a compressed Parquet column, in Parquet key-value
    metadata, in a Dagster event's metadata and in an exception's cause is found (so a clean result means clean)."""
    import pyarrow as pa

    for where in ("column", "key-value", "dagster", "cause"):
        evidence = Evidence(SECRET)
        root = tmp_path / where
        root.mkdir()
        table = pa.table(
            {
                "id": list(range(1000)),
                "v": [SECRET if where == "column" and i == 500 else f"v{i}" for i in range(1000)],
            }
        )
        if where == "key-value":
            table = table.replace_schema_metadata({"dbmazz": f"{{'url': 'postgresql://u:{SECRET}@h/db'}}"})
        pq.write_table(table, root / "part.parquet", compression="zstd")
        evidence.files("change log", root)
        if where == "dagster":

            @dg.asset
            def leaky():
                return dg.MaterializeResult(metadata={"source": f"postgresql://u:{SECRET}@h/db"})

            with _instance(root) as instance:
                assert dg.materialize([leaky], instance=instance).success
                evidence.dagster(instance)
        if where == "cause":
            try:
                try:
                    raise OSError(f"connect to postgresql://u:{SECRET}@h/db failed")
                except OSError as inner:
                    raise DbmazzError("cannot connect") from inner
            except DbmazzError as exc:
                evidence.exception("error", exc)
        with pytest.raises(AssertionError, match="a password leaked"):
            evidence.assert_clean()
