"""Every logical type lands in ClickHouse with its edge values intact; values it cannot hold name their column."""

import pyarrow as pa
import pytest

from dbmazz_connectors.core import (
    BatchRef,
    ChangeBatch,
    LogicalType,
    Rows,
    UnrepresentableValueError,
    create_sink,
)
from dbmazz_connectors.sinks.clickhouse import ClickHouseSink
from dbmazz_connectors.sinks.clickhouse.types import ClickHouseTypes

from .._types import TYPE_CASES, UUID, type_batch

_TS_MAX, _TS_MIN = "9999-12-31 23:59:59.999999", "0000-01-01 00:00:00.000000"
# column -> (ClickHouse type, the values as toString() shows them; binary as hex)
EXPECTED = {
    "c_bool": ("Nullable(Bool)", ["true", "false", None, "true"]),
    "c_int8": ("Nullable(Int8)", ["-128", "127", None, "0"]),
    "c_int16": ("Nullable(Int16)", ["-32768", "32767", None, "0"]),
    "c_int32": ("Nullable(Int32)", ["-2147483648", "2147483647", None, "0"]),
    "c_int64": ("Nullable(Int64)", ["-9223372036854775808", "9223372036854775807", None, "0"]),
    "c_uint64": ("Nullable(UInt64)", ["18446744073709551615", "0", None, "9223372036854775808"]),
    "c_float32": ("Nullable(Float32)", ["nan", "inf", "-inf", "0.5"]),
    "c_float64": ("Nullable(Float64)", ["nan", "inf", "-inf", "1e308"]),
    "c_dec38": (
        "Nullable(Decimal(38, 10))",
        ["9" * 28 + "." + "9" * 10, "-" + "9" * 28 + "." + "9" * 10, None, "0.0000000001"],
    ),
    "c_dec50": ("Nullable(Decimal(50, 5))", ["1" * 45 + ".12345", "-" + "9" * 45 + ".99999", None, "0"]),
    "c_numeric": (
        "Nullable(String)",
        ["NaN", "Infinity", "-Infinity", "1234567890123456789012345678901234567890.0123456789"],
    ),
    "c_string": ("Nullable(String)", ["", "ünïcödé 'q' \"dq\" \\ back", "line\nbreak,comma", None]),
    "c_json": ("Nullable(String)", ['{"a": [1, 2.5, null], "b": "x"}', "[]", None, '"text"']),
    "c_uuid": ("Nullable(UUID)", [UUID, "00000000-0000-0000-0000-000000000000", None, UUID]),
    "c_enum": ("LowCardinality(Nullable(String))", ["new", "paid", None, "new"]),
    "c_binary": ("Nullable(String)", ["00FF10", "", None, "616263"]),
    # +-infinity are clamped to the range limits (documented)
    "c_date": ("Nullable(Date32)", ["9999-12-31", "0000-01-01", None, "1970-01-01"]),
    "c_date_far": ("Nullable(Date32)", ["0001-01-01", "9999-12-31", None, "2024-02-29"]),
    "c_time": ("Nullable(Time64(6))", ["00:00:00.000000", "23:59:59.999999", None, "12:00:00.000001"]),
    "c_ts": ("Nullable(DateTime64(6, 'UTC'))", [_TS_MAX, _TS_MIN, None, "1970-01-01 00:00:00.000000"]),
    "c_ts_range": (
        "Nullable(DateTime64(6, 'UTC'))",
        ["0001-01-01 00:00:00.000000", _TS_MAX, None, "1970-01-01 00:00:00.000001"],
    ),
    "c_tstz": ("Nullable(DateTime64(6, 'UTC'))", [_TS_MAX, _TS_MIN, None, "2023-11-14 22:13:20.123456"]),
    "c_interval": (
        "Nullable(Tuple(months Int32, days Int32, micros Int64))",
        ["(14,-3,4000001)", "(0,0,0)", None, "(-1,40,-172800000000)"],
    ),
    # ClickHouse arrays cannot be NULL: a NULL array reads as [] (documented)
    "c_int_array": ("Array(Nullable(Int64))", ["[1,NULL,3]", "[]", "[]", "[9223372036854775807]"]),
    "c_text_array": ("Array(Nullable(String))", ["['a\"b','c\\\\d',NULL]", "['']", "[]", "['x,y','{z}']"]),
}
# finite values outside what the server accepts (0000-01-01..9999-12-31): refused by default, never wrapped
_BC_DAY, _Y10000_DAY = -2_440_588, 2_932_897  # 4714-11-24 BC, 10000-01-01
OUT_OF_RANGE = {
    "c_date": ([_BC_DAY, 0, None, 1], pa.date32(), "found 4714-11-24 BC"),
    "c_date_far": ([0, _Y10000_DAY, None, 1], pa.date32(), "found 10000-01-01"),
    "c_ts_range": (
        [_Y10000_DAY * 86_400_000_000, 0, None, 1],
        pa.timestamp("us"),
        "found 10000-01-01 00:00:00.000000",
    ),
}


