"""Type matrix: one column per MySQL type with edge values, inserted, updated and deleted, folded from the
change log and compared with what a client SELECTs, value by value."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from dbmazz_connectors.core.types import Kind

from ._my import capture, folded_rows, source_rows

COLUMNS = """
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
  d1 DECIMAL(5,2), d0 DECIMAL(10,0), d2 DECIMAL(18,9), d3 DECIMAL(38,10), d4 DECIMAL(65,30),
  f FLOAT, dbl DOUBLE, b1 BIT(1), b10 BIT(10), b64 BIT(64), y YEAR,
  dd DATE, dtm DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6), ts TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL,
  tm TIME, tm2 TIME(2), tm4 TIME(4), tm6 TIME(6),
  c CHAR(10), vc VARCHAR(300), vl VARCHAR(50) CHARACTER SET latin1, tx TEXT, ltx LONGTEXT,
  tl TEXT CHARACTER SET latin1, bn BINARY(4), vb VARBINARY(300), bl BLOB, lbl LONGBLOB,
  j JSON, e ENUM('a','b','c d'), s SET('x','y','z'), g GEOMETRY, pt POINT
"""

ROWS = [
    "(1, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807,"
    " 18446744073709551615, 999.99, 9999999999, 999999999.999999999, '9999999999999999999999999999.9999999999',"
    " '99999999999999999999999999999999999.999999999999999999999999999999', 3.40282e38, 1.7976931348623157e308,"
    " b'1', b'1111111111', b'1111111111111111111111111111111111111111111111111111111111111111', 2155,"
    " '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999',"
    " '2038-01-19 03:14:07', '2038-01-19 03:14:07.999999', '838:59:59', '838:59:59.00', '838:59:59.0000',"
    " '838:59:59.000000', 'fixed', 'héllo 🦆 wörld', 'café €', REPEAT('t', 1000), REPEAT('L', 70000),"
    " 'naïve ÿ', 'ab', x'00ff00', x'000102', REPEAT(x'ab', 70000), '{\"a\": [1, 2, {\"b\": null}]}', 'c d',"
    " 'x,z', ST_GeomFromText('LINESTRING(0 0, 1 1, 2 5)'), POINT(1.5, -2.25))",
    "(2, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, -999.99, -1,"
    " -0.000000001, '-1234567890123456789012345678.0123456789', '-0.000000000000000000000000000001',"
    " -1.5, -2.2250738585072014e-308, b'0', b'0000000001', 0, 1901, '1000-01-01', '1000-01-01 00:00:00',"
    " '1000-01-01 00:00:00.001', '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01', '1970-01-01 00:00:01.000001',"
    " '-838:59:59', '-01:00:00.01', '-12:34:56.7891', '-00:00:00.000001', '', '', '', '', '', '', '', '', '', '',"
    " '[]', 'a', '', POINT(0, 0), POINT(0, 0))",
    "(3, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'0', 0, 1, 0, '0000-00-00', '0000-00-00 00:00:00',"
    " '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '00:00:00',"
    " '00:00:00.5', '23:59:59.9999', '-00:00:01.000001', 'z', 'x', 'y', 'z', 'x', 'y', x'61', x'00', x'00', x'00',"
    " '\"text\"', 'b', 'x,y,z', NULL, NULL)",
    "(4" + ", NULL" * 46 + ")",
]

ZERO_DATE_COLUMNS = {"dd", "dtm", "dtm3", "dtm6", "ts", "ts6"}


def _expected(name: str, value, kind: Kind):
    """The value a user expects in the sink for what the client SELECTs (see README's type table)."""
    if value is None:
        return None
    if name in ZERO_DATE_COLUMNS and isinstance(value, str) and value.startswith("0000"):
        return None  # zero dates become NULL in nullable columns
    if name.startswith("b") and name[1:].isdigit():
        number = int.from_bytes(value, "big")
        return bool(number) if kind is Kind.BOOL else number
    if name in ("g", "pt"):
        return value[4:]  # WKB without MySQL's 4-byte SRID prefix
    if name == "f":
        return float(np.float32(value))
    return value


def test_type_matrix_round_trip(mysql_db, make_source, changelog):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # allow zero dates
        cur.execute(f"CREATE TABLE types ({COLUMNS})")
    source = make_source(["types"])
    assert source.preflight() == []
    schema = source.table_schemas()[f"{mysql_db.name}.types"]
    start = source.current_position()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("INSERT INTO types VALUES " + ", ".join(ROWS))
        cur.execute("INSERT INTO types (id) VALUES (5), (6)")
        cur.execute(
            "UPDATE types SET vc = CONCAT(vc, '!'), d4 = d4 / 3, tm6 = '-00:00:00.5' WHERE id IN (1, 2)"
        )
        cur.execute("UPDATE types SET j = '{\"k\": 1}', s = 'y' WHERE id = 4")
        cur.execute("DELETE FROM types WHERE id = 6")
    capture(source, changelog, start)

    expected_rows = source_rows(mysql_db, "types")
    actual_rows = folded_rows(changelog, f"{mysql_db.name}.types")
    assert len(actual_rows) == len(expected_rows) == 5
    kinds = {c.name: c.type.kind for c in schema.columns}
    for want, got in zip(expected_rows, actual_rows, strict=True):
        for name, value in want.items():
            assert got[name] == _expected(name, value, kinds[name]), f"row {want['id']} column {name}"


def test_logical_types(mysql_db, make_source):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE types ({COLUMNS})")
    schema = make_source(["types"]).table_schemas()[f"{mysql_db.name}.types"]
    arrow = {f.name: f.type for f in schema.arrow_schema()}
    assert arrow["biu"] == pa.uint64() and arrow["tiu"] == pa.int16() and arrow["iu"] == pa.int64()
    assert arrow["d4"] == pa.decimal256(65, 30) and arrow["d2"] == pa.decimal128(18, 9)
    assert arrow["ts6"] == pa.timestamp("us", tz="UTC") and arrow["dtm6"] == pa.timestamp("us")
    assert arrow["b1"] == pa.bool_() and arrow["b64"] == pa.uint64() and arrow["y"] == pa.int16()
    assert str(schema.column("e").type) == "enum('a','b','c d')"
    assert schema.column("j").type.kind is Kind.JSON and schema.column("g").type.kind is Kind.BINARY
    assert schema.column("tm").type.kind is Kind.INTERVAL


def test_zero_date_in_not_null_column_is_the_epoch(mysql_db, make_source, changelog):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("CREATE TABLE z (id INT PRIMARY KEY, d DATE NOT NULL, t DATETIME NOT NULL)")
    source = make_source(["z"])
    start = source.current_position()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("INSERT INTO z VALUES (1, '0000-00-00', '0000-00-00 00:00:00')")
    capture(source, changelog, start)
    row = folded_rows(changelog, f"{mysql_db.name}.z")[0]
    assert row["d"] == dt.date(1970, 1, 1) and row["t"] == dt.datetime(1970, 1, 1)
