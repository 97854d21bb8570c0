"""Freshness: seconds from a source commit to visible in the sink, under a steady workload, default settings.

Starts a throw-away PostgreSQL, the demo's shop pipeline (DuckDB sink) under ``dagster dev``, writes ~200
changes/s, and polls the sink: an order inserted at commit time t is visible once the sink's max(id) reaches it
(batches apply whole transactions in order). value = p95 seconds; reference = the sensor interval; ratio =
interval / p95 (latency: higher is better). Writes bench/results/freshness.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from bench._common import write_result  # noqa: E402
from infra._common import free_port  # noqa: E402
from infra.demo import prepare, start_dagster, stop_process_group  # noqa: E402
from infra.postgres import PostgresServer  # noqa: E402
from infra.shop import ShopWorkload  # noqa: E402

POLL_INTERVAL = 5  # the pipeline default (poll_interval_seconds)


def _max_id(path: Path) -> int | None:
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            return conn.execute("SELECT max(id) FROM public.orders").fetchone()[0]
    except (duckdb.IOException, duckdb.CatalogException):
        return None


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="60 s instead of 180 s of workload")
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    seconds = 60 if args.quick else 180
    workdir = Path(tempfile.mkdtemp(prefix="dbmazz-freshness-"))
    with PostgresServer() as pg:
        env = prepare(pg, workdir)
        port = free_port()
        dagster = start_dagster(env, port, workdir / "dagster.log")
        try:
            _wait_http(f"http://127.0.0.1:{port}/server_info", 180)
            time.sleep(15)  # let the sensor set up the slot before the workload starts
            workload = ShopWorkload(pg.url("shop"), rate=args.rate, per_transaction=5).start()
            visible_at: list[tuple[float, int]] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end + 60:
                if time.monotonic() > end and workload._thread.is_alive():
                    workload.stop()
                current = _max_id(workdir / "shop.duckdb")
                if current is not None:
                    visible_at.append((time.time(), current))
                if not workload._thread.is_alive() and workload.commits and current and current >= workload.commits[-1][0]:
                    break
                time.sleep(0.25)
            workload.stop()
        finally:
            stop_process_group(dagster)
    latencies = []
    poll = iter(visible_at)
    seen_t, seen_id = next(poll, (None, -1))
    for order_id, committed in workload.commits:
        while seen_id is not None and seen_id < order_id:
            seen_t, seen_id = next(poll, (None, None))
        if seen_t is None:
            break
        latencies.append(max(0.0, seen_t - committed))
    missing = len(workload.commits) - len(latencies)
    if not latencies:
        raise SystemExit(f"no inserted order became visible in the sink; see {workdir / 'dagster.log'}")
    p50, p95 = _percentile(latencies, 0.5), _percentile(latencies, 0.95)
    write_result(
        "freshness",
        figure="p95_seconds_commit_to_visible",
        value=p95,
        reference="the capture sensor interval in seconds (ratio = interval / p95; latency, higher ratio is better)",
        reference_value=POLL_INTERVAL,
        target_ratio=POLL_INTERVAL / 15,
        higher_is_better=False,
        details={"p50_seconds": round(p50, 3), "p95_seconds": round(p95, 3), "max_seconds": round(max(latencies), 3),
                 "orders_measured": len(latencies), "orders_never_seen": missing, "changes_written": workload.changes,
                 "workload_seconds": seconds, "target_rate_changes_per_s": args.rate,
                 "achieved_rate_changes_per_s": round(workload.changes / seconds, 1), "sink": "duckdb"},
    )


if __name__ == "__main__":
    main()
