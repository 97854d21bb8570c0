"""Faults through Dagster: a real client writes, something is SIGKILLed (or a server restarted or stopped), the
pipeline recovers by the normal means, drains, and every sink equals the source row by row
(``tests/faults/_harness.py``). One pipeline per source kind serves the whole module.

The default run does 5 kill trials (3 on PostgreSQL under pgbench, 2 on MariaDB under sysbench), one per kill
kind, and a source restart mid-capture per source; ``bench/faults.py`` runs 50 randomized trials, the slow test
here 12; the 30-second sink outage is slow too (``bench/outage.py`` runs the 10-minute one).
"""

from __future__ import annotations

import random

import pytest

from tests.faults._harness import (
    CAPTURE_STEP,
    PHASES,
    FaultRig,
    Trial,
    run_trial,
    sink_outage,
    source_restart,
)

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


# ---- outages

MESSAGES = {
    "postgres": ("postgres connection failed while capturing", "cannot connect to postgres"),
    "mariadb": ("lost the binlog connection", "cannot reach mysql", "lost the connection to mysql"),
}


def _assert_restart(rig: FaultRig) -> None:
    outcome = source_restart(rig)
    print(
        f"\n{rig.source_kind} restarted during run {outcome.run_id[:8]}: {outcome.errors}; converged in "
        f"{outcome.converged_seconds}s, {outcome.rows_compared} rows compared, diffs {outcome.diffs}"
    )
    assert outcome.cut_during_capture, f"the restart never landed in a capture: {outcome}"
    capture = [(cls, msg) for step, cls, msg in outcome.errors if step == CAPTURE_STEP]
    assert capture, outcome.errors
    cls, message = capture[0]
    # what the user reads on the failed run: a transient error (retried by run_retries), saying what happened
    assert cls == "TransientError", capture
    assert message.startswith(MESSAGES[rig.source_kind]), message
    assert rig.env["FAULTS_SOURCE_PASSWORD"] not in message
    assert outcome.converged_seconds is not None, "no batch succeeded after the restart"
    assert outcome.rows_compared > 0 and sum(outcome.diffs.values()) == 0, outcome


@pytest.mark.slow  # ~2 min; the TransientError per call is covered quickly by sources/postgres/test_connection_lost.py
def test_postgres_fast_shutdown_mid_capture(pg_rig: FaultRig):
    """``pg_ctl stop -m fast`` while a run captures, then start: the run fails with a TransientError naming the
    lost connection, its retry converges, and every sink equals the source."""
    _assert_restart(pg_rig)


@pytest.mark.slow  # ~2 min: the default run keeps `make test` near 20 minutes on 2 cores
def test_mariadb_restart_mid_capture(mariadb_rig: FaultRig):
    """MariaDB shut down (SIGTERM) while a run captures, then started: TransientError, retry converges, sink ==
    source."""
    _assert_restart(mariadb_rig)


@pytest.mark.slow
def test_clickhouse_down_30s_under_pgbench(pg_rig: FaultRig):
    """ClickHouse down for 30 s while pgbench writes: capture goes on (the checkpoint moves past the outage's
    start, the change log grows), applying to ClickHouse fails with a TransientError naming it, then ClickHouse
    comes back, its failed runs are retried or re-executed, and every sink equals the source. (Whether the retained WAL stays bounded over a long outage: bench/outage.py.)"""
    outage = sink_outage(pg_rig, 30, rate=300)
    report = outage.as_dict()
    print(report)
    assert outage.checkpoint_moved_during_outage, report
    assert outage.changelog_bytes_after_outage > outage.changelog_bytes_before, report
    assert outage.failed_runs_since_outage > 0, (
        report
    )  # the outage was noticed: applying to ClickHouse failed
    assert any("clickhouse sink: " in e and "TransientError" in e for e in outage.sink_errors), report
    assert outage.rows_compared > 0 and sum(outage.diffs.values()) == 0, report
