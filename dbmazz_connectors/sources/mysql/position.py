"""MySQL/MariaDB's source position: a binlog coordinate, registered as position kind ``binlog``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.positions import SourcePosition, register_position

__all__ = ["BinlogPosition"]

_BINLOG_SEQ = re.compile(r"\.(\d+)$")


@dataclass(frozen=True)
class BinlogPosition(SourcePosition):
    """A binlog coordinate: file + offset, plus the GTID set where GTIDs are on.

    Ordering and ``version`` use the file's sequence number (the numeric suffix,
    ``mysql-bin.000042`` -> 42) and the offset: ``version = seq << 32 | offset``.
    Binlog files are at most 1 GiB (``max_binlog_size``), so the offset fits 32 bits.
    ``gtid_set`` (MariaDB's ``gtid_binlog_pos`` or MySQL's executed GTID set at this position) is
    carried for display and for a future GTID-based resume; it takes no part in the order.
    """

    kind: ClassVar[str] = "binlog"
    file: str
    offset: int
    gtid_set: str | None = None

    def __post_init__(self) -> None:
        if not _BINLOG_SEQ.search(self.file):
            raise ValueError(f"expected a binlog file name ending in a number, got {self.file!r}")
        if not 0 <= self.offset < 2**32:
            raise ValueError(f"expected a binlog offset below 2^32, got {self.offset}")

    @property
    def sequence(self) -> int:
        match = _BINLOG_SEQ.search(self.file)
        assert match is not None
        return int(match.group(1))

    @property
    def version(self) -> int:
        return (self.sequence << 32) | self.offset

    def sort_key(self) -> tuple[int, int]:
        return (self.sequence, self.offset)

    def bytes_since(self, earlier: SourcePosition) -> int | None:
        if isinstance(earlier, BinlogPosition) and earlier.file == self.file:
            return self.offset - earlier.offset
        return None  # the sizes of the files in between are not known here

    def capped(self, limit: SourcePosition, max_bytes: int) -> SourcePosition:
        """``max_bytes`` further in this binlog file, or ``limit`` when it is nearer (README, "Bounded batches").

        The sizes of the files in between are not known here, so a cap never reaches into a later file: a read
        reaching the end of this file meets its rotate event, a transaction boundary past the capped position,
        and ends the batch there, at the next file's start. The capped position has no GTID set (the batch's end,
        the Heartbeat the reader yields, carries it).
        """
        if not isinstance(limit, BinlogPosition) or max_bytes <= 0 or limit <= self:
            return limit
        offset = min(self.offset + max_bytes, 2**32 - 1)
        if limit.file == self.file and limit.offset <= offset:
            return limit
        if offset == self.offset:  # the offset cannot grow (a file at 4 GiB): no cap
            return limit
        return BinlogPosition(self.file, offset)

    def __str__(self) -> str:
        return f"{self.file}:{self.offset}" + (f" [{self.gtid_set}]" if self.gtid_set else "")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "offset": self.offset, "gtid_set": self.gtid_set}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinlogPosition:
        return cls(str(data["file"]), int(data["offset"]), data.get("gtid_set"))


register_position(BinlogPosition.kind, BinlogPosition)
