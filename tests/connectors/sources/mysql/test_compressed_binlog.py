"""MariaDB's compressed binlog (``log_bin_compress=ON``): compressed row and statement events are decoded, never
skipped, and an event type the reader does not know stops the capture before it instead of being passed over.

Skipping compressed row events while the position advances is a known silent-loss bug of binlog readers: the
folded change log must equal the source row by row.
"""

from __future__ import annotations

import collections
import zlib
from collections.abc import Iterator

import pymysql
import pytest

from dbmazz_connectors.sources.mysql import MySqlSource
from dbmazz_connectors.sources.mysql._reader import UnknownEventError
from dbmazz_connectors.sources.mysql.position import BinlogPosition
from infra.mariadb import MariaDbServer
from tests.fixtures.servers import MySqlDatabase

from ._my import assert_folded_equals_source, capture, folded_rows
from .conftest import create_replication_user

# every event of 10 bytes or more is compressed (the default threshold, 256, would leave small rows plain)
COMPRESSED = {"log-bin-compress": "ON", "log-bin-compress-min-len": "10", "binlog-row-metadata": "FULL"}


@pytest.fixture(scope="module")
def compressed_server() -> Iterator[MariaDbServer]:
    with MariaDbServer(options=COMPRESSED) as server:
        yield server


@pytest.fixture
def shop(compressed_server) -> Iterator[tuple[MySqlDatabase, pymysql.Connection, MySqlSource]]:
    db = MySqlDatabase(compressed_server, "shop")
    admin = pymysql.connect(**compressed_server.connect_kwargs())
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS shop")
        cur.execute("CREATE DATABASE shop")
        cur.execute("USE shop")  # seq_1_to_N (the SEQUENCE engine) needs a current database
        cur.execute(
            "CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT NOT NULL, amount DECIMAL(12,2),"
            " note MEDIUMTEXT, payload BLOB, doc JSON, created DATETIME(6), status VARCHAR(16))"
        )
        cur.execute("CREATE TABLE shop.tiny (id TINYINT PRIMARY KEY, v CHAR(1))")  # rows under the threshold
    user, password = create_replication_user(admin, "shop")
    source = MySqlSource.from_config(
        {
            "url": compressed_server.url("shop", user, password),
            "pipeline": "p1",
            "tables": ["shop.orders", "shop.tiny"],
            "chunk_rows": 300,
        }
    )
    source.connect()
    yield db, admin, source
    source.disconnect()
    admin.close()


