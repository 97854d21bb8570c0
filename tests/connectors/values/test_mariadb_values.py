"""MariaDB edge values through every sink: DATE '1000-01-01' (and '0001-01-01') into ClickHouse, zero dates,
DATETIME(6)/TIMESTAMP(6) extremes, DECIMAL(65,30), BIGINT UNSIGNED max, TIME extremes, NUL characters.

Every sink holds every value except PostgreSQL, which cannot store a NUL character in text: it follows
its ``out_of_range`` policy (refuse, clamp: the NUL removed, null).
"""

from __future__ import annotations

import pytest

from dbmazz_connectors.core import LogicalType, UnrepresentableValueError
from dbmazz_connectors.engine import apply_batch, capture_range

from ._canon import canon, clickhouse_rows, differences, duckdb_rows, mariadb_rows, postgres_sink_rows

T = LogicalType.parse
COLUMNS = {  # column: (MariaDB type, logical type)
    "id": ("INT", T("int32")),
    "d": ("DATE", T("date")),
    "dt": ("DATETIME(6)", T("timestamp")),
    "ts": ("TIMESTAMP(6) NULL", T("timestamptz")),
    "dec65": ("DECIMAL(65,30)", T("decimal(65,30)")),
    "ub": ("BIGINT UNSIGNED", T("uint64")),
    "sb": ("BIGINT", T("int64")),
    "f": ("FLOAT", T("float32")),
    "db": ("DOUBLE", T("float64")),
    "t": ("TEXT", T("string")),
    "vb": ("VARBINARY(64)", T("binary")),
    "j": ("JSON", T("json")),
    "e": ("ENUM('a','b')", T("enum")),
    "y": ("YEAR", T("int16")),
    "tm": ("TIME(6)", T("interval")),
    "lt": ("LONGTEXT", T("string")),
}
_DEC = "9" * 35 + "." + "9" * 30
ROWS = [  # id, d, dt, ts, dec65, ub, sb, f, db, t, vb, j, e, y, tm, lt
    f"1, '1000-01-01', '1000-01-01 00:00:00', '1970-01-01 00:00:01', -{_DEC}, 0, -9223372036854775808, "
    "-3.40282e38, -1.7976931348623157e308, '', '', '[]', 'a', 1901, '-838:59:59', REPEAT('ü😀', 100000)",
    f"2, '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', {_DEC}, 18446744073709551615, "
    "9223372036854775807, 3.40282e38, 1.7976931348623157e308, CONCAT('a', CHAR(0), 'b ünï 😀'), 0x00FF00, "
    "'{\"ü\": [1, null, \"\\\\u0000\"]}', 'b', 2155, '838:59:59', CONCAT(REPEAT('x', 70000), CHAR(0))",
    "3, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', 0.000000000000000000000000000001, "
    "9223372036854775808, 0, 0, 0, 'plain', NULL, 'null', '', 0, '-00:00:00.000001', ''",
    "4, '0001-01-01', '0001-01-01 00:00:00.000001', NULL, -0.000000000000000000000000000001, 1, -1, -0, 5e-324, "
    "NULL, NULL, NULL, NULL, NULL, '00:00:00.5', NULL",
    "5" + ", NULL" * 15,
]
NUL_VALUES = 3  # row 2: NUL characters in t and lt, a \u0000 escape in j (jsonb holds neither)
READERS = {"duckdb": duckdb_rows, "postgres": postgres_sink_rows, "clickhouse": clickhouse_rows}


def _types() -> dict:
    return {c: lt for c, (_, lt) in COLUMNS.items()}


def test_mariadb_edge_values_reach_every_sink(mysql_db, make_source, changelog, make_sink):
    admin = mysql_db.connect()
    with admin.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")  # zero dates, as applications with legacy modes write them
        cur.execute(
            f"CREATE TABLE my_edge ({', '.join(f'`{c}` {t}' for c, (t, _) in COLUMNS.items())}, "
            "PRIMARY KEY (id)) DEFAULT CHARSET utf8mb4"
        )
    admin.commit()
    source = make_source(["my_edge"])
    start = source.current_position()
    with admin.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("SET time_zone = '+00:00'")
        for row in ROWS:
            cur.execute(f"INSERT INTO my_edge VALUES ({row})")
    admin.commit()
    first = capture_range(source, changelog, "p1", start, source.current_position())
    with admin.cursor() as cur:  # every row changed again (the binlog's full row image), one deleted
        cur.execute("UPDATE my_edge SET y = 2000 WHERE id <> 5")
        cur.execute("UPDATE my_edge SET sb = -sb WHERE id = 4")
        cur.execute("DELETE FROM my_edge WHERE id = 5")
    admin.commit()
    second = capture_range(source, changelog, "p1", first.end, source.current_position())
    batches = [first.batch_id, second.batch_id]
    table = f"{mysql_db.name}.my_edge"
    expected = mariadb_rows(admin, "my_edge", _types())
    admin.close()
    assert expected[3]["d"] is None and expected[1]["d"] == -354_285, (
        "a zero date is NULL; 1000-01-01 is a date"
    )

    for name in ("duckdb", "clickhouse"):  # ClickHouse holds 0001-01-01..9999-12-31: MariaDB's dates all fit
        sink = make_sink(name)
        for batch_id in batches:
            details = apply_batch(changelog, sink, "p1", batch_id)[table].details
            assert details["values_clamped"] == details["values_nulled"] == 0
        assert differences(expected, READERS[name](sink, table, _types()), name) == []

    refusing = make_sink("postgres")
    with pytest.raises(UnrepresentableValueError) as info:
        apply_batch(changelog, refusing, "p1", batches[0])
    assert (info.value.table, info.value.column) == (table, "t")
    assert "found 'a\\x00b ünï 😀'" in str(info.value) and "fix: set out_of_range" in str(info.value)
    for policy in ("clamp", "null"):
        sink = make_sink("postgres", policy)
        counted = sum(
            apply_batch(changelog, sink, "p1", b)[table].details[
                f"values_{policy}ed" if policy == "null" else "values_clamped"
            ]
            for b in batches
        )
        assert counted == 2 * NUL_VALUES, f"{policy}: both batches carry row 2's values"
        want = {k: dict(v) for k, v in expected.items()}
        want[2]["t"] = "ab ünï 😀" if policy == "clamp" else None
        want[2]["lt"] = "x" * 70000 if policy == "clamp" else None
        want[2]["j"] = canon('{"ü": [1, null, ""]}', T("json")) if policy == "clamp" else None
        assert differences(want, postgres_sink_rows(sink, table, _types()), policy) == []
