"""Source positions are plugins: core, the change log, the engine and Dagster treat them opaquely."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import (
    ChangeEvent,
    ChangeLogError,
    Column,
    ConfigError,
    Heartbeat,
    LogicalType,
    Problem,
    Rows,
    SourcePosition,
    TableSchema,
    create_sink,
    position_from_dict,
    register_position,
)
from dbmazz_connectors.core.types import Kind
from dbmazz_connectors.engine import apply_batch, batch_id_for, capture_range
from tests.connectors.sinks._workload import rows_table

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class LedgerPosition(SourcePosition):
    """A third source's position, defined outside dbmazz_connectors: (epoch, entry) of an append-only ledger."""

    kind: ClassVar[str] = "test-ledger"
    epoch: int
    entry: int

    @property
    def version(self) -> int:
        return (self.epoch << 32) | self.entry

    def __str__(self) -> str:
        return f"ledger {self.epoch}#{self.entry}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "epoch": self.epoch, "entry": self.entry}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerPosition:
        return cls(int(data["epoch"]), int(data["entry"]))


register_position(LedgerPosition.kind, LedgerPosition)

ITEMS = TableSchema(
    "shop",
    "items",
    (Column("id", LogicalType(Kind.INT64), False), Column("name", LogicalType(Kind.STRING), True)),
    ("id",),
)
INSERT, UPDATE, DELETE = 0, 1, 2


class LedgerSource:
    """A tiny in-test source: committed transactions of ``shop.items`` at ledger positions, kept in memory."""

    name = "ledger"

    def __init__(self) -> None:
        self.log: list[tuple[LedgerPosition, list[tuple[int, dict[str, Any]]]]] = []
        self.acknowledged: LedgerPosition | None = None
        self.state: dict[int, str] = {}

    def commit(self, position: LedgerPosition, changes: list[tuple[int, dict[str, Any]]]) -> None:
        self.log.append((position, changes))
        for op, values in changes:
            if op == DELETE:
                self.state.pop(values["id"], None)
            else:
                self.state[values["id"]] = values["name"]

    def connect(self) -> None: ...

    def preflight(self) -> list[Problem]:
        return []

    def setup(self) -> None: ...

    def table_schemas(self) -> dict[str, TableSchema]:
        return {ITEMS.qualified_name: ITEMS}

    def current_position(self) -> LedgerPosition:
        return self.log[-1][0] if self.log else LedgerPosition(1, 0)

    def checkpoint_position(self) -> LedgerPosition | None:
        return self.acknowledged

    def read_changes(self, start: SourcePosition, end: SourcePosition) -> Iterator[ChangeEvent]:
        reached = start
        for position, changes in self.log:
            if start < position <= end:
                yield Rows(ITEMS, rows_table(ITEMS, [(op, position.version, v, None) for op, v in changes]))
                reached = position
        yield Heartbeat(reached)

    def checkpoint(self, position: SourcePosition) -> None:
        assert isinstance(position, LedgerPosition)
        self.acknowledged = max(position, self.acknowledged or position)

    def row_count(self, table: str) -> int:
        return len(self.state)

    def disconnect(self) -> None: ...


def test_a_third_position_type_runs_through_capture_the_change_log_and_apply(tmp_path):
    source, changelog = LedgerSource(), ChangeLog(str(tmp_path / "changelog"))
    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p"})
    sink.connect()
    start = LedgerPosition(1, 0)
    source.commit(LedgerPosition(1, 5), [(INSERT, {"id": k, "name": f"item {k}"}) for k in range(1, 6)])
    source.commit(
        LedgerPosition(2, 1), [(UPDATE, {"id": 2, "name": "item two"}), (DELETE, {"id": 3, "name": None})]
    )
    source.commit(LedgerPosition(2, 7), [(INSERT, {"id": 6, "name": "item 6"})])
    batches = []
    for end in (LedgerPosition(1, 5), LedgerPosition(2, 7)):  # two batches: (start, 1#5], (1#5, 2#7]
        manifest = capture_range(source, changelog, "p", start, end, tables=source.table_schemas().values())
        assert (manifest.start, manifest.end, manifest.batch_id) == (start, end, batch_id_for(start, end))
        batches.append(manifest.batch_id)
        start = manifest.end
    assert source.acknowledged == LedgerPosition(2, 7)
    assert changelog.checkpoint("p") == LedgerPosition(2, 7)  # read back through the registry, as the type
    reread = changelog.manifest("p", batches[1])
    assert isinstance(reread.end, LedgerPosition) and str(reread.end) == "ledger 2#7"
    for batch_id in batches:
        apply_batch(changelog, sink, "p", batch_id)
    got = sink.con.execute('SELECT id, name FROM "shop"."items" ORDER BY id').fetchall()
    assert got == sorted(source.state.items())  # sink == source, row by row
    assert got == [(1, "item 1"), (2, "item two"), (4, "item 4"), (5, "item 5"), (6, "item 6")]
    versions = dict(sink.con.execute('SELECT id, _dbmazz_version FROM "shop"."items"').fetchall())
    assert versions[2] == LedgerPosition(2, 1).version and versions[6] == LedgerPosition(2, 7).version
    sink.disconnect()


