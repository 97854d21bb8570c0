"""capture_mode: stream — one replication stream kept open across the batches of one source object."""

from __future__ import annotations

import secrets
import time

import psycopg
import pyarrow as pa
import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core.batch import Heartbeat, Rows
from dbmazz_connectors.core.errors import TransientError
from dbmazz_connectors.engine import capture_range
from dbmazz_connectors.sources.postgres import PostgresSource
from dbmazz_connectors.sources.postgres import source as pg_source
from infra.postgres import PostgresServer
from infra.shop import create_replication_role

from ._pg import assert_folded_equals_source, capture, folded_rows, table_rows

TABLES = ["public.orders", "public.other"]


@pytest.fixture
def orders(pg_db, capture_role):
    with pg_db.connect() as conn:
        conn.execute(
            "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text); "
            "CREATE TABLE other (id int PRIMARY KEY); CREATE TABLE unpublished (id int PRIMARY KEY)"
        )
    capture_role.grant(TABLES)  # publication dbmazz_p1


def _stream_source(capture_role, pipeline: str = "p1", **options):
    source = capture_role.source(
        TABLES, pipeline=pipeline, publication="dbmazz_p1", capture_mode="stream", **options
    )
    source.setup()
    return source


def _walsender(pg_db, slot: str) -> int | None:
    with pg_db.connect() as conn:
        return conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()[0]


def _workload(pg_db, round_: int) -> None:
    low = round_ * 100_000
    with pg_db.connect() as conn:
        conn.execute(
            "INSERT INTO orders SELECT g, g %% 7, 'n' || g FROM generate_series(%s::int, %s::int) g",
            (low + 1, low + 3000),
        )
        with conn.transaction():  # several tables and statements in one transaction
            conn.execute("UPDATE orders SET qty = qty + 1 WHERE id %% 3 = 0 AND id > %s", (low,))
            conn.execute("INSERT INTO other VALUES (%s)", (round_,))
            conn.execute("DELETE FROM orders WHERE id %% 5 = 0 AND id > %s", (low,))
        conn.execute("INSERT INTO unpublished VALUES (%s)", (round_,))
        conn.execute("UPDATE orders SET id = id + 50000 WHERE id = %s", (low + 1,))  # a key update
        if round_ == 1:  # one large transaction
            conn.execute(
                "INSERT INTO orders SELECT g, 1, 'big' FROM generate_series(%s::int, %s::int) g",
                (low + 60_000, low + 89_999),
            )


def _rows(changelog: ChangeLog, batch_id: str, table: str) -> pa.Table | None:
    return table_rows(changelog, batch_id, table)


def test_consecutive_batches_equal_the_peek_modes(pg_db, capture_role, orders, tmp_path):
    """Two slots on one publication, one read by peeks and one by a stream: batch after batch, the same changes;
    a transaction held open over several batches arrives in the batch it commits in; one walsender throughout."""
    peek = capture_role.source(TABLES, pipeline="p1", capture_mode="peek")
    peek.setup()
    stream = _stream_source(capture_role, pipeline="p2")
    peek_log, stream_log = ChangeLog(str(tmp_path / "peek")), ChangeLog(str(tmp_path / "stream"))
    held = pg_db.connect(autocommit=False)
    held.execute("INSERT INTO orders VALUES (-1, 0, 'held open')")
    walsenders = set()
    try:
        for round_ in range(4):
            _workload(pg_db, round_)
            if round_ == 2:
                held.commit()
            end = peek.current_position()
            by_peek = capture_range(peek, peek_log, "p1", peek.checkpoint_position(), end)
            by_stream = capture_range(stream, stream_log, "p1", stream.checkpoint_position(), end)
            walsenders.add(_walsender(pg_db, "dbmazz_p2"))
            assert by_stream.end == by_peek.end
            assert stream.checkpoint_position() == by_stream.end, "acknowledged through the stream"
            for table in TABLES:
                assert by_stream.tables[table].ops == by_peek.tables[table].ops, (round_, table)
                got, want = (
                    _rows(stream_log, by_stream.batch_id, table),
                    _rows(peek_log, by_peek.batch_id, table),
                )
                assert (got is None and want is None) or got.equals(want), (round_, table)
            inserts = (
                3001 + (30_000 if round_ == 1 else 0) + (1 if round_ == 2 else 0)
            )  # the held row when committed
            assert by_stream.tables["public.orders"].ops["insert"] == inserts, round_
    finally:
        held.close()
        peek.disconnect()
    assert len(walsenders) == 1 and None not in walsenders, "one stream, kept open, read every batch"
    for changelog in (peek_log, stream_log):
        assert_folded_equals_source(pg_db, changelog, "public.orders")
        assert_folded_equals_source(pg_db, changelog, "public.other")
    stream.disconnect()
    assert _walsender(pg_db, "dbmazz_p2") is None, "disconnect closed the stream and released the slot"


