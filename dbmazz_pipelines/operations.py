"""Operations outside batches, shown in the UI as observations of ``<pipeline>/changes``.

Setting the source up (publication, slot), moving the source's acknowledged position while none of the
pipeline's tables changed (the slot advances without a batch), planning a snapshot and retention (batches
pruned, tombstones forgotten) happen in sensor ticks and streaming runs, not in batch runs of their own. Each
is recorded as an ``AssetObservation`` of ``<pipeline>/changes`` with ``dbmazz/operation`` and what it did:
runless from a sensor tick, the run's own event from a streaming run (it is in the run's log too). Slot
advances are frequent on an idle source (every poll), so they are summed up: one observation per pipeline and
process at most every ``ADVANCE_EVERY_SECONDS``, from the first position not reported yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import dagster as dg

from .freshness import now

__all__ = ["observe", "report_advance", "OPERATION", "ADVANCE_EVERY_SECONDS"]

OPERATION = "dbmazz/operation"
ADVANCE_EVERY_SECONDS = 60.0

_lock = threading.Lock()
_advances: dict[str, dict] = {}  # scope -> {"from", "to", "count", "reported_at"}


def observe(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    operation: str,
    description: str,
    metadata: dict | None = None,
    log_event: Callable | None = None,
) -> dg.AssetObservation:
    """Record one operation as an observation of ``key`` (``<pipeline>/changes``); in the run when
    ``log_event`` (a run's ``context.log_event``) is given, else runless."""
    event = dg.AssetObservation(
        asset_key=key, description=description, metadata={OPERATION: operation, **(metadata or {})}
    )
    if log_event is not None:
        log_event(event)
    else:
        instance.report_runless_asset_event(event)
    return event


def report_advance(
    instance: dg.DagsterInstance, scope: str, key: dg.AssetKey, start, end, log_event: Callable | None = None
) -> bool:
    """The source was acknowledged from ``start`` to ``end`` with no change of the pipeline's tables between:
    observed now if none was in the last ``ADVANCE_EVERY_SECONDS``, else added to the next one. Whether it
    recorded one. ``scope``: the pipeline and its change log (what the rate is kept per)."""
    with _lock:
        pending = _advances.setdefault(scope, {"from": None, "to": None, "count": 0, "reported_at": None})
        if pending["from"] is None:
            pending["from"] = start
        pending["to"], pending["count"] = end, pending["count"] + 1
        if pending["reported_at"] is not None and now() - pending["reported_at"] < ADVANCE_EVERY_SECONDS:
            return False
        start, count = pending["from"], pending["count"]
        pending.update({"from": None, "count": 0, "reported_at": now()})
    observe(
        instance,
        key,
        "source advanced",
        f"the source was acknowledged from {start} to {end} ({count} advance{'s' if count > 1 else ''}): "
        "nothing of the pipeline's tables changed in between, so no batch; the source can free its log",
        {"dbmazz/from": str(start), "dbmazz/to": str(end), "advances": count},
        log_event,
    )
    return True
