"""The sink conformance kit: what every sink must do, checked against any sink from one fixture.

A sink is wired in by one ``SinkUnderTest`` (see ``conftest.py``: one fixture per sink, ``conformance_sink``
runs the kit over all of them). It says how to make a connected sink (as the least-privilege login where the
sink has logins), how a user reads its rows back, which bad settings must fail how, where an apply can be
killed, and what the type matrix reads back. ``test_conformance.py`` then runs the shared scenarios
(``../_convergence.py``, ``../_scenarios.py``, ``../_workload.py``, ``../_types.py``) against it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dbmazz_connectors.core import DbmazzError, Sink, TableSchema
from dbmazz_connectors.engine import apply_batch

from .._workload import assert_sink_equals, mixed_workload, source_rows_after, write_batches

__all__ = [
    "BadConfig",
    "KillPoint",
    "Crash",
    "TypeMatrix",
    "SinkUnderTest",
    "run_killed",
    "kill_and_reapply",
    "same_values",
]

ReadRows = Callable[[Any, TableSchema], list[tuple]]


@dataclass(frozen=True)
class BadConfig:
    """A setting that must fail: at ``create_sink`` or ``connect``, as ``error``, saying ``message``."""

    label: str
    config: Mapping[str, Any]
    error: type[DbmazzError]
    message: str  # a fragment of the error's text
    secret: str | None = None  # must appear in neither the error, its args nor preflight's problems


@dataclass(frozen=True)
class KillPoint:
    """Batch 4 of the mixed workload (it adds a column) is killed right after ``kill_at`` ran on the server."""

    kill_at: (
        str  # start of the statement (``COMMIT``, or the sink's own name for a load) the process dies after
    )
    state: (
        str | None
    )  # what a reader sees then: "before" or "after" batch 4; None: part of it (no transaction)
    recorded: bool  # whether batch 4 counts as applied afterwards
    details: Mapping[str, int] = field(default_factory=dict)  # expected in batch 4's result when re-applied


@dataclass(frozen=True)
class Crash:
    """How to SIGKILL the sink mid-apply: ``hooks`` ("module:function") wraps the driver calls of a connected
    sink, ``function(sink, die)``, calling ``die(statement)`` after each one ran (see ``_kill.py``). Where to
    kill it (``KillPoint``s) is listed by sink name in ``conftest.KILL_POINTS``: tests are parametrized by them."""

    hooks: str
    env: Mapping[str, str] = field(default_factory=dict)  # for the killed process (an entry point's path)


@dataclass(frozen=True)
class TypeMatrix:
    """The columns of ``_types.TYPE_CASES`` the sink holds, with the values a user reads back (rows by id)."""

    expected: Mapping[str, list]
    read: Callable[[Any, str], list]  # (sink, column) -> values of public.types.<column> ordered by id
    note: str = ""  # why columns are left out, if any


@dataclass(frozen=True)
class SinkUnderTest:
    name: str
    config: Callable[[str], dict]  # create_sink config for a pipeline, as the sink's least-privilege login
    make_sink: Callable[[str], Sink]  # a connected sink of that config; the fixture disconnects it
    read_rows: ReadRows  # live rows of schema's table, its columns in order, as a user of the sink reads them
    bad_configs: tuple[BadConfig, ...] = ()
    crash: Crash | None = None
    types: TypeMatrix | None = None


def connected(config: Callable[[str], dict], prepare: Callable[[Any], None] | None = None):
    """``(make_sink, close)`` for a fixture: sinks made by ``make_sink`` are disconnected by ``close()``."""
    from dbmazz_connectors.core import create_sink

    made: list = []

    def make_sink(pipeline: str = "p") -> Sink:
        sink = create_sink(config(pipeline))
        sink.connect()
        made.append(sink)
        if prepare is not None:
            prepare(sink)
        return sink

    def close() -> None:
        for sink in made:
            sink.disconnect()

    return make_sink, close


def run_killed(
    config: dict,
    hooks: str,
    changelog,
    batch_ids: Sequence[str],
    kill_batch: str,
    kill_at: str,
    env: Mapping[str, str] | None = None,
) -> None:
    """Apply ``batch_ids`` in a child process that SIGKILLs itself right after ``kill_at`` ran in ``kill_batch``."""
    spec = {
        "sink": config,
        "hooks": hooks,
        "changelog": changelog.root,
        "pipeline": config.get("pipeline", "p"),
        "batches": list(batch_ids),
        "kill_batch": kill_batch,
        "kill_at": kill_at,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.connectors.sinks.conformance._kill", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == -9, f"the applier was not killed: {proc.returncode}\n{proc.stderr[-2000:]}"


def kill_and_reapply(sut: SinkUnderTest, changelog, tmp_path, point: KillPoint) -> None:
    """Kill the apply inside batch 4; the sink shows the state the point promises; re-applying every batch
    skips exactly the recorded ones and converges to the source."""
    assert sut.crash is not None
    wl = mixed_workload(seed=31)
    ids = write_batches(changelog, "p", wl.batches)
    run_killed(sut.config("p"), sut.crash.hooks, changelog, ids, ids[4], point.kill_at, sut.crash.env)
    sink = sut.make_sink("p")
    if point.state is not None:
        schema, rows = source_rows_after(
            wl.batches[: 5 if point.state == "after" else 4], str(tmp_path / "state")
        )
        assert_sink_equals(sut.read_rows(sink, schema), rows)
    results = [apply_batch(changelog, sink, "p", batch_id)["public.orders"] for batch_id in ids]
    assert [r.already_applied for r in results] == [True] * 4 + [point.recorded] + [False]
    assert {k: results[4].details.get(k) for k in point.details} == dict(point.details)
    assert_sink_equals(sut.read_rows(sink, wl.final_schema), wl.expected)


def same_values(got: list, want: list) -> bool:
    """List equality where NaN equals NaN (a float column's edge values)."""

    def same(a, b) -> bool:
        return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b

    return len(got) == len(want) and all(same(a, b) for a, b in zip(got, want, strict=True))
