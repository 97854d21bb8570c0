"""PostgreSQL schema changes through each sink, the sink compared with the source row by row after every step.

One table ``t`` lives through: the initial load; ``ADD COLUMN`` without a default (followed as it
comes); ``ADD COLUMN ... DEFAULT`` (capture stops with ``TableChangedError`` naming the table and
the column; a re-sync makes the sink equal the source); ``DROP COLUMN`` (the sink keeps the column);
widenings (int -> bigint, varchar(10) -> varchar(100), the primary key int -> bigint); a drop and
re-create with another shape (capture stops; the statement preflight prints, setup and a re-sync
make the sink equal the new table). The documented behaviour: docs/operations.md, "Schema changes".
"""

from __future__ import annotations

import psycopg
import pytest

from dbmazz_connectors.core import PreflightError, TableChangedError
from dbmazz_connectors.snapshots import SnapshotSettings, plan_snapshot, run_snapshot
from tests.connectors.sources.postgres._pg import capture

from ._compare import SINKS, T, apply_all, assert_pg_sink_equals_source, sink_rows

SETTINGS = SnapshotSettings(chunk_rows=25, chunks_per_batch=2, parallelism=2)
# the default run goes through DuckDB; ClickHouse and PostgreSQL with the slow tests
KINDS = [pytest.param(kind, marks=() if kind == "duckdb" else pytest.mark.slow) for kind in SINKS]


@pytest.mark.parametrize("kind", KINDS)
def test_postgres_schema_changes_reach_the_sink(kind, pg_db, capture_role, changelog, make_sink):
    admin = pg_db.connect()
    admin.execute("CREATE TABLE t (id int PRIMARY KEY, small int, name varchar(10), gone text)")
    admin.execute("INSERT INTO t SELECT g, g, 'n' || g, 'g' || g FROM generate_series(1, 60) g")
    capture_role.grant(["public.t"])
    source = capture_role.source(["public.t"])
    source.setup()
    sink = make_sink(kind)
    columns = {"id": T("int32"), "small": T("int32"), "name": T("string"), "gone": T("string")}

    def step(what: str) -> dict:
        capture(source, changelog)
        apply_all(changelog, sink)
        return assert_pg_sink_equals_source(kind, sink, admin, "t", columns, what)

    run_snapshot(
        source,
        changelog,
        plan_snapshot(source, changelog, "p1", ["public.t"], SETTINGS, reason="initial load"),
        SETTINGS,
    )
    admin.execute("UPDATE t SET name = 'changed' WHERE id = 3")
    step("the initial load")

    # ADD COLUMN without a default: old rows are NULL in the source too; followed as it comes
    admin.execute("ALTER TABLE t ADD COLUMN extra int")
    admin.execute("UPDATE t SET extra = id * 10 WHERE id % 3 = 0")
    admin.execute("INSERT INTO t VALUES (61, 61, 'n61', 'g61', 610)")
    columns["extra"] = T("int32")
    assert step("ADD COLUMN without a default")[5]["extra"] is None

    # ADD COLUMN with a default: existing rows are filled in the source without a change in the WAL
    admin.execute("ALTER TABLE t ADD COLUMN flag text NOT NULL DEFAULT 'on'")
    admin.execute("UPDATE t SET flag = 'off' WHERE id = 2")
    with pytest.raises(TableChangedError) as caught:
        capture(source, changelog)
    assert caught.value.table == "public.t"
    assert "columns with a default: flag" in caught.value.message and "re-sync the table" in caught.value.hint
    resync = plan_snapshot(source, changelog, "p1", ["public.t"], SETTINGS, reason="column default")
    capture(source, changelog)  # the change after the ALTER: planning the re-sync accepted the table
    run_snapshot(source, changelog, resync, SETTINGS)
    columns["flag"] = T("string")
    found = step("ADD COLUMN with a default and its re-sync")
    assert found[1]["flag"] == "on" and found[2]["flag"] == "off"

    # DROP COLUMN: the sink keeps the column with its last values; rows inserted after the drop hold NULL there
    admin.execute("ALTER TABLE t DROP COLUMN gone")
    admin.execute("UPDATE t SET name = 'after drop' WHERE id = 4")
    admin.execute("INSERT INTO t (id, small, name, extra) VALUES (62, 62, 'n62', 620)")
    del columns["gone"]
    step("DROP COLUMN")
    kept = sink_rows(kind, sink, "public.t", {"id": T("int32"), "gone": T("string")})
    assert kept[10]["gone"] == "g10" and kept[4]["gone"] == "g4", "a row untouched or updated keeps its value"
    assert kept[62]["gone"] is None, "a row inserted after the drop has NULL"

    # widenings, the primary key's too
    admin.execute(
        "ALTER TABLE t ALTER COLUMN small TYPE bigint, ALTER COLUMN name TYPE varchar(100), "
        "ALTER COLUMN id TYPE bigint"
    )
    admin.execute("UPDATE t SET small = small + 5000000000, name = repeat('wide', 20) WHERE id <= 2")
    admin.execute("INSERT INTO t (id, small, name) VALUES (9000000000, -9000000000, repeat('x', 100))")
    columns.update(id=T("int64"), small=T("int64"))
    found = step("widenings (int -> bigint, varchar(10) -> varchar(100), the key int -> bigint)")
    assert found[9000000000]["small"] == -9000000000 and found[1]["small"] == 5000000001

    # dropped and re-created with another shape (as `pgbench -i` does)
    admin.execute("DROP TABLE t")
    admin.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, price numeric(10,2), small bigint)")
    admin.execute("INSERT INTO t SELECT g, 'new ' || g, g / 4.0, -g FROM generate_series(30, 90) g")
    admin.execute(f"GRANT SELECT ON t TO {capture_role.name}")
    with pytest.raises(TableChangedError) as caught:
        capture(source, changelog)
    assert "public.t was dropped and re-created" in str(caught.value)
    assert "run setup again, then re-sync the table" in caught.value.hint
    with pytest.raises(PreflightError) as refused:  # the role cannot put a table it does not own back
        plan_snapshot(source, changelog, "p1", ["public.t"], SETTINGS, reason="re-sync")
    fix = refused.value.problems[0].fix
    assert fix == 'as a superuser: ALTER PUBLICATION "dbmazz_p1" ADD TABLE "public"."t";'
    with psycopg.connect(pg_db.url, autocommit=True) as superuser:
        superuser.execute(fix.split(": ", 1)[1])  # exactly as printed
    run_snapshot(
        source,
        changelog,
        plan_snapshot(source, changelog, "p1", ["public.t"], SETTINGS, reason="re-sync"),
        SETTINGS,
    )
    admin.execute("UPDATE t SET price = 1.25 WHERE id = 31")
    columns = {"id": T("int64"), "name": T("string"), "price": T("decimal(10,2)"), "small": T("int64")}
    step("a drop and re-create with another shape, and its re-sync")
    admin.close()
