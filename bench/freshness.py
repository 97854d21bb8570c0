"""Freshness: seconds from a source commit to visible in the sink, under a steady workload, default settings.

Starts a throw-away PostgreSQL, the demo's shop pipeline (DuckDB sink) under ``dagster dev``, waits until its
initial load is applied (every snapshot batch: steady state), writes ~200 changes/s, and polls the sink: an order inserted at commit time t is visible once the sink's max(id) reaches it
(batches apply whole transactions in order). value = p95 seconds; reference = the sensor interval; ratio =
interval / p95 (latency: higher is better). Writes bench/results/freshness.json (``--quick``: freshness_quick.json,
so a quick check never replaces the full measurement).

The pipeline runs with the defaults: ``run_mode: stream`` (one long-lived run capturing and applying a batch every
second); ``--run-mode batch`` measures one run per batch instead. ``--capture-mode stream`` sets the PostgreSQL
source's ``capture_mode``. ``runs_by_job`` counts the runs the Runs page shows for the measured minutes (every run
in progress at some time of them). The result of the other run mode, if the file holds one, is kept under
``details.previous``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg  # noqa: E402
import duckdb  # noqa: E402
import yaml  # noqa: E402

from bench._common import RESULTS, write_result  # noqa: E402
from dbmazz_connectors.config import PipelineConfig  # noqa: E402
from dbmazz_pipelines.naming import batch_partitions, sink_key  # noqa: E402
from infra._common import exit_on_sigterm, free_port  # noqa: E402
from infra.demo import prepare, start_dagster, stop_process_group  # noqa: E402
from infra.postgres import PostgresServer  # noqa: E402
from infra.shop import SHOP_TABLES, ShopWorkload  # noqa: E402

POLL_INTERVAL = PipelineConfig.model_fields["poll_interval_seconds"].default
DEFAULT_RUN_MODE = PipelineConfig.model_fields["run_mode"].default


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


def _wait_initial_load(home: str, timeout: float, streaming: bool) -> None:
    """Until the initial load's batches (every ``snap-`` partition) are applied to every sink table, and with
    ``run_mode: stream`` the streaming run, which the sensor then keeps alive, has started."""
    keys = [sink_key("shop", "duckdb", table) for table in SHOP_TABLES]
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(home) as instance:
        while time.monotonic() < deadline:
            snapshot = {
                p
                for p in instance.get_dynamic_partitions(batch_partitions("shop").name)
                if p.startswith("snap-")
            }
            loaded = snapshot and all(snapshot <= instance.get_materialized_partitions(key) for key in keys)
            running = instance.get_run_records(
                dg.RunsFilter(job_name="shop_stream", statuses=[dg.DagsterRunStatus.STARTED]), limit=1
            )
            if loaded and (running or not streaming):
                return
            time.sleep(0.5)
    raise RuntimeError(f"the initial load was not applied within {timeout}s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _configure(pipelines: Path, run_mode: str | None, capture_mode: str | None) -> None:
    """The demo's pipelines.yaml with the run mode and capture mode asked for (default: the pipeline's)."""
    document = yaml.safe_load(pipelines.read_text())
    shop = document["pipelines"]["shop"]
    if run_mode:
        shop["run_mode"] = run_mode
    if capture_mode:
        shop["source"]["capture_mode"] = capture_mode
    pipelines.write_text(yaml.safe_dump(document, sort_keys=False))


def _runs_by_job(home: str, since: float, until: float) -> dict[str, int]:
    """Runs in progress at some time between ``since`` and ``until`` (timestamps), by job: what the Runs page
    shows for those minutes (a streaming run started before ``since`` counts)."""
    counts: dict[str, int] = {}
    with dg.DagsterInstance.from_config(home) as instance:
        for record in instance.get_run_records(
            dg.RunsFilter(created_before=datetime.fromtimestamp(until, UTC))
        ):
            if record.end_time is not None and record.end_time < since:
                continue
            counts[record.dagster_run.job_name] = counts.get(record.dagster_run.job_name, 0) + 1
    return counts


def _previous(name: str, run_mode: str) -> dict | None:
    """The other run mode's figures, from the result file, if that is what it holds."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    details = json.loads(path.read_text()).get("details", {})
    if details.get("run_mode", "batch") == run_mode:
        return details.get("previous")
    keep = (
        "run_mode",
        "p50_seconds",
        "p95_seconds",
        "max_seconds",
        "runs_per_minute",
        "runs_by_job",
        "measured_at",
    )
    return {k: details[k] for k in keep if k in details} | {"run_mode": details.get("run_mode", "batch")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="60 s instead of 180 s of workload")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument(
        "--run-mode",
        choices=["batch", "stream"],
        default=None,
        help=f"the pipeline's run_mode (default: the pipeline default, {DEFAULT_RUN_MODE})",
    )
    parser.add_argument(
        "--capture-mode",
        choices=["peek", "stream"],
        default=None,
        help="the PostgreSQL source's capture_mode (default: the connector's)",
    )
    args = parser.parse_args()
    run_mode = args.run_mode or DEFAULT_RUN_MODE
    seconds = 60 if args.quick else 180
    workdir = Path(tempfile.mkdtemp(prefix="dbmazz-freshness-"))
    exit_on_sigterm()  # SIGTERM takes Ctrl-C's path: the servers stop and the folder goes
    if not os.environ.get("DBMAZZ_KEEP_WORKDIR"):  # DBMAZZ_KEEP_WORKDIR=1 keeps the logs to look at
        atexit.register(shutil.rmtree, workdir, True)
    with PostgresServer() as pg:
        env = prepare(pg, workdir)
        _configure(Path(env["DBMAZZ_PIPELINES"]), args.run_mode, args.capture_mode)
        port = free_port()
        dagster = start_dagster(env, port, workdir / "dagster.log")
        try:
            _wait_http(f"http://127.0.0.1:{port}/server_info", 180)
            # steady state: the workload starts once the initial load of the seeded shop is visible in the sink
            _wait_initial_load(env["DAGSTER_HOME"], 300, run_mode == "stream")
            workload = ShopWorkload(pg.url("shop"), rate=args.rate, per_transaction=5).start()
            started = time.time()
            visible_at: list[tuple[float, int]] = []
            end = time.monotonic() + seconds
            while time.monotonic() < end + 60:
                if time.monotonic() > end and workload._thread.is_alive():
                    workload.stop()
                current = _max_id(workdir / "shop.duckdb")
                if current is not None:
                    visible_at.append((time.time(), current))
                if (
                    not workload._thread.is_alive()
                    and workload.commits
                    and current
                    and current >= workload.commits[-1][0]
                ):
                    break
                time.sleep(0.25)
            workload.stop()
            runs = _runs_by_job(env["DAGSTER_HOME"], started, time.time())
            run_seconds = time.time() - started
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
        raise SystemExit(
            "no inserted order became visible in the sink; run with DBMAZZ_KEEP_WORKDIR=1 and see "
            f"{workdir / 'dagster.log'}"
        )
    p50, p95 = _percentile(latencies, 0.5), _percentile(latencies, 0.95)
    name = "freshness_quick" if args.quick else "freshness"
    previous = _previous(name, run_mode)
    write_result(
        name,
        figure="p95_seconds_commit_to_visible",
        value=p95,
        reference="the capture sensor interval in seconds (ratio = interval / p95; latency, higher ratio is better)",
        reference_value=POLL_INTERVAL,
        target_ratio=POLL_INTERVAL / 15,
        higher_is_better=False,
        details={
            "p50_seconds": round(p50, 3),
            "p95_seconds": round(p95, 3),
            "max_seconds": round(max(latencies), 3),
            "orders_measured": len(latencies),
            "orders_never_seen": missing,
            "changes_written": workload.changes,
            "workload_seconds": seconds,
            "target_rate_changes_per_s": args.rate,
            "achieved_rate_changes_per_s": round(workload.changes / seconds, 1),
            "sink": "duckdb",
            "run_mode": run_mode,
            "capture_mode": args.capture_mode or "default",
            "runs_by_job": runs,
            "runs_per_minute": round(sum(runs.values()) / (run_seconds / 60), 2),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine_note": "2 shared cores (other work ran alongside): timings are indicative",
            **({"previous": previous} if previous else {}),
        },
    )


if __name__ == "__main__":
    main()
