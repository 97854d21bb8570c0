"""Randomized fault trials through Dagster: a real client writes, something is SIGKILLed, the pipeline recovers by
the normal means, drains, and every sink equals the source row by row (``tests/faults/_harness.py``).

The default run does 5 trials (3 on PostgreSQL under pgbench, 2 on MariaDB under sysbench), one per kill kind;
``bench/faults.py`` runs 50 randomized ones, and the slow test here 12.
"""

from __future__ import annotations

import random

import pytest

from tests.faults._harness import PHASES, FaultRig, Trial, run_trial

WRITE_SECONDS = 12


def _assert_trial(trial: Trial) -> None:
    assert trial.error is None, trial.as_dict()
    assert trial.kill is not None and trial.kill.hit, f"the kill missed its point: {trial.as_dict()}"
    assert trial.recovery_seconds is not None, f"no batch succeeded after the kill: {trial.as_dict()}"
    assert trial.rows_compared > 0
    assert trial.diffs and sum(trial.diffs.values()) == 0, f"sinks differ from the source: {trial.as_dict()}"


@pytest.mark.parametrize("phase", ["capture", "apply", "daemon"])
def test_pgbench_kill_and_recover(pg_rig: FaultRig, phase: str):
    """SIGKILL a run while it captures, while it applies, or the daemon with a run in progress: the killed run
    is marked failed and retried (run_retries), the sensor goes on, and all three sinks equal the source."""
    trial = run_trial(pg_rig, 0, phase, WRITE_SECONDS)
    _assert_trial(trial)
    assert trial.client_transactions > 0


@pytest.mark.parametrize("phase", ["server", "apply"])
def test_sysbench_kill_and_recover(mariadb_rig: FaultRig, phase: str):
    """SIGKILL the MariaDB source or a sink server (restarted on the same port) with a run in progress, or a run
    while it applies: after the drain all three sinks equal the source."""
    trial = run_trial(mariadb_rig, 0, phase, WRITE_SECONDS)
    _assert_trial(trial)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["postgres", "mariadb"])
def test_randomized_trials(source: str, request):
    """Six randomized trials per source (random phase, random moment), each ending with sink == source."""
    rig = request.getfixturevalue("pg_rig" if source == "postgres" else "mariadb_rig")
    rng = random.Random(f"faults-{source}")
    trials = [run_trial(rig, n, rng.choice(PHASES), rng.randint(15, 40)) for n in range(6)]
    for trial in trials:
        assert trial.error is None and sum(trial.diffs.values()) == 0, trial.as_dict()
