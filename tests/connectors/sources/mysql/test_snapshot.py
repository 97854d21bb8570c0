"""MySQL/MariaDB snapshots: the same values as CDC, chunks read under a concurrent writer converge with CDC row by row,
key ranges, composite and string keys (in a hyphenated database), and how a dropped or renamed table is handled."""

from __future__ import annotations

import random
import threading
import time

import pyarrow as pa
import pytest

from dbmazz_connectors.core.batch import Rows
from dbmazz_connectors.core.errors import ConfigError, MissingPrimaryKeyError, TransientError
from dbmazz_connectors.core.schema import META_FIELDS
from dbmazz_connectors.core.snapshot import FULL_RANGE, KeyRange, SnapshotChunk
from dbmazz_connectors.snapshots import SnapshotSettings, capture_snapshot_batch, plan_snapshot, run_snapshot

from ._my import assert_folded_equals_source, capture, source_rows
from .test_types import COLUMNS, ROWS, _expected


def _run(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def _data(rows: list[Rows], key: str = "id") -> pa.Table:
    table = pa.concat_tables([r.data for r in rows])
    return table.drop_columns([f.name for f in META_FIELDS]).sort_by(key)


def _snapshot(source, table: str, chunk_rows: int, parallelism: int = 2, key_range: KeyRange = FULL_RANGE):
    ranges = source.plan_chunks(table, chunk_rows, key_range)
    chunks = [SnapshotChunk(table, i, r) for i, r in enumerate(ranges)]
    return ranges, list(source.read_snapshot(chunks, parallelism))


def test_snapshot_values_equal_cdc_values_type_by_type(mysql_db, make_source):
    conn = mysql_db.connect()
    _run(conn, "SET SESSION sql_mode = ''", f"CREATE TABLE types ({COLUMNS})")
    source = make_source(["types"], read_block_rows=2)
    start = source.current_position()
    _run(
        conn,
        "SET SESSION sql_mode = ''",
        "INSERT INTO types VALUES " + ", ".join(ROWS),
        "INSERT INTO types (id) VALUES (5), (6)",
    )
    cdc = [e for e in source.read_changes(start, source.current_position()) if isinstance(e, Rows)]
    ranges, snap = _snapshot(source, f"{mysql_db.name}.types", chunk_rows=2)

    assert len(ranges) == 3 and ranges[0].lower is None and ranges[-1].upper is None
    assert {r.data.column("_dbmazz_op").to_pylist()[0] for r in snap} == {0}
    assert snap[0].data.schema == source.table_schemas()[f"{mysql_db.name}.types"].arrow_schema()
    expected, actual = _data(cdc), _data(snap)
    assert actual.num_rows == 6
    for name in expected.column_names:
        assert actual.column(name).equals(expected.column(name)), f"column {name}: {actual.column(name)}"
    kinds = {c.name: c.type.kind for c in snap[0].schema.columns}
    for want, got in zip(source_rows(mysql_db, "types"), actual.to_pylist(), strict=True):
        for name, value in want.items():
            assert _normal(got[name]) == _expected(name, value, kinds[name]), (
                f"row {want['id']} column {name}"
            )


def test_zero_dates_in_not_null_columns_equal_cdc(mysql_db, make_source):
    conn = mysql_db.connect()
    _run(
        conn,
        "SET SESSION sql_mode = ''",
        "CREATE TABLE z (id INT PRIMARY KEY, d DATE NOT NULL, t DATETIME(3) NOT NULL,"
        " s TIMESTAMP(6) NOT NULL DEFAULT 0, tm TIME(1) NOT NULL, e ENUM('a', 'b') NOT NULL)",
    )
    source = make_source(["z"])
    start = source.current_position()
    _run(
        conn,
        "SET SESSION sql_mode = ''",
        "INSERT INTO z VALUES (1, '0000-00-00', '0000-00-00 00:00:00', 0,"
        " '-00:00:00.5', 'x'), (2, '2024-00-15', '2024-02-00 10:00:00.5', '2038-01-19 03:14:07.999999', '100:00:00',"
        " 'b')",
    )
    cdc = [e for e in source.read_changes(start, source.current_position()) if isinstance(e, Rows)]
    _, snap = _snapshot(source, f"{mysql_db.name}.z", 1)
    assert _data(snap).equals(_data(cdc)), f"{_data(snap).to_pylist()} != {_data(cdc).to_pylist()}"


def _normal(value):
    from ._my import normal

    return normal(value)


DDL = [
    "CREATE TABLE items (id BIGINT PRIMARY KEY, n INT NOT NULL, label VARCHAR(40), at DATETIME(6), price DECIMAL(10,2))",
    "CREATE TABLE pairs (a VARCHAR(20), b INT, v DECIMAL(10,2), PRIMARY KEY (a, b))",
    "INSERT INTO items SELECT seq, seq, CONCAT('item ', seq), TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq MINUTE,"
    " seq / 7 FROM seq_1_to_400",
    "INSERT INTO pairs SELECT CONCAT('k', seq % 37), seq, seq / 3 FROM seq_1_to_200",
]
MAX_KEY = 480


def _writer(conn, seed: int, stop: threading.Event, done: list[int]) -> None:
    """Random multi-statement transactions over the same keys: inserts, updates, deletes, primary-key updates."""
    rng = random.Random(seed)
    with conn.cursor() as cur:
        while not stop.is_set():
            cur.execute("BEGIN")
            for _ in range(rng.randint(1, 4)):
                k, op = rng.randint(1, MAX_KEY), rng.random()
                if op < 0.3:
                    cur.execute(
                        "INSERT INTO items VALUES (%s, %s, 'new', NOW(6), 1.5) "
                        "ON DUPLICATE KEY UPDATE n = n + 1",
                        (k, k),
                    )
                elif op < 0.6:
                    cur.execute("UPDATE items SET n = n + 1, label = CONCAT(label, 'u') WHERE id = %s", (k,))
                elif op < 0.8:
                    cur.execute("DELETE FROM items WHERE id = %s", (k,))
                elif op < 0.9:
                    cur.execute("UPDATE IGNORE items SET id = %s WHERE id = %s", (k + 5000, k))
                else:
                    cur.execute("UPDATE pairs SET v = v + 1 WHERE a = %s", (f"k{k % 37}",))
                    cur.execute("DELETE FROM pairs WHERE a = %s AND b = %s", (f"k{k % 37}", k))
            cur.execute("COMMIT")
            done[0] += 1
            time.sleep(0.004)


def _lock_tables_source(mysql_db, make_source, tables: list[str]):
    """The method MySQL needs (no binlog_snapshot_* there), run on MariaDB: LOCK TABLES granted on the database."""
    source = make_source(tables, read_block_rows=37, snapshot_method="lock_tables")
    _run(mysql_db.connect(), f"GRANT LOCK TABLES ON `{mysql_db.name}`.* TO '{source.config.user}'@'%'")
    return source


@pytest.mark.parametrize(
    "method, seed", [("binlog_snapshot", s) for s in range(20)] + [("lock_tables", s) for s in range(4)]
)
def test_snapshot_under_concurrent_writer_converges(mysql_db, make_source, changelog, method, seed):
    conn = mysql_db.connect()
    _run(conn, *DDL)
    tables = [f"{mysql_db.name}.items", f"{mysql_db.name}.pairs"]
    if method == "lock_tables":
        source = _lock_tables_source(mysql_db, make_source, tables)
    else:
        source = make_source(tables, read_block_rows=37)
    start = source.current_position()  # the pipeline's capture starts here, before the snapshot's floor
    stop, done = threading.Event(), [0]
    writer = threading.Thread(target=_writer, args=(mysql_db.connect(), seed, stop, done))
    writer.start()
    try:
        settings = SnapshotSettings(chunk_rows=60, chunks_per_batch=4, parallelism=2)
        plan = plan_snapshot(source, changelog, "p1", tables, settings, reason="initial load")
        middle = capture(source, changelog, start)  # CDC interleaves with the chunks
        manifests = run_snapshot(source, changelog, plan, settings)
    finally:
        stop.set()
        writer.join()
    capture(source, changelog, middle.end)
    assert done[0] > 5, "the writer should have committed transactions during the snapshot"
    assert sum(m.rows for m in manifests) > 450
    assert manifests[-1].batch_id.endswith("-sweep")
    assert_folded_equals_source(mysql_db, changelog, "items")
    assert_folded_equals_source(mysql_db, changelog, "pairs", key="a, b")


def test_snapshot_of_a_key_range_reads_only_that_range(mysql_db, make_source, changelog):
    conn = mysql_db.connect()
    _run(conn, *DDL, "INSERT INTO items VALUES (9007199254740993, 1, 'big', NULL, NULL)")
    source = make_source([f"{mysql_db.name}.items"])
    settings = SnapshotSettings(chunk_rows=50, chunks_per_batch=50, parallelism=2)
    plan = plan_snapshot(
        source, changelog, "p1", [f"{mysql_db.name}.items"], settings, key_range=KeyRange((100,), (350,))
    )
    assert not plan.sweep and len(plan.batches) == 1 and len(plan.batches[0]) == 5
    assert [c.key_range.lower for c in plan.batches[0]] == [(100,), (150,), (200,), (250,), (300,)]
    manifest = capture_snapshot_batch(source, changelog, "p1", plan.batch_ids()[0], settings)
    assert manifest.tables[f"{mysql_db.name}.items"].ops["insert"] == 250
    assert manifest.is_snapshot and changelog.checkpoint("p1") is None
    # a BIGINT beyond 2^53 is an exact bound: compared as an integer, never through a double
    _, rows = _snapshot(source, f"{mysql_db.name}.items", 1000, key_range=KeyRange((9007199254740993,), None))
    assert _data(rows).column("id").to_pylist() == [9007199254740993]


@pytest.fixture
def hyphenated_db(mysql_db):
    """A second database whose name needs quoting, readable by the least-privilege user of ``make_source``."""
    name = f"{mysql_db.name}-x"
    conn = mysql_db.connect()
    _run(conn, f"CREATE DATABASE `{name}`")
    yield name
    _run(conn, f"DROP DATABASE `{name}`")


def test_composite_and_string_keys_are_chunked_exactly(mysql_db, make_source, hyphenated_db):
    conn = mysql_db.connect()
    db = hyphenated_db
    _run(
        conn,
        f"CREATE TABLE `{db}`.`odd``name` (region VARCHAR(20) COLLATE utf8mb4_unicode_ci, day DATE,"
        " code VARBINARY(8), `the value` DECIMAL(30,10), PRIMARY KEY (region, day, code))",
        f"INSERT INTO `{db}`.`odd``name` SELECT ELT(1 + seq % 5, 'Nord', 'süd', 'Ost', 'west', 'Zürich ''q'''),"
        " DATE'2024-01-01' + INTERVAL (seq % 40) DAY, UNHEX(LPAD(HEX(seq), 4, '0')), seq / 7 FROM seq_1_to_1000",
    )
    table = f"{db}.odd`name"
    source = make_source([table], read_block_rows=50)
    _run(conn, f"GRANT SELECT ON `{db}`.* TO '{source.config.user}'@'%'")
    ranges, rows = _snapshot(source, table, chunk_rows=77, parallelism=3)
    assert len(ranges) == 13 and all(isinstance(r.lower[2], str) for r in ranges[1:])
    data = _data(rows, "region")
    keys = list(zip(*(data.column(k).to_pylist() for k in ("region", "day", "code")), strict=True))
    assert len(keys) == len(set(keys)) == 1000, "every row read exactly once"
    middle = source.plan_chunks(table, 1000, KeyRange(ranges[3].lower, ranges[6].lower))
    _, some = _snapshot(source, table, 1000, key_range=middle[0])
    assert sum(r.data.num_rows for r in some) == 3 * 77


def test_a_key_without_exact_bounds_is_read_as_one_chunk(mysql_db, make_source):
    conn = mysql_db.connect()
    _run(
        conn,
        "CREATE TABLE f (x DOUBLE, e ENUM('b', 'a'), PRIMARY KEY (x, e))",
        "INSERT INTO f SELECT seq / 3, ELT(1 + seq % 2, 'a', 'b') FROM seq_1_to_50",
    )
    source = make_source(["f"])
    ranges, rows = _snapshot(source, f"{mysql_db.name}.f", chunk_rows=10)
    assert ranges == [FULL_RANGE] and sum(r.data.num_rows for r in rows) == 50
    with pytest.raises(ConfigError, match="snapshot the whole table"):
        source.plan_chunks(f"{mysql_db.name}.f", 10, KeyRange((1.0, "a"), None))


def test_rows_over_16_mib_and_blocks_bounded_by_bytes(mysql_db, make_source):
    conn = mysql_db.connect()
    _run(
        conn,
        "CREATE TABLE docs (id INT PRIMARY KEY, body LONGTEXT, raw LONGBLOB)",
        "INSERT INTO docs SELECT seq, REPEAT(CHAR(65 + seq % 26), 1000 * seq), NULL FROM seq_1_to_40",
        "INSERT INTO docs VALUES (41, REPEAT('x', 17 * 1024 * 1024), REPEAT(x'ff', 16 * 1024 * 1024 - 30)),"
        " (42, 'after', x'00')",
    )
    source = make_source(["docs"], read_block_rows=1000, read_block_bytes=64 * 1024)
    _, rows = _snapshot(source, f"{mysql_db.name}.docs", 1000, parallelism=1)
    assert len(rows) >= 10, "blocks are cut by bytes, not only by rows"
    data = _data(rows)
    with conn.cursor() as cur:
        cur.execute("SELECT id, body, raw FROM docs ORDER BY id")
        expected = cur.fetchall()
    assert data.num_rows == 42
    for (key, body, raw), got in zip(expected, data.to_pylist(), strict=True):
        assert (got["id"], got["body"], got["raw"]) == (key, body, raw), f"row {key}"


def test_lock_tables_without_the_privilege_says_which_grant(mysql_db, make_source):
    conn = mysql_db.connect()
    _run(conn, *DDL)
    source = make_source(["items"], snapshot_method="lock_tables")
    grant = f"GRANT LOCK TABLES ON `{mysql_db.name}`.* TO '{source.config.user}'@'%'"
    assert [p.fix for p in source.preflight()] == [grant]
    with pytest.raises(ConfigError, match="LOCK TABLES") as caught:
        _snapshot(source, f"{mysql_db.name}.items", 1000)
    assert caught.value.hint == grant


def test_a_connection_killed_mid_read_is_a_transient_error_without_the_password(mysql_db, make_source):
    conn = mysql_db.connect()
    _run(
        conn,
        "CREATE TABLE wide (id INT PRIMARY KEY, body TEXT)",
        "INSERT INTO wide SELECT seq, REPEAT('w', 10000) FROM seq_1_to_3000",
    )  # 30 MB: more than socket buffers
    source = make_source(["wide"], read_block_rows=10)
    rows = source.read_snapshot([SnapshotChunk(f"{mysql_db.name}.wide", 0, FULL_RANGE)], 1)
    next(rows)  # the worker waits for the consumer, the server for the worker: the query is still running
    with conn.cursor() as cur:
        cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND COMMAND = 'Query'"
            " AND INFO LIKE 'SELECT%%'",
            (source.config.user,),
        )
        for (thread_id,) in cur.fetchall():
            cur.execute(f"KILL {int(thread_id)}")
    with pytest.raises(TransientError) as caught:
        for _ in rows:
            pass
    assert source.config.password not in str(caught.value) and caught.value.transient


def test_a_table_altered_between_its_layout_and_its_read_is_refused_not_misread(mysql_db, make_source):
    from dbmazz_connectors.sources.mysql.snapshot import SnapshotReader

    conn = mysql_db.connect()
    _run(conn, *DDL)
    source = make_source(["items"])
    table = f"{mysql_db.name}.items"
    layouts = source._snapshot_tables([table])  # what a read learns before its transaction starts
    _run(conn, "ALTER TABLE items MODIFY at DATETIME(3)")  # same name, other digits: would decode wrong
    reader = SnapshotReader(source._open_text, layouts, source.config, source.mariadb)
    with pytest.raises(TransientError, match="altered since its layout was read"):
        list(reader.read([SnapshotChunk(table, 0, FULL_RANGE)], 1))


def test_table_without_primary_key_is_refused(mysql_db, make_source):
    conn = mysql_db.connect()
    _run(conn, "CREATE TABLE nokey (a INT)")
    source = make_source(["nokey"])
    with pytest.raises(MissingPrimaryKeyError, match="nokey"):
        source.plan_chunks(f"{mysql_db.name}.nokey", 10)
