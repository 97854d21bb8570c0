"""ADD COLUMN: without a default the stream follows; with one, capture stops, names the table, a re-sync fixes it."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.core.errors import TableChangedError
from dbmazz_connectors.engine import apply_batch
from dbmazz_connectors.snapshots import plan_snapshot, run_snapshot

from ._pg import assert_folded_equals_source, capture, source_rows

TABLES = ["public.plain", "public.filled", "public.parts"]
DDL = """
CREATE TABLE plain (id serial PRIMARY KEY, v text, created timestamptz DEFAULT now());
CREATE TABLE filled (id int PRIMARY KEY, v text);
CREATE TABLE parts (id int, at date, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO plain (v) SELECT 'p' || g FROM generate_series(1, 50) g;
INSERT INTO filled SELECT g, 'f' || g FROM generate_series(1, 50) g;
INSERT INTO parts SELECT g, date '2024-01-01' + g * 7, 'x' || g FROM generate_series(1, 80) g;
"""


@pytest.mark.usefixtures("capture_mode")  # in both capture modes
def test_add_column_with_a_default_stops_capture_until_the_table_is_resynced(
    pg_db, capture_role, changelog, tmp_path
):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant(TABLES)
    with pg_db.connect() as conn:
        conn.execute("ALTER PUBLICATION dbmazz_p1 SET (publish_via_partition_root = true)")
    source = capture_role.source(TABLES)
    source.setup()
    run_snapshot(source, changelog, plan_snapshot(source, changelog, "p1", TABLES, reason="initial load"))
    with pg_db.connect() as conn:  # no default: old rows read NULL in the source too; the stream follows
        conn.execute("ALTER TABLE plain ADD COLUMN extra int; UPDATE plain SET extra = id WHERE id > 40")
    capture(source, changelog)
    assert_folded_equals_source(pg_db, changelog, "public.plain")

    with pg_db.connect() as conn:
        conn.execute(
            "ALTER TABLE filled ADD COLUMN flag int NOT NULL DEFAULT 7; INSERT INTO filled VALUES (99, 'n', 1)"
        )
    with pytest.raises(TableChangedError) as caught:
        capture(source, changelog)
    assert caught.value.table == "public.filled"
    assert "columns with a default: flag" in caught.value.message
    assert "re-sync the table" in caught.value.hint
    resync = plan_snapshot(source, changelog, "p1", ["public.filled"], reason="column default")
    capture(source, changelog)
    run_snapshot(source, changelog, resync)
    with pg_db.connect() as conn:  # a rewrite, and a column with a volatile default (the table is rewritten)
        conn.execute("VACUUM FULL filled")
        conn.execute("INSERT INTO plain (v) VALUES ('after vacuum')")
    capture(source, changelog)
    with pg_db.connect() as conn:
        conn.execute("ALTER TABLE plain ADD COLUMN token text DEFAULT md5(random()::text)")
    with pytest.raises(TableChangedError) as caught:
        capture(source, changelog)
    assert (
        caught.value.table == "public.plain"
        and "columns with a default: id, created, token" in caught.value.message
    )
    run_snapshot(
        source, changelog, plan_snapshot(source, changelog, "p1", ["public.plain"], reason="column default")
    )
    capture(source, changelog)

    with pg_db.connect() as conn:  # a partitioned table: its partitions hold the filled rows
        conn.execute(
            "ALTER TABLE parts ADD COLUMN tag text DEFAULT 'old'; UPDATE parts SET tag = 'new' WHERE id < 5"
        )
    with pytest.raises(TableChangedError) as caught:
        capture(source, changelog)
    assert caught.value.table == "public.parts" and "columns with a default: tag" in caught.value.message
    resync = plan_snapshot(source, changelog, "p1", ["public.parts"], reason="column default")
    run_snapshot(source, changelog, resync)
    capture(source, changelog)
    for table, key in (("public.plain", "id"), ("public.filled", "id"), ("public.parts", "id, at")):
        assert_folded_equals_source(pg_db, changelog, table, key=key)

    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p1"})
    sink.connect()
    try:
        for manifest in changelog.batches("p1"):
            apply_batch(changelog, sink, "p1", manifest.batch_id)
        target = sink.target(sink.table_state("public.filled"))
        found = sink.con.execute(f"SELECT id, v, flag FROM {target} ORDER BY id").fetchall()
        assert found == [tuple(r.values()) for r in source_rows(pg_db, "filled", select="id, v, flag")]
        assert found[0] == (1, "f1", 7)
    finally:
        sink.disconnect()
