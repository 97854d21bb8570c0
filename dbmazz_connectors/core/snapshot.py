"""Snapshots: primary-key chunks of a table, and the contract of a source that can read them.

A snapshot (the initial load of a table, or a re-sync) is read in chunks, each a range of the
table's primary key. Every chunk is read from a consistent view of the source at some log
position ``P`` and its rows are versioned so that, by the ordering invariant, every change
committed after ``P`` wins over them and every change committed before ``P`` is already in
them (docs/architecture.md, "Snapshots"). Chunks of one snapshot may be read at different
positions (after a crash, the rest is read later): each is consistent on its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .batch import Rows
from .positions import SourcePosition

__all__ = ["KeyRange", "SnapshotChunk", "SnapshotSource", "FULL_RANGE"]


@dataclass(frozen=True)
class KeyRange:
    """Primary-key values ``lower <= key < upper`` (row comparison in the source's own order).

    Bounds are tuples of JSON values in the source's own representation (the source that planned
    them reads them back); None means unbounded. Only the source ever compares keys with them, so
    a sink's collation never matters.
    """

    lower: tuple[Any, ...] | None = None
    upper: tuple[Any, ...] | None = None

    @property
    def is_full(self) -> bool:
        return self.lower is None and self.upper is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lower": list(self.lower) if self.lower is not None else None,
            "upper": list(self.upper) if self.upper is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRange:
        lower, upper = data.get("lower"), data.get("upper")
        return cls(tuple(lower) if lower is not None else None, tuple(upper) if upper is not None else None)

    def __str__(self) -> str:
        def show(bound: tuple[Any, ...] | None) -> str:
            return "(" + ", ".join(map(str, bound)) + ")" if bound is not None else "…"

        return f"[{show(self.lower)}, {show(self.upper)})"


FULL_RANGE = KeyRange()


@dataclass(frozen=True)
class SnapshotChunk:
    """One primary-key range of one table, the unit a snapshot reads."""

    table: str
    index: int
    key_range: KeyRange

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "index": self.index, "range": self.key_range.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotChunk:
        return cls(data["table"], int(data["index"]), KeyRange.from_dict(data["range"]))


@runtime_checkable
class SnapshotSource(Protocol):
    """A source that can read its tables' current rows consistently with its change stream."""

    def snapshot_floor(self) -> SourcePosition:
        """A position at or before the version of every snapshot row read from now on.

        A whole-table re-sync removes, once its chunks are in, every sink row older than this
        (rows the source no longer has); so it must be read before the first chunk.
        """

    def plan_chunks(self, table: str, chunk_rows: int, key_range: KeyRange = FULL_RANGE) -> list[KeyRange]:
        """Split ``key_range`` of the table's primary key into consecutive ranges of about ``chunk_rows`` rows.

        The ranges cover ``key_range`` entirely (the first starts at its lower bound, the last ends
        at its upper bound, unbounded where it is), so rows inserted after planning are covered too.
        """

    def read_snapshot(self, chunks: Sequence[SnapshotChunk], parallelism: int) -> Iterator[Rows]:
        """Yield the current rows of every chunk as inserts (``_dbmazz_op`` 0), in any order.

        Each chunk is read from one consistent view at a source position P, and its rows carry a
        ``_dbmazz_version`` such that every change committed after P has a higher version and
        every change committed before P is reflected in the rows. Up to ``parallelism`` chunks
        are read at once; memory is bounded by the source's read block, whatever the table size.
        Reading changes nothing in the source that the change stream depends on (no table lock).
        """
