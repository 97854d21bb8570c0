"""A mixed workload captured in several ranges: the folded change log equals the source, row by row."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from dbmazz_connectors.core.batch import Truncate
from dbmazz_connectors.core.schema import OP_COLUMN, UNKNOWN_COLUMN

from ._pg import assert_folded_equals_source, capture, table_rows

pytestmark = pytest.mark.usefixtures("capture_mode")  # each test in both capture modes (peek, stream)

TABLES = ["public.orders", "public.customers", "public.docs_full", "public.docs_default"]

DDL = """
CREATE TABLE orders (id bigint PRIMARY KEY, customer int, amount numeric(12,2), note text, status text,
                     created timestamptz, payload jsonb);
CREATE TABLE customers (id int PRIMARY KEY, name text);
CREATE TABLE docs_full (id int PRIMARY KEY, body text, n int);
CREATE TABLE docs_default (id int PRIMARY KEY, body text, n int);
ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE docs_default ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE docs_full REPLICA IDENTITY FULL;  -- the owner runs it; the capture role does not own tables
"""

INSERT_ORDERS = """
INSERT INTO orders SELECT g, g %% 97, (g %% 100000) / 100.0, 'note ' || g, CASE WHEN g %% 3 = 0 THEN 'new' END,
  timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', jsonb_build_object('k', g, 'tags', jsonb_build_array('a', g))
FROM generate_series(%s::int8, %s::int8) g
"""

RANDOM_TEXT = (
    "(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 160) g)"  # 5 kB of hex
)


def test_workload_in_several_ranges(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant(TABLES)
    source = capture_role.source(TABLES, replica_identity_full=["public.docs_full"])
    assert source.preflight() == []
    source.setup()
    source.setup()  # idempotent
    with pg_db.connect() as conn:
        conn.execute(INSERT_ORDERS, (1, 1000))
        conn.execute("INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g")
        with conn.transaction():  # one transaction over several tables
            conn.execute("INSERT INTO customers VALUES (51, 'in txn')")
            conn.execute("UPDATE orders SET customer = 51 WHERE id <= 10")
            conn.execute("DELETE FROM orders WHERE id BETWEEN 11 AND 20")
        for table in ("docs_full", "docs_default"):
            conn.execute(f"INSERT INTO {table} SELECT g, {RANDOM_TEXT}, 0 FROM generate_series(1, 5) g")
    first = capture(source, changelog)
    assert first.tables["public.orders"].ops == {"insert": 1000, "update": 10, "delete": 10}
    for table in TABLES:
        assert_folded_equals_source(
            pg_db, changelog, table, json_columns=("payload",) if table.endswith("orders") else ()
        )

    with pg_db.connect() as conn:
        conn.execute("UPDATE orders SET amount = amount + 1, note = NULL WHERE id % 7 = 0")
        conn.execute("DELETE FROM orders WHERE id % 11 = 0")
        conn.execute("UPDATE orders SET id = 100001 WHERE id = 5")  # primary-key update
        conn.execute("UPDATE orders SET status = 'first' WHERE id = 6")  # two updates of one key in one batch
        conn.execute("UPDATE orders SET status = 'second' WHERE id = 6")
        for table in ("docs_full", "docs_default"):  # TOASTed body left unchanged
            conn.execute(f"UPDATE {table} SET n = n + 1 WHERE id <= 3")
    second = capture(source, changelog)
    orders = table_rows(changelog, second.batch_id, "public.orders")
    moved = orders.filter(pc.is_in(orders.column("id"), pc.cast([5, 100001], "int64")))
    assert moved.column(OP_COLUMN).to_pylist() == [2, 0], (
        "a key update is a delete of 5 then an insert of 100001"
    )
    _assert_toast(changelog, second.batch_id)
    for table in TABLES:
        assert_folded_equals_source(
            pg_db, changelog, table, json_columns=("payload",) if table.endswith("orders") else ()
        )

    with pg_db.connect() as conn:
        conn.execute("TRUNCATE customers")
        conn.execute("INSERT INTO customers VALUES (1, 'after truncate')")
        conn.execute(INSERT_ORDERS, (200_001, 400_000))  # one transaction of 200k rows
    third = capture(source, changelog)
    events = changelog.read_batch("p1", third.batch_id, "public.customers").events
    assert isinstance(events[0], Truncate) and events[0].version <= third.end.version
    assert third.tables["public.orders"].ops["insert"] == 200_000
    for table in TABLES:
        assert_folded_equals_source(
            pg_db, changelog, table, json_columns=("payload",) if table.endswith("orders") else ()
        )
    assert source.checkpoint_position() == third.end
    source.disconnect()


def _assert_toast(changelog, batch_id: str) -> None:
    full = table_rows(changelog, batch_id, "public.docs_full")
    assert full.column(UNKNOWN_COLUMN).null_count == full.num_rows, "FULL: every value known"
    assert all(len(body) >= 5000 for body in full.column("body").to_pylist())
    default = table_rows(changelog, batch_id, "public.docs_default")
    assert default.column(UNKNOWN_COLUMN).to_pylist() == [["body"]] * 3, "DEFAULT: body marked unknown"
    assert default.column("body").to_pylist() == [None] * 3  # unknown, not '' — never applied as a value
    assert default.column("n").to_pylist() == [1, 1, 1]


def test_idle_slot_advances_past_unrelated_changes(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE watched (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)")
    capture_role.grant(["public.watched"])
    source = capture_role.source(["public.watched"])
    source.setup()
    with pg_db.connect() as conn:
        conn.execute("INSERT INTO other SELECT generate_series(1, 1000)")  # WAL moves, nothing relevant
    start, end = source.checkpoint_position(), source.current_position()
    events = list(source.read_changes(start, end))
    assert [type(e).__name__ for e in events] == ["Heartbeat"] and events[0].position >= end
    assert list(source.read_changes(start, end)) == events  # repeatable before the checkpoint
    assert not source.pending_changes(start, end), "the bounded look finds nothing of the watched table"
    with pg_db.connect() as conn:
        conn.execute("INSERT INTO watched VALUES (1)")
    assert source.pending_changes(start, source.current_position())
    manifest = capture(source, changelog)
    assert manifest.rows == 1 and source.checkpoint_position() >= end
    source.disconnect()


def test_key_update_leaving_a_toasted_value_unchanged(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant(TABLES)
    source = capture_role.source(TABLES)
    source.setup()
    with pg_db.connect() as conn:
        for table in ("docs_full", "docs_default"):
            conn.execute(f"INSERT INTO {table} SELECT 1, {RANDOM_TEXT}, 0")
    capture(source, changelog)
    with pg_db.connect() as conn:
        for table in ("docs_full", "docs_default"):
            conn.execute(f"UPDATE {table} SET id = 101")
    batch = capture(source, changelog)
    full = table_rows(changelog, batch.batch_id, "public.docs_full")
    assert full.column("id").to_pylist() == [1, 101] and full.column(OP_COLUMN).to_pylist() == [2, 0]
    assert len(full.column("body")[1].as_py()) >= 5000 and full.column(UNKNOWN_COLUMN)[1].as_py() is None
    assert_folded_equals_source(pg_db, changelog, "public.docs_full")
    # DEFAULT: PostgreSQL sends only the old key, so the new key's body is not known: said so, never NULL
    default = table_rows(changelog, batch.batch_id, "public.docs_default")
    assert default.column("id").to_pylist() == [1, 101] and default.column(OP_COLUMN).to_pylist() == [2, 0]
    assert default.column(UNKNOWN_COLUMN).to_pylist() == [None, ["body"]]
    source.disconnect()
