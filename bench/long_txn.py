"""A long-running open transaction on PostgreSQL while batches are captured: does the capture cost per batch grow?

    .venv/bin/python bench/long_txn.py [--batches 10] [--rate 4000] [--interval 8]

A least-privilege capture role, the pipeline's slot set up, then a steady writer (``--rate`` changes/s: inserts
and updates of an orders table in transactions of 20, from its own connection and role). One transaction is opened
(BEGIN; INSERT; not committed) and held while ``--batches`` consecutive batches are captured, one every
``--interval`` seconds, each ``engine.capture_range`` from the slot's confirmed position to the current WAL
position, acknowledgement included, by one source object. Each capture mode of the source is measured:

- ``peek`` (the reference): first without the open transaction (control), then with it. Each read is
  ``pg_logical_slot_peek_binary_changes``, which decodes from the slot's restart_lsn; the open transaction pins
  restart_lsn at its start, so every read decodes again all WAL written since.
- ``stream`` (``capture_mode: stream``): one warm-up batch opens the stream (its first read decodes from the
  slot's restart_lsn, once per stream: recorded, not measured), then the same with a new transaction held open;
  the stream, kept open, decodes the WAL once.

Per batch: the seconds the capture spent reading the source (inside ``read_changes``: receiving and decoding),
the capture's own seconds (reading and writing the change log), changes captured, the slot's restart_lsn and
confirmed_flush_lsn, the WAL from restart_lsn to the batch's end, and (stream) the walsender's pid; for peek also
the best of two dry reads before the capture (a peek is repeatable until the slot advances; a stream read is not).
The figure: stream's last batch read seconds over its first's. Target: <= 1.5.
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
                        conn.execute(
                            "INSERT INTO public.orders (id, customer_id, amount, status, note) "
                            "SELECT g, g %% 1000, (g %% 10000) / 100.0, 'new', md5(g::text) "
                            "FROM unnest(%s::bigint[]) g",
                            (ids,),
                        )
                        conn.execute(
                            "UPDATE public.orders SET status = 'paid', amount = amount + 1 "
                            "WHERE id = ANY(%s)",
                            (ids,),
                        )
                    self.changes += per_txn
                    next_at += per_txn / self.rate
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # surfaced by the caller
            self.error = exc


def _slot(admin, slot: str) -> tuple[str, str]:
    return admin.execute(
        "SELECT restart_lsn::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()


class TimedReads:
    """The source, with the seconds spent inside its ``read_changes`` iterators added up."""

    def __init__(self, source) -> None:
        self.source, self.seconds = source, 0.0

    def __getattr__(self, name: str):
        return getattr(self.source, name)

    def read_changes(self, start, end):
        events = self.source.read_changes(start, end)
        while True:
            began = time.perf_counter()
            try:
                event = next(events)
            except StopIteration:
                self.seconds += time.perf_counter() - began
                return
            self.seconds += time.perf_counter() - began
            yield event


def _batches(
    source,
    admin,
    writer: Writer,
    slot: str,
    count: int,
    interval: float,
    changelog_root: str,
    label: str,
    dry_reads: bool,
) -> list[dict]:
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
        decoded = admin.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)::bigint", (str(end), restart)
        ).fetchone()[0]
        reads = []
        for _ in range(2 if dry_reads else 0):  # a peek is repeatable until the slot advances
            began = time.perf_counter()
            for _event in source.read_changes(start, end):
                pass
            reads.append(time.perf_counter() - began)
        timed = TimedReads(source)
        began = time.perf_counter()
        manifest = capture_range(timed, changelog, label, start, end)
        seconds = time.perf_counter() - began
        restart_after, confirmed = _slot(admin, slot)
        walsender = admin.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()[0]
        row = {
            "batch": i + 1,
            "capture_seconds": round(seconds, 3),
            "read_seconds": round(timed.seconds, 3),
            **({"read_seconds_best": round(min(reads), 3)} if reads else {}),
            "changes": sum(sum(t.ops.values()) for t in manifest.tables.values()),
            "wal_bytes_since_restart_lsn": int(decoded),
            "restart_lsn": restart_after,
            "confirmed_flush_lsn": confirmed,
            "walsender_pid": walsender,
        }
        out.append(row)
        print(label, row, file=sys.stderr, flush=True)
    return out


def _median3(runs: list[dict], key: str) -> float:
    return sorted(r[key] for r in runs)[1]


def _summary(runs: list[dict], key: str) -> dict:
    """Last over first batch; medians of the last and first three; and per change (the writer's pace varies on a
    loaded machine, so batches differ in size)."""
    per_change = [r[key] / max(r["changes"], 1) for r in runs]
    values = [r[key] for r in runs]
    n, mean = len(values), sum(values) / len(values)
    slope = (
        (
            sum((i - (n - 1) / 2) * (v - mean) for i, v in enumerate(values))
            / sum((i - (n - 1) / 2) ** 2 for i in range(n))
        )
        if n > 1
        else 0.0
    )
    return {
        "last_over_first": round(runs[-1][key] / runs[0][key], 2),
        "median_last3_over_first3": round(_median3(runs[-3:], key) / _median3(runs[:3], key), 2),
        "per_change_last_over_first": round(per_change[-1] / per_change[0], 2),
        # least-squares growth per batch, as a share of the mean batch: robust to one noisy batch
        "trend_per_batch_over_mean": round(slope / mean, 3) if mean else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--rate", type=float, default=4000.0, help="writer changes per second")
    parser.add_argument("--interval", type=float, default=8.0, help="seconds between batches")
    args = parser.parse_args()
    from dbmazz_connectors.sources.postgres import PostgresSource

    details: dict = {
        "batches": args.batches,
        "writer_changes_per_s": args.rate,
        "interval_seconds": args.interval,
    }
    runs: dict[str, list[dict]] = {}
    opened_at: dict[str, str] = {}
    with PostgresServer() as pg, tempfile.TemporaryDirectory(prefix="dbmazz-longtxn-") as folder:
        with psycopg.connect(pg.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE shop")
        admin = psycopg.connect(pg.url("shop"), autocommit=True)
        admin.execute(DDL)
        capture_pw, app_pw = secrets.token_hex(8), secrets.token_hex(8)
        create_replication_role(
            pg.url("shop"), "dbmazz_capture", capture_pw, "dbmazz_bench", ["public.orders"]
        )
        admin.execute(f"CREATE ROLE shop_app LOGIN PASSWORD '{app_pw}'")
        admin.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON public.orders TO shop_app")
        app_url = pg.url("shop", user="shop_app", password=app_pw)
        writer = Writer(app_url, args.rate).start()
        held_id = 1
        try:
            for mode in ("peek", "stream"):
                source = PostgresSource.from_config(
                    {
                        "url": pg.url("shop", user="dbmazz_capture", password=capture_pw),
                        "pipeline": "bench",
                        "tables": ["public.orders"],
                        "slot": "dbmazz_bench",
                        "publication": "dbmazz_bench",
                        "capture_mode": mode,
                    }
                )
                source.connect()
                try:
                    source.setup()
                    if mode == "peek":
                        runs["peek_control"] = _batches(
                            source,
                            admin,
                            writer,
                            "dbmazz_bench",
                            args.batches,
                            args.interval,
                            f"{folder}/control",
                            "control",
                            dry_reads=True,
                        )
                    else:  # the stream opens here, decoding once from the slot's restart_lsn: not a batch measured
                        runs["stream_warmup"] = _batches(
                            source,
                            admin,
                            writer,
                            "dbmazz_bench",
                            1,
                            args.interval,
                            f"{folder}/warmup",
                            "stream_warmup",
                            dry_reads=False,
                        )
                    held = psycopg.connect(app_url)  # BEGIN; INSERT; never committed while the batches run
                    held.execute(
                        "INSERT INTO public.orders (id, customer_id, status) VALUES (%s, 1, 'held open')",
                        (held_id,),
                    )
                    held_id += 1
                    opened_at[mode] = admin.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
                    runs[f"{mode}_open_txn"] = _batches(
                        source,
                        admin,
                        writer,
                        "dbmazz_bench",
                        args.batches,
                        args.interval,
                        f"{folder}/{mode}",
                        f"{mode}_open_txn",
                        dry_reads=mode == "peek",
                    )
                    held.rollback()
                    held.close()
                finally:
                    source.disconnect()
        finally:
            writer.stop()
            admin.close()
        if writer.error:
            raise writer.error
    stream, peek, control = runs["stream_open_txn"], runs["peek_open_txn"], runs["peek_control"]
    value = stream[-1]["read_seconds"] / stream[0]["read_seconds"]
    details.update(
        open_transaction_started_at_lsn=opened_at,
        stream_open_txn=stream,
        stream_warmup=runs["stream_warmup"],
        peek_open_txn=peek,
        peek_control=control,
        stream_read=_summary(stream, "read_seconds"),
        stream_capture=_summary(stream, "capture_seconds"),
        peek_read=_summary(peek, "read_seconds"),
        peek_read_best_of_two=_summary(peek, "read_seconds_best"),
        peek_capture=_summary(peek, "capture_seconds"),
        peek_control_read=_summary(control, "read_seconds"),
        stream_walsenders=sorted({r["walsender_pid"] for r in stream}),
        target="stream mode: last batch read <= 1.5 x first with the transaction open",
        met=value <= 1.5,
        why=(
            "peek: pg_logical_slot_peek_binary_changes decodes from the slot's restart_lsn, which the open transaction "
            "pins, so each read decodes again all WAL written since (wal_bytes_since_restart_lsn grows batch by batch); "
            "stream: one walsender (one pid for every batch) decodes the WAL once and each read receives only the "
            "batch's own transactions"
        ),
    )
    write_result(
        "long_txn",
        figure="stream_last_batch_over_first_batch_read_seconds",
        value=value,
        reference="target ratio 1.5 (flat per-batch cost)",
        reference_value=1.5,
        target_ratio=1.0,
        higher_is_better=False,
        details=details,
    )


if __name__ == "__main__":
    main()
