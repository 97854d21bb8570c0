"""The PostgreSQL sink's checks of `dbmazz check` (CREATE on the database for its metadata schema and a schema to
create, CREATE on an existing schema): made to fail, every printed fix run as printed, then the check is ok and the
first apply of a real pipeline works as that role."""

from __future__ import annotations

import re
import secrets
import uuid

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch, set_up_source
from dbmazz_connectors.snapshots import plan_snapshot, run_snapshot
from tests.connectors.sources.postgres._pg import capture
from tests.connectors.values._canon import differences, pg_rows, postgres_sink_rows

from ..schema_evolution._compare import T
from ._check import dbmazz_check

COLUMNS = {"id": T("int32"), "v": T("string")}


@pytest.mark.parametrize(
    "schema, message",
    [
        ("replica", None),  # a schema to create: CREATE on the database is enough
        (None, "may not create tables in schema public"),  # the source's schema, existing: CREATE on it too
    ],
)
def test_a_sink_privilege_fixed_as_printed_then_apply_works(
    schema, message, pg_db, pg_sink_db, capture_role, changelog, tmp_path, monkeypatch, capsys
):
    role, password = f"snk_{uuid.uuid4().hex[:8]}", secrets.token_hex(8)
    with pg_sink_db.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        )  # PostgreSQL 15's default, whatever the server
    try:
        with pg_db.connect() as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            conn.execute("INSERT INTO t SELECT g, 't' || g FROM generate_series(1, 20) g")
        capture_role.grant(["public.t"])
        monkeypatch.setenv("DBMAZZ_TEST_SINK_PASSWORD", password)
        sink_config = {
            "url": pg_sink_db.url_as(role, "x").replace(":x@", "@"),
            "password_env": "DBMAZZ_TEST_SINK_PASSWORD",
            **({"schema": schema} if schema else {}),
        }
        source_url = pg_db.url_as(capture_role.name, "x").replace(":x@", "@")
        printed = []
        for _ in range(3):  # every fix `dbmazz check` prints, run as printed, until it says ok
            code, out = dbmazz_check(
                tmp_path,
                monkeypatch,
                capsys,
                source_url,
                capture_role.password,
                ["public.t"],
                sinks={"pg": sink_config},
            )
            if code == 0:
                break
            printed.append(out)
            with pg_sink_db.connect() as conn:
                for fix in re.findall(r"^ +fix: (.*)$", out, re.M):
                    conn.execute(fix)
        assert (code, out.splitlines()[0]) == (0, "p1: ok"), out
        assert f"sink pg: [connect] postgres sink: {role} lacks a privilege writing _dbmazz" in printed[0], (
            printed
        )
        assert f'fix: GRANT CREATE ON DATABASE "{pg_sink_db.name}" TO "{role}"' in printed[0], printed
        assert len(printed) == (2 if message else 1) and (not message or message in printed[1]), printed
        assert password not in out

        source = capture_role.source(["public.t"])
        set_up_source(source)
        run_snapshot(
            source, changelog, plan_snapshot(source, changelog, "p1", ["public.t"], reason="initial load")
        )
        with pg_db.connect() as conn:
            conn.execute("UPDATE t SET v = 'changed' WHERE id = 3; DELETE FROM t WHERE id = 4")
        capture(source, changelog)
        source.disconnect()
        sink = create_sink(
            {
                "url": pg_sink_db.url_as(role, password),
                "pipeline": "p1",
                **({"schema": schema} if schema else {}),
            }
        )
        sink.connect()
        for manifest in changelog.batches("p1"):
            apply_batch(changelog, sink, "p1", manifest.batch_id)
        with pg_db.connect() as conn:
            expected = pg_rows(conn, '"public"."t"', COLUMNS)
        assert not differences(expected, postgres_sink_rows(sink, "public.t", COLUMNS), "postgres sink")
        assert sink.table_state("public.t").target_schema == (schema or "public") and len(expected) == 19
        sink.disconnect()
    finally:
        with pg_sink_db.connect() as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
