"""Every supported PostgreSQL type with edge values, captured through the slot, value for value."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from dbmazz_connectors.core.batch import Rows, SchemaChange
from dbmazz_connectors.core.errors import UnmappableTypeError, UnrepresentableValueError
from dbmazz_connectors.core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
    Kind,
    LogicalType,
)

from ._pg import assert_folded_equals_source, capture

DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(7,2) CHECK (VALUE >= 0);
CREATE TABLE matrix (
  id int PRIMARY KEY, c_int2 smallint, c_int4 int, c_int8 bigint, c_float4 real, c_float8 double precision,
  c_num numeric(12,2), c_num_wide numeric(60,10), c_num_free numeric, c_bool boolean, c_text text,
  c_varchar varchar(20), c_char char(5), c_bytea bytea, c_json json, c_jsonb jsonb, c_uuid uuid, c_date date,
  c_time time, c_timetz timetz, c_ts timestamp, c_tstz timestamptz, c_interval interval, c_mood mood,
  c_ints int[], c_texts text[], c_floats float8[], c_tstzs timestamptz[], c_money money, c_inet inet, c_cidr cidr,
  c_mac macaddr, c_xml xml, c_price price)
"""

ROWS = """
INSERT INTO matrix VALUES
 (1, -32768, -2147483648, -9223372036854775808, 'NaN', 'NaN', -9999999999.99,
  '-12345678901234567890123456789012345678901234567890.0123456789', 'NaN', false, 'héllo wörld 🎉 ∑ "q" ''s''
line2', '', 'ab', '\\x00ff0001', '{"b": 1,  "a": [1, 2, {"c": null}]}', '{"b": 1, "a": [1, "x"]}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '-infinity', '00:00:00', '13:45:00+02', '-infinity', '-infinity',
  '-1 year -2 months +3 days -04:05:06.5', 'sad', '{1,NULL,3}', '{"a,b","c\\"d",NULL,"NULL",""}',
  '{NaN,Infinity,-Infinity,1.5}', '{"2024-01-01 00:00:00+02",NULL}', -1234.56, '192.168.0.1/24', '10.0.0.0/8',
  '08:00:2b:01:02:03', '<a>b</a>', 0),
 (2, 32767, 2147483647, 9223372036854775807, 'Infinity', '-Infinity', 9999999999.99,
  '12345678901234567890123456789012345678901234567890.0123456789', '123456789012345678901234567890.000000000000000001',
  true, 'x', 'twenty chars exactly', 'abcde', '\\x', '[]', '{}', '00000000-0000-0000-0000-000000000000', 'infinity',
  '24:00:00', '00:00:00-11:30', 'infinity', 'infinity', '1 year 2 months 3 days 04:05:06.789012', 'happy', '{}',
  '{}', '{}', '{}', 0, '::1', '::/0', 'ff:ff:ff:ff:ff:ff', '', 99999.99),
 (3, 0, 0, 0, 1.5, 1e308, 0.01, 0, 'Infinity', true, 'z', 'v', 'c', '\\x00', 'null', '"s"',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '2024-02-29', '23:59:59.999999', '23:59:59.999999+14', '2024-02-29 23:59:59.999999',
  '2024-06-01 12:00:00+05:30', '0', 'ok', '{-1}', '{"é"}', '{-0.5}', '{"-infinity"}', 0, '0.0.0.0', '0.0.0.0/0',
  '00:00:00:00:00:00', '<x/>', 1.5),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  '0044-03-15 BC', NULL, NULL, '10000-01-01 00:00:00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL)
"""


