"""PostgreSQL snapshots: chunks read while a writer hammers the same keys converge with CDC, row by row."""

from __future__ import annotations

import random
import struct
import threading

import pyarrow as pa
import pytest
from psycopg import sql

from dbmazz_connectors.core.snapshot import KeyRange
from dbmazz_connectors.engine import fold_table
from dbmazz_connectors.snapshots import SnapshotSettings, capture_snapshot_batch, plan_snapshot, run_snapshot
from dbmazz_connectors.sources.postgres.snapshot import key_predicate

from ._pg import assert_folded_equals_source, capture
from .test_types import DDL as MATRIX_DDL
from .test_types import ROWS as MATRIX_ROWS

TABLES = ["public.items", "public.pairs"]
DDL = """
CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, label text, at timestamptz, tags int[]);
CREATE TABLE pairs (a text, b int, v numeric(10,2), PRIMARY KEY (a, b));
INSERT INTO items SELECT g, g, 'item ' || g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
                         ARRAY[g, g + 1] FROM generate_series(1, 3000) g;
INSERT INTO pairs SELECT 'k' || (g % 37), g, g / 3.0 FROM generate_series(1, 1500) g;
"""


def _writer(db, seed: int, stop: threading.Event, done: list[int]) -> None:
    """Random transactions over the same keys: inserts, updates, deletes, primary-key updates."""
    rng = random.Random(seed)
    with db.connect() as conn:
        while not stop.is_set():
            with conn.transaction():
                for _ in range(rng.randint(1, 5)):
                    k = rng.randint(1, 3600)
                    op = rng.random()
                    if op < 0.3:
                        conn.execute(
                            "INSERT INTO items VALUES (%s, %s, 'new', now(), ARRAY[%s]) "
                            "ON CONFLICT (id) DO UPDATE SET n = items.n + 1",
                            (k, k, k),
                        )
                    elif op < 0.6:
                        conn.execute("UPDATE items SET n = n + 1, label = label || 'u' WHERE id = %s", (k,))
                    elif op < 0.8:
                        conn.execute("DELETE FROM items WHERE id = %s", (k,))
                    elif op < 0.9:
                        conn.execute(
                            "UPDATE items SET id = %s WHERE id = %s AND NOT EXISTS "
                            "(SELECT 1 FROM items WHERE id = %s)",
                            (k + 5000, k, k + 5000),
                        )
                    else:
                        conn.execute("UPDATE pairs SET v = v + 1 WHERE a = %s", (f"k{k % 37}",))
                        conn.execute("DELETE FROM pairs WHERE a = %s AND b = %s", (f"k{k % 37}", k))
            done[0] += 1


def _set_up(pg_db, capture_role):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant(TABLES)
    source = capture_role.source(TABLES, read_block_rows=1000, read_block_bytes=1024 * 1024)
    source.setup()
    return source


@pytest.mark.parametrize("seed", range(3))
def test_snapshot_under_concurrent_writer_converges(pg_db, capture_role, changelog, seed):
    source = _set_up(pg_db, capture_role)
    stop, done = threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(pg_db, seed, stop, done))
    writer.start()
    try:
        settings = SnapshotSettings(chunk_rows=400, chunks_per_batch=3, parallelism=2)
        plan = plan_snapshot(source, changelog, "p1", TABLES, settings, reason="initial load")
        capture(source, changelog)  # CDC interleaves with the chunks
        manifests = run_snapshot(source, changelog, plan, settings)
    finally:
        stop.set()
        writer.join()
    capture(source, changelog)
    assert done[0] > 10, "the writer should have committed transactions during the snapshot"
    assert sum(m.rows for m in manifests) > 3000
    assert manifests[-1].batch_id.endswith("-sweep")
    assert_folded_equals_source(pg_db, changelog, "public.items")
    assert_folded_equals_source(pg_db, changelog, "public.pairs", key="a, b")


def test_snapshot_of_a_key_range_reads_only_that_range(pg_db, capture_role, changelog):
    source = _set_up(pg_db, capture_role)
    settings = SnapshotSettings(chunk_rows=100, chunks_per_batch=50, parallelism=2)
    plan = plan_snapshot(
        source, changelog, "p1", ["public.items"], settings, key_range=KeyRange(("1000",), ("1500",))
    )
    assert not plan.sweep and len(plan.batches) == 1 and len(plan.batches[0]) == 5
    manifest = capture_snapshot_batch(source, changelog, "p1", plan.batch_ids()[0], settings)
    assert manifest.tables["public.items"].ops["insert"] == 500
    assert manifest.is_snapshot and changelog.checkpoint("p1") is None


