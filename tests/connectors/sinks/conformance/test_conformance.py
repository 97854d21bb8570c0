"""The conformance kit: every sink (conftest.SINKS, one ``SinkUnderTest`` each) converges to the source through
the mixed workload, replays and interleaved snapshots; follows schema changes, truncates and unknown values;
survives a SIGKILL at each point of an apply; holds its type matrix; and fails bad settings the documented way."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core import BatchRef, DbmazzError, Sink, SinkCapabilities, TransientError, create_sink
from dbmazz_connectors.engine import apply_batch

from .. import _convergence, _scenarios
from .._types import type_batch
from .._workload import assert_sink_equals, mixed_workload, write_batches
from .kit import BadConfig, KillPoint, SinkUnderTest, kill_and_reapply, same_values


def test_it_is_a_sink(conformance_sink: SinkUnderTest):
    sink = conformance_sink.make_sink("p")
    assert isinstance(sink, Sink) and isinstance(sink.capabilities(), SinkCapabilities)
    assert sink.preflight() == []
    assert sink.row_count("public.nope") == 0 and sink.high_water_version("public.nope") is None


def test_mixed_workload_from_the_change_log_equals_the_source(conformance_sink: SinkUnderTest, changelog):
    sut, wl = conformance_sink, mixed_workload(seed=11)
    sink = sut.make_sink("p")
    for batch_id in write_batches(changelog, "p", wl.batches):
        result = apply_batch(changelog, sink, "p", batch_id)["public.orders"]
        assert not result.already_applied and sink.is_applied(BatchRef("p", batch_id), "public.orders")
    assert_sink_equals(sut.read_rows(sink, wl.final_schema), wl.expected)
    assert sink.high_water_version("public.orders") == wl.batches[-1].end_version
    assert sink.row_count("public.orders") == len(wl.expected)


def test_every_batch_applied_twice_gives_the_same_rows(conformance_sink: SinkUnderTest, changelog):
    _convergence.applied_twice(
        conformance_sink.make_sink("p"), changelog, conformance_sink.read_rows, seed=12
    )


def test_replays_under_new_batch_ids_converge_by_version(conformance_sink: SinkUnderTest):
    _convergence.replayed_under_new_ids(conformance_sink.make_sink("p"), conformance_sink.read_rows, seed=13)


def test_snapshot_batches_interleaved_give_the_same_rows(conformance_sink: SinkUnderTest):
    _convergence.snapshots_interleaved(conformance_sink.make_sink("p"), conformance_sink.read_rows, seed=14)


@pytest.mark.parametrize("scenario", _scenarios.__all__)
def test_scenario(conformance_sink: SinkUnderTest, scenario):
    getattr(_scenarios, scenario)(conformance_sink.make_sink("p"), conformance_sink.read_rows)


def test_sigkill_mid_batch_then_reapply_converges(
    conformance_sink: SinkUnderTest, kill_point: KillPoint, changelog, tmp_path
):
    if conformance_sink.crash is None:
        pytest.skip(f"{conformance_sink.name} cannot be killed mid-apply")
    kill_and_reapply(conformance_sink, changelog, tmp_path, kill_point)


def test_every_type_of_the_matrix_in_one_batch_reads_back(conformance_sink: SinkUnderTest):
    """All the sink's type-matrix columns in one table and one batch (each sink's own folder writes them one by
    one and checks the native types too)."""
    matrix = conformance_sink.types
    if matrix is None:
        pytest.skip(f"{conformance_sink.name} has no type matrix")
    sink = conformance_sink.make_sink("p")
    sink.create_table(type_batch(list(matrix.expected)).schema)
    sink.write_batch(type_batch(list(matrix.expected)), BatchRef("p", "types"))
    differ = {
        c: (got, want)
        for c, want in matrix.expected.items()
        if not same_values(got := matrix.read(sink, c), list(want))
    }
    assert not differ, f"columns read back differently (got, expected): {differ}"


def _failure(bad: BadConfig) -> tuple[DbmazzError, list[str]]:
    """The error of ``create_sink`` or else ``connect``, and what preflight says about the same setting."""
    try:
        sink = create_sink(dict(bad.config))
    except DbmazzError as exc:
        return exc, []
    try:
        with pytest.raises(DbmazzError) as info:
            sink.connect()
        problems = [str(p) for p in sink.preflight()]
        assert problems, f"{bad.label}: connect fails but preflight finds nothing"
        return info.value, problems
    finally:
        sink.disconnect()


def test_bad_settings_fail_as_documented_without_the_password(conformance_sink: SinkUnderTest):
    assert conformance_sink.bad_configs, "a sink has at least its unknown option"
    for bad in conformance_sink.bad_configs:
        error, problems = _failure(bad)
        assert isinstance(error, bad.error), f"{bad.label}: expected {bad.error.__name__}, got {error!r}"
        assert error.transient is issubclass(bad.error, TransientError), bad.label
        assert bad.message in str(error), f"{bad.label}: {error}"
        if bad.secret is not None:
            assert bad.secret not in str(error) and bad.secret not in repr(error.args), bad.label
            assert not any(bad.secret in p for p in problems), bad.label
