"""The native (C, no GIL) and the Python COPY receivers read the same range into the same batch.

Small blocks make a range span many of them, and a 3 MB value is larger than a whole block, so the
"row does not fit, carry it into a bigger next block" path runs on both receivers.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.engine import capture_range
from dbmazz_connectors.sources.postgres import _reader

from ._pg import assert_folded_equals_source

DDL = """
CREATE TABLE items (id bigint PRIMARY KEY, qty int, label text, big text);
ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
"""

SMALL_BLOCKS = {"read_block_rows": 1000, "read_block_bytes": 1024 * 1024}


@pytest.fixture
def items_source(pg_db, capture_role):
    """A source for public.items with 1000-message, 1 MiB blocks, its slot set up (peek mode: the COPY receivers
    read peeks; the stream mode's receiver is tested in test_stream.py)."""
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant(["public.items"])
    source = capture_role.source(["public.items"], capture_mode="peek", **SMALL_BLOCKS)
    source.setup()
    yield source
    source.disconnect()


def _read(source, tmp_path, name: str, start, end) -> tuple[pa.Table, object]:
    log = ChangeLog(str(tmp_path / name))
    source.checkpoint = lambda position: None  # leave the slot where it is: both receivers read the range
    manifest = capture_range(source, log, "p1", start, end)
    data = pa.concat_tables(e.data for e in log.read_batch("p1", manifest.batch_id, "public.items").events)
    return data, manifest


def test_native_and_python_receivers_give_the_same_batch(pg_db, items_source, tmp_path, monkeypatch):
    source = items_source
    start = source.checkpoint_position()
    with pg_db.connect() as conn:
        conn.execute(
            "INSERT INTO items SELECT g, g % 13, 'label ' || g, NULL FROM generate_series(1, 20000) g"
        )
        conn.execute("UPDATE items SET qty = qty + 1 WHERE id % 3 = 0")
        conn.execute("DELETE FROM items WHERE id % 7 = 0")
        # one row larger than a whole block (1 MiB): random hex does not compress
        conn.execute(
            "INSERT INTO items SELECT 0, 0, 'big', string_agg(md5(random()::text || g), '') "
            "FROM generate_series(1, 100000) g"
        )
    end = source.current_position()

    if _reader._copyrecv is None:
        pytest.skip("the _copyrecv extension is not built (no C compiler at install)")
    assert _reader.receiver_for(source._stream_conn().pgconn) == "native"
    native, native_manifest = _read(source, tmp_path, "native", start, end)

    monkeypatch.setenv("DBMAZZ_PG_RECEIVER", "python")
    assert _reader.receiver_for(source._stream_conn().pgconn) == "python"
    python, python_manifest = _read(source, tmp_path, "python", start, end)

    assert native_manifest.end == python_manifest.end
    assert native_manifest.tables["public.items"].ops == {"insert": 20001, "update": 6666, "delete": 2857}
    assert native.num_rows == python.num_rows == 20001 + 6666 + 2857
    assert native.equals(python)
    big = native.filter(pc.equal(native["id"], 0))
    assert len(big["big"][0].as_py()) == 3_200_000
    del source.checkpoint  # the real one again
    source.checkpoint(native_manifest.end)
    assert (
        assert_folded_equals_source(pg_db, ChangeLog(str(tmp_path / "native")), "public.items")
        == 20001 - 2857
    )


def test_no_libpq_of_the_connection_means_the_python_receiver(capture_role, monkeypatch):
    """If no loaded library answers for the connection exactly as psycopg does, the C loop is not used."""
    source = capture_role.source(["public.items"])
    monkeypatch.setattr(_reader, "_libpq_candidates", lambda: ())
    assert _reader.receiver_for(source._stream_conn().pgconn) == "python"
    source.disconnect()


@pytest.mark.parametrize("receiver", ["native", "python"])
def test_connection_killed_mid_copy_is_transient_and_stages_nothing(
    pg_db, items_source, tmp_path, monkeypatch, receiver
):
    """The server ends the session while the range streams: a TransientError, no batch, the slot unmoved;
    the re-run reads the whole range."""
    from dbmazz_connectors.core.errors import TransientError
    from dbmazz_connectors.sources.postgres import decoder

    if receiver == "native" and _reader._copyrecv is None:
        pytest.skip("the _copyrecv extension is not built")
    if receiver == "python":
        monkeypatch.setenv("DBMAZZ_PG_RECEIVER", "python")
    source = items_source
    start = source.checkpoint_position()
    with pg_db.connect() as conn:  # ~40 MB of messages: far more than the socket and queue buffers hold
        conn.execute(
            "INSERT INTO items SELECT g, g % 13, repeat('x', 100) || g, NULL FROM generate_series(1, 300000) g"
        )
    end = source.current_position()
    assert _reader.receiver_for(source._stream_conn().pgconn) == receiver

    feed, killed = decoder.PgOutputDecoder.feed, []

    def feed_then_kill(self, buf, lengths):
        if not killed:
            killed.append(source._stream_conn().pgconn.backend_pid)
            with pg_db.connect() as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (killed[0],))
        yield from feed(self, buf, lengths)

    monkeypatch.setattr(decoder.PgOutputDecoder, "feed", feed_then_kill)
    log = ChangeLog(str(tmp_path / "log"))
    with pytest.raises(TransientError, match="connection failed while capturing"):
        capture_range(source, log, "p1", start, end)
    assert killed and log.batches("p1") == []
    assert source.checkpoint_position() == start

    monkeypatch.setattr(decoder.PgOutputDecoder, "feed", feed)
    manifest = capture_range(source, log, "p1", start, end)  # a new session reads the range again
    assert manifest.tables["public.items"].ops == {"insert": 300000, "update": 0, "delete": 0}
    assert source.checkpoint_position() == manifest.end
