"""A long-running open transaction on PostgreSQL while batches are captured: does the capture cost per batch grow?

    .venv/bin/python bench/long_txn.py [--batches 10] [--rate 4000] [--interval 8]

A least-privilege capture role, the pipeline's slot set up, then a steady writer (``--rate`` changes/s: inserts
and updates of an orders table in transactions of 20, from its own connection and role). One transaction is opened
(BEGIN; INSERT; not committed) and held while ``--batches`` consecutive batches are captured, one every
``--interval`` seconds, each ``engine.capture_range`` from the slot's confirmed position to the current WAL
position, slot advance included. The same is measured first without the open transaction (control).

Per batch: the best of two dry reads of the range (the read is repeatable until the slot advances; the
machine is shared and noisy) and the capture's own seconds, changes captured, the slot's restart_lsn and confirmed_flush_lsn, and the WAL the
server decodes for the read (from restart_lsn to the batch's end). The capture reads with
``pg_logical_slot_peek_binary_changes``, which decodes from the slot's restart_lsn; an open transaction pins
restart_lsn at its start, so every read decodes again all WAL written since. Target: last batch <= 1.5 x first.
Writes bench/results/long_txn.json.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench._common import write_result  # noqa: E402
from infra.postgres import PostgresServer  # noqa: E402
from infra.shop import create_replication_role  # noqa: E402

DDL = """
CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id int, amount numeric(12,2), status text, note text,
  updated_at timestamptz DEFAULT now())
"""


class Writer:
    """Inserts and updates orders at about ``rate`` changes/s, 20 per transaction, until stopped."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.changes = 0
        self.next_id = 1_000_000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                per_txn, next_at = 20, time.monotonic()
                while not self._stop.is_set():
                    with conn.transaction():
                        ids = list(range(self.next_id, self.next_id + per_txn // 2))
                        self.next_id += len(ids)
                        conn.execute("INSERT INTO public.orders (id, customer_id, amount, status, note) "
                                     "SELECT g, g %% 1000, (g %% 10000) / 100.0, 'new', md5(g::text) "
                                     "FROM unnest(%s::bigint[]) g", (ids,))
                        conn.execute("UPDATE public.orders SET status = 'paid', amount = amount + 1 "
                                     "WHERE id = ANY(%s)", (ids,))
                    self.changes += per_txn
                    next_at += per_txn / self.rate
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # surfaced by the caller
            self.error = exc


def _slot(admin, slot: str) -> tuple[str, str]:
    return admin.execute("SELECT restart_lsn::text, confirmed_flush_lsn::text FROM pg_replication_slots "
                         "WHERE slot_name = %s", (slot,)).fetchone()


def _batches(source, admin, writer: Writer, slot: str, count: int, interval: float, changelog_root: str,
             label: str) -> list[dict]:
    from dbmazz_connectors.changelog import ChangeLog
    from dbmazz_connectors.engine import capture_range

    changelog = ChangeLog(changelog_root)
    out = []
    for i in range(count):
        time.sleep(interval)
        if writer.error:
            raise writer.error
        start, end = source.checkpoint_position(), source.current_position()
        restart, _ = _slot(admin, slot)
        decoded = admin.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint",
                                (str(end), restart)).fetchone()[0]
        reads = []
        for _ in range(2):  # the read is repeatable until the slot advances: two dry reads, then the capture
            began = time.perf_counter()
            for _event in source.read_changes(start, end):
                pass
            reads.append(time.perf_counter() - began)
        began = time.perf_counter()
        manifest = capture_range(source, changelog, label, start, end)
        seconds = time.perf_counter() - began
        restart_after, confirmed = _slot(admin, slot)
        row = {"batch": i + 1, "capture_seconds": round(seconds, 3), "read_seconds_best": round(min(reads), 3),
               "changes": sum(sum(t.ops.values()) for t in manifest.tables.values()),
               "wal_bytes_decoded": int(decoded), "restart_lsn": restart_after, "confirmed_flush_lsn": confirmed}
        out.append(row)
        print(label, row, file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rate", type=float, default=4000.0, help="writer changes per second")
    parser.add_argument("--interval", type=float, default=8.0, help="seconds between batches")
    args = parser.parse_args()
    from dbmazz_connectors.sources.postgres import PostgresSource

    details: dict = {"batches": args.batches, "writer_changes_per_s": args.rate, "interval_seconds": args.interval}
    with PostgresServer() as pg, tempfile.TemporaryDirectory(prefix="dbmazz-longtxn-") as folder:
        with psycopg.connect(pg.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE shop")
        admin = psycopg.connect(pg.url("shop"), autocommit=True)
        admin.execute(DDL)
        capture_pw, app_pw = secrets.token_hex(8), secrets.token_hex(8)
        create_replication_role(pg.url("shop"), "dbmazz_capture", capture_pw, "dbmazz_bench", ["public.orders"])
        admin.execute(f"CREATE ROLE shop_app LOGIN PASSWORD '{app_pw}'")
        admin.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON public.orders TO shop_app")
        source = PostgresSource.from_config({
            "url": pg.url("shop", user="dbmazz_capture", password=capture_pw), "pipeline": "bench",
            "tables": ["public.orders"], "slot": "dbmazz_bench", "publication": "dbmazz_bench"})
        source.connect()
        source.setup()
        app_url = pg.url("shop", user="shop_app", password=app_pw)
        writer = Writer(app_url, args.rate).start()
        try:
            control = _batches(source, admin, writer, "dbmazz_bench", args.batches, args.interval, f"{folder}/a", "control")
            held = psycopg.connect(app_url)  # BEGIN; INSERT; never committed while the batches run
            held.execute("INSERT INTO public.orders (id, customer_id, status) VALUES (1, 1, 'held open')")
            opened_at = admin.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
            open_runs = _batches(source, admin, writer, "dbmazz_bench", args.batches, args.interval, f"{folder}/b", "open_txn")
            held.rollback()
            held.close()
        finally:
            writer.stop()
            source.disconnect()
            admin.close()
        if writer.error:
            raise writer.error
    first, last = open_runs[0]["read_seconds_best"], open_runs[-1]["read_seconds_best"]

    def median3(runs: list[dict]) -> float:
        return sorted(r["read_seconds_best"] for r in runs)[1]

    details.update(
        open_txn_median_last3_over_first3=round(median3(open_runs[-3:]) / median3(open_runs[:3]), 2),
        control_median_last3_over_first3=round(median3(control[-3:]) / median3(control[:3]), 2),
        open_transaction_started_at_lsn=opened_at,
        open_txn=open_runs, control=control,
        last_over_first=round(last / first, 2),
        control_last_over_first=round(control[-1]["read_seconds_best"] / control[0]["read_seconds_best"], 2),
        capture_last_over_first=round(open_runs[-1]["capture_seconds"] / open_runs[0]["capture_seconds"], 2),
        target="last batch <= 1.5 x first with the transaction open",
        met=last <= 1.5 * first,
        why=("pg_logical_slot_peek_binary_changes decodes from the slot's restart_lsn; the open transaction pins it "
             "at its start, so each read decodes all WAL written since (wal_bytes_decoded grows batch by batch) "
             "while the control's restart_lsn follows the confirmed position"),
    )
    write_result("long_txn", figure="last_batch_over_first_batch_read_seconds", value=last / first,
                 reference="target ratio 1.5 (flat per-batch cost)", reference_value=1.5, target_ratio=1.0,
                 higher_is_better=False, details=details)


if __name__ == "__main__":
    main()