def test_positions_of_one_kind_are_ordered_and_kinds_never_compare():
    from dbmazz_connectors.sources.postgres.position import Lsn

    assert LedgerPosition(1, 9) < LedgerPosition(2, 0) <= LedgerPosition(2, 0) < LedgerPosition(2, 1)
    assert max([LedgerPosition(2, 0), LedgerPosition(1, 99)]) == LedgerPosition(2, 0)
    with pytest.raises(TypeError, match="cannot compare a 'test-ledger' position with a 'lsn' one"):
        _ = LedgerPosition(1, 1) < Lsn(5)


def test_unknown_and_damaged_position_records_are_change_log_errors():
    with pytest.raises(
        ChangeLogError, match=r"unknown source position kind 'oracle-scn' \(known kinds: .*lsn"
    ) as err:
        position_from_dict({"kind": "oracle-scn", "scn": 42})
    assert "import or install the source package that defines it" in str(err.value)
    with pytest.raises(ChangeLogError, match="with a 'kind'"):
        position_from_dict({"lsn": "0/10"})
    with pytest.raises(ChangeLogError, match="cannot read the 'test-ledger' position"):
        position_from_dict({"kind": "test-ledger", "epoch": 1})


def test_a_kind_is_registered_once():
    @dataclass(frozen=True)
    class Impostor(LedgerPosition):
        pass

    with pytest.raises(ConfigError, match="'test-ledger' is already registered by"):
        register_position("test-ledger", Impostor)
    with pytest.raises(ConfigError, match="has kind 'test-ledger', registered as 'other'"):
        register_position("other", LedgerPosition)
    assert register_position("test-ledger", LedgerPosition) is LedgerPosition  # the same class again: no-op


def test_manifests_written_before_positions_were_plugins_still_read_in_a_fresh_process():
    """The dict format is unchanged, and the in-tree kinds load on first use (no source imported first)."""
    old = [
        {"kind": "lsn", "lsn": "16/B374D848"},
        {"kind": "binlog", "file": "mysql-bin.000042", "offset": 1234, "gtid_set": "0-1-77"},
    ]
    code = (
        "import json, sys\nfrom dbmazz_connectors.core import position_from_dict\n"
        "ps = [position_from_dict(d) for d in json.loads(sys.argv[1])]\n"
        "print(json.dumps([[type(p).__module__, type(p).__name__, str(p), p.version, p.to_dict()] for p in ps]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(old)], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    lsn, binlog = json.loads(out)
    assert lsn == ["dbmazz_connectors.sources.postgres.position", "Lsn", "16/B374D848", 0x16B374D848, old[0]]
    assert binlog == [
        "dbmazz_connectors.sources.mysql.position",
        "BinlogPosition",
        "mysql-bin.000042:1234 [0-1-77]",
        (42 << 32) | 1234,
        old[1],
    ]


def test_no_concrete_position_type_is_named_outside_its_source_package():
    """Core, the change log, the engine, snapshots and the Dagster layer know positions only as SourcePosition."""
    pattern = re.compile(r"\b(Lsn|BinlogPosition)\b")
    own = {REPO / "dbmazz_connectors/sources/postgres", REPO / "dbmazz_connectors/sources/mysql"}
    offenders = []
    for package in ("dbmazz_connectors", "dbmazz_pipelines", "dbmazz_project"):
        for path in sorted((REPO / package).rglob("*.py")):
            if any(path.is_relative_to(d) for d in own):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
