"""A replicated table dropped, re-created, replaced, renamed or refilled without row events: followed exactly as
events where the binlog says everything (the sink equals the source), a specific error where it cannot."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core.batch import SchemaChange, Truncate
from dbmazz_connectors.core.errors import TableChangedError
from dbmazz_connectors.snapshots import SnapshotSettings, plan_snapshot, run_snapshot

from ._my import assert_folded_equals_source, capture, folded_rows


def _run(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


@pytest.fixture
def captured_t(mysql_db, make_source, changelog):
    """Table t with three rows, captured into the change log; returns (admin connection, source, position)."""
    conn = mysql_db.connect()
    _run(conn, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    source = make_source(["t"])
    start = source.current_position()
    _run(conn, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    batch = capture(source, changelog, start)
    assert len(folded_rows(changelog, f"{mysql_db.name}.t")) == 3
    return conn, source, batch.end


def test_drop_and_create_without_rows_empties_the_table(mysql_db, changelog, captured_t):
    conn, source, position = captured_t
    _run(conn, "DROP TABLE t", "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10), w INT)")
    batch = capture(source, changelog, position)
    events = changelog.read_batch("p1", batch.batch_id, f"{mysql_db.name}.t").events
    assert any(isinstance(e, Truncate) for e in events), "the drop reaches the sinks as a truncate"
    assert folded_rows(changelog, f"{mysql_db.name}.t") == [], "no row of the dropped table survives"
    _run(conn, "INSERT INTO t VALUES (7, 'new', 70)")
    capture(source, changelog, batch.end)
    assert_folded_equals_source(mysql_db, changelog, "t")


def test_drop_and_create_with_rows_follows_the_new_table(mysql_db, changelog, captured_t):
    conn, source, position = captured_t
    _run(
        conn,
        "DROP TABLE t",
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))",
        "INSERT INTO t VALUES (2, 'B'), (4, 'd')",
        "CREATE OR REPLACE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)) SELECT 5 AS id, 'e' AS v",
        "INSERT INTO t VALUES (6, 'f')",
    )
    capture(source, changelog, position)
    assert [r["id"] for r in folded_rows(changelog, f"{mysql_db.name}.t")] == [5, 6]
    assert_folded_equals_source(mysql_db, changelog, "t")


def test_drop_then_resync_converges(mysql_db, changelog, captured_t):
    conn, source, position = captured_t
    _run(
        conn,
        "DROP TABLE t",
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))",
        "INSERT INTO t SELECT seq, 'x' FROM seq_10_to_60",
    )
    settings = SnapshotSettings(chunk_rows=20, chunks_per_batch=2, parallelism=2)
    plan = plan_snapshot(source, changelog, "p1", [f"{mysql_db.name}.t"], settings)
    _run(conn, "DELETE FROM t WHERE id < 20", "UPDATE t SET v = 'y' WHERE id > 50")
    run_snapshot(source, changelog, plan, settings)
    capture(source, changelog, position)  # CDC of the drop and the new table, applied after the snapshot
    assert_folded_equals_source(mysql_db, changelog, "t")


@pytest.mark.parametrize(
    "statements, what",
    [
        (["RENAME TABLE t TO t_old"], "was renamed"),
        (
            [
                "CREATE TABLE t_new (id INT PRIMARY KEY, v VARCHAR(10))",
                "INSERT INTO t_new VALUES (9, 'z')",
                "RENAME TABLE t TO t_old, t_new TO t",
            ],
            "was renamed",
        ),
        (["ALTER TABLE t RENAME TO t_old"], "was renamed"),
        (
            [
                "CREATE TABLE p (id INT PRIMARY KEY, v VARCHAR(10)) PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN"
                " (100))",
                "INSERT INTO p VALUES (50, 'p')",
                "ALTER TABLE p EXCHANGE PARTITION p0 WITH TABLE t",
            ],
            "had rows moved in or out without row events",
        ),
    ],
)
def test_a_change_the_binlog_cannot_follow_stops_capture(mysql_db, changelog, captured_t, statements, what):
    conn, source, position = captured_t
    _run(conn, *statements)
    with pytest.raises(TableChangedError) as caught:
        capture(source, changelog, position)
    message = str(caught.value)
    assert f"table {mysql_db.name}.t {what} at mysql-bin." in message
    assert "re-sync it: a snapshot of the whole table" in message
    assert caught.value.table == f"{mysql_db.name}.t"
    _run(
        conn,
        "INSERT INTO t_old VALUES (11, 'k')" if what == "was renamed" else "INSERT INTO t VALUES (11, 'k')",
    )
    if "t_old" in " ".join(statements) and "t_new TO t" not in " ".join(statements):
        _run(conn, "RENAME TABLE t_old TO t")  # renamed away: back under its name first
    settings = SnapshotSettings(chunk_rows=2, chunks_per_batch=2, parallelism=2)
    run_snapshot(
        source, changelog, plan_snapshot(source, changelog, "p1", [f"{mysql_db.name}.t"], settings), settings
    )
    capture(source, changelog, position)  # the re-sync supersedes the change: capture passes it
    assert_folded_equals_source(mysql_db, changelog, "t")


def test_a_dropped_table_that_is_gone_stops_capture(mysql_db, changelog, captured_t):
    conn, source, position = captured_t
    _run(conn, "INSERT INTO t VALUES (4, 'd')", "DROP TABLE t")
    with pytest.raises(TableChangedError, match="was dropped and does not exist now") as caught:
        capture(source, changelog, position)
    assert "remove" in caught.value.hint and "re-create it" in caught.value.hint
    _run(conn, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO t VALUES (8, 'h')")
    capture(source, changelog, position)  # the fix: re-created, the next capture follows it from its drop
    assert_folded_equals_source(mysql_db, changelog, "t")


def test_truncate_and_alter_are_still_events(mysql_db, changelog, captured_t):
    conn, source, position = captured_t
    _run(conn, "TRUNCATE t", "ALTER TABLE t ADD COLUMN w INT", "INSERT INTO t VALUES (5, 'e', 50)")
    batch = capture(source, changelog, position)
    events = changelog.read_batch("p1", batch.batch_id, f"{mysql_db.name}.t").events
    assert [type(e) for e in events if not isinstance(e, SchemaChange)][0] is Truncate
    assert_folded_equals_source(mysql_db, changelog, "t")
