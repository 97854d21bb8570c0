"""Totally ordered, serialisable source positions and their uint64 version encoding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["SourcePosition", "Lsn", "BinlogPosition", "position_from_dict"]

_UINT64_MAX = 2**64 - 1


@runtime_checkable
class SourcePosition(Protocol):
    """A point in a source's log; positions of one source are totally ordered.

    ``version`` is the uint64 written to ``_dbmazz_version`` for rows whose transaction
    commits at this position; it grows with the position.
    """

    @property
    def version(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...

    def __lt__(self, other: Any) -> bool: ...


@dataclass(frozen=True, order=True)
class Lsn:
    """A PostgreSQL WAL location (``pg_lsn``)."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= _UINT64_MAX:
            raise ValueError(f"expected an LSN between 0 and 2^64-1, got {self.value}")

    @classmethod
    def parse(cls, text: str) -> Lsn:
        """Parse PostgreSQL's ``XXXXXXXX/XXXXXXXX`` text form."""
        hi, sep, lo = text.partition("/")
        if not sep:
            raise ValueError(f"expected an LSN like '16/B374D848', got {text!r}")
        return cls((int(hi, 16) << 32) | int(lo, 16))

    @property
    def version(self) -> int:
        return self.value

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "lsn", "lsn": str(self)}


_BINLOG_SEQ = re.compile(r"\.(\d+)$")


@dataclass(frozen=True)
class BinlogPosition:
    """A MySQL/MariaDB binlog coordinate: file + offset, plus the GTID set where GTIDs are on.

    Ordering and ``version`` use the file's sequence number (the numeric suffix,
    ``mysql-bin.000042`` -> 42) and the offset: ``version = seq << 32 | offset``.
    Binlog files are at most 1 GiB (``max_binlog_size``), so the offset fits 32 bits.
    """

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

    def _key(self) -> tuple[int, int]:
        return (self.sequence, self.offset)

    def __lt__(self, other: BinlogPosition) -> bool:
        return self._key() < other._key()

    def __le__(self, other: BinlogPosition) -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: BinlogPosition) -> bool:
        return self._key() > other._key()

    def __ge__(self, other: BinlogPosition) -> bool:
        return self._key() >= other._key()

    def __str__(self) -> str:
        return f"{self.file}:{self.offset}" + (f" [{self.gtid_set}]" if self.gtid_set else "")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "binlog", "file": self.file, "offset": self.offset, "gtid_set": self.gtid_set}


def position_from_dict(data: dict[str, Any]) -> Lsn | BinlogPosition:
    """Rebuild a position written by ``to_dict``."""
    kind = data.get("kind")
    if kind == "lsn":
        return Lsn.parse(data["lsn"])
    if kind == "binlog":
        return BinlogPosition(data["file"], int(data["offset"]), data.get("gtid_set"))
    raise ValueError(f"expected a position of kind 'lsn' or 'binlog', got {kind!r}")