def _events(source, start, end) -> tuple[pa.Table, Heartbeat]:
    events = list(source.read_changes(start, end))
    rows = [e.data for e in events if isinstance(e, Rows) and e.schema.qualified_name == "public.orders"]
    return pa.concat_tables(rows), events[-1]


def test_reread_after_a_failed_batch(pg_db, capture_role, orders, changelog):
    """A range read and not acknowledged (its batch failed), or abandoned half-way, reads the same again."""
    source = _stream_source(capture_role, read_block_rows=1000)
    capture(source, changelog)
    _workload(pg_db, 0)
    start, end = source.checkpoint_position(), source.current_position()
    first, heartbeat = _events(source, start, end)
    again, heartbeat_again = _events(source, start, end)  # the stream had moved past start: started again
    assert first.num_rows == 3000 + 1000 + 600 + 2 and again.equals(first) and heartbeat_again == heartbeat
    events = source.read_changes(start, end)
    assert isinstance(next(events), Rows)
    events.close()  # the batch failed half-way
    manifest = capture_range(source, changelog, "p1", start, end)
    assert manifest.end == heartbeat.position and manifest.tables["public.orders"].ops == {
        "insert": 3001,
        "update": 1000,
        "delete": 601,
    }
    assert_folded_equals_source(pg_db, changelog, "public.orders")
    _workload(pg_db, 1)  # and the stream goes on from there
    capture(source, changelog)
    assert_folded_equals_source(pg_db, changelog, "public.orders")
    assert_folded_equals_source(pg_db, changelog, "public.other")
    source.disconnect()


def test_pending_changes_and_acknowledgements_while_the_stream_holds_the_slot(
    pg_db, capture_role, orders, changelog
):
    source = _stream_source(capture_role)
    _workload(pg_db, 0)
    capture(source, changelog)
    walsender = _walsender(pg_db, "dbmazz_p1")
    with pg_db.connect() as conn:
        conn.execute(
            "INSERT INTO unpublished SELECT generate_series(100, 5000)"
        )  # WAL moves, nothing published
    start, end = source.checkpoint_position(), source.current_position()
    assert not source.pending_changes(start, end)
    source.checkpoint(end)  # as the sensor acknowledges an idle pipeline
    assert source.checkpoint_position() == end and _walsender(pg_db, "dbmazz_p1") == walsender
    with pg_db.connect() as conn:
        conn.execute("INSERT INTO orders VALUES (-5, 1, 'x')")
    assert source.pending_changes(end, source.current_position())
    manifest = capture(source, changelog)
    assert manifest.tables["public.orders"].ops["insert"] == 1 and _walsender(pg_db, "dbmazz_p1") == walsender
    assert_folded_equals_source(pg_db, changelog, "public.orders")
    source.disconnect()


