"""Faults of the default ``run_mode: stream`` through a real Dagster daemon: pgbench writes, the streaming run's
process is SIGKILLed while it applies a batch to the sinks, or while it captures one; run monitoring marks the
run failed, a new streaming run (its retry, or the capture sensor's next) captures the planned batch again and
applies what the killed one left; every sink (DuckDB, ClickHouse, PostgreSQL) equals the source row by row, no
key held twice (``tests/faults/_harness.py``, ``run_stream_trial``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.faults._harness import FaultRig, Trial, run_stream_trial, wait_initial_load

WRITE_SECONDS = 10


@pytest.fixture
def stream_rig() -> Iterator[FaultRig]:
    """PostgreSQL (pgbench scale 1) -> DuckDB, ClickHouse, PostgreSQL with ``run_mode: stream``, loaded. One per
    trial: after two streaming runs in a row failed within 60 s of their start, the sensor waits 60 s before the
    next (as it should after two kills in a row; a trial measures one kill's recovery)."""
    with FaultRig("postgres", seed=20261130, run_mode="stream") as rig:
        wait_initial_load(rig)
        yield rig


def _assert_trial(rig: FaultRig, trial: Trial) -> None:
    assert trial.error is None, trial.as_dict()
    assert trial.kill is not None and trial.kill.hit, f"the kill missed its point: {trial.as_dict()}"
    assert trial.client_transactions > 0
    assert trial.recovery_seconds is not None, (
        f"no streaming run applied a batch after the kill: {trial.as_dict()}"
    )
    assert trial.rows_compared > 0
    assert trial.diffs and sum(trial.diffs.values()) == 0, f"sinks differ from the source: {trial.as_dict()}"
    # the pipeline streams on: the killed run failed; the streaming runs after it (the sensor's, no run_retries
    # besides: a retry would race them) ran one at a time, none failed, and one is in flight. A run after the kill
    # may end cleanly (it logs why, printed here): the sensor's next tick starts the next one.
    deadline = time.monotonic() + 60
    while True:
        runs = sorted(
            (r for r in rig.stream_runs() if r.create_timestamp.timestamp() > trial.kill.at),
            key=lambda r: r.create_timestamp,
        )
        in_flight = [r for r in runs if r.dagster_run.status.value in ("QUEUED", "STARTING", "STARTED")]
        if in_flight or time.monotonic() > deadline:
            break
        time.sleep(1)
    statuses = [r.dagster_run.status.value for r in rig.stream_runs()]
    ends = [_end_reason(rig, r) for r in runs if r not in in_flight]
    print("streaming runs after the kill that ended:", ends)
    assert "FAILURE" in statuses, statuses
    assert not any(r.dagster_run.status.value == "FAILURE" for r in runs), (statuses, ends)
    assert len(in_flight) == 1, (statuses, ends)
    for before, after in zip(runs, runs[1:], strict=False):  # never two streaming runs at once
        assert before.end_time is not None, (statuses, ends)
        assert after.start_time is None or after.start_time >= before.end_time, (statuses, ends)


def _end_reason(rig: FaultRig, record) -> str:
    """What an ended streaming run logged as the reason it ended."""
    messages = [e.user_message for e in rig.instance.all_logs(record.dagster_run.run_id) if e.user_message]
    return next((m for m in reversed(messages) if " ends after " in m), record.dagster_run.status.value)


@pytest.mark.parametrize("phase", ["apply", "capture"])
def test_sigkill_the_streaming_run_and_recover(stream_rig: FaultRig, phase: str):
    """SIGKILL the streaming run mid-apply (some sink tables have the batch, others not) or mid-capture (the
    batch is planned, its changes not recorded): after the drain every sink equals the source, nothing doubled."""
    trial = run_stream_trial(stream_rig, 0, phase, WRITE_SECONDS)
    print(trial.as_dict())
    _assert_trial(stream_rig, trial)
