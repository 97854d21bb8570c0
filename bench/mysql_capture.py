"""Binlog capture throughput: this source's column-wise decoder vs a plain python-mysql-replication loop.

    python bench/mysql_capture.py [--quick]

Starts its own MariaDB, writes an orders-shaped workload (inserts, then updates of 25% and deletes of
10% of the rows), then reads the same binlog range twice in the same run: with ``MySqlSource.read_changes``
(rows decoded into Arrow) and with ``BinLogStreamReader`` iterating every event's ``.rows``. Writes
bench/results/mysql_capture.json (shared/BENCH.md format).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import current_rss_mb, write_result  # noqa: E402
from dbmazz_connectors.core.batch import Rows  # noqa: E402
from dbmazz_connectors.sources.mysql import MySqlSource  # noqa: E402
from infra.mariadb import MariaDbServer  # noqa: E402

ORDERS = """CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, status VARCHAR(16) NOT NULL,
  amount DECIMAL(12,2) NOT NULL, created_at DATETIME(6) NOT NULL, note VARCHAR(100) NULL, updated_at TIMESTAMP(3) NULL)"""
INSERT = """INSERT INTO orders SELECT seq, seq % 9973, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'done'),
  (seq % 100000) / 100, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND,
  IF(seq % 5 = 0, NULL, CONCAT('note for order ', seq)), NULL FROM seq_{lo}_to_{hi}"""


CAPTURE_USER = "bench_capture"


def create_capture_user(server: MariaDbServer) -> str:
    """The source's documented grants (docs/operations.md), nothing more; returns its password. The reference
    loop logs in as the same user, so both read the binlog on the same footing."""
    import pymysql

    password = secrets.token_hex(12)
    conn = pymysql.connect(**server.connect_kwargs())
    with conn.cursor() as cur:
        cur.execute(f"CREATE USER '{CAPTURE_USER}'@'%' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{CAPTURE_USER}'@'%'")
        cur.execute(f"GRANT SELECT ON shop.* TO '{CAPTURE_USER}'@'%'")
    conn.close()
    return password


def make_workload(server: MariaDbServer, rows: int) -> int:
    import pymysql

    conn = pymysql.connect(**server.connect_kwargs())
    with conn.cursor() as cur:
        cur.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
        cur.execute("CREATE DATABASE shop")
        cur.execute("USE shop")
        cur.execute(ORDERS)
        for lo in range(1, rows + 1, 50_000):
            cur.execute(INSERT.format(lo=lo, hi=min(lo + 49_999, rows)))
        cur.execute("UPDATE orders SET status = 'refunded', updated_at = NOW(3) WHERE id % 4 = 0")
        cur.execute("DELETE FROM orders WHERE id % 10 = 1")
    conn.close()
    return rows + rows // 4 + rows // 10


def run_source(server: MariaDbServer, password: str, start, end) -> tuple[int, float, float]:
    url = server.url("shop", user=CAPTURE_USER, password=password)
    source = MySqlSource.from_config({"url": url, "pipeline": "bench", "tables": ["shop.orders"]})
    source.connect()
    began, rows, peak = time.perf_counter(), 0, 0.0
    for event in source.read_changes(start, end):
        if isinstance(event, Rows):
            rows += event.data.num_rows
            peak = max(peak, current_rss_mb())
    seconds = time.perf_counter() - began
    source.disconnect()
    return rows, seconds, peak


def run_reference(server: MariaDbServer, password: str, start) -> tuple[int, float]:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    settings = {"host": server.host, "port": server.port, "user": CAPTURE_USER, "passwd": password}
    began, rows = time.perf_counter(), 0
    reader = BinLogStreamReader(
        connection_settings=settings,
        server_id=4242,
        log_file=start.file,
        log_pos=start.offset,
        resume_stream=True,
        blocking=False,
        is_mariadb=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
    )
    for event in reader:
        for _row in event.rows:
            rows += 1
    reader.close()
    return rows, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    inserts = 50_000 if args.quick else 500_000
    with MariaDbServer() as server:
        password = create_capture_user(server)
        url = server.url(user=CAPTURE_USER, password=password)
        probe = MySqlSource.from_config({"url": url, "pipeline": "bench", "tables": ["shop.orders"]})
        probe.connect()
        start = probe.current_position()
        began = time.perf_counter()
        changes = make_workload(server, inserts)
        write_seconds = time.perf_counter() - began
        end = probe.current_position()
        probe.disconnect()
        rows, seconds, peak = run_source(server, password, start, end)
        ref_rows, ref_seconds = run_reference(server, password, start)
    assert rows == changes, f"the source emitted {rows} row changes, expected {changes}"
    assert ref_rows == changes, f"the reference loop saw {ref_rows} row changes, expected {changes}"
    write_result(
        "mysql_capture",
        figure="row_changes_per_s",
        value=rows / seconds,
        reference="python-mysql-replication BinLogStreamReader iterating event.rows over the same binlog range",
        reference_value=ref_rows / ref_seconds,
        target_ratio=5.0,
        peak_rss=peak or None,
        details={
            "row_changes": rows,
            "inserts": inserts,
            "seconds": round(seconds, 3),
            "reference_seconds": round(ref_seconds, 3),
            "workload_write_seconds": round(write_seconds, 3),
            "binlog_range": f"{start.file}:{start.offset} .. {end.file}:{end.offset}",
            "quick": args.quick,
        },
    )


if __name__ == "__main__":
    main()
