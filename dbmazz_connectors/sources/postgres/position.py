"""PostgreSQL's source position: a WAL location (``pg_lsn``), registered as position kind ``lsn``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.positions import UINT64_MAX, SourcePosition, register_position

__all__ = ["Lsn"]


@dataclass(frozen=True)
class Lsn(SourcePosition):
    """A PostgreSQL WAL location; its ``version`` is the LSN itself (a byte offset in the WAL)."""

    kind: ClassVar[str] = "lsn"
    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= UINT64_MAX:
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

    def sort_key(self) -> int:
        return self.value

    def bytes_since(self, earlier: SourcePosition) -> int | None:
        return self.value - earlier.value if isinstance(earlier, Lsn) else None

    def capped(self, limit: SourcePosition, max_bytes: int) -> SourcePosition:
        """``min(limit, self + max_bytes)``: an LSN is a byte offset in the WAL (README, "Bounded batches")."""
        if not isinstance(limit, Lsn) or max_bytes <= 0 or limit.value - self.value <= max_bytes:
            return limit
        return Lsn(self.value + max_bytes)

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lsn": str(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lsn:
        return cls.parse(str(data["lsn"]))


register_position(Lsn.kind, Lsn)
