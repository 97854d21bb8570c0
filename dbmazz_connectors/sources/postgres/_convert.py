"""PostgreSQL text values -> Arrow arrays of the logical type, column-wise.

The decoder hands a whole column of one row chunk as an Arrow ``string_view`` array pointing
into the received buffer; common types are converted by Arrow casts. Per-value Python is used
only for rare types (bytea, interval, arrays) and for values the casts reject (BC dates,
years past 9999, 24:00:00), so a column is never silently nulled.

Session settings this relies on (set by the source): ``DateStyle = 'ISO, YMD'``,
``IntervalStyle = 'iso_8601'``, ``TimeZone = 'UTC'``, ``bytea_output = 'hex'``.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core.errors import UnrepresentableValueError
from ...core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
    Kind,
    LogicalType,
)

__all__ = ["convert_column"]

log = logging.getLogger(__name__)

_DIRECT_CAST = {Kind.INT16, Kind.INT32, Kind.INT64, Kind.FLOAT32, Kind.FLOAT64}
_AS_TEXT = {Kind.STRING, Kind.JSON, Kind.UUID, Kind.ENUM}
_US_PER_DAY = 86_400_000_000
_NON_FINITE = pa.array(["NaN", "Infinity", "-Infinity"], pa.string())


def convert_column(values: pa.Array, ltype: LogicalType, table: str, column: str) -> pa.Array:
    """Convert ``values`` (string or string_view, nulls for SQL NULL) to ``ltype.to_arrow()``."""
    kind = ltype.kind
    if kind in _DIRECT_CAST:
        return values.cast(ltype.to_arrow())
    text = values.cast(pa.string())
    if kind in _AS_TEXT or ltype.is_unbounded_decimal:
        return text
    if kind is Kind.DECIMAL:
        special = pc.is_in(text, value_set=_NON_FINITE)
        return pc.if_else(special, None, text).cast(ltype.to_arrow())
    if kind is Kind.BOOL:
        return pc.equal(text, "t")
    if kind in (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return _temporal(text, ltype, table, column)
    if kind is Kind.TIME:
        return _time(text)
    return _per_value(text, ltype, table, column)


def _temporal(text: pa.Array, ltype: LogicalType, table: str, column: str) -> pa.Array:
    target = ltype.to_arrow()
    is_date = ltype.kind is Kind.DATE
    pos, neg = (
        (DATE_POS_INFINITY, DATE_NEG_INFINITY)
        if is_date
        else (TIMESTAMP_POS_INFINITY, TIMESTAMP_NEG_INFINITY)
    )
    storage = pa.int32() if is_date else pa.int64()
    plus = pc.equal(text, "infinity")
    minus = pc.equal(text, "-infinity")
    finite = pc.if_else(pc.or_(plus, minus), None, text)
    try:
        parsed = finite.cast(target).cast(storage)
    except pa.ArrowInvalid:
        values = [_parse_temporal(v, is_date) for v in finite.to_pylist()]
        parsed = pa.array(_within(values, pos - 1, table, column) if not is_date else values, storage)
    if (
        not is_date and pc.max(parsed).as_py() == pos
    ):  # 294247-01-10 04:00:54.775807 is finite, not the encoding
        parsed = pc.if_else(pc.equal(parsed, pos), pa.scalar(pos - 1, storage), parsed)
    parsed = pc.if_else(plus, pa.scalar(pos, storage), parsed)
    parsed = pc.if_else(minus, pa.scalar(neg, storage), parsed)
    return parsed.cast(target)


def _within(micros: list[int | None], highest: int, table: str, column: str) -> list[int | None]:
    """PostgreSQL timestamps run to 294276 AD, microseconds since 1970 in an int64 to 294247-01-10: later ones
    become the last instant the logical type holds (documented in docs/types.md), never an overflow."""
    late = [m for m in micros if m is not None and m > highest]
    if not late:
        return micros
    log.warning(
        "%s.%s: %d timestamp(s) after 294247-01-10 04:00:54.775806 (the last one dbmazz carries) were "
        "written as that instant",
        table,
        column,
        len(late),
    )
    return [highest if m is not None and m > highest else m for m in micros]


def _time(text: pa.Array) -> pa.Array:
    try:
        stamps = pc.binary_join_element_wise("1970-01-01 ", text, "").cast(pa.timestamp("us"))
        return stamps.cast(pa.int64()).cast(pa.time64("us"))
    except pa.ArrowInvalid:
        micros = [None if v is None else _time_micros(v) for v in text.to_pylist()]
        return pa.array(micros, pa.int64()).cast(pa.time64("us"))


_TS = re.compile(
    r"^(\d{4,})-(\d\d)-(\d\d)(?: (\d\d):(\d\d):(\d\d(?:\.\d+)?))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?$"
)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (any astronomical year)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _parse_temporal(value: str | None, is_date: bool) -> int | None:
    if value is None:
        return None
    match = _TS.match(value)
    if not match:
        raise ValueError(f"expected an ISO date/timestamp from PostgreSQL, got {value!r}")
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    if match[11]:
        year = 1 - year  # 1 BC is astronomical year 0
    days = _days_from_civil(year, month, day)
    if is_date:
        return days
    micros = days * _US_PER_DAY
    if match[4]:
        micros += (int(match[4]) * 3600 + int(match[5]) * 60) * 1_000_000 + round(
            Decimal(match[6]) * 1_000_000
        )
    if match[7]:
        offset = (int(match[8]) * 3600 + int(match[9] or 0) * 60 + int(match[10] or 0)) * 1_000_000
        micros -= offset if match[7] == "+" else -offset
    return micros


def _time_micros(value: str) -> int:
    hours, minutes, seconds = value.split(":")
    return (int(hours) * 3600 + int(minutes) * 60) * 1_000_000 + round(Decimal(seconds) * 1_000_000)


_INTERVAL = re.compile(
    r"^P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)W)?(?:(-?\d+)D)?(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?[\d.]+)S)?)?$"
)


def _interval(value: str) -> dict[str, int]:
    match = _INTERVAL.match(value)
    if not match:
        raise ValueError(f"expected an ISO 8601 interval from PostgreSQL, got {value!r}")
    y, mo, w, d, h, mi = (int(g) if g else 0 for g in match.groups()[:6])
    seconds = Decimal(match[7]) if match[7] else Decimal(0)
    micros = (h * 3600 + mi * 60) * 1_000_000 + int(seconds * 1_000_000)
    return {"months": y * 12 + mo, "days": w * 7 + d, "micros": micros}


_ARRAY_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"|([^,]+)')
_UNESCAPE = re.compile(r"\\(.)")


def _array_items(value: str, table: str, column: str) -> list[str | None]:
    if value.startswith("["):  # explicit bounds, '[0:1]={1,2}'
        value = value[value.index("=") + 1 :]
    inner = value[1:-1]
    if inner.startswith("{"):
        raise UnrepresentableValueError(table, column, "multi-dimensional arrays are not supported")
    items: list[str | None] = []
    for match in _ARRAY_ITEM.finditer(inner):
        if match.group(1) is not None:
            items.append(_UNESCAPE.sub(r"\1", match.group(1)))
        else:
            token = match.group(2).strip()
            items.append(None if token.upper() == "NULL" else token)
    return items


def _per_value(text: pa.Array, ltype: LogicalType, table: str, column: str) -> pa.Array:
    values = text.to_pylist()
    kind = ltype.kind
    if kind is Kind.BINARY:
        return pa.array([None if v is None else bytes.fromhex(v[2:]) for v in values], pa.binary())
    if kind is Kind.INTERVAL:
        return pa.array([None if v is None else _interval(v) for v in values], ltype.to_arrow())
    if kind is Kind.ARRAY:
        assert ltype.element is not None
        lists = [None if v is None else _array_items(v, table, column) for v in values]
        lengths = np.array([0 if items is None else len(items) for items in lists], np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        flat = pa.array([item for items in lists if items for item in items], pa.string())
        elements = convert_column(flat, ltype.element, table, column)
        mask = pa.array([items is None for items in lists], pa.bool_())
        return pa.ListArray.from_arrays(pa.array(offsets), elements, mask=mask).cast(ltype.to_arrow())
    raise UnrepresentableValueError(table, column, f"no conversion for logical type {ltype}")
