"""Every logical type lands in DuckDB with its edge values intact; values DuckDB refuses name their column."""

import pyarrow as pa
import pytest

from dbmazz_connectors.core import BatchRef, ChangeBatch, Rows, UnrepresentableValueError, create_sink
from dbmazz_connectors.sinks.duckdb import DuckDbTypes

from .._types import TYPE_CASES, UUID, type_batch

EXPECTED = {
    "c_bool": ("BOOLEAN", ["true", "false", None, "true"]),
    "c_int8": ("TINYINT", ["-128", "127", None, "0"]),
    "c_int16": ("SMALLINT", ["-32768", "32767", None, "0"]),
    "c_int32": ("INTEGER", ["-2147483648", "2147483647", None, "0"]),
    "c_int64": ("BIGINT", ["-9223372036854775808", "9223372036854775807", None, "0"]),
    "c_uint64": ("UBIGINT", ["18446744073709551615", "0", None, "9223372036854775808"]),
    "c_float32": ("FLOAT", ["nan", "inf", "-inf", "0.5"]),
    "c_float64": ("DOUBLE", ["nan", "inf", "-inf", "1e+308"]),
    "c_dec38": (
        "DECIMAL(38,10)",
        ["9" * 28 + "." + "9" * 10, "-" + "9" * 28 + "." + "9" * 10, None, "0.0000000001"],
    ),
    # beyond DuckDB's 38 digits: exact text
    "c_dec50": ("VARCHAR", ["1" * 45 + ".12345", "-" + "9" * 45 + ".99999", None, "0.00000"]),
    "c_numeric": (
        "VARCHAR",
        ["NaN", "Infinity", "-Infinity", "1234567890123456789012345678901234567890.0123456789"],
    ),
    "c_string": ("VARCHAR", ["", "ünïcödé 'q' \"dq\" \\ back", "line\nbreak,comma", None]),
    "c_json": ("JSON", ['{"a": [1, 2.5, null], "b": "x"}', "[]", None, '"text"']),
    "c_uuid": ("UUID", [UUID, "00000000-0000-0000-0000-000000000000", None, UUID]),
    "c_enum": ("VARCHAR", ["new", "paid", None, "new"]),
    "c_binary": ("BLOB", ["\\x00\\xFF\\x10", "", None, "abc"]),
    "c_date": ("DATE", ["infinity", "-infinity", None, "1970-01-01"]),
    "c_date_far": ("DATE", ["0001-01-01", "9999-12-31", None, "2024-02-29"]),
    "c_time": ("TIME", ["00:00:00", "23:59:59.999999", None, "12:00:00.000001"]),
    "c_ts": ("TIMESTAMP", ["infinity", "-infinity", None, "1970-01-01 00:00:00"]),
    "c_ts_range": (
        "TIMESTAMP",
        ["0001-01-01 00:00:00", "9999-12-31 23:59:59.999999", None, "1970-01-01 00:00:00.000001"],
    ),
    "c_tstz": ("TIMESTAMP WITH TIME ZONE", ["infinity", "-infinity", None, "2023-11-14 22:13:20.123456+00"]),
    "c_interval": (
        "INTERVAL",
        ["1 year 2 months -3 days 00:00:04.000001", "00:00:00", None, "-1 month 40 days -48:00:00"],
    ),
    "c_int_array": ("BIGINT[]", ["[1, NULL, 3]", "[]", None, "[9223372036854775807]"]),
    "c_text_array": ("VARCHAR[]", ["['a\"b', 'c\\\\d', NULL]", "['']", None, "['x,y', '{z}']"]),
}


@pytest.fixture
def sink(tmp_path):
    sink = create_sink({"url": f"duckdb:///{tmp_path}/types.duckdb", "pipeline": "p"})
    sink.connect()
    sink.con.execute("SET TimeZone = 'UTC'")
    yield sink
    sink.disconnect()


def test_the_expectations_cover_every_type_case():
    assert set(EXPECTED) == set(TYPE_CASES)


@pytest.mark.parametrize("column", list(TYPE_CASES))
def test_each_type_round_trips_its_edge_values(sink, column):
    batch = type_batch([column])
    sink.write_batch(batch, BatchRef("p", "b1"))
    native, values = EXPECTED[column]
    assert DuckDbTypes.native(TYPE_CASES[column][0]) == native.replace(
        "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"
    )
    described = dict(
        sink.fetchall(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'types'"
        )
    )
    assert described[column] == native
    got = [r[0] for r in sink.fetchall(f'SELECT CAST("{column}" AS VARCHAR) FROM public.types ORDER BY id')]
    assert got == values


def test_native_types_map_back_to_the_logical_types_they_hold():
    for column, (logical, _) in TYPE_CASES.items():
        native = DuckDbTypes.native(logical)
        if native != "VARCHAR" and column != "c_enum":
            assert DuckDbTypes.logical(native) == logical, column


@pytest.mark.parametrize("column,bad", [("c_json", '{"a": '), ("c_uuid", "not-a-uuid")])
def test_a_value_duckdb_refuses_names_the_column_and_writes_nothing(sink, column, bad):
    batch = type_batch([column])
    rows = batch.events[0].data
    rows = rows.set_column(rows.column_names.index(column), column, pa.array([bad, None, None, None]))
    with pytest.raises(
        UnrepresentableValueError, match=rf"a value of public.types.{column} cannot be written"
    ):
        sink.write_batch(
            ChangeBatch(batch.table, batch.schema, [Rows(batch.schema, rows)]), BatchRef("p", "b1")
        )
    assert sink.fetchall("SELECT count(*) FROM public.types") == [(0,)]
    assert sink.high_water_version("public.types") is None
