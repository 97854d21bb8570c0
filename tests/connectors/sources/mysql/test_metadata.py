"""binlog_row_metadata=MINIMAL: names come from information_schema by position; a layout that no longer
matches (a later ALTER) stops capture instead of misnaming columns."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core.errors import SchemaChangeError

from ._my import assert_folded_equals_source, capture


@pytest.fixture
def minimal_metadata(mysql_db, full_row_metadata):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    yield conn
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL binlog_row_metadata = 'FULL'")


def test_minimal_metadata(mysql_db, make_source, changelog, minimal_metadata):
    conn = minimal_metadata
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, e ENUM('p', 'q'), v VARCHAR(10))")
    source = make_source(["t"])
    assert [p.check for p in source.preflight()] == ["binlog_row_metadata"]
    start = source.current_position()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (1, 'q', 'a'), (2, 'p', NULL)")
        cur.execute("UPDATE t SET v = 'b' WHERE id = 1")
    middle = source.current_position()
    capture(source, changelog, start, middle)
    assert_folded_equals_source(mysql_db, changelog, "t")

    with conn.cursor() as cur:
        cur.execute("ALTER TABLE t DROP COLUMN e")
    with pytest.raises(SchemaChangeError, match="binlog_row_metadata = 'FULL'"):
        list(source.read_changes(start, middle))
