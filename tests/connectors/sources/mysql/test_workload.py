"""A mixed workload captured in several ranges (read after all of it happened, so old ranges must
decode with the columns they had): the folded change log equals the source, row by row."""

from __future__ import annotations

import pyarrow.compute as pc

from dbmazz_connectors.core.batch import SchemaChange, Truncate
from dbmazz_connectors.core.schema import OP_COLUMN, VERSION_COLUMN

from ._my import assert_folded_equals_source, capture

DDL = [
    "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer INT NOT NULL, amount DECIMAL(12,2), note TEXT,"
    " status VARCHAR(16), created DATETIME(6)) ENGINE=InnoDB",
    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL) ENGINE=InnoDB",
]
INSERT_ORDERS = (
    "INSERT INTO orders SELECT seq, seq % 97, (seq % 100000) / 100, CONCAT('note ', seq),"
    " IF(seq % 3 = 0, 'new', NULL), TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_{lo}_to_{hi}"
)


def _run(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def test_workload_in_several_ranges(mysql_db, make_source, changelog):
    conn = mysql_db.connect()
    _run(conn, *DDL)
    source = make_source(["orders", "customers"], chunk_rows=700)
    assert source.preflight() == []
    marks = [source.current_position()]
    _run(
        conn,
        INSERT_ORDERS.format(lo=1, hi=1000),
        "INSERT INTO customers SELECT seq, CONCAT('customer ', seq) FROM seq_1_to_50",
        "BEGIN",
        "INSERT INTO customers VALUES (51, 'in txn')",
        "UPDATE orders SET customer = 51 WHERE id <= 10",
        "DELETE FROM orders WHERE id BETWEEN 11 AND 20",
        "COMMIT",
    )
    marks.append(source.current_position())
    _run(
        conn,
        "UPDATE orders SET amount = amount + 1, note = NULL WHERE id % 7 = 0",
        "DELETE FROM orders WHERE id % 11 = 0",
        "UPDATE orders SET id = 100001 WHERE id = 5",  # primary-key update
        "UPDATE orders SET status = 'first' WHERE id = 6",
        "UPDATE orders SET status = 'second' WHERE id = 6",
        "BEGIN",
        "UPDATE orders SET status = 'third' WHERE id = 6",
        "UPDATE orders SET status = 'fourth' WHERE id = 6",
        "COMMIT",
    )
    marks.append(source.current_position())
    _run(
        conn,
        "ALTER TABLE orders ADD COLUMN priority INT NULL",  # a DEFAULT would not reach unchanged rows (README)
        "UPDATE orders SET priority = 5 WHERE id % 5 = 0",
        "ALTER TABLE orders DROP COLUMN note, MODIFY status VARCHAR(300)",
        "INSERT INTO orders (id, customer, amount, status, created, priority) VALUES (5000, 1, 9.99, REPEAT('s', 280),"
        " '2025-06-01 12:00:00.123456', 9)",
        "TRUNCATE customers",
        "INSERT INTO customers VALUES (1, 'after truncate')",
        INSERT_ORDERS.replace("seq % 3", "seq % 4")
        .replace("orders SELECT", "orders (id, customer, amount, status, created) SELECT")
        .replace(", CONCAT('note ', seq)", "")
        .format(lo=10_001, hi=15_000),
    )
    marks.append(source.current_position())

    batches = [capture(source, changelog, a, b) for a, b in zip(marks, marks[1:], strict=False)]
    assert batches[0].tables[f"{mysql_db.name}.orders"].ops == {"insert": 1000, "update": 10, "delete": 10}
    assert batches[-1].end == marks[-1] or batches[-1].end.version == marks[-1].version

    orders = _table(changelog, batches[1], f"{mysql_db.name}.orders")
    moved = orders.filter(pc.is_in(orders.column("id"), pc.cast([5, 100001], "int64")))
    assert moved.column(OP_COLUMN).to_pylist() == [2, 0], (
        "a key update is a delete of 5 then an insert of 100001"
    )

    events = changelog.read_batch("p1", batches[2].batch_id, f"{mysql_db.name}.orders").events
    changes = [e for e in events if isinstance(e, SchemaChange)]
    assert [c.schema.column_names for c in changes][-1] == [
        "id",
        "customer",
        "amount",
        "status",
        "created",
        "priority",
    ]
    assert "ADD COLUMN priority" in changes[0].ddl
    customer_events = changelog.read_batch("p1", batches[2].batch_id, f"{mysql_db.name}.customers").events
    assert isinstance([e for e in customer_events if not isinstance(e, SchemaChange)][0], Truncate)
    for table in ("orders", "customers"):
        assert_folded_equals_source(mysql_db, changelog, table)


def test_multi_table_transaction_shares_one_version(mysql_db, make_source, changelog):
    conn = mysql_db.connect()
    _run(conn, *DDL)
    source = make_source(["orders", "customers"])
    start = source.current_position()
    _run(
        conn,
        "BEGIN",
        "INSERT INTO customers VALUES (1, 'a')",
        INSERT_ORDERS.format(lo=1, hi=3),
        "COMMIT",
        "INSERT INTO customers VALUES (2, 'b')",
    )
    batch = capture(source, changelog, start)
    versions = {
        t: _table(changelog, batch, f"{mysql_db.name}.{t}").column(VERSION_COLUMN).to_pylist()
        for t in ("orders", "customers")
    }
    assert len(set(versions["orders"])) == 1 and versions["orders"][0] == versions["customers"][0]
    assert versions["customers"][1] > versions["customers"][0]
    again = list(source.read_changes(start, batch.end))  # repeatable: same range, same rows
    assert sum(e.data.num_rows for e in again if hasattr(e, "data")) == 5


def _large_transaction(mysql_db, make_source, changelog, rows: int, chunk_rows: int):
    conn = mysql_db.connect()
    _run(conn, *DDL)
    source = make_source(["orders"], chunk_rows=chunk_rows)
    start = source.current_position()
    _run(
        conn,
        "BEGIN",
        INSERT_ORDERS.format(lo=1, hi=rows),
        "UPDATE orders SET status = 'big' WHERE id % 2 = 0",
        "COMMIT",
    )
    chunks = [
        e.data.num_rows for e in source.read_changes(start, source.current_position()) if hasattr(e, "data")
    ]
    assert max(chunks) < chunk_rows + 200, "a large transaction is emitted in bounded chunks"
    batch = capture(source, changelog, start)
    assert batch.tables[f"{mysql_db.name}.orders"].ops == {"insert": rows, "update": rows // 2, "delete": 0}
    versions = pc.unique(_table(changelog, batch, f"{mysql_db.name}.orders").column(VERSION_COLUMN))
    assert len(versions) == 1 and versions[0].as_py() <= batch.end.version
    assert_folded_equals_source(mysql_db, changelog, "orders")


def test_large_transaction_in_bounded_chunks(mysql_db, make_source, changelog):
    _large_transaction(mysql_db, make_source, changelog, rows=6_000, chunk_rows=1_000)


def test_large_transaction_of_200k_rows(mysql_db, make_source, changelog):
    _large_transaction(mysql_db, make_source, changelog, rows=200_000, chunk_rows=100_000)


def _table(changelog, manifest, table):
    import pyarrow as pa

    batch = changelog.read_batch("p1", manifest.batch_id, table)
    return pa.concat_tables([r.data for r in batch.rows()])


def test_wide_rows_are_cut_into_bounded_chunks(mysql_db, make_source, changelog):
    conn = mysql_db.connect()
    _run(conn, "CREATE TABLE docs (id INT PRIMARY KEY, body LONGTEXT)")
    source = make_source(["docs"])
    start = source.current_position()
    _run(conn, "INSERT INTO docs SELECT seq, REPEAT(CHAR(65 + seq % 26), 200000) FROM seq_1_to_150")  # 30 MB
    chunks = [e.data for e in source.read_changes(start, source.current_position()) if hasattr(e, "data")]
    assert len(chunks) >= 2 and sum(c.num_rows for c in chunks) == 150
    assert max(c.nbytes for c in chunks) < 24 * 1024 * 1024
    capture(source, changelog, start)
    assert_folded_equals_source(mysql_db, changelog, "docs")


def test_drop_and_recreate_then_modify_column(mysql_db, make_source, changelog):
    conn = mysql_db.connect()
    _run(conn, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    source = make_source(["t"])
    start = source.current_position()
    _run(
        conn,
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        "DROP TABLE t",
        "CREATE TABLE t (id INT PRIMARY KEY, w INT, v VARCHAR(10))",
        "INSERT INTO t VALUES (3, 30, 'c')",
        "ALTER TABLE t MODIFY v VARCHAR(500)",
        "INSERT INTO t VALUES (4, 40, REPEAT('d', 400))",
    )
    events = list(source.read_changes(start, source.current_position()))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Rows", "Truncate", "SchemaChange", "Rows", "Rows", "Heartbeat"]
    assert events[2].schema.column_names == ["id", "w", "v"] and "DROP TABLE" in events[2].ddl
    capture(source, changelog, start)
    assert_folded_equals_source(mysql_db, changelog, "t")
