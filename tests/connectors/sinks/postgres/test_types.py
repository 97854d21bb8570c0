"""Every logical type lands in PostgreSQL with its edge values intact; values it cannot hold name their column."""

import pyarrow as pa
import pytest

from dbmazz_connectors.core import BatchRef, ChangeBatch, Rows, UnrepresentableValueError, create_sink
from dbmazz_connectors.sinks.postgres import PostgresTypes

from .._types import TYPE_CASES, UUID, type_batch

EXPECTED = {
    "c_bool": ("boolean", ["true", "false", None, "true"]),
    "c_int8": ("smallint", ["-128", "127", None, "0"]),
    "c_int16": ("smallint", ["-32768", "32767", None, "0"]),
    "c_int32": ("integer", ["-2147483648", "2147483647", None, "0"]),
    "c_int64": ("bigint", ["-9223372036854775808", "9223372036854775807", None, "0"]),
    "c_uint64": ("numeric(20,0)", ["18446744073709551615", "0", None, "9223372036854775808"]),
    "c_float32": ("real", ["NaN", "Infinity", "-Infinity", "0.5"]),
    "c_float64": ("double precision", ["NaN", "Infinity", "-Infinity", "1e+308"]),
    "c_dec38": (
        "numeric(38,10)",
        ["9" * 28 + "." + "9" * 10, "-" + "9" * 28 + "." + "9" * 10, None, "0.0000000001"],
    ),
    "c_dec50": ("numeric(50,5)", ["1" * 45 + ".12345", "-" + "9" * 45 + ".99999", None, "0.00000"]),
    "c_numeric": (
        "numeric",
        ["NaN", "Infinity", "-Infinity", "1234567890123456789012345678901234567890.0123456789"],
    ),
    "c_string": ("text", ["", "ünïcödé 'q' \"dq\" \\ back", "line\nbreak,comma", None]),
    "c_json": ("jsonb", ['{"a": [1, 2.5, null], "b": "x"}', "[]", None, '"text"']),
    "c_uuid": ("uuid", [UUID, "00000000-0000-0000-0000-000000000000", None, UUID]),
    "c_enum": ("text", ["new", "paid", None, "new"]),
    "c_binary": ("bytea", ["\\x00ff10", "\\x", None, "\\x616263"]),
    "c_date": ("date", ["infinity", "-infinity", None, "1970-01-01"]),
    "c_date_far": ("date", ["0001-01-01", "9999-12-31", None, "2024-02-29"]),
    "c_time": ("time without time zone", ["00:00:00", "23:59:59.999999", None, "12:00:00.000001"]),
    "c_ts": ("timestamp without time zone", ["infinity", "-infinity", None, "1970-01-01 00:00:00"]),
    "c_ts_range": (
        "timestamp without time zone",
        ["0001-01-01 00:00:00", "9999-12-31 23:59:59.999999", None, "1970-01-01 00:00:00.000001"],
    ),
    "c_tstz": ("timestamp with time zone", ["infinity", "-infinity", None, "2023-11-14 22:13:20.123456+00"]),
    "c_interval": (
        "interval",
        ["1 year 2 mons -3 days +00:00:04.000001", "00:00:00", None, "-1 mons +40 days -48:00:00"],
    ),
    "c_int_array": ("bigint[]", ["{1,NULL,3}", "{}", None, "{9223372036854775807}"]),
    "c_text_array": ("text[]", ['{"a\\"b","c\\\\d",NULL}', '{""}', None, '{"x,y","{z}"}']),
}


@pytest.fixture
def sink(pg_db):
    sink = create_sink({"url": pg_db.sink_url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


def _write(sink, column, values=None):
    batch = type_batch([column])
    if values is not None:
        rows = batch.events[0].data
        target = rows.schema.field(column).type
        array = pa.array(values, pa.int32() if target == pa.date32() else None).cast(target)
        rows = rows.set_column(rows.column_names.index(column), rows.schema.field(column), array)
        batch = ChangeBatch(batch.table, batch.schema, [Rows(batch.schema, rows)])
    return sink.write_batch(batch, BatchRef("p", "b1"))


def _read(sink, column):
    return [r[0] for r in sink.fetchall(f'SELECT "{column}"::text FROM public.types ORDER BY id')]


def test_the_expectations_cover_every_type_case():
    assert set(EXPECTED) == set(TYPE_CASES)


@pytest.mark.parametrize("column", list(TYPE_CASES))
def test_each_type_round_trips_its_edge_values(sink, column):
    _write(sink, column)
    native, values = EXPECTED[column]
    (shown,) = sink.fetchall(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'public.types'::regclass AND attname = %s",
        (column,),
    )[0]
    assert shown == native
    assert PostgresTypes.logical(shown).kind == TYPE_CASES[column][0].kind or column in ("c_int8", "c_enum")
    assert _read(sink, column) == values


def test_years_past_9999_are_kept(sink):
    year_20000_us = 568_971_820_800_000_000
    _write(sink, "c_ts_range", [year_20000_us, None, None, None])
    assert _read(sink, "c_ts_range")[0] == "20000-01-01 00:00:00"


@pytest.mark.parametrize(
    "column,values,detail",
    [
        (
            "c_string",
            ["a\x00b", None, None, None],
            r"expected a text without NUL .* found 'a\\x00b'; fix: set out_of_range",
        ),
        ("c_json", ['{"a": ', None, None, None], "invalid input syntax for type json"),
        ("c_json", ['"\\u0000"', None, None, None], r"jsonb cannot hold, found '\"\\\\u0000\"'"),
        ("c_uuid", ["not-a-uuid", None, None, None], "invalid input syntax for type uuid"),
        (
            "c_ts",
            [-(2**62), None, None, None],
            r"from 4714-11-24 BC on \(the PostgreSQL range\), found 144170-06-28 09:59:32.612096 BC;",
        ),
        (
            "c_date",
            [2_147_000_000, None, None, None],
            r"within 4714-11-24 BC..5874897-12-31 .*, found 5880256-05-06;",
        ),
    ],
)
def test_a_value_postgres_cannot_hold_names_the_column_and_writes_nothing(sink, column, values, detail):
    with pytest.raises(
        UnrepresentableValueError, match=rf"public.types.{column} cannot be written: .*{detail}"
    ):
        _write(sink, column, values)
    assert sink.fetchall("SELECT count(*) FROM public.types") == [(0,)]
    assert sink.high_water_version("public.types") is None
