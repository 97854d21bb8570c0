"""Where a capped batch ends: the position plugins' arithmetic and the engine's guard around it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from dbmazz_connectors.core import SourcePosition
from dbmazz_connectors.engine import DEFAULT_MAX_BATCH_BYTES, bounded_end
from dbmazz_connectors.sources.mysql.position import BinlogPosition
from dbmazz_connectors.sources.postgres.position import Lsn

MiB = 1024 * 1024


def test_a_wal_range_is_cut_at_the_cap_after_its_start():
    start = Lsn.parse("0/1000000")
    assert bounded_end(start, Lsn.parse("3/0"), 256 * MiB) == Lsn(start.value + 256 * MiB)
    assert str(bounded_end(start, Lsn.parse("3/0"), 256 * MiB)) == "0/11000000"
    near = Lsn(start.value + 1000)
    assert bounded_end(start, near, 256 * MiB) == near, "a range within the cap ends at the current position"
    assert bounded_end(start, Lsn(start.value + 256 * MiB), 256 * MiB) == Lsn(start.value + 256 * MiB)


def test_no_cap_when_it_is_zero_or_none_or_there_is_nothing_to_read():
    start, current = Lsn(100), Lsn(10_000)
    assert bounded_end(start, current, None) == current
    assert bounded_end(start, current, 0) == current
    assert bounded_end(current, start, 10) == start, "nothing new: the current position as it is"
    assert DEFAULT_MAX_BATCH_BYTES == 256 * MiB


def test_a_binlog_range_is_cut_within_its_file():
    start = BinlogPosition("mysql-bin.000007", 4_000, "0-1-10")
    same_file = BinlogPosition("mysql-bin.000007", 900 * MiB)
    assert bounded_end(start, same_file, 256 * MiB) == BinlogPosition("mysql-bin.000007", 4_000 + 256 * MiB)
    assert bounded_end(start, BinlogPosition("mysql-bin.000007", 9_000), 256 * MiB).offset == 9_000
    # a later file: the cap stays in this one (the reader stops at its rotate event if the file ends first)
    later = BinlogPosition("mysql-bin.000009", 500, "0-1-99")
    capped = bounded_end(start, later, 256 * MiB)
    assert capped == BinlogPosition("mysql-bin.000007", 4_000 + 256 * MiB) and capped < later
    assert capped.gtid_set is None, (
        "the GTID set of a capped end is not known: the batch's Heartbeat carries it"
    )
    # an offset cannot pass 2^32 - 1
    high = BinlogPosition("mysql-bin.000007", 2**32 - 100)
    assert bounded_end(high, later, 256 * MiB) == BinlogPosition("mysql-bin.000007", 2**32 - 1)
    top = BinlogPosition("mysql-bin.000007", 2**32 - 1)
    assert bounded_end(top, later, 256 * MiB) == later, "no room left in the file: no cap"


@dataclass(frozen=True)
class Counter(SourcePosition):
    """A position type that does not override ``capped`` (a log without byte offsets)."""

    kind: ClassVar[str] = "test-counter"
    n: int

    @property
    def version(self) -> int:
        return self.n

    def __str__(self) -> str:
        return f"#{self.n}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": self.n}

    @classmethod
    def from_dict(cls, data) -> Counter:
        return cls(int(data["n"]))


def test_a_position_type_without_byte_arithmetic_is_not_capped():
    start, current = Counter(3), Counter(10**9)
    assert bounded_end(start, current, 1) == current
