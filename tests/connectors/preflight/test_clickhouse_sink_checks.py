"""The ClickHouse sink's rights in `dbmazz check`: a user with fewer rights than an apply uses is refused with the
GRANT statements that fix it; with exactly those statements granted the check is ok and a real pipeline's batches,
a table rebuild and a tombstone prune (scratch tables dropped) all work as that user.

The bundled server keeps its users in users.xml only (no CREATE USER or GRANT over SQL), so the printed
statements are granted the way that file takes them: each ``GRANT ...`` without its ``TO <user>``, at start."""

from __future__ import annotations

import re
import secrets

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch, set_up_source, tombstone_horizon
from dbmazz_connectors.snapshots import plan_snapshot, run_snapshot
from infra.clickhouse import ClickHouseServer
from tests.connectors.sources.postgres._pg import capture
from tests.connectors.values._canon import clickhouse_rows, differences, pg_rows

from ..schema_evolution._compare import T
from ._check import dbmazz_check

COLUMNS = {"id": T("int32"), "v": T("string")}
USER = "ch_writer"
# what the sink README asked for before its check did each statement on scratch tables
TOO_FEW = ["GRANT CREATE TABLE, CREATE VIEW, DROP VIEW, ALTER, INSERT, SELECT, ALTER DELETE ON shop.*"]


def _create_shop(server: ClickHouseServer) -> None:
    admin = server.client()
    admin.command("CREATE DATABASE shop")
    admin.close()


def _check(server, tmp_path, monkeypatch, capsys, source_url, capture_role, password) -> tuple[int, str]:
    monkeypatch.setenv("DBMAZZ_TEST_CH_PASSWORD", password)
    sink = {"url": server.url("shop", user=USER, password=""), "password_env": "DBMAZZ_TEST_CH_PASSWORD"}
    return dbmazz_check(
        tmp_path, monkeypatch, capsys, source_url, capture_role.password, ["public.t"], sinks={"ch": sink}
    )


def test_missing_rights_are_found_fixed_as_printed_then_apply_rebuild_and_prune_work(
    pg_db, capture_role, changelog, tmp_path, monkeypatch, capsys
):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, 't' || g FROM generate_series(1, 30) g")
    capture_role.grant(["public.t"])
    source_url = pg_db.url_as(capture_role.name, "x").replace(":x@", "@")
    password = secrets.token_hex(10)

    with ClickHouseServer(users={USER: (password, TOO_FEW)}) as server:
        _create_shop(server)
        code, out = _check(server, tmp_path, monkeypatch, capsys, source_url, capture_role, password)
        # its own bookkeeping tables come first: the missing right is found there, with the statements that fix it
        assert (
            code != 0 and f"sink ch: [connect] clickhouse sink: user {USER} may not run CREATE TABLE" in out
        ), out
        assert "TABLE ENGINE ON Replacing" in out, out
        leftovers = server.client("shop").query("SELECT name FROM system.tables WHERE database = 'shop'")
        assert leftovers.result_rows == [], leftovers.result_rows  # the check cleaned up after itself
    (fix,) = re.findall(r"^ +fix: (.*)$", out, re.M)
    statements = [s.strip() for s in fix.split(";")]
    assert statements[0].startswith(
        "GRANT SELECT, INSERT, ALTER, CREATE TABLE, CREATE VIEW, DROP TABLE, DROP VIEW ON `shop`.* TO "
    ), statements
    granted = [
        re.sub(r" TO `?\w+`?$", "", s) for s in statements
    ]  # users.xml takes a GRANT without its grantee

    with ClickHouseServer(users={USER: (password, granted)}) as server:
        _create_shop(server)
        code, out = _check(server, tmp_path, monkeypatch, capsys, source_url, capture_role, password)
        assert (code, out.splitlines()[0]) == (0, "p1: ok"), out

        source = capture_role.source(["public.t"])
        set_up_source(source)
        run_snapshot(
            source, changelog, plan_snapshot(source, changelog, "p1", ["public.t"], reason="initial load")
        )
        with pg_db.connect() as conn:
            conn.execute("UPDATE t SET v = 'changed' WHERE id = 3; DELETE FROM t WHERE id BETWEEN 10 AND 19")
            conn.execute(
                "ALTER TABLE t ALTER COLUMN id TYPE bigint"
            )  # a widened key: the sink rebuilds the table
            conn.execute("INSERT INTO t VALUES (5000000000, 'wide')")
        capture(source, changelog)
        source.disconnect()
        sink = create_sink({"url": server.url("shop", user=USER, password=password), "pipeline": "p1"})
        sink.connect()
        for manifest in changelog.batches("p1"):
            apply_batch(changelog, sink, "p1", manifest.batch_id)
        columns = {"id": T("int64"), "v": T("string")}
        with pg_db.connect() as conn:
            expected = pg_rows(conn, '"public"."t"', columns)
        assert len(expected) == 21
        assert not differences(expected, clickhouse_rows(sink, "public.t", columns), "clickhouse sink")
        beyond_every_batch = tombstone_horizon(changelog, "p1") or 0
        assert (
            sink.prune_tombstones("public.t", max(beyond_every_batch, 2**63)) == 10
        )  # a work table made, dropped
        assert not differences(expected, clickhouse_rows(sink, "public.t", columns), "clickhouse sink")
        sink.disconnect()


def test_a_user_who_may_create_but_not_drop_is_refused_naming_what_is_left(
    pg_db, capture_role, tmp_path, monkeypatch, capsys
):
    """Past its bookkeeping tables, the check does each statement an apply runs on scratch tables: without DROP
    TABLE (a rebuild, a prune's work table) it is refused, naming the right, before any batch."""
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    capture_role.grant(["public.t"])
    source_url = pg_db.url_as(capture_role.name, "x").replace(":x@", "@")
    password = secrets.token_hex(10)
    with ClickHouseServer(
        users={USER: (password, [*TOO_FEW, "GRANT TABLE ENGINE ON ReplacingMergeTree"])}
    ) as server:
        _create_shop(server)
        code, out = _check(server, tmp_path, monkeypatch, capsys, source_url, capture_role, password)
        assert code != 0 and "sink ch: [clickhouse_rights]" in out, out
        assert f"expected user {USER} to be allowed to drop tables and views in shop" in out, out
        assert (
            "fix: GRANT SELECT, INSERT, ALTER, CREATE TABLE, CREATE VIEW, DROP TABLE, DROP VIEW ON `shop`.*"
            in out
        )
        admin = server.client("shop")
        names = [
            name
            for (name,) in admin.query("SELECT name FROM system.tables WHERE database = 'shop'").result_rows
        ]
        admin.close()
        left = sorted(n for n in names if n.startswith("_dbmazz_check_"))
        assert left and f"(left {left[0]}" in out, (
            left,
            out,
        )  # what could not be dropped is named, to drop by hand