@pytest.fixture
def sink(ch_db):
    sink = create_sink({"url": ch_db.url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


def test_the_expectations_cover_every_type_case():
    assert set(EXPECTED) == set(TYPE_CASES)


@pytest.mark.parametrize("column", list(EXPECTED))
def test_each_type_round_trips_its_edge_values(sink, ch_db, column):
    sink.write_batch(type_batch([column]), BatchRef("p", "b1"))
    native, values = EXPECTED[column]
    assert ClickHouseTypes.native(TYPE_CASES[column][0]) == native
    described = sink.query_rows(
        "SELECT type FROM system.columns WHERE database = %(d)s AND table = 'types' AND name = %(c)s",
        {"d": ch_db.name, "c": column},
    )
    assert described == [(native,)]
    expr = f"hex({column})" if column == "c_binary" else f"toString({column})"
    assert [r[0] for r in sink.query_rows(f"SELECT {expr} FROM types_current ORDER BY id")] == values


def test_native_types_map_back_to_the_logical_types_they_hold():
    for column, (logical, _) in TYPE_CASES.items():
        native = ClickHouseTypes.native(logical)
        if column == "c_enum":
            assert ClickHouseTypes.logical(native) == LogicalType.enum(), column  # labels are not kept
        elif "String" not in native and column not in ("c_ts", "c_ts_range"):  # those share a native type
            assert ClickHouseTypes.logical(native) == logical, column
        assert ClickHouseTypes.native(ClickHouseTypes.logical(native)) == native, column


def _with_values(column: str, values: list, arrow_type: pa.DataType) -> ChangeBatch:
    batch = type_batch([column])
    rows = batch.events[0].data
    physical = pa.int32() if arrow_type == pa.date32() else pa.int64()
    rows = rows.set_column(1, column, pa.array(values, physical).cast(arrow_type))
    return ChangeBatch(batch.table, batch.schema, [Rows(batch.schema, rows)])


@pytest.mark.parametrize("column", list(OUT_OF_RANGE))
def test_a_date_outside_the_range_names_the_column_and_writes_nothing(sink, column):
    values, arrow_type, found = OUT_OF_RANGE[column]
    with pytest.raises(
        UnrepresentableValueError,
        match=rf"a value of public.types.{column} cannot be written: "
        rf"clickhouse: expected a .* within 0000-01-01.*{found}"
        r".*fix: set out_of_range: clamp",
    ):
        sink.write_batch(_with_values(column, values, arrow_type), BatchRef("p", "b1"))
    assert sink.row_count("public.types") == 0
    assert sink.high_water_version("public.types") is None


def test_the_range_limits_themselves_are_kept(sink):
    batch = type_batch(["c_date", "c_tstz"])
    rows = batch.events[0].data
    dates = pa.array([-719_528, 2_932_896, None, 0], pa.int32()).cast(pa.date32())
    stamps = pa.array([-62_167_219_200_000_000, 253_402_300_799_999_999, None, 0], pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )
    rows = rows.set_column(1, "c_date", dates).set_column(2, "c_tstz", stamps)
    sink.write_batch(ChangeBatch(batch.table, batch.schema, [Rows(batch.schema, rows)]), BatchRef("p", "b1"))
    got = sink.query_rows("SELECT toString(c_date), toString(c_tstz) FROM types_current ORDER BY id")
    assert got[:2] == [("0000-01-01", _TS_MIN), ("9999-12-31", _TS_MAX)]


def test_an_array_element_outside_the_range_is_refused(sink):
    from dbmazz_connectors.core import OP_INSERT, Column, TableSchema

    from .._workload import rows_table

    schema = TableSchema(
        "public",
        "arr",
        (
            Column("id", LogicalType.of("int64"), False),
            Column("days", LogicalType.array(LogicalType.of("date"))),
        ),
        ("id",),
    )
    import datetime as dt

    rows = rows_table(
        schema,
        [
            (OP_INSERT, 5, {"id": 1, "days": [dt.date(2000, 1, 1)]}, None),
            (OP_INSERT, 5, {"id": 2, "days": [dt.date(2000, 1, 1), dt.date(1800, 1, 1)]}, None),
        ],
    )
    days = pa.array([[10_957], [10_957, -2_440_588]], pa.list_(pa.int32())).cast(pa.list_(pa.date32()))
    rows = rows.set_column(rows.column_names.index("days"), "days", days)  # 2000-01-01; 4714-11-24 BC
    with pytest.raises(UnrepresentableValueError, match=r"public.arr.days .* found 4714-11-24 BC"):
        sink.write_batch(
            ChangeBatch(schema.qualified_name, schema, [Rows(schema, rows)]), BatchRef("p", "b1")
        )
    assert isinstance(sink, ClickHouseSink) and sink.row_count("public.arr") == 0


def test_unknown_values_of_every_type_keep_the_sinks_value(sink):
    """An update that does not know a column (unchanged TOAST) keeps what the sink holds, whatever its type."""
    columns = ["c_dec50", "c_numeric", "c_json", "c_uuid", "c_binary", "c_tstz", "c_interval", "c_text_array"]
    first = type_batch(columns)
    sink.write_batch(first, BatchRef("p", "b1"))
    shown = ", ".join(
        f"toString({c})" for c in columns
    )  # -infinity is 0000-01-01: no Python datetime holds it
    before = sink.query_rows(f"SELECT {shown} FROM types_current ORDER BY id")
    rows = first.events[0].data
    for name in columns:
        index = rows.column_names.index(name)
        rows = rows.set_column(index, name, pa.nulls(rows.num_rows, rows.schema.field(name).type))
    rows = rows.set_column(rows.column_names.index("_dbmazz_op"), "_dbmazz_op", pa.array([1] * 4, pa.int8()))
    rows = rows.set_column(
        rows.column_names.index("_dbmazz_version"), "_dbmazz_version", pa.array([20] * 4, pa.uint64())
    )
    unknown = pa.array([columns] * 4, pa.list_(pa.string()))
    rows = rows.set_column(
        rows.column_names.index("_dbmazz_unknown_columns"), "_dbmazz_unknown_columns", unknown
    )
    result = sink.write_batch(
        ChangeBatch(first.table, first.schema, [Rows(first.schema, rows)]), BatchRef("p", "b2")
    )
    assert result.details["unknown_values_missing"] == 0
    assert sink.query_rows(f"SELECT {shown} FROM types_current ORDER BY id") == before
    assert [r[0] for r in sink.query_rows("SELECT _dbmazz_version FROM types_current")] == [20] * 4


def test_unknown_values_are_found_by_keys_of_every_kind(sink):
    """The sink reads its current rows by key (sent as Arrow): uuid, Date32 at a limit, DateTime64 and text keys."""
    from dbmazz_connectors.core import OP_INSERT, OP_UPDATE, Column, TableSchema
    from dbmazz_connectors.core.types import DATE_NEG_INFINITY

    from .._workload import rows_table

    T = LogicalType.parse
    schema = TableSchema(
        "public",
        "keyed",
        (
            Column("u", T("uuid"), False),
            Column("d", T("date"), False),
            Column("ts", T("timestamptz"), False),
            Column("k", T("string"), False),
            Column("body", T("string")),
            Column("n", T("int32")),
        ),
        ("u", "d", "ts", "k"),
    )
    keys = {"u": UUID, "d": None, "ts": None, "k": "ünï 'q'"}
    rows = rows_table(
        schema,
        [
            (OP_INSERT, 5, {**keys, "body": "toasted", "n": 1}, None),
            (OP_UPDATE, 6, {**keys, "n": 2}, ["body"]),
        ],
    )
    rows = rows.set_column(
        1, "d", pa.array([DATE_NEG_INFINITY] * 2, pa.int32()).cast(pa.date32())
    )  # -> 0000-01-01
    rows = rows.set_column(
        2, "ts", pa.array([-62_135_596_800_000_000] * 2, pa.int64()).cast(pa.timestamp("us", "UTC"))
    )
    first, second = rows.slice(0, 1), rows.slice(1, 1)
    sink.write_batch(ChangeBatch("public.keyed", schema, [Rows(schema, first)]), BatchRef("p", "b1"))
    result = sink.write_batch(
        ChangeBatch("public.keyed", schema, [Rows(schema, second)]), BatchRef("p", "b2")
    )
    assert result.details["unknown_values_missing"] == 0
    got = sink.query_rows("SELECT toString(u), toString(d), toString(ts), k, body, n FROM keyed_current")
    assert got == [(UUID, "0000-01-01", "0001-01-01 00:00:00.000000", "ünï 'q'", "toasted", 2)]