def test_plan_covers_the_key_in_chunks_of_about_chunk_rows(pg_db, capture_role):
    tables = ["public.items", "public.pairs", "public.sparse"]
    with pg_db.connect() as conn:
        conn.execute(DDL)
        conn.execute(
            "CREATE TABLE sparse (id bigint PRIMARY KEY); "
            "INSERT INTO sparse SELECT g * 1000 FROM generate_series(1, 3000) g; ANALYZE items"
        )
    capture_role.grant(tables, publication=None)
    source = capture_role.source(tables)
    counts = {}
    with pg_db.connect() as conn:
        for table in tables:
            key = source.table_schemas()[table].primary_key
            counts[table] = [
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                        sql.Identifier(*table.split(".")), key_predicate(key, key_range)
                    )
                ).fetchone()[0]
                for key_range in source.plan_chunks(table, 400)
            ]
    assert counts["public.items"] == [375] * 8  # a dense integer key: split between its min and max
    assert counts["public.pairs"] == [400, 400, 400, 300]  # walked in key order
    assert counts["public.sparse"] == [400] * 7 + [
        200
    ]  # walked in key order, not text order ('1000', '10000', ...)


# Every supported type (test_types.py's matrix) plus the types whose ``::text`` cast is not their output text
# (bool, char(n), "char", inet, cidr, domains over them) and binary edge values (float bits, BC, far future).
EXTRA_DDL = """
CREATE DOMAIN code AS char(4);
CREATE DOMAIN small_count AS int CHECK (VALUE >= 0);
CREATE DOMAIN flag AS boolean;
ALTER TABLE matrix ADD COLUMN c_qchar "char", ADD COLUMN c_name name, ADD COLUMN c_code code,
  ADD COLUMN c_count small_count, ADD COLUMN c_flag flag, ADD COLUMN c_oid oid, ADD COLUMN c_date2 date,
  ADD COLUMN c_ts2 timestamp, ADD COLUMN c_tstz2 timestamptz, ADD COLUMN c_time2 time, ADD COLUMN c_n18 numeric(18,0),
  ADD COLUMN c_f18 numeric(18,18), ADD COLUMN c_neg numeric(5,-2);
"""
EXTRA_ROWS = """
INSERT INTO matrix (id, c_float4, c_float8, c_qchar, c_name, c_code, c_count, c_flag, c_oid, c_inet, c_date2, c_ts2,
                    c_tstz2, c_time2, c_bool, c_num, c_n18, c_f18, c_neg, c_price) VALUES
 (5, 1.1, 0.1, 'x', 'a name', 'ab', 0, true, 4294967295, '10.1.2.3', '5874897-12-31', '4713-01-01 00:00:00.123456 BC',
  '200000-12-31 23:59:59.999999+00', '24:00:00', true, 'NaN', 999999999999999999, 0.999999999999999999, 9999900, 0.5),
 (6, '-0', '-0', 'é', '', 'abcd', 2147483647, false, 0, '::ffff:1.2.3.4', '0001-01-01', '1999-12-31 23:59:59.999999',
  '2000-01-01 00:00:00+00', '00:00:00.000001', false, '-0.05', -999999999999999999, -0.000000000000000001, -100,
  12345.67),
 (7, 3.4028235e38, 5e-324, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2000-01-01', '1970-01-01 00:00:00',
  '1969-12-31 23:59:59.999999+00', NULL, NULL, 1234567890.12, 10000, 0.0001, 0, 0.01),
 (8, 1e-45, -1.7976931348623157e308, ' ', 'x', '', 1, NULL, 1, NULL, '0001-01-01 BC', NULL, NULL, NULL, NULL,
  -0.01, 0, NULL, 150, NULL)
"""


def _bits(value):
    if isinstance(value, float):
        return struct.pack(">d", value)  # NaN equals NaN, -0.0 differs from 0.0
    if isinstance(value, list):
        return [_bits(v) for v in value]
    return value


def _exact(column: pa.ChunkedArray) -> list:
    """The column's values, compared exactly: temporal values as integers (infinities and 24:00 included)."""
    value_type = column.type.value_type if pa.types.is_list(column.type) else column.type
    if pa.types.is_temporal(value_type):
        integer = pa.int32() if pa.types.is_date32(value_type) else pa.int64()
        column = column.cast(pa.list_(integer) if pa.types.is_list(column.type) else integer)
    return [_bits(v) for v in column.to_pylist()]