def test_connection_lost_mid_stream_is_transient_then_the_next_run_converges(
    pg_db, capture_role, orders, changelog
):
    source = _stream_source(capture_role, read_block_rows=1000)
    capture(source, changelog)
    with pg_db.connect() as conn:
        conn.execute("INSERT INTO orders SELECT g, 1, repeat('x', 200) FROM generate_series(1, 200000) g")
    start, end = source.checkpoint_position(), source.current_position()
    events = source.read_changes(start, end)
    assert isinstance(next(events), Rows)
    with pg_db.connect() as conn:  # the server ends the walsender (as a restart or an administrator would)
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'dbmazz_p1'"
        )
    with pytest.raises(TransientError, match="postgres connection failed while capturing"):
        for _event in events:
            pass
    assert source.checkpoint_position() == start
    manifest = capture(source, changelog)  # the next run starts a new stream
    assert manifest.tables["public.orders"].ops == {"insert": 200_000, "update": 0, "delete": 0}
    assert_folded_equals_source(pg_db, changelog, "public.orders")
    source.disconnect()


def test_a_slot_held_by_another_stream_is_a_transient_error_that_says_so(
    pg_db, capture_role, orders, monkeypatch
):
    first = _stream_source(capture_role)
    second = _stream_source(capture_role)
    start, end = first.checkpoint_position(), first.current_position()
    list(first.read_changes(start, end))
    monkeypatch.setattr(pg_source, "SLOT_WAIT_SECONDS", 0.5)
    with pytest.raises(TransientError, match="is active for PID") as raised:
        list(second.read_changes(start, end))
    assert "another capture of this pipeline holds the slot" in raised.value.hint
    assert capture_role.password not in str(raised.value)
    first.disconnect()
    assert list(second.read_changes(start, end))[-1].position >= end  # released: the slot is free for it
    second.disconnect()


def test_server_shutdown_while_streaming(tmp_path):
    """An idle stream does not hold up a fast shutdown; a server crash mid-read is a TransientError; after each,
    a new source (a re-run) converges. Its own server: this one is stopped, and killed."""
    with PostgresServer() as server:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE orders (id int PRIMARY KEY, qty int, note text); CREATE TABLE noise (id int)"
            )
        password = secrets.token_hex(8)
        create_replication_role(server.url(), "dbmazz_cap", password, "dbmazz_p1", ["public.orders"])
        config = {
            "url": server.url(user="dbmazz_cap", password=password),
            "pipeline": "p1",
            "tables": ["public.orders"],
            "capture_mode": "stream",
            "read_block_rows": 1000,
        }
        changelog = ChangeLog(str(tmp_path / "log"))

        def source() -> PostgresSource:
            made = PostgresSource.from_config(config)
            made.connect()
            made.setup()
            return made

        def insert(low: int, high: int) -> None:
            with psycopg.connect(server.url(), autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO orders SELECT g, 1, repeat('x', 100) FROM generate_series(%s::int, %s::int) g",
                    (low, high),
                )

        first = source()
        insert(1, 1000)
        last = capture(first, changelog)
        with psycopg.connect(
            server.url(), autocommit=True
        ) as conn:  # WAL the walsender decodes past the last ack
            conn.execute("INSERT INTO noise SELECT generate_series(1, 1000)")
        time.sleep(1)
        began = time.monotonic()
        server.stop_fast()  # the stream is open and idle: a walsender exits once the client reports what it sent
        assert time.monotonic() - began < 15, "the walsender of an idle stream let the server stop"
        server.start_again()
        first.disconnect()

        second = source()
        insert(1001, 200_000)
        start, end = second.checkpoint_position(), second.current_position()
        events = second.read_changes(start, end)
        assert isinstance(next(events), Rows)
        server.kill()
        with pytest.raises(TransientError, match="postgres"):
            for _event in events:
                pass
        server.start_again()
        second.disconnect()

        third = source()
        third.checkpoint(
            last.end
        )  # as the pipeline does: the slot may have lost an acknowledgement in the crash
        capture(third, changelog)
        with psycopg.connect(server.url(), autocommit=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM orders ORDER BY id")]
        assert [r["id"] for r in folded_rows(changelog, "public.orders")] == ids == list(range(1, 200_001))
        third.disconnect()
