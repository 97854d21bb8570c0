"""MariaDB binlog positions carry the GTID state: at the binlog end, and at every batch end the reader reaches."""

from __future__ import annotations

from dbmazz_connectors.core import position_from_dict
from dbmazz_connectors.engine import capture_range
from dbmazz_connectors.sources.mysql.position import BinlogPosition


def _gtid_binlog_pos(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT @@global.gtid_binlog_pos")
        return cur.fetchone()[0]


def test_batch_ends_carry_the_servers_gtid_position_through_the_change_log(mysql_db, make_source, changelog):
    admin = mysql_db.connect()
    with admin.cursor() as cur:
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20))")
    source = make_source(["items"])
    start = source.current_position()
    assert isinstance(start, BinlogPosition) and start.gtid_set == _gtid_binlog_pos(admin)
    with admin.cursor() as cur:
        for k in range(3):  # three transactions, three GTIDs
            cur.execute("INSERT INTO items VALUES (%s, %s)", (k, f"item {k}"))
    expected = _gtid_binlog_pos(admin)
    end = source.current_position()
    assert end.gtid_set == expected and end > start
    manifest = capture_range(source, changelog, "p", start, end)
    assert manifest.rows == 3
    reached = changelog.manifest("p", manifest.batch_id).end  # read back from the manifest's JSON
    assert isinstance(reached, BinlogPosition)
    assert (reached.file, reached.offset, reached.gtid_set) == (end.file, end.offset, expected)
    assert position_from_dict(reached.to_dict()) == reached and f"[{expected}]" in str(reached)
    admin.close()
