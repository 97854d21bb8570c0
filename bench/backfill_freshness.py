"""Live freshness during a UI backfill: commit->visible p95 while 30 partitions of a sink table are backfilled.

Starts a throw-away PostgreSQL and the demo's shop pipeline (DuckDB sink) under ``dagster dev`` with
``run_mode: stream`` and the pipeline pool limited to 1 (docs/dagster.md, "Backfills"), waits until the initial
load is applied, writes ~200 changes/s and polls the sink as ``bench/freshness.py`` does (an order inserted at
commit time t is visible once the sink's max(id) reaches it). After a quiet window it launches a backfill of 30
log batches of ``shop/duckdb/public.orders`` the way the UI does (an HTTP POST of ``launchPartitionBackfill`` to
the webserver's /graphql) and keeps measuring until the backfill is done.

value = p95 seconds commit->visible of the orders committed during the backfill; reference = the quiet p95
measured in the same run; ratio = quiet / during (latency: higher is better; target 0.5, i.e. during <= 2x
quiet). Also reported: the backfill's runs (<= 3), the check evaluations in them (none per partition), the
streaming runs started while it ran. Writes bench/results/backfill_freshness.json (``--quick``:
backfill_freshness_quick.json; ``--run-buffer 0``: backfill_freshness_run_buffer_0.json).

    python bench/backfill_freshness.py [--quick] [--partitions 30] [--rate 200] [--run-buffer 1]
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
import yaml  # noqa: E402
from dagster._core.execution.backfill import BulkActionStatus  # noqa: E402

from bench._common import write_result  # noqa: E402
from bench.freshness import _configure, _max_id, _percentile, _wait_http, _wait_initial_load  # noqa: E402
from dbmazz_pipelines.naming import batch_partitions, sink_key  # noqa: E402
from infra._common import exit_on_sigterm, free_port  # noqa: E402
from infra.demo import prepare, start_dagster, stop_process_group  # noqa: E402
from infra.postgres import PostgresServer  # noqa: E402
from infra.shop import ShopWorkload  # noqa: E402

TABLE = "public.orders"
DONE = {
    BulkActionStatus.COMPLETED,
    BulkActionStatus.COMPLETED_SUCCESS,
    BulkActionStatus.COMPLETED_FAILED,
    BulkActionStatus.FAILED,
    BulkActionStatus.CANCELED,
}

# what the UI's "Launch backfill" dialog sends for a partition selection of one asset
LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def _limit_pool(home: str, run_buffer: int) -> None:
    """The pipeline pool's limit of 1 and the run queue's ``op_granularity_run_buffer``, as docs/dagster.md
    ("Backfills") tells a deployment to set: with a ``concurrency`` section, the run queue's limits move from
    ``run_coordinator.config`` to ``concurrency.runs`` (Dagster refuses both)."""
    path = Path(home) / "dagster.yaml"
    document = yaml.safe_load(path.read_text())
    queue = document["run_coordinator"]["config"]
    runs = {k: queue.pop(k) for k in ("max_concurrent_runs", "tag_concurrency_limits") if k in queue}
    pools = {"default_limit": 1, **({"op_granularity_run_buffer": run_buffer} if run_buffer else {})}
    document["concurrency"] = {"runs": runs, "pools": pools}
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _graphql(port: int, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        document = json.loads(response.read())
    if document.get("errors"):
        raise RuntimeError(f"GraphQL errors: {document['errors']}")
    return document["data"]


def _launch_backfill(port: int, partitions: list[str], asset: dg.AssetKey) -> str:
    data = _graphql(
        port,
        LAUNCH_PARTITION_BACKFILL,
        {
            "backfillParams": {
                "partitionNames": partitions,
                "assetSelection": [{"path": asset.path}],
                "fromFailure": False,
            }
        },
    )
    launched = data["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"launchPartitionBackfill: {launched}")
    return launched["backfillId"]


def _oldest_log_partitions(instance: dg.DagsterInstance, asset: dg.AssetKey, n: int) -> list[str]:
    """The ``n`` oldest log batches the sink table has applied (fewer if there are not as many yet): a re-run of
    a past range."""
    applied = instance.get_materialized_partitions(asset)
    keys = sorted(p for p in instance.get_dynamic_partitions(batch_partitions("shop").name) if p in applied)
    logs = [p for p in keys if not p.startswith("snap-")]
    return logs[:n]


def _run_summary(instance: dg.DagsterInstance, record: dg.RunRecord) -> dict:
    run = record.dagster_run
    started, ended = record.start_time, record.end_time
    return {
        "run": run.run_id[:8],
        "job": run.job_name,
        "status": run.status.value,
        "created": round(record.create_timestamp.timestamp(), 2),
        "started": round(started, 2) if started else None,
        "ended": round(ended, 2) if ended else None,
        "partitions": [
            run.tags.get("dagster/asset_partition_range_start"),
            run.tags.get("dagster/asset_partition_range_end"),
        ],
    }


def _latencies(
    commits: list[tuple[int, float]], visible_at: list[tuple[float, int]]
) -> list[tuple[float, float]]:
    """(commit time, seconds to visible) of each inserted order that became visible."""
    out = []
    poll = iter(visible_at)
    seen_t, seen_id = next(poll, (None, -1))
    for order_id, committed in commits:
        while seen_id is not None and seen_id < order_id:
            seen_t, seen_id = next(poll, (None, None))
        if seen_t is None:
            break
        out.append((committed, max(0.0, seen_t - committed)))
    return out


def _figures(latencies: list[tuple[float, float]], since: float, until: float) -> dict:
    values = [seconds for committed, seconds in latencies if since <= committed < until]
    if not values:
        return {"orders": 0}
    return {
        "orders": len(values),
        "p50_seconds": round(_percentile(values, 0.5), 3),
        "p95_seconds": round(_percentile(values, 0.95), 3),
        "max_seconds": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 30 s quiet window instead of 60 s")
    parser.add_argument("--partitions", type=int, default=30)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument(
        "--run-buffer",
        type=int,
        default=1,
        help="concurrency.pools.op_granularity_run_buffer (0: Dagster's default, a queued backfill run is not "
        "launched while the streaming run holds the pool)",
    )
    args = parser.parse_args()
    quiet_seconds = 30 if args.quick else 60
    after_seconds = 15 if args.quick else 30  # measured on after the backfill: the way back to quiet
    asset = sink_key("shop", "duckdb", TABLE)
    workdir = Path(tempfile.mkdtemp(prefix="dbmazz-backfill-freshness-"))
    exit_on_sigterm()
    if not os.environ.get("DBMAZZ_KEEP_WORKDIR"):  # DBMAZZ_KEEP_WORKDIR=1 keeps the logs to look at
        atexit.register(shutil.rmtree, workdir, True)
    load_before = os.getloadavg()
    with PostgresServer() as pg:
        env = prepare(pg, workdir)
        _configure(Path(env["DBMAZZ_PIPELINES"]), "stream", None)
        _limit_pool(env["DAGSTER_HOME"], args.run_buffer)
        port = free_port()
        dagster = start_dagster(env, port, workdir / "dagster.log")
        workload = None
        try:
            _wait_http(f"http://127.0.0.1:{port}/server_info", 180)
            _wait_initial_load(env["DAGSTER_HOME"], 300, True)
            workload = ShopWorkload(pg.url("shop"), rate=args.rate, per_transaction=5).start()
            visible_at: list[tuple[float, int]] = []

            def poll_until(stop) -> None:
                while not stop():
                    current = _max_id(workdir / "shop.duckdb")
                    if current is not None:
                        visible_at.append((time.time(), current))
                    time.sleep(0.25)

            started = time.time()
            with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
                looked = [0.0]

                def quiet_done() -> bool:  # the quiet window, and as many log batches applied as to backfill
                    if time.time() < started + quiet_seconds or time.time() < looked[0] + 2:
                        return False
                    looked[0] = time.time()
                    if time.time() > started + quiet_seconds + 180:
                        raise RuntimeError(
                            f"fewer than {args.partitions} log batches applied after the quiet window"
                        )
                    return len(_oldest_log_partitions(instance, asset, args.partitions)) == args.partitions

                poll_until(quiet_done)
                partitions = _oldest_log_partitions(instance, asset, args.partitions)
                launched = time.time()
                backfill_id = _launch_backfill(port, partitions, asset)
                print(f"backfill {backfill_id} of {len(partitions)} partitions launched", file=sys.stderr)
                deadline = launched + 600

                def backfill_done() -> bool:
                    if time.time() > deadline:
                        raise RuntimeError(f"backfill {backfill_id} not done within 600 s")
                    return instance.get_backfill(backfill_id).status in DONE

                poll_until(backfill_done)
                finished = time.time()
                status = instance.get_backfill(backfill_id).status
                poll_until(lambda: time.time() > finished + after_seconds)
                workload.stop()
                stopped = time.time()
                last = workload.commits[-1][0]
                poll_until(lambda: (visible_at and visible_at[-1][1] >= last) or time.time() > finished + 120)
                created_after = datetime.fromtimestamp(launched - 1, UTC)
                runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                checks: dict[str, int] = {}
                for record in runs:
                    for event in instance.all_logs(
                        record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
                    ):
                        name = event.dagster_event.event_specific_data.check_name
                        checks[name] = checks.get(name, 0) + 1
                streams = instance.get_run_records(
                    dg.RunsFilter(job_name="shop_stream", created_after=created_after)
                )
                check_runs = instance.get_run_records(
                    dg.RunsFilter(job_name="shop_checks", created_after=created_after)
                )
                run_details = [
                    _run_summary(instance, r) for r in sorted(runs, key=lambda r: r.create_timestamp)
                ]
                stream_details = [
                    _run_summary(instance, r) for r in sorted(streams, key=lambda r: r.create_timestamp)
                ]
        finally:
            if workload is not None:
                workload.stop()
            stop_process_group(dagster)
    load_after = os.getloadavg()
    latencies = _latencies(workload.commits, visible_at)
    quiet = _figures(latencies, started + 5, launched)  # the first 5 s: the workload's own start
    during = _figures(latencies, launched, finished)
    after = _figures(latencies, finished, finished + after_seconds)
    if not quiet.get("orders") or not during.get("orders"):
        raise SystemExit(
            f"no orders measured (quiet {quiet}, during {during}); run with DBMAZZ_KEEP_WORKDIR=1 and see "
            f"{workdir / 'dagster.log'}"
        )
    per_partition = any(count >= len(partitions) for count in checks.values())
    name = "backfill_freshness" + ("" if args.run_buffer == 1 else f"_run_buffer_{args.run_buffer}")
    write_result(
        name + ("_quick" if args.quick else ""),
        figure="p95_seconds_commit_to_visible_during_a_ui_backfill",
        value=during["p95_seconds"],
        reference="the quiet p95 commit->visible before the backfill, same run (ratio = quiet / during; "
        "latency, higher is better; 0.5 = during is 2x quiet)",
        reference_value=quiet["p95_seconds"],
        target_ratio=0.5,
        higher_is_better=False,
        details={
            "quiet": quiet,
            "during_backfill": during,
            "after_backfill": after,
            "during_over_quiet_p95": round(during["p95_seconds"] / quiet["p95_seconds"], 2),
            "backfill_seconds": round(finished - launched, 1),
            "backfill_status": status.value,
            "backfill_partitions": len(partitions),
            "backfill_asset": asset.to_user_string(),
            "backfill_runs": len(runs),
            "backfill_runs_ok": len(runs) <= 3,
            "check_evaluations_in_backfill_runs": checks,
            "checks_per_partition": per_partition,
            "check_runs_during_backfill": len(check_runs),
            "runs": run_details,
            "streaming_runs_since_launch": stream_details,
            "launched_at": round(launched, 2),
            "finished_at": round(finished, 2),
            "quiet_window_seconds": quiet_seconds,
            "target_rate_changes_per_s": args.rate,
            "achieved_rate_changes_per_s": round(workload.changes / (stopped - started), 1),
            "sink": "duckdb",
            "run_mode": "stream",
            "pool_limit": 1,
            "op_granularity_run_buffer": args.run_buffer,
            "launched_via": "HTTP POST /graphql launchPartitionBackfill (the UI's mutation)",
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine_note": "2 cores shared with other work: timings are indicative",
            "quick": args.quick,
        },
    )


if __name__ == "__main__":
    main()
