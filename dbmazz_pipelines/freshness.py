"""Sink table freshness as Dagster's own freshness policy reads it.

Each sink table carries a ``FreshnessPolicy.time_window`` (``freshness_fail_seconds``, ``freshness_warn_seconds``).
Dagster's freshness daemon evaluates it every 30 s from one thing only: the timestamp of the asset's latest
materialization event (any partition, any run, runless ones too). Left alone, that reading is wrong both ways
for a CDC sink: an idle source produces no batch, so a current sink table would fail; and a re-run of an old
batch records a materialization now, so a sink table stuck on newer batches would pass.

dbmazz therefore keeps the latest materialization of each sink table meaning "the table was last known current
at this time":

- **idle and current** (``report_current``): when the source has nothing newer and the table has applied the
  newest captured batch, the capture sensor (or the streaming run) records the table's latest materialization
  again, same partition and metadata, now, with ``dbmazz/current_at`` (the position the source was at) -- at
  most once per ``heartbeat_seconds`` (a quarter of the shorter window, 15 s or more);
- **a replay** (``ReplayGuard``): a run that applies only batches the table had already materialized, or older
  than its newest one (a re-run, a backfill), records its own materialization as Dagster does, then restores
  the table's previous latest materialization with its own (older) timestamp. A replay says nothing about how
  current the table is, so it does not move what the policy reads. The partitions it applied stay
  materialized (a re-run of a failed batch still counts as applied).

The restored event is runless and written with the earlier timestamp (``report_dagster_event``); the UI lists
it among the table's materializations with ``dbmazz/restated``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
from dagster._core.events import StepMaterializationData
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID
from dagster._time import get_current_timestamp

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.snapshots import SNAPSHOT_PREFIX

__all__ = [
    "freshness_policy",
    "heartbeat_seconds",
    "report_current",
    "caught_up",
    "ReplayGuard",
    "finish_restatement",
    "now",
]

HEARTBEAT_FLOOR_SECONDS = 15.0
CURRENT_AT = "dbmazz/current_at"
RESTATED = "dbmazz/restated"
REPLAY = "dbmazz/replay"  # on a replay's own materialization, until its restatement follows


def now() -> float:
    """Dagster's clock (the one its freshness daemon reads, frozen by ``freeze_time`` in tests)."""
    return get_current_timestamp()


def freshness_policy(pipeline: PipelineConfig) -> dg.FreshnessPolicy | None:
    """The time-window policy of the pipeline's sink tables; None when ``freshness_fail_seconds`` is 0."""
    if not pipeline.freshness_fail_seconds:
        return None
    warn = pipeline.freshness_warn_seconds
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(seconds=pipeline.freshness_fail_seconds),
        warn_window=timedelta(seconds=warn) if warn else None,
    )


def heartbeat_seconds(pipeline: PipelineConfig) -> float:
    """How old a current table's latest materialization may get before it is recorded again (inf: never)."""
    windows = [w for w in (pipeline.freshness_warn_seconds, pipeline.freshness_fail_seconds) if w]
    if not pipeline.freshness_fail_seconds or not windows:
        return math.inf
    return max(HEARTBEAT_FLOOR_SECONDS, min(windows) / 4)


def _age(batch_id: str) -> str:
    """Orders log batches (``<start>-<end>``) and snapshot batches (``snap-<floor>-…``) by source position."""
    return batch_id[len(SNAPSHOT_PREFIX) :] if batch_id.startswith(SNAPSHOT_PREFIX) else batch_id


def caught_up(instance: dg.DagsterInstance, key: dg.AssetKey, newest_log_batch: str | None) -> bool:
    """Whether the sink table has applied the newest captured log batch (one indexed query)."""
    if newest_log_batch is None:
        return True
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[newest_log_batch]), limit=1
    )
    return bool(found.records)


def _again(
    materialization: dg.AssetMaterialization, extra: dict, description: str
) -> dg.AssetMaterialization:
    metadata = {k: v for k, v in materialization.metadata.items() if k not in (CURRENT_AT, RESTATED, REPLAY)}
    return dg.AssetMaterialization(
        asset_key=materialization.asset_key,
        partition=materialization.partition,
        metadata={**metadata, **extra},
        description=description,
    )


