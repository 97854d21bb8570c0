"""Every logical type's edge values through Stream Load JSON into the stand-in StarRocks and back over
the MySQL protocol (what a StarRocks user reads), plus the values JSON cannot carry."""

import datetime as dt
from decimal import Decimal

import pytest

from dbmazz_connectors.core import BatchRef, UnrepresentableValueError, create_sink
from dbmazz_connectors.sinks.starrocks.types import StarRocksTypes

from .._types import TYPE_CASES, UUID, type_batch

_MAX_TS = dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
_D38 = Decimal("9" * 28 + "." + "9" * 10)
EXPECTED = {  # column -> (StarRocks type, the four values as pymysql reads them)
    "c_bool": ("BOOLEAN", [1, 0, None, 1]),
    "c_int8": ("TINYINT", [-128, 127, None, 0]),
    "c_int16": ("SMALLINT", [-32768, 32767, None, 0]),
    "c_int32": ("INT", [-(2**31), 2**31 - 1, None, 0]),
    "c_int64": ("BIGINT", [-(2**63), 2**63 - 1, None, 0]),
    "c_uint64": ("LARGEINT", [2**64 - 1, 0, None, 2**63]),
    "c_dec38": (
        "DECIMAL(38, 10)",
        [_D38, Decimal("-" + "9" * 28 + "." + "9" * 10), None, Decimal("0.0000000001")],
    ),
    "c_dec50": ("STRING", ["1" * 45 + ".12345", "-" + "9" * 45 + ".99999", None, "0.00000"]),
    "c_numeric": (
        "STRING",
        ["NaN", "Infinity", "-Infinity", "1234567890123456789012345678901234567890.0123456789"],
    ),
    "c_string": ("STRING", ["", "ünïcödé 'q' \"dq\" \\ back", "line\nbreak,comma", None]),
    "c_json": ("STRING", ['{"a": [1, 2.5, null], "b": "x"}', "[]", None, '"text"']),
    "c_uuid": ("VARCHAR(36)", [UUID, "00000000-0000-0000-0000-000000000000", None, UUID]),
    "c_enum": ("STRING", ["new", "paid", None, "new"]),
    "c_binary": ("STRING", ["00ff10", "", None, "616263"]),
    # +-infinity as the range limits (documented); year 0 has no Python date: pymysql gives the text
    "c_date": ("DATE", [dt.date(9999, 12, 31), "0000-01-01", None, dt.date(1970, 1, 1)]),
    "c_date_far": ("DATE", [dt.date(1, 1, 1), dt.date(9999, 12, 31), None, dt.date(2024, 2, 29)]),
    "c_time": ("STRING", ["00:00:00.000000", "23:59:59.999999", None, "12:00:00.000001"]),
    "c_ts": ("DATETIME", [_MAX_TS, "0000-01-01 00:00:00", None, dt.datetime(1970, 1, 1)]),
    "c_ts_range": ("DATETIME", [dt.datetime(1, 1, 1), _MAX_TS, None, dt.datetime(1970, 1, 1, 0, 0, 0, 1)]),
    "c_tstz": (
        "DATETIME",
        [_MAX_TS, "0000-01-01 00:00:00", None, dt.datetime(2023, 11, 14, 22, 13, 20, 123456)],
    ),
    "c_interval": (
        "STRING",
        [
            '{"months": 14, "days": -3, "micros": 4000001}',
            '{"months": 0, "days": 0, "micros": 0}',
            None,
            '{"months": -1, "days": 40, "micros": -172800000000}',
        ],
    ),
    "c_int_array": ("ARRAY<BIGINT>", ["[1, null, 3]", "[]", None, "[9223372036854775807]"]),
    "c_text_array": ("ARRAY<STRING>", ['["a\\"b", "c\\\\d", null]', '[""]', None, '["x,y", "{z}"]']),
}


@pytest.fixture
def sink(sr_db):
    sink = create_sink({"url": sr_db.url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


def test_the_expectations_cover_every_type_case_but_the_floats():
    assert set(EXPECTED) | {"c_float32", "c_float64"} == set(TYPE_CASES)


@pytest.mark.parametrize("column", list(EXPECTED))
def test_each_type_round_trips_its_edge_values(sink, column):
    native, values = EXPECTED[column]
    assert StarRocksTypes.native(TYPE_CASES[column][0]) == native
    sink.write_batch(type_batch([column]), BatchRef("p", "b1"))
    assert [r[0] for r in sink.query_rows(f"SELECT {column} FROM types_current ORDER BY id")] == values


@pytest.mark.parametrize("column", ["c_float32", "c_float64"])
def test_nan_and_infinity_are_refused_by_default_and_nulled_on_request(sr_db, sink, column):
    with pytest.raises(
        UnrepresentableValueError, match=rf"public.types.{column} cannot be written: .*finite number"
    ):
        sink.write_batch(type_batch([column]), BatchRef("p", "b1"))
    assert sink.row_count("public.types") == 0
    nulling = create_sink({"url": sr_db.url, "pipeline": "p", "out_of_range": "null"})
    nulling.connect()
    result = nulling.write_batch(type_batch([column]), BatchRef("p", "b1"))
    assert result.details["values_nulled"] == 3
    last = 0.5 if column == "c_float32" else 1e308
    assert [r[0] for r in nulling.query_rows(f"SELECT {column} FROM types_current ORDER BY id")] == [
        None
    ] * 3 + [last]
    nulling.disconnect()
