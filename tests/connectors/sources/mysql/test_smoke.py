"""Quick end-to-end: a few changes captured and decoded."""

from dbmazz_connectors.core.batch import Heartbeat, Rows


def test_smoke(mysql_db, make_source):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR(20), amount DECIMAL(12,2), n INT NULL)")
    source = make_source(["t"])
    start = source.current_position()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (1, 'a', 1.50, NULL), (2, 'bé', -2.25, 7)")
        cur.execute("UPDATE t SET name = 'x' WHERE id = 1")
        cur.execute("UPDATE t SET id = 3 WHERE id = 2")
        cur.execute("DELETE FROM t WHERE id = 1")
    end = source.current_position()
    events = list(source.read_changes(start, end))
    print(events)
    for e in events:
        if isinstance(e, Rows):
            print(e.data.to_pandas())
    assert isinstance(events[-1], Heartbeat)
    assert events[-1].position == end or events[-1].position.version == end.version
