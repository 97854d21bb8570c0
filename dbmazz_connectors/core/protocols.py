"""The contracts between the engine and connectors: Source, Sink and what a sink can do."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar, runtime_checkable

from .batch import ChangeBatch, ChangeEvent
from .errors import Problem
from .positions import SourcePosition
from .schema import TableSchema

__all__ = [
    "Source",
    "Sink",
    "TombstonePruning",
    "SinkCapabilities",
    "LoadingModel",
    "BatchRef",
    "WriteResult",
    "P",
]

# A source's own position type (the PostgreSQL source is a Source of WAL locations); the engine takes any Source[P].
P = TypeVar("P", bound=SourcePosition)


@runtime_checkable
class Source(Protocol[P]):
    """A database whose changes dbmazz captures. A source never knows where its rows go.

    Lifecycle: ``connect`` -> ``preflight`` -> ``setup`` -> (``current_position`` ->
    ``read_changes`` -> ``checkpoint``)* -> ``disconnect``.

    Generic in its position type ``P`` (a ``SourcePosition`` subclass the source registers): the
    positions it reports are the ones it is given back, so its methods may take ``P`` itself.
    """

    name: str

    def connect(self) -> None:
        """Open connections; raise ``ConfigError``/``TransientError`` with a redacted message."""

    def preflight(self) -> list[Problem]:
        """Check every requirement without changing anything; an empty list means ready."""

    def setup(self) -> None:
        """Create what capture needs (publication, slot, ...). Must be idempotent."""

    def table_schemas(self) -> Mapping[str, TableSchema]:
        """The configured tables' current schemas, by qualified name."""

    def current_position(self) -> P:
        """The end of the server's log now (an upper bound for the next range)."""

    def checkpoint_position(self) -> P | None:
        """The position the source has acknowledged (nothing at or before it will be read again)."""

    def read_changes(self, start: P, end: P) -> Iterator[ChangeEvent]:
        """Yield the changes of the range (start, end] in source order, bounded in memory.

        The range is extended to the next transaction boundary at or after ``end``; the last
        item is a ``Heartbeat`` carrying the position actually reached. Reading the same range
        again before ``checkpoint`` yields the same events (must be repeatable). Reading never
        acknowledges anything.
        """

    def checkpoint(self, position: P) -> None:
        """Acknowledge everything up to ``position``; called only once it is durable elsewhere.

        Must be idempotent; acknowledging a position at or before the current one is a no-op.
        """

    def row_count(self, table: str) -> int:
        """Rows in the source table now (for the row-count parity check)."""

    def disconnect(self) -> None: ...


class LoadingModel(StrEnum):
    STREAMING = "streaming"  # row/columnar inserts over a connection
    STAGED_BATCH = "staged_batch"  # a staged file or stream load per batch
    TRANSACTIONAL = "transactional"  # staged rows merged inside one transaction


@dataclass(frozen=True)
class SinkCapabilities:
    loading_model: LoadingModel
    supports_upsert: bool
    supports_delete: bool
    supports_schema_evolution: bool
    supports_transactions: bool
    max_batch_rows: int | None = None


@dataclass(frozen=True)
class BatchRef:
    """Identifies one batch of one pipeline; sinks key their idempotency on it."""

    pipeline: str
    batch_id: str


@dataclass(frozen=True)
class WriteResult:
    table: str
    rows_written: int  # rows after compaction; 0 when already applied
    already_applied: bool
    high_water_version: int | None
    details: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Sink(Protocol):
    """An analytical store dbmazz writes to. A sink never knows where its rows came from."""

    name: str

    def connect(self) -> None: ...

    def preflight(self, tables: Sequence[str] = ()) -> list[Problem]:
        """Reachability and DDL rights (for the sink tables of source ``tables``, where given); empty means ready."""

    def capabilities(self) -> SinkCapabilities: ...

    def create_table(self, schema: TableSchema) -> None:
        """Create the target table for ``schema`` if it does not exist. Must be idempotent."""

    def write_batch(self, batch: ChangeBatch, ref: BatchRef) -> WriteResult:
        """Apply one table's batch exactly once.

        Idempotent per (``ref``, table): applying it again, or after a crash at any point, leaves
        the sink as if applied once. Per key the row with the highest ``_dbmazz_version`` wins,
        whatever order batches and snapshot chunks arrive in.
        """

    def is_applied(self, ref: BatchRef, table: str) -> bool:
        """Whether ``write_batch`` of (``ref``, ``table``) has completed on this sink (read-only)."""

    def high_water_version(self, table: str) -> int | None:
        """The highest ``_dbmazz_version`` applied to ``table``, or None."""

    def row_count(self, table: str) -> int:
        """Live rows of the sink table for source table ``table`` (0 if it does not exist yet)."""

    def disconnect(self) -> None: ...


@runtime_checkable
class TombstonePruning(Protocol):
    """Optional sink capability: forget tombstones no replay can still need (``isinstance(sink, TombstonePruning)``).

    A sink keeps a tombstone per deleted key so an older change applied later cannot resurrect it. Every
    change that can still be applied comes from the change log, whose batches all hold versions at or above
    ``engine.tombstone_horizon``; a tombstone below it can never be outvoted, so it may go (docs/architecture.md).
    """

    def prune_tombstones(self, table: str | None, below_version: int) -> int:
        """Forget the tombstones of source table ``table`` (None: every table) whose version is below
        ``below_version``, together with any older row of their keys; returns how many keys were forgotten.
        None means every table the sink holds, whichever pipeline wrote it: a horizon is one source's, so
        retention names its pipeline's tables.

        Must be idempotent and crash-safe: a prune killed at any point, then run again, leaves live rows
        exactly as before, and never lets an older row of a forgotten key become visible.
        """
