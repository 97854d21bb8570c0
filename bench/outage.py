"""A sink server down for minutes while pgbench writes: capture goes on, the slot's retained WAL stays bounded,
the sink catches up, nothing is lost.

A PostgreSQL source under ``pgbench -R <rate>`` into DuckDB, ClickHouse and PostgreSQL, driven by
``dagster-daemon run`` (sensor, queued runs, run retries; ``tests/faults/_harness.py``). ClickHouse is SIGKILLed
and kept down ``--minutes``; the slot's retained WAL (``pg_current_wal_lsn() - restart_lsn``) is sampled every
second; then ClickHouse is started again on the same port and data, its failed partitions are re-executed as a
user does, and every sink is compared with the source row by row. value = peak retained WAL during the outage
(MiB); reference = the WAL written during the outage (ratio = written / peak retained: how much the slot did
not have to keep). Writes bench/results/outage.json.

    python bench/outage.py [--minutes 10] [--rate 250]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write_result  # noqa: E402
from tests.faults._harness import FaultRig, sink_outage, wait_initial_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=250, help="pgbench transactions/s (4 row changes each)")
    args = parser.parse_args()
    began = time.monotonic()
    with FaultRig("postgres", seed=5, log=lambda m: print(m, file=sys.stderr, flush=True)) as rig:
        load = wait_initial_load(rig)
        outage = sink_outage(rig, args.minutes * 60, rate=args.rate, tail_seconds=20)
    details = outage.as_dict()
    details.update(
        initial_load_seconds=round(load, 1),
        pgbench_rate_tps=args.rate,
        wall_seconds=round(time.monotonic() - began, 1),
        sinks=["duckdb", "clickhouse (down)", "postgres"],
    )
    mib = 1024 * 1024
    peak = max(outage.peak_retained_wal_during_outage, 1) / mib
    write_result(
        "outage",
        figure="peak_wal_retained_by_the_slot_during_the_sink_outage_mib",
        value=peak,
        reference="WAL written during the outage (MiB); ratio = written / peak retained",
        reference_value=outage.wal_written_during_outage / mib,
        target_ratio=2.0,
        higher_is_better=False,
        details=details,
    )
    if sum(outage.diffs.values()) != 0:
        sys.exit(f"sinks differ from the source after the outage: {outage.diffs}")


if __name__ == "__main__":
    main()