def _run(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _event_types(conn, start: BinlogPosition) -> collections.Counter:
    """The server's own names of the events written since ``start`` (SHOW BINLOG EVENTS)."""
    counts: collections.Counter = collections.Counter()
    with conn.cursor() as cur:
        cur.execute("SHOW BINARY LOGS")
        files = [row[0] for row in cur.fetchall()]
        for name in files[files.index(start.file) :]:
            cur.execute(
                f"SHOW BINLOG EVENTS IN '{name}'" + (f" FROM {start.offset}" if name == start.file else "")
            )
            counts.update(row[2] for row in cur.fetchall())
    return counts


WORKLOAD = [
    # wide rows (text, blob, JSON) well over any threshold, and narrow ones
    "INSERT INTO shop.orders SELECT seq, seq % 97, seq / 100, REPEAT(CONCAT('note ', seq, ' '), 1 + seq % 40),"
    " UNHEX(REPEAT(HEX(seq), 1 + seq % 30)), JSON_OBJECT('seq', seq, 'tags', JSON_ARRAY('a', seq % 5)),"
    " TIMESTAMP'2024-01-01 00:00:00.123456' + INTERVAL seq SECOND, IF(seq % 3 = 0, 'new', NULL) FROM seq_1_to_1000",
    "INSERT INTO shop.tiny VALUES (1, 'a'), (2, 'b'), (3, NULL)",
    "BEGIN",
    "UPDATE shop.orders SET note = REPEAT('updated ', 50), status = 'paid' WHERE id % 7 = 0",
    "DELETE FROM shop.orders WHERE id % 11 = 0",
    "UPDATE shop.tiny SET v = 'z' WHERE id = 2",
    "COMMIT",
    "UPDATE shop.orders SET id = 5000 WHERE id = 5",  # primary-key update
    "DELETE FROM shop.tiny WHERE id = 1",
    # a statement logged compressed (QUERY_COMPRESSED_EVENT) that the capture must follow in order with the rows
    "ALTER TABLE shop.orders ADD COLUMN priority INT NULL",
    "UPDATE shop.orders SET priority = id % 4 WHERE id <= 500",
    "INSERT INTO shop.orders (id, customer, note) VALUES (20001, 1, REPEAT('x', 70000))",  # a 70 kB row
]


def test_compressed_events_fold_to_the_source(shop, changelog):
    db, admin, source = shop
    # dbmazz check says ok for a compressed binlog (it is decoded), and what follows proves it
    assert [p.check for p in source.preflight()] == []
    start = source.current_position()
    _run(admin, *WORKLOAD)
    # one range for all of it, and the same changes again in three ranges cut mid-workload
    capture(source, changelog, start)
    for table, key in (("orders", "id"), ("tiny", "id")):
        assert_folded_equals_source(db, changelog, table, key)
    types = _event_types(admin, start)
    compressed = {name: n for name, n in types.items() if "compressed" in name.lower()}
    assert {
        "Write_rows_compressed_v1",
        "Update_rows_compressed_v1",
        "Delete_rows_compressed_v1",
        "Query_compressed",
    } <= set(compressed), f"the server did not compress the workload's events: {types}"


def test_compressed_events_in_several_ranges_and_a_transaction_larger_than_a_chunk(shop, tmp_path):
    """Ranges cut between transactions, and a 1000-row transaction over chunk_rows=300 (its commit is looked up
    ahead through compressed events)."""
    from dbmazz_connectors.changelog import ChangeLog

    db, admin, source = shop
    changelog = ChangeLog(str(tmp_path / "changelog"))
    marks = [source.current_position()]
    for statement in WORKLOAD:
        _run(admin, statement)
        if statement in ("COMMIT", "ALTER TABLE shop.orders ADD COLUMN priority INT NULL"):
            marks.append(source.current_position())
    marks.append(source.current_position())
    for lo, hi in zip(marks, marks[1:], strict=False):
        capture(source, changelog, lo, hi)
    assert_folded_equals_source(db, changelog, "orders")
    assert_folded_equals_source(db, changelog, "tiny")
    assert len(folded_rows(changelog, "shop.orders")) == 1000 - 90 + 1


def _patch_event_type(server: MariaDbServer, file: str, offset: int, new_type: int) -> None:
    """Rewrite the type of the event at ``offset`` of a binlog file in place, with a valid CRC32 trailer: what a
    newer server's unknown event looks like to the reader."""
    path = f"{server.base}/data/{file}"
    with open(path, "r+b") as fh:
        fh.seek(offset)
        header = fh.read(19)
        size = int.from_bytes(header[9:13], "little")
        fh.seek(offset)
        event = bytearray(fh.read(size))
        event[4] = new_type
        event[-4:] = zlib.crc32(bytes(event[:-4])).to_bytes(4, "little")
        fh.seek(offset)
        fh.write(event)


def test_an_unknown_row_event_stops_the_capture_before_it(shop, changelog):
    db, admin, source = shop
    start = source.current_position()
    _run(admin, "INSERT INTO shop.tiny VALUES (10, 'a')")
    before = source.current_position()
    _run(admin, "INSERT INTO shop.tiny VALUES (11, 'b')")
    after = source.current_position()
    with admin.cursor() as cur:
        cur.execute(f"SHOW BINLOG EVENTS IN '{before.file}' FROM {before.offset}")
        rows_event = next(row for row in cur.fetchall() if "rows" in row[2].lower())
    _patch_event_type(db.server, before.file, rows_event[1], 172)  # no event type 172 in this server
    capture(source, changelog, start, before)  # the range before it reads
    assert [r["id"] for r in folded_rows(changelog, "shop.tiny")] == [10]
    with pytest.raises(UnknownEventError) as caught:
        capture(source, changelog, before, after)
    message = str(caught.value)
    assert "type 172" in message and f"{before.file}:" in message and "rather than skip it" in message
    assert caught.value.hint and "re-snapshot" in caught.value.hint
    assert [r["id"] for r in folded_rows(changelog, "shop.tiny")] == [10], (
        "nothing of the failed range committed"
    )
