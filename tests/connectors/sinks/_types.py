"""One column per logical type with edge values, for every sink's type-matrix test.

``TYPE_CASES``: column name -> (logical type, Arrow array of ``ROWS`` values). ``type_batch()``
builds the table schema and a one-batch insert of these rows (row ``i`` = id ``i``); each sink's
test reads every column back as text and compares with its own table of expected texts.
"""

from __future__ import annotations

import uuid
from datetime import date, time
from decimal import Decimal

import pyarrow as pa

from dbmazz_connectors.core import (
    OP_INSERT,
    ChangeBatch,
    Column,
    LogicalType,
    Rows,
    TableSchema,
)
from dbmazz_connectors.core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    INTERVAL_ARROW,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
)

__all__ = ["ROWS", "TYPE_CASES", "type_batch", "UUID"]

ROWS = 4
UUID = str(uuid.UUID(int=2**128 - 2))
_US_9999 = 253_402_300_799_999_999  # 9999-12-31 23:59:59.999999
_US_1 = -62_135_596_800_000_000  # 0001-01-01


def _ts(values, tz=None):
    return pa.array(values, pa.int64()).cast(pa.timestamp("us", tz=tz))


T = LogicalType.parse
TYPE_CASES: dict[str, tuple[LogicalType, pa.Array]] = {
    "c_bool": (T("bool"), pa.array([True, False, None, True])),
    "c_int8": (T("int8"), pa.array([-128, 127, None, 0], pa.int8())),
    "c_int16": (T("int16"), pa.array([-32768, 32767, None, 0], pa.int16())),
    "c_int32": (T("int32"), pa.array([-(2**31), 2**31 - 1, None, 0], pa.int32())),
    "c_int64": (T("int64"), pa.array([-(2**63), 2**63 - 1, None, 0], pa.int64())),
    "c_uint64": (T("uint64"), pa.array([2**64 - 1, 0, None, 2**63], pa.uint64())),
    "c_float32": (T("float32"), pa.array([float("nan"), float("inf"), float("-inf"), 0.5], pa.float32())),
    "c_float64": (T("float64"), pa.array([float("nan"), float("inf"), float("-inf"), 1e308], pa.float64())),
    "c_dec38": (
        T("decimal(38,10)"),
        pa.array(
            [
                Decimal("9" * 28 + "." + "9" * 10),
                Decimal("-" + "9" * 28 + "." + "9" * 10),
                None,
                Decimal("0.0000000001"),
            ],
            pa.decimal128(38, 10),
        ),
    ),
    "c_dec50": (
        T("decimal(50,5)"),
        pa.array(
            [Decimal("1" * 45 + ".12345"), Decimal("-" + "9" * 45 + ".99999"), None, Decimal("0")],
            pa.decimal256(50, 5),
        ),
    ),
    "c_numeric": (
        T("decimal"),
        pa.array(["NaN", "Infinity", "-Infinity", "1234567890123456789012345678901234567890.0123456789"]),
    ),
    "c_string": (T("string"), pa.array(["", "ünïcödé 'q' \"dq\" \\ back", "line\nbreak,comma", None])),
    "c_json": (T("json"), pa.array(['{"a": [1, 2.5, null], "b": "x"}', "[]", None, '"text"'])),
    "c_uuid": (T("uuid"), pa.array([UUID, "00000000-0000-0000-0000-000000000000", None, UUID])),
    "c_enum": (LogicalType.enum(["new", "paid"]), pa.array(["new", "paid", None, "new"])),
    "c_binary": (T("binary"), pa.array([b"\x00\xff\x10", b"", None, b"abc"])),
    "c_date": (
        T("date"),
        pa.array([DATE_POS_INFINITY, DATE_NEG_INFINITY, None, 0], pa.int32()).cast(pa.date32()),
    ),
    "c_date_far": (T("date"), pa.array([date(1, 1, 1), date(9999, 12, 31), None, date(2024, 2, 29)])),
    "c_time": (T("time"), pa.array([time(0, 0), time(23, 59, 59, 999999), None, time(12, 0, 0, 1)])),
    "c_ts": (T("timestamp"), _ts([TIMESTAMP_POS_INFINITY, TIMESTAMP_NEG_INFINITY, None, 0])),
    "c_ts_range": (T("timestamp"), _ts([_US_1, _US_9999, None, 1])),
    "c_tstz": (
        T("timestamptz"),
        _ts([TIMESTAMP_POS_INFINITY, TIMESTAMP_NEG_INFINITY, None, 1_700_000_000_123_456], tz="UTC"),
    ),
    "c_interval": (
        T("interval"),
        pa.array(
            [
                {"months": 14, "days": -3, "micros": 4_000_001},
                {"months": 0, "days": 0, "micros": 0},
                None,
                {"months": -1, "days": 40, "micros": -86_400_000_000 * 2},
            ],
            INTERVAL_ARROW,
        ),
    ),
    "c_int_array": (T("array<int64>"), pa.array([[1, None, 3], [], None, [2**63 - 1]], pa.list_(pa.int64()))),
    "c_text_array": (
        T("array<string>"),
        pa.array([['a"b', "c\\d", None], [""], None, ["x,y", "{z}"]], pa.list_(pa.string())),
    ),
}


def type_batch(columns: list[str] | None = None, table: str = "types") -> ChangeBatch:
    """A batch inserting the ``ROWS`` edge-value rows of ``columns`` (default: every case)."""
    names = columns or list(TYPE_CASES)
    schema = TableSchema(
        "public",
        table,
        (Column("id", T("int64"), nullable=False), *(Column(n, TYPE_CASES[n][0]) for n in names)),
        ("id",),
    )
    data = {"id": pa.array(range(ROWS), pa.int64())}
    data.update({n: TYPE_CASES[n][1] for n in names})
    data["_dbmazz_op"] = pa.array([OP_INSERT] * ROWS, pa.int8())
    data["_dbmazz_version"] = pa.array([10] * ROWS, pa.uint64())
    data["_dbmazz_commit_ts"] = _ts([1_700_000_000_000_000] * ROWS, tz="UTC")
    data["_dbmazz_unknown_columns"] = pa.nulls(ROWS, pa.list_(pa.string()))
    table_data = pa.table(data).cast(schema.arrow_schema())
    return ChangeBatch(schema.qualified_name, schema, [Rows(schema, table_data)])
