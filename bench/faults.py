"""Randomized fault trials through Dagster: kill, recover, drain, compare every sink with the source row by row.

Half the trials run on a PostgreSQL source under ``pgbench``, half on MariaDB under ``sysbench oltp_read_write``,
each into DuckDB, ClickHouse and PostgreSQL, driven by ``dagster-daemon run`` (sensor, queued runs, run retries)
as in ``make demo`` and production (``tests/faults/_harness.py``). Each trial writes for a random 15-35 s and
SIGKILLs at a random moment one of: the run process while it captures, the run process while it applies, the
daemon (restarted), the source or a sink server (restarted on the same port and data). value = the fraction of
trials whose sinks all equal the source after the drain (must be 1.0). Writes bench/results/faults.json.

    python bench/faults.py [--trials 50] [--seed 11]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write_result  # noqa: E402
from tests.faults._harness import PHASES, FaultRig, Trial, run_trial, wait_initial_load  # noqa: E402


def _summary(trials: list[Trial], seconds: float, seed: int, load_seconds: dict[str, float]) -> dict:
    by_phase = {phase: {"trials": 0, "kill_points_hit": 0} for phase in PHASES}
    for trial in trials:
        by_phase[trial.phase]["trials"] += 1
        by_phase[trial.phase]["kill_points_hit"] += int(bool(trial.kill and trial.kill.hit))
    recoveries = [t for t in trials if t.recovery_seconds is not None]
    slowest = max(recoveries, key=lambda t: t.recovery_seconds, default=None)
    return {
        "trials": len(trials),
        "trials_by_source": {s: sum(t.source == s for t in trials) for s in ("postgres", "mariadb")},
        "kill_points_hit": {p: v["kill_points_hit"] for p, v in by_phase.items()},
        "kills_by_phase": by_phase,
        "diffs_found": sum(sum(t.diffs.values()) for t in trials),
        "trials_with_errors": sum(t.error is not None for t in trials),
        "slowest_recovery_seconds": slowest.recovery_seconds if slowest else None,
        "slowest_recovery_trial": slowest.as_dict() if slowest else None,
        "median_recovery_seconds": sorted(t.recovery_seconds for t in recoveries)[len(recoveries) // 2]
        if recoveries
        else None,
        "runs_reexecuted_by_hand": sum(t.reexecuted for t in trials),
        "rows_compared": sum(t.rows_compared for t in trials),
        "sinks": ["duckdb", "clickhouse", "postgres"],
        "clients": {
            "postgres": "pgbench -s 1 -c 2",
            "mariadb": "sysbench oltp_read_write --tables=2 --table-size=10000 --threads=2",
        },
        "initial_load_seconds": load_seconds,
        "seed": seed,
        "wall_seconds": round(seconds, 1),
        "trial_results": [t.as_dict() for t in trials],
    }


def _write(trials: list[Trial], began: float, seed: int, load_seconds: dict[str, float]) -> None:
    clean = sum(t.error is None and t.diffs and sum(t.diffs.values()) == 0 for t in trials)
    write_result(
        "faults",
        figure="fraction_of_trials_with_sink_equal_to_source",
        value=clean / max(1, len(trials)),
        reference="every trial ends with every sink equal to the source (diffs 0)",
        reference_value=1.0,
        target_ratio=1.0,
        details=_summary(trials, time.monotonic() - began, seed, load_seconds),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.monotonic()
    trials: list[Trial] = []
    load_seconds: dict[str, float] = {}
    plan = {"postgres": args.trials - args.trials // 2, "mariadb": args.trials // 2}
    try:
        for source, count in plan.items():
            if count == 0:
                continue
            # every phase at least once per source, then random ones
            phases = (list(PHASES) + [rng.choice(PHASES) for _ in range(max(0, count - len(PHASES)))])[:count]
            rng.shuffle(phases)
            with FaultRig(
                source, seed=rng.randrange(1 << 30), log=lambda m: print(m, file=sys.stderr, flush=True)
            ) as rig:
                load_seconds[source] = round(wait_initial_load(rig), 1)
                for phase in phases:
                    trials.append(run_trial(rig, len(trials) + 1, phase, rng.randint(15, 35)))
            _write(trials, began, args.seed, load_seconds)
    finally:
        if trials:
            _write(trials, began, args.seed, load_seconds)
    failed = [t for t in trials if t.error is not None or sum(t.diffs.values()) != 0]
    if failed:
        sys.exit(f"{len(failed)} of {len(trials)} trials failed or found diffs")


if __name__ == "__main__":
    main()
