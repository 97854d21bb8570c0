"""What a sink does with a value it cannot hold (``out_of_range``): refuse, clamp or NULL, column-wise.

Each sink's type table says, per logical type, which values it cannot hold (a ``ValueRule``);
``ValueGuard.apply`` runs those rules over a compacted rows step before anything is written:

* ``refuse`` (the default): raise ``UnrepresentableValueError`` naming the table, the column and
  one offending value; nothing of the batch is written;
* ``clamp``: write the nearest value the sink holds (a date: the first or last day of its range;
  a text: the text without the characters the sink cannot store);
* ``null``: write NULL instead (inside an array: the element becomes NULL).

Clamped and nulled values are counted in ``WriteResult.details`` (``values_clamped``,
``values_nulled``), which the apply metadata shows, and logged with table and column. Whatever the
policy, a primary-key value is never changed (two keys could become one): it is refused; and the
values of deleted rows (other than the key) are simply dropped, since no one reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.errors import ConfigError, UnrepresentableValueError
from ..core.schema import OP_COLUMN, OP_DELETE, TableSchema
from ..core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
    Kind,
    LogicalType,
    format_date,
    format_timestamp,
)

__all__ = ["OutOfRange", "ValueRule", "ValueGuard", "temporal_rule", "text_rule", "COUNTERS"]

log = logging.getLogger("dbmazz_connectors.sinks")

COUNTERS = ("values_clamped", "values_nulled")
_HINT = (
    "set out_of_range: clamp (the nearest value the sink holds) or out_of_range: null in the sink's "
    "config to write such values anyway (each is counted in the apply metadata); see docs/types.md"
)


class OutOfRange(StrEnum):
    """The ``out_of_range`` option of every sink."""

    REFUSE = "refuse"
    CLAMP = "clamp"
    NULL = "null"

    @classmethod
    def parse(cls, value: Any, sink: str) -> OutOfRange:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigError(
                f"{sink} sink: expected out_of_range to be one of refuse, clamp, null, got {value!r}"
            ) from None


@dataclass(frozen=True)
class ValueRule:
    """Which values of one logical type a sink cannot hold.

    ``outside(values)``: a numpy bool per value, False for nulls; ``nearest(values)``: the array with
    every value replaced by the nearest one the sink holds (only read where ``outside``);
    ``show(values, i)``: the value at ``i`` as text for a message, never raising.
    """

    expected: str  # what the sink holds: "a date within 0000-01-01..9999-12-31 (the ClickHouse range)"
    outside: Callable[[pa.Array], np.ndarray]
    nearest: Callable[[pa.Array], pa.Array]
    show: Callable[[pa.Array, int], str]


def temporal_rule(kind: Kind, low: int, high: int, expected: str) -> ValueRule:
    """Dates (days) or timestamps (microseconds) the sink holds from ``low`` to ``high``; the
    +-infinity encodings always count as held (each sink documents how it stores them)."""
    physical = pa.int32() if kind is Kind.DATE else pa.int64()
    infinities = (
        (DATE_NEG_INFINITY, DATE_POS_INFINITY)
        if kind is Kind.DATE
        else (TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY)
    )
    fmt = format_date if kind is Kind.DATE else format_timestamp

    def ints(values: pa.Array) -> np.ndarray:
        return np.asarray(pc.cast(values, physical).fill_null(0).to_numpy(zero_copy_only=False))

    def outside(values: pa.Array) -> np.ndarray:
        raw = ints(values)
        return np.asarray(((raw < low) | (raw > high)) & (raw != infinities[0]) & (raw != infinities[1]))

    def nearest(values: pa.Array) -> pa.Array:
        return pa.array(np.clip(ints(values), low, high), physical).cast(values.type)

    def show(values: pa.Array, index: int) -> str:
        return fmt(int(ints(values.slice(index, 1))[0]))

    return ValueRule(expected, lambda v: _with_nulls(v, outside(v)), nearest, show)


def text_rule(expected: str, pattern: str, *, regex: bool = False, replacement: str = "") -> ValueRule:
    """Texts the sink holds unless they contain ``pattern`` (literal, or RE2 with ``regex``); clamping
    replaces each occurrence by ``replacement`` (repeatedly, so occurrences that share characters go too)."""
    match, replace = (
        (pc.match_substring_regex, pc.replace_substring_regex)
        if regex
        else (pc.match_substring, pc.replace_substring)
    )

    def outside(values: pa.Array) -> np.ndarray:
        return _with_nulls(values, match(values, pattern).fill_null(False).to_numpy(zero_copy_only=False))

    def nearest(values: pa.Array) -> pa.Array:
        for _ in range(64):
            values = replace(values, pattern, replacement)
            if not pc.any(match(values, pattern)).as_py():
                break
        return values

    def show(values: pa.Array, index: int) -> str:
        text = values[index].as_py()
        return repr(text[:60] + ("…" if len(text) > 60 else ""))

    return ValueRule(expected, outside, nearest, show)


def _with_nulls(values: pa.Array, mask: np.ndarray) -> np.ndarray:
    return mask & ~pc.is_null(values).to_numpy(zero_copy_only=False) if values.null_count else mask


class ValueGuard:
    """Applies one sink's rules with one policy to rows steps (see the module docstring)."""

    def __init__(
        self, sink: str, policy: OutOfRange, rule: Callable[[LogicalType], ValueRule | None]
    ) -> None:
        self.sink = sink
        self.policy = policy
        self.rule = rule

    def apply(self, rows: pa.Table, schema: TableSchema, table: str, details: dict[str, int]) -> pa.Table:
        """``rows`` with every value the sink holds; adds to ``details``' counters; raises UnrepresentableValueError."""
        live: np.ndarray | None = None
        for col in schema.columns:
            element = col.type.element if col.type.kind is Kind.ARRAY else None
            rule = self.rule(element or col.type)
            if rule is None or col.name not in rows.column_names:
                continue
            if live is None:
                live = pc.not_equal(rows.column(OP_COLUMN), OP_DELETE).to_numpy(zero_copy_only=False)
            array = _combined(rows.column(col.name))
            fixed = self._column(
                array,
                element is not None,
                rule,
                live,
                table,
                col.name,
                col.name in schema.primary_key,
                details,
            )
            if fixed is not array:
                rows = rows.set_column(rows.column_names.index(col.name), rows.schema.field(col.name), fixed)
        return rows

    def _column(
        self,
        array: pa.Array,
        is_list: bool,
        rule: ValueRule,
        live: np.ndarray,
        table: str,
        column: str,
        is_key: bool,
        details: dict[str, int],
    ) -> pa.Array:
        values = pc.list_flatten(array) if is_list else array
        outside = rule.outside(values)
        if not outside.any():
            return array
        owner = pc.list_parent_indices(array).to_numpy(zero_copy_only=False) if is_list else None
        owner_live = live if owner is None else live[owner]
        if is_key or (self.policy is OutOfRange.REFUSE and (outside & owner_live).any()):
            raise self._refusal(
                rule, values, outside & owner_live if not is_key else outside, table, column, is_key
            )
        counted = outside & owner_live
        if self.policy is OutOfRange.CLAMP:
            fixed = pc.if_else(pa.array(counted), rule.nearest(values), values)
            fixed = _nulled(fixed, outside & ~owner_live)
            details["values_clamped"] += int(counted.sum())
        else:  # null, or refuse with only deleted rows' values outside (dropped, not counted)
            fixed = _nulled(values, outside)
            details["values_nulled"] += int(counted.sum())
        if counted.any():
            log.warning(
                "%s: %d value(s) of %s.%s %s (expected %s)",
                self.sink,
                int(counted.sum()),
                table,
                column,
                "clamped" if self.policy is OutOfRange.CLAMP else "written as NULL",
                rule.expected,
            )
        return _relisted(array, fixed) if is_list else fixed

    def _refusal(
        self, rule: ValueRule, values: pa.Array, bad: np.ndarray, table: str, column: str, is_key: bool
    ) -> UnrepresentableValueError:
        first = int(np.argmax(bad))
        try:
            sample = rule.show(values, first)
        except Exception:  # noqa: BLE001 - the message must never fail; the value itself is the problem
            sample = "a value"
        count = int(bad.sum())
        more = f" (and {count - 1} more)" if count > 1 else ""
        if is_key:
            return UnrepresentableValueError(
                table,
                column,
                f"{self.sink}: expected {rule.expected}, found {sample}{more} in a primary-key "
                "column, which is never clamped or nulled (two keys could become one)",
                hint="keep such keys out of the source table or replicate it to a sink that holds them",
            )
        return UnrepresentableValueError(
            table, column, f"{self.sink}: expected {rule.expected}, found {sample}{more}", hint=_HINT
        )


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _nulled(values: pa.Array, mask: np.ndarray) -> pa.Array:
    if not mask.any():
        return values
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)


def _relisted(lists: pa.Array, values: pa.Array) -> pa.Array:
    """``lists`` with its (flattened, non-null) values replaced by ``values``."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=lists.type, mask=pc.is_null(lists))