def _us(text: str) -> int:
    return int((datetime.fromisoformat(text) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)


EXPECTED: dict[str, list] = {
    "c_int2": [-32768, 32767, 0, None],
    "c_int4": [-2147483648, 2147483647, 0, None],
    "c_int8": [-(2**63), 2**63 - 1, 0, None],
    "c_num": [Decimal("-9999999999.99"), Decimal("9999999999.99"), Decimal("0.01"), None],
    "c_num_wide": [
        Decimal("-12345678901234567890123456789012345678901234567890.0123456789"),
        Decimal("12345678901234567890123456789012345678901234567890.0123456789"),
        Decimal("0E-10"),
        None,
    ],
    "c_num_free": ["NaN", "123456789012345678901234567890.000000000000000001", "Infinity", None],
    "c_bool": [False, True, True, None],
    "c_text": ["héllo wörld 🎉 ∑ \"q\" 's'\nline2", "x", "z", None],
    "c_varchar": ["", "twenty chars exactly", "v", None],
    "c_char": ["ab   ", "abcde", "c    ", None],
    "c_bytea": [b"\x00\xff\x00\x01", b"", b"\x00", None],
    "c_json": ['{"b": 1,  "a": [1, 2, {"c": null}]}', "[]", "null", None],
    "c_jsonb": ['{"a": [1, "x"], "b": 1}', "{}", '"s"', None],
    "c_uuid": [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        None,
    ],
    # 44 BC is astronomical year -43: 15998 days before 0001-01-01 (proleptic Gregorian, as PostgreSQL)
    "c_date": [
        DATE_NEG_INFINITY,
        DATE_POS_INFINITY,
        (date(2024, 2, 29) - date(1970, 1, 1)).days,
        (date(1, 1, 1) - date(1970, 1, 1)).days - 15_998,
    ],
    "c_time": [0, 86_400_000_000, 86_399_999_999, None],
    "c_timetz": ["13:45:00+02", "00:00:00-11:30", "23:59:59.999999+14", None],
    "c_ts": [
        TIMESTAMP_NEG_INFINITY,
        TIMESTAMP_POS_INFINITY,
        _us("2024-02-29T23:59:59.999999+00:00"),
        253_402_300_800_000_000,
    ],  # 10000-01-01, past what Arrow's parser reads
    "c_tstz": [TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY, _us("2024-06-01T06:30:00+00:00"), None],
    "c_interval": [
        {"months": -14, "days": 3, "micros": -14_706_500_000},
        {"months": 14, "days": 3, "micros": 14_706_789_012},
        {"months": 0, "days": 0, "micros": 0},
        None,
    ],
    "c_mood": ["sad", "happy", "ok", None],
    "c_ints": [[1, None, 3], [], [-1], None],
    "c_texts": [["a,b", 'c"d', None, "NULL", ""], [], ["é"], None],
    "c_tstzs": [[_us("2023-12-31T22:00:00+00:00"), None], [], [TIMESTAMP_NEG_INFINITY], None],
    "c_money": ["-$1,234.56", "$0.00", "$0.00", None],
    "c_inet": ["192.168.0.1/24", "::1", "0.0.0.0", None],
    "c_cidr": ["10.0.0.0/8", "::/0", "0.0.0.0/0", None],
    "c_mac": ["08:00:2b:01:02:03", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", None],
    "c_xml": ["<a>b</a>", "", "<x/>", None],
    "c_price": [Decimal("0.00"), Decimal("99999.99"), Decimal("1.50"), None],
}

TYPES = {
    "c_int2": LogicalType.of(Kind.INT16),
    "c_float4": LogicalType.of(Kind.FLOAT32),
    "c_num": LogicalType.decimal(12, 2),
    "c_num_wide": LogicalType.decimal(60, 10),
    "c_num_free": LogicalType.decimal(),
    "c_jsonb": LogicalType.of(Kind.JSON),
    "c_timetz": LogicalType.of(Kind.STRING),
    "c_mood": LogicalType.enum(["sad", "ok", "happy"]),
    "c_ints": LogicalType.array(LogicalType.of(Kind.INT32)),
    "c_price": LogicalType.decimal(7, 2),
    "c_interval": LogicalType.of(Kind.INTERVAL),
    "c_money": LogicalType.of(Kind.STRING),
}


_AS_INTEGERS = {
    "c_date": pa.int32(),
    "c_time": pa.int64(),
    "c_ts": pa.int64(),
    "c_tstz": pa.int64(),
    "c_tstzs": pa.list_(pa.int64()),
}  # +-infinity and 24:00 have no Python datetime


def _values(column: pa.ChunkedArray, name: str) -> list:
    return column.cast(_AS_INTEGERS[name]).to_pylist() if name in _AS_INTEGERS else column.to_pylist()


@pytest.mark.usefixtures("capture_mode")  # in both capture modes
def test_type_matrix(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant(["public.matrix"])
    source = capture_role.source(["public.matrix"])
    assert source.preflight() == []
    source.setup()
    schema = source.table_schemas()["public.matrix"]
    for name, ltype in TYPES.items():
        assert schema.column(name).type == ltype, name
    with pg_db.connect() as conn:
        conn.execute("SET TimeZone = 'America/New_York'")  # the writer's zone must not matter
        conn.execute(ROWS)
    capture(source, changelog)
    batch = changelog.read_batch("p1", changelog.batches("p1")[0].batch_id, "public.matrix")
    data = pa.concat_tables([r.data for r in batch.rows()]).sort_by("id")
    float4 = data.column("c_float4").to_pylist()
    assert math.isnan(float4[0]) and float4[1] == math.inf and float4[2] == 1.5 and float4[3] is None
    float8 = data.column("c_float8").to_pylist()
    assert math.isnan(float8[0]) and float8[1] == -math.inf and float8[2] == 1e308
    floats = data.column("c_floats").to_pylist()
    assert math.isnan(floats[0][0]) and floats[0][1:] == [math.inf, -math.inf, 1.5] and floats[2] == [-0.5]
    for name, expected in EXPECTED.items():
        assert _values(data.column(name), name) == expected, name
    source.disconnect()


def test_bounded_numeric_nan_becomes_null_and_unbounded_keeps_it(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE n (id int PRIMARY KEY, bounded numeric(5,1), free numeric)")
    capture_role.grant(["public.n"])
    source = capture_role.source(["public.n"])
    source.setup()
    with pg_db.connect() as conn:
        conn.execute("INSERT INTO n VALUES (1, 'NaN', 'NaN'), (2, NULL, '-Infinity'), (3, 1.5, 1.5)")
    capture(source, changelog)
    rows = changelog.read_batch("p1", changelog.batches("p1")[0].batch_id, "public.n")
    data = pa.concat_tables([r.data for r in rows.rows()])
    assert data.column("bounded").to_pylist() == [None, None, Decimal("1.5")]  # documented in the README
    assert data.column("free").to_pylist() == ["NaN", "-Infinity", "1.5"]


def test_unmappable_type_is_named_at_preflight_and_at_decode(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE geo (id int PRIMARY KEY, spot point)")
        conn.execute("CREATE TABLE ok (id int PRIMARY KEY)")
    capture_role.grant(["public.geo", "public.ok"], publication=None)
    problems = capture_role.source(["public.geo"], publication="pub_geo").preflight()
    assert [p.check for p in problems if p.check == "type"] == ["type"]
    assert "cannot map column public.geo.spot of type point" in str(problems)
    with pg_db.connect() as conn:
        conn.execute("CREATE PUBLICATION dbmazz_p1 FOR TABLE ok")
        conn.execute(f"ALTER PUBLICATION dbmazz_p1 OWNER TO {capture_role.name}")
    source = capture_role.source(["public.ok"])
    source.setup()
    with pg_db.connect() as conn:
        conn.execute("ALTER TABLE ok ADD COLUMN spot point")
        conn.execute("INSERT INTO ok VALUES (1, '(1,2)')")
    with pytest.raises(UnmappableTypeError, match=r"public.ok.spot of type point"):
        capture(source, changelog)
    assert changelog.batches("p1") == []  # nothing staged, the slot did not move


def test_multidimensional_array_is_an_error_not_a_guess(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE grid (id int PRIMARY KEY, cells int[])")
    capture_role.grant(["public.grid"])
    source = capture_role.source(["public.grid"])
    source.setup()
    with pg_db.connect() as conn:
        conn.execute("INSERT INTO grid VALUES (1, '{{1,2},{3,4}}')")
    with pytest.raises(UnrepresentableValueError, match="multi-dimensional arrays are not supported"):
        capture(source, changelog)


@pytest.mark.usefixtures("capture_mode")  # in both capture modes
def test_schema_change_mid_range(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE evolving (id int PRIMARY KEY, a text)")
    capture_role.grant(["public.evolving"])
    source = capture_role.source(["public.evolving"])
    source.setup()
    with pg_db.connect() as conn:
        conn.execute("INSERT INTO evolving VALUES (1, 'one')")
        conn.execute("ALTER TABLE evolving ADD COLUMN b bigint")
        conn.execute("INSERT INTO evolving VALUES (2, 'two', 2)")
        conn.execute("ALTER TABLE evolving DROP COLUMN a")
        conn.execute("UPDATE evolving SET b = 10 WHERE id = 1")
    events = list(source.read_changes(source.checkpoint_position(), source.current_position()))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Rows", "SchemaChange", "Rows", "SchemaChange", "Rows", "Heartbeat"]
    changes = [e for e in events if isinstance(e, SchemaChange)]
    assert [c.schema.column_names for c in changes] == [["id", "a", "b"], ["id", "b"]]
    assert all(isinstance(e, Rows) for e in events[:-1:2])
    capture(source, changelog)
    assert_folded_equals_source(pg_db, changelog, "public.evolving")