def _snapshot_and_cdc(
    pg_db, capture_role, changelog, table: str, ddl: str, rows: str, key: str = "id", **options
):
    """Create ``table``, insert ``rows``, capture them by CDC and by a snapshot; both folded, sorted by ``key``."""
    with pg_db.connect() as conn:
        conn.execute(ddl)
    capture_role.grant([table])
    source = capture_role.source([table], **options)
    source.setup()
    with pg_db.connect() as conn:
        conn.execute("SET TimeZone = 'America/New_York'")  # the writer's zone must not matter
        conn.execute(rows)
    capture(source, changelog)  # CDC: the inserts as pgoutput sends them
    settings = SnapshotSettings(chunk_rows=3, parallelism=2)
    run_snapshot(source, changelog, plan_snapshot(source, changelog, "snap", [table], settings), settings)
    cdc_schema, cdc = fold_table(changelog, "p1", table)
    snap_schema, snap = fold_table(changelog, "snap", table)
    assert snap_schema == cdc_schema and snap.num_rows == cdc.num_rows
    for name in cdc_schema.column_names:
        assert _exact(snap.sort_by(key).column(name)) == _exact(cdc.sort_by(key).column(name)), (
            f"column {name} differs from CDC"
        )
    return snap.sort_by(key)


def test_snapshot_values_equal_cdc_values_type_by_type(pg_db, capture_role, changelog):
    snap = _snapshot_and_cdc(
        pg_db,
        capture_role,
        changelog,
        "public.matrix",
        MATRIX_DDL + ";" + EXTRA_DDL,
        MATRIX_ROWS + ";" + EXTRA_ROWS,
    )
    assert snap.num_rows == 8
    assert snap.column("c_bool").to_pylist()[:3] == [False, True, True]
    assert snap.column("c_char").to_pylist()[0] == "ab   " and snap.column("c_code").to_pylist()[4] == "ab  "
    assert snap.column("c_inet").to_pylist()[4] == "10.1.2.3"


@pytest.mark.parametrize(
    ("ddl", "rows"),
    [
        (
            "CREATE TABLE t (id text PRIMARY KEY, j jsonb, v varchar)",  # no fixed-width column
            "INSERT INTO t VALUES ('a', NULL, 'x'), ('b', '[1]', NULL), ('c', NULL, NULL), ('d', '{}', '')",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, a bigint, b float8, c date)",  # fixed-width columns only
            "INSERT INTO t VALUES (1, NULL, 1.5, '2024-01-01'), (2, 7, NULL, NULL), (3, NULL, NULL, NULL), (4, 1, 2, 'infinity')",
        ),
        (
            "CREATE TABLE t (id int PRIMARY KEY, a int, s text, b bool)",  # NULLs before and after the text
            "INSERT INTO t SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE g END, CASE WHEN g % 5 = 0 THEN NULL ELSE 's' || g END, "
            "CASE WHEN g % 7 = 0 THEN NULL ELSE g % 2 = 0 END FROM generate_series(1, 40) g",
        ),
    ],
)
def test_snapshot_equals_cdc_whatever_the_nulls(pg_db, capture_role, changelog, ddl, rows):
    assert _snapshot_and_cdc(pg_db, capture_role, changelog, "public.t", ddl, rows).num_rows > 0


def test_snapshot_equals_cdc_for_columns_carried_as_text_or_excluded(pg_db, capture_role, changelog):
    snap = _snapshot_and_cdc(
        pg_db,
        capture_role,
        changelog,
        "public.t",
        "CREATE TABLE t (id int PRIMARY KEY, n int, f bool, j jsonb, b bytea, p point, secret text)",
        "INSERT INTO t VALUES (1, 7, true, '{\"a\": 1}', '\\x00ff', '(1,2)', 's'), (2, NULL, false, NULL, NULL, NULL, NULL)",
        columns={"public.t": {"as_text": ["n", "f", "j", "b", "p"], "exclude": ["secret"]}},
    )
    assert snap.column_names[:6] == ["id", "n", "f", "j", "b", "p"]
    assert snap.column("f").to_pylist() == ["t", "f"] and snap.column("b").to_pylist() == ["\\x00ff", None]
