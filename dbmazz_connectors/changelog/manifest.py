"""The batch manifest: what a captured batch holds, written last so its presence means 'complete'."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.positions import SourcePosition, position_from_dict
from ..core.schema import TableSchema

__all__ = ["BatchManifest", "TableEntry", "FORMAT_VERSION"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TableEntry:
    """One table's part of a batch. ``entries`` are, in order: ``{"kind": "rows", "file", "rows", ...}``,
    ``{"kind": "truncate", "version", "commit_ts_us"}`` or ``{"kind": "schema", "schema", "version", "ddl"}``."""

    schema: TableSchema  # at the start of the batch
    entries: tuple[dict[str, Any], ...]
    ops: dict[str, int]
    bytes: int
    max_version: int | None
    max_commit_ts_us: int | None

    @property
    def rows(self) -> int:
        return sum(self.ops.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "entries": list(self.entries),
            "ops": self.ops,
            "bytes": self.bytes,
            "max_version": self.max_version,
            "max_commit_ts_us": self.max_commit_ts_us,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableEntry:
        return cls(
            schema=TableSchema.from_dict(data["schema"]),
            entries=tuple(data["entries"]),
            ops=dict(data["ops"]),
            bytes=int(data["bytes"]),
            max_version=data.get("max_version"),
            max_commit_ts_us=data.get("max_commit_ts_us"),
        )


@dataclass(frozen=True)
class BatchManifest:
    """A complete, durable batch covering the source range (start, end]."""

    pipeline: str
    batch_id: str
    start: SourcePosition
    end: SourcePosition
    tables: dict[str, TableEntry]
    created_at: str
    stats: dict[str, Any] = field(default_factory=dict)
    # "cdc": a range of the source's log; "snapshot": chunks of a snapshot (or its sweep), which
    # never move the pipeline's checkpoint. ``snapshot`` then names the snapshot and its chunks.
    kind: str = "cdc"
    snapshot: dict[str, Any] | None = None

    @property
    def is_snapshot(self) -> bool:
        return self.kind == "snapshot"

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "pipeline": self.pipeline,
            "batch_id": self.batch_id,
            "start": self.start.to_dict(),
            "end": self.end.to_dict(),
            "created_at": self.created_at,
            "tables": {name: entry.to_dict() for name, entry in self.tables.items()},
            "stats": self.stats,
            "kind": self.kind,
            "snapshot": self.snapshot,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchManifest:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"expected change-log manifest format {FORMAT_VERSION}, got {data.get('format')!r}"
            )
        return cls(
            pipeline=data["pipeline"],
            batch_id=data["batch_id"],
            start=position_from_dict(data["start"]),
            end=position_from_dict(data["end"]),
            tables={name: TableEntry.from_dict(t) for name, t in data["tables"].items()},
            created_at=data["created_at"],
            stats=dict(data.get("stats", {})),
            kind=data.get("kind", "cdc"),
            snapshot=data.get("snapshot"),
        )