def report_current(
    instance: dg.DagsterInstance, pipeline: PipelineConfig, key: dg.AssetKey, position: str, log_event=None
) -> bool:
    """The table is current (the caller checked: nothing newer at the source, newest batch applied): record its
    latest materialization again now, when it is older than ``heartbeat_seconds``. ``log_event``: a run's
    ``context.log_event`` (the streaming run records it as its own event), else it is runless. Whether it did."""
    last = instance.get_latest_materialization_event(key)
    if last is None or last.asset_materialization is None:
        return False  # nothing applied yet: Dagster's policy says UNKNOWN, not FAIL
    if now() - last.timestamp < heartbeat_seconds(pipeline):
        return False
    event = _again(
        last.asset_materialization,
        {CURRENT_AT: position},
        f"current at {position}: every captured change is applied and the source has nothing newer (recorded "
        "again so that Dagster's freshness policy sees an idle table as current)",
    )
    if log_event is not None:
        log_event(event)
    else:
        instance.report_runless_asset_event(event)
    return True


def _is_replay(event: dg.EventLogEntry | None) -> bool:
    return (
        event is not None
        and event.asset_materialization is not None
        and REPLAY in event.asset_materialization.metadata
    )


def _last_update(instance: dg.DagsterInstance, key: dg.AssetKey) -> dg.EventLogEntry | None:
    """The table's latest materialization that is not a replay's own (a replay whose restatement a killed
    process never wrote is skipped)."""
    last = instance.get_latest_materialization_event(key)
    if not _is_replay(last):
        return last
    for record in instance.fetch_materializations(key, limit=50).records:
        if not _is_replay(record.event_log_entry):
            return record.event_log_entry
    return None


def _restate(instance: dg.DagsterInstance, previous: dg.EventLogEntry, why: str, description: str) -> None:
    """Record ``previous`` again (partition, metadata), runless, with its own timestamp."""
    assert previous.asset_materialization is not None
    event = _again(previous.asset_materialization, {RESTATED: why}, description)
    instance.report_dagster_event(
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.ASSET_MATERIALIZATION.value,
            job_name=RUNLESS_JOB_NAME,
            event_specific_data=StepMaterializationData(event),
        ),
        run_id=RUNLESS_RUN_ID,
        timestamp=previous.timestamp,
    )


@dataclass
class ReplayGuard:
    """Read before a run applies its batches to one sink table, used after its materialization is recorded."""

    key: dg.AssetKey
    before: dg.EventLogEntry | None
    replay: bool

    @classmethod
    def before_apply(cls, instance: dg.DagsterInstance, key: dg.AssetKey, batches: list[str]) -> ReplayGuard:
        last = _last_update(instance, key)
        newest = last.asset_materialization.partition if last and last.asset_materialization else None
        if last is None or newest is None or not batches or _age(max(batches, key=_age)) > _age(newest):
            return cls(key, last, False)
        applied = instance.get_materialized_partitions(key)
        return cls(key, last, all(b in applied or _age(b) < _age(newest) for b in batches))

    @property
    def metadata(self) -> dict[str, object]:
        """Marks a replay's own materialization (so a restatement a killed process never wrote is made later)."""
        return {REPLAY: True} if self.replay else {}

    def after_apply(self, instance: dg.DagsterInstance, run_id: str, batches: list[str], log) -> bool:
        """Restore the table's previous latest materialization (its partition, metadata and timestamp) after a
        replay's own; nothing when another run recorded one in between. Whether it did."""
        if not self.replay or self.before is None or self.before.asset_materialization is None:
            return False
        latest = instance.get_latest_materialization_event(self.key)
        if latest is None or latest.run_id != run_id:
            return False
        what = batches[0] if len(batches) == 1 else f"{batches[0]} .. {batches[-1]}"
        previous = self.before.asset_materialization
        _restate(
            instance,
            self.before,
            f"after a re-run of {what} (run {run_id[:8]})",
            f"restated: a re-run of {what}, older than batch {previous.partition}, does not make the table more "
            "current; its latest update stays the one Dagster's freshness policy reads",
        )
        log.info(
            f"{self.key.to_user_string()}: {what} re-applied; its latest update stays batch "
            f"{previous.partition} (the freshness policy is not fooled by a replay)"
        )
        return True


def finish_restatement(instance: dg.DagsterInstance, key: dg.AssetKey, log=None) -> bool:
    """The table's latest materialization is a replay's own, not restated (its process was killed in between):
    restate the update before it now (the capture sensor checks on each tick). Whether it did."""
    last = instance.get_latest_materialization_event(key)
    if not _is_replay(last):
        return False
    previous = _last_update(instance, key)
    if previous is None or previous.asset_materialization is None:
        return False
    _restate(
        instance,
        previous,
        "after a re-run whose process ended before restating it",
        f"restated: a re-run ended before restating the table's latest update (batch "
        f"{previous.asset_materialization.partition}); a replay does not make the table more current",
    )
    if log is not None:
        log.warning(f"{key.to_user_string()}: restated its latest update after an interrupted re-run")
    return True
