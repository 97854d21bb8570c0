"""The ``out_of_range`` option every sink takes: parsed the same way, a primary key never clamped or nulled."""

import pickle

import pyarrow as pa
import pytest

from dbmazz_connectors.core import (
    OP_INSERT,
    BatchRef,
    ChangeBatch,
    Column,
    ConfigError,
    LogicalType,
    Rows,
    TableSchema,
    UnrepresentableValueError,
    create_sink,
)

from ._workload import rows_table

URLS = {
    "duckdb": "duckdb:///:memory:",
    "postgres": "postgresql://u@localhost/db",
    "clickhouse": "clickhouse://u@localhost:8123/db",
}


@pytest.mark.parametrize("sink", list(URLS))
def test_every_sink_takes_refuse_clamp_or_null_and_refuses_by_default(sink):
    assert create_sink({"url": URLS[sink]}).config.out_of_range == "refuse"
    for value in ("refuse", "clamp", "null", "CLAMP"):
        assert create_sink({"url": URLS[sink], "out_of_range": value}).config.out_of_range == value.lower()
    with pytest.raises(
        ConfigError,
        match=rf"{sink} sink: expected out_of_range to be one of refuse, clamp, null, "
        r"got 'wrap'",
    ):
        create_sink({"url": URLS[sink], "out_of_range": "wrap"})


def test_a_key_outside_the_range_is_refused_whatever_the_policy(ch_db):
    """Clamping or nulling a key could merge two rows into one: the batch is refused, naming the key column."""
    sink = create_sink({"url": ch_db.url, "pipeline": "p", "out_of_range": "clamp"})
    sink.connect()
    schema = TableSchema(
        "public",
        "days",
        (Column("day", LogicalType.of("date"), False), Column("n", LogicalType.of("int32"))),
        ("day",),
    )
    rows = rows_table(
        schema, [(OP_INSERT, 5, {"day": None, "n": 1}, None), (OP_INSERT, 5, {"day": None, "n": 2}, None)]
    )
    days = pa.array([-2_440_588, -2_440_587], pa.int32()).cast(pa.date32())  # 4714-11-24 BC, 4714-11-25 BC
    rows = rows.set_column(0, "day", days)
    with pytest.raises(
        UnrepresentableValueError,
        match=r"public.days.day cannot be written: .* found 4714-11-24 BC "
        r"\(and 1 more\) in a primary-key column, which is never "
        r"clamped or nulled",
    ):
        sink.write_batch(
            ChangeBatch(schema.qualified_name, schema, [Rows(schema, rows)]), BatchRef("p", "b1")
        )
    assert sink.row_count("public.days") == 0
    sink.disconnect()


def test_the_refusal_survives_pickling_with_its_table_column_and_fix():
    """Orchestrators ship errors between processes: the refusal keeps what it says."""
    error = UnrepresentableValueError(
        "public.far", "d", "clickhouse: expected a date ...", hint="set out_of_range"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.table, copy.column, copy.hint, str(copy)) == (
        "public.far",
        "d",
        "set out_of_range",
        str(error),
    )
