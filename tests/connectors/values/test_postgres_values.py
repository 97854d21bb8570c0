"""PostgreSQL edge values through every sink, unchanged-TOAST updates of the rows holding them included.

Tables (REPLICA IDENTITY DEFAULT, a TOASTed ``body``, so updates of ``n`` leave ``body`` unknown):

* ``edge``: every type's edge values every sink can hold (ClickHouse stores +-infinity as its
  range limits and a NULL array as ``[]``, both documented): each must equal the source;
* ``far``: dates and timestamps outside ClickHouse's range (BC, after 9999): DuckDB and
  PostgreSQL hold them; ClickHouse follows its ``out_of_range`` policy (refuse, clamp, null);
* ``far_full`` (REPLICA IDENTITY FULL): a row updated to a BC date and deleted in one batch: the
  delete carries the BC date, and even a refusing ClickHouse applies it;
* ``nul_json`` (``json``): ``\\u0000`` escapes, which PostgreSQL's ``jsonb`` cannot hold: the
  PostgreSQL sink follows its policy, the others keep the text.
"""

from __future__ import annotations

import pytest

from dbmazz_connectors.core import LogicalType, UnrepresentableValueError, WriteResult
from dbmazz_connectors.core.types import (
    DATE_NEG_INFINITY,
    DATE_POS_INFINITY,
    TIMESTAMP_NEG_INFINITY,
    TIMESTAMP_POS_INFINITY,
    Kind,
)
from dbmazz_connectors.engine import apply_batch
from dbmazz_connectors.sinks.clickhouse.types import ClickHouseTypes
from tests.connectors.sources.postgres._pg import capture, table_rows

from ._canon import clickhouse_rows, differences, duckdb_rows, pg_rows, postgres_sink_rows

T = LogicalType.parse
TABLES = ["public.edge", "public.far", "public.far_full", "public.nul_json"]


def body(row: str) -> str:
    """~160 kB of unicode ending in the row's id: TOASTed out of line (STORAGE EXTERNAL)."""
    return f"repeat('ü😀x', 40000) || '{row.split(',')[0]}'"


EDGE = {  # column: (PostgreSQL type, logical type)
    "id": ("int", T("int32")),
    "n": ("int", T("int32")),
    "d": ("date", T("date")),
    "ts": ("timestamp", T("timestamp")),
    "tstz": ("timestamptz", T("timestamptz")),
    "num": ("numeric", T("decimal")),
    "num_b": ("numeric(12,4)", T("decimal(12,4)")),
    "f8": ("float8", T("float64")),
    "f4": ("float4", T("float32")),
    "i8": ("bigint", T("int64")),
    "t": ("text", T("string")),
    "ta": ("text[]", T("array<string>")),
    "ia": ("int[]", T("array<int32>")),
    "da": ("date[]", T("array<date>")),
    "tsa": ("timestamptz[]", T("array<timestamptz>")),
    "j": ("jsonb", T("json")),
    "u": ("uuid", T("uuid")),
    "b": ("bytea", T("binary")),
    "iv": ("interval", T("interval")),
    "tm": ("time", T("time")),
    "bo": ("bool", T("bool")),
}
_HUGE = "('-' || repeat('9', 1000) || '.' || repeat('1', 1000))::numeric"
_TINY = "('0.' || repeat('0', 16382) || '1')::numeric"
_UNICODE = "E'ünïcödé 😀 שָׁלוֹם \\u200b \"q\" \\\\ back, comma\\nnewline\\ttab'"
EDGE_ROWS = [  # id, n, d, ts, tstz, num, num_b, f8, f4, i8, t, ta, ia, da, tsa, j, u, b, iv, tm, bo
    "1, 0, '0001-01-01 BC', '0001-01-01 00:00:00 BC', '0001-01-01 00:00:00+00 BC', "
    + _HUGE
    + ", -99999999.9999, "
    "'-Infinity', '-Infinity', -9223372036854775808, '', '{}', '{}', '{}', '{}', '[]', "
    "'00000000-0000-0000-0000-000000000000', '\\x', '-178000000 years -2147483647 days -2562047788 hours', "
    "'00:00:00', false",
    "2, 0, '9999-12-31', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00', " + _TINY + ", "
    "99999999.9999, 'Infinity', 'Infinity', 9223372036854775807, " + _UNICODE + ", "
    '\'{NULL,"",NULL," a,b ","{x}","NULL"}\', \'{NULL,2147483647,-2147483648}\', '
    "'{infinity,-infinity,NULL,0001-01-01 BC}', '{infinity,NULL,\"9999-12-31 23:59:59.999999+00\"}', "
    "'{\"ü\": [1, 1.5e300, null, \"😀\"], \"\": {}}', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '\\x00ff00', "
    "'178000000 years 2147483647 days 2562047788 hours', '24:00:00', true",
    "3, 0, 'infinity', '-infinity', 'infinity', 'NaN', 'NaN', 'NaN', 'NaN', 0, 'x', NULL, NULL, NULL, NULL, "
    "'null', NULL, NULL, '0', NULL, NULL",
    "4, 0, '-infinity', 'infinity', '-infinity', 'Infinity', 0, 0, '-0', 1, 'y', '{\"\"}', '{0}', "
    "'{2024-02-29}', '{-infinity}', '\"text\"', NULL, NULL, '1 microsecond', '23:59:59.999999', true",
    "5, 0" + ", NULL" * 19,
    "6, 0, '2024-02-29', '2024-02-29 12:34:56.789012', '1969-12-31 23:59:59.999999+00', '-Infinity', 0.0001, "
    "1e-308, 3.4e38, -1, 'ascii', '{a,b}', '{1,2,3}', '{1970-01-01}', '{\"1970-01-01 00:00:00+00\"}', "
    "'{\"a\": 1}', '12345678-1234-5678-1234-567812345678', '\\xdeadbeef', '1 mon 2 days 00:00:03', '12:00', false",
]

FAR = {
    "id": ("int", T("int32")),
    "n": ("int", T("int32")),
    "d": ("date", T("date")),
    "ts": ("timestamp", T("timestamp")),
    "tstz": ("timestamptz", T("timestamptz")),
    "da": ("date[]", T("array<date>")),
    "tsa": ("timestamptz[]", T("array<timestamptz>")),
}
FAR_ROWS = [  # id, n, d, ts, tstz, da, tsa
    "1, 0, '4714-11-24 BC', '4714-11-24 00:00:00 BC', '4714-11-24 00:00:00+00 BC', '{4714-11-24 BC,2024-01-01}', "
    "'{\"2024-01-01 00:00:00+00\"}'",
    "2, 0, '5874897-12-31', '294246-12-31 23:59:59.999999', '294246-12-31 23:59:59.999999+00', '{10000-01-01}', "
    "'{\"10000-01-01 00:00:00+00\",NULL}'",
    "3, 0, '2024-02-29', '2024-02-29 00:00:00', '2024-02-29 00:00:00+00', '{infinity}', '{-infinity}'",
    "4, 0, '0044-03-15 BC', '0044-03-15 12:00:00 BC', '0044-03-15 12:00:00+00 BC', NULL, NULL",
    "5, 0, '2024-01-01', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', NULL, NULL",
]
FAR_OUTSIDE = (
    14  # values outside ClickHouse's range in FAR_ROWS (3 in rows 1, 2, 4, 2 in row 5, 1+1+1 in arrays)
)
LAST_US = TIMESTAMP_POS_INFINITY - 1  # the last instant dbmazz carries: PostgreSQL's later ones become it

NUL_JSON = {"id": ("int", T("int32")), "js": ("json", T("json"))}
NUL_JSON_ROWS = [
    "1, '\"\\u0000\"'",
    '2, \'{"a": "x\\u0000y\\u0000"}\'',
    '3, \'{"a": "\\\\u0000"}\'',
    "4, 'null'",
]


def _create(conn, table: str, columns: dict, *, toast: bool = True) -> None:
    body = ", body text" if toast else ""
    conn.execute(
        f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, (t, _) in columns.items())}{body}, "
        "PRIMARY KEY (id))"
    )
    if toast:
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN body SET STORAGE EXTERNAL")


def _types(columns: dict) -> dict:
    return {c: lt for c, (_, lt) in columns.items()}


# ---- what each sink holds of a source value
def _to_limits(value, logical: LogicalType, low: int, high: int, policy: str = "clamp"):
    """ClickHouse's form: +-infinity at the range limits; other values outside follow ``policy``."""
    if value is None:
        return None
    if logical.kind is Kind.ARRAY:
        return [_to_limits(v, logical.element, low, high, policy) for v in value]
    if value in (DATE_POS_INFINITY, TIMESTAMP_POS_INFINITY):
        return high
    if value in (DATE_NEG_INFINITY, TIMESTAMP_NEG_INFINITY):
        return low
    if low <= value <= high:
        return value
    return None if policy == "null" else min(max(value, low), high)


def _clickhouse_form(rows: dict, columns: dict, policy: str = "clamp") -> dict:
    out = {}
    for key, row in rows.items():
        new = {}
        for name, value in row.items():
            logical = columns[name]
            kind = (logical.element or logical).kind
            if kind is Kind.DATE:
                value = _to_limits(value, logical, ClickHouseTypes.MIN_DAY, ClickHouseTypes.MAX_DAY, policy)
            elif kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
                value = _to_limits(value, logical, ClickHouseTypes.MIN_US, ClickHouseTypes.MAX_US, policy)
            if logical.kind is Kind.ARRAY and value is None:
                value = []  # ClickHouse arrays cannot be NULL (documented)
            new[name] = value
        out[key] = new
    return out


def _source_form(rows: dict, columns: dict) -> dict:
    """What the source sends (both documented): numeric(p,s) NaN becomes NULL, and timestamps after the
    last instant a 64-bit microsecond count holds (294247-01-10) become that instant."""
    for row in rows.values():
        for name, logical in columns.items():
            if logical.kind is Kind.DECIMAL and logical.precision is not None and row[name] == "NaN":
                row[name] = None
            if logical.kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ) and row[name] is not None:
                row[name] = min(row[name], LAST_US) if row[name] != TIMESTAMP_POS_INFINITY else row[name]
    return rows


READERS = {"duckdb": duckdb_rows, "postgres": postgres_sink_rows, "clickhouse": clickhouse_rows}


def _apply(changelog, sink, batch_id: str, table: str):
    """Apply one table of a batch (the others may fail on their own); a batch without the table changes nothing."""
    if table not in changelog.manifest("p1", batch_id).tables:
        return WriteResult(
            table, 0, False, None, {"values_clamped": 0, "values_nulled": 0, "unknown_values_missing": 0}
        )
    return apply_batch(changelog, sink, "p1", batch_id, tables=[table])[table]


def test_edge_values_round_trip_through_every_sink_with_unknown_toast_updates(
    pg_db, capture_role, changelog, make_sink
):
    with pg_db.connect() as conn:
        _create(conn, "edge", EDGE)
        _create(conn, "far", FAR)
        _create(conn, "far_full", {"id": ("int", None), "d": ("date", None), "n": ("int", None)}, toast=False)
        conn.execute("ALTER TABLE far_full REPLICA IDENTITY FULL")
        _create(conn, "nul_json", NUL_JSON, toast=False)
    capture_role.grant(TABLES)
    source = capture_role.source(TABLES)
    source.setup()
    with (
        pg_db.connect() as conn
    ):  # batch 1: inserts, and an unknown-TOAST update of a row inserted in the batch
        for table, columns, rows in (("edge", EDGE, EDGE_ROWS), ("far", FAR, FAR_ROWS)):
            for row in rows:
                conn.execute(f"INSERT INTO {table} ({', '.join(columns)}, body) VALUES ({row}, {body(row)})")
        conn.execute("INSERT INTO far_full VALUES (1, '2024-01-01', 0), (2, '2024-01-02', 0)")
        for row in NUL_JSON_ROWS:
            conn.execute(f"INSERT INTO nul_json VALUES ({row})")
        conn.execute("UPDATE edge SET n = n + 1 WHERE id = 1")
    batches = [capture(source, changelog).batch_id]
    with (
        pg_db.connect() as conn
    ):  # batch 2: every row updated with body unchanged (unknown); far_full 1: BC, deleted
        conn.execute("UPDATE edge SET n = n + 1")
        conn.execute("UPDATE far SET n = n + 1")
        conn.execute("UPDATE far_full SET d = '0044-03-15 BC' WHERE id = 1")
        conn.execute("DELETE FROM far_full WHERE id = 1")
        conn.execute("UPDATE nul_json SET js = js WHERE id = 4")
    batches.append(capture(source, changelog).batch_id)
    with pg_db.connect() as conn:  # batch 3: a delete, a new extreme row updated twice with body unknown
        conn.execute("DELETE FROM edge WHERE id = 5")
        row = EDGE_ROWS[1].replace("2, 0", "7, 0", 1)
        conn.execute(f"INSERT INTO edge ({', '.join(EDGE)}, body) VALUES ({row}, {body(row)})")
        conn.execute("UPDATE edge SET n = 5 WHERE id = 7")
        conn.execute("UPDATE edge SET n = n + 1 WHERE id IN (2, 7)")
    batches.append(capture(source, changelog).batch_id)
    source.disconnect()
    unknown = table_rows(changelog, batches[1], "public.edge").column("_dbmazz_unknown_columns")
    assert unknown.to_pylist() == [["body"]] * 6, "batch 2's updates left the TOASTed body unknown"

    with pg_db.connect() as conn:
        edge = _source_form(pg_rows(conn, "edge", {**_types(EDGE), "body": T("string")}), _types(EDGE))
        far = _source_form(pg_rows(conn, "far", {**_types(FAR), "body": T("string")}), _types(FAR))
        assert far[5]["ts"] == far[5]["tstz"] == LAST_US
        nul_json = pg_rows(conn, "nul_json", _types(NUL_JSON))
    edge_types, far_types = {**_types(EDGE), "body": T("string")}, {**_types(FAR), "body": T("string")}
    assert len(edge) == 6 and edge[2]["n"] == 2 and len(edge[2]["body"]) > 100_000

    sinks = {
        "duckdb": make_sink("duckdb"),
        "postgres": make_sink("postgres"),
        "clickhouse": make_sink("clickhouse"),
    }
    for name, sink in sinks.items():
        for table in ("public.edge", "public.far_full"):
            for batch_id in batches:
                result = _apply(changelog, sink, batch_id, table)
                assert result.details["values_clamped"] == result.details["values_nulled"] == 0
                assert result.details["unknown_values_missing"] == 0, (name, table, batch_id)
        want = _clickhouse_form(edge, edge_types) if name == "clickhouse" else edge
        assert differences(want, READERS[name](sink, "public.edge", edge_types), name) == []
        full = READERS[name](sink, "public.far_full", {"id": T("int32"), "d": T("date")})
        assert list(full) == [2], f"{name}: the delete carrying a BC date removed row 1"

    for name in ("duckdb", "postgres"):  # they hold every PostgreSQL date and timestamp
        for batch_id in batches:
            _apply(changelog, sinks[name], batch_id, "public.far")
        assert differences(far, READERS[name](sinks[name], "public.far", far_types), name) == []
    _far_follows_the_clickhouse_policy(changelog, batches, make_sink, sinks["clickhouse"], far, far_types)
    _nul_json_follows_the_postgres_policy(changelog, batches, make_sink, sinks, nul_json)


def _far_follows_the_clickhouse_policy(changelog, batches, make_sink, refusing, far, far_types) -> None:
    with pytest.raises(UnrepresentableValueError) as info:
        _apply(changelog, refusing, batches[0], "public.far")
    error = info.value
    assert (error.table, error.column) == ("public.far", "d")
    assert "clickhouse: expected a date within 0000-01-01..9999-12-31" in str(error)
    assert "found 4714-11-24 BC (and 2 more)" in str(error) and "fix: set out_of_range: clamp" in str(error)
    assert refusing.row_count("public.far") == 0, "nothing of a refused batch is written"
    for policy in ("clamp", "null"):
        sink = make_sink("clickhouse", policy)
        counted = 0
        for batch_id in batches:
            details = _apply(changelog, sink, batch_id, "public.far").details
            counted += details["values_clamped" if policy == "clamp" else "values_nulled"]
            assert details["values_nulled" if policy == "clamp" else "values_clamped"] == 0
        assert counted == 2 * FAR_OUTSIDE, f"{policy}: batch 1 inserts and batch 2 re-sends every far value"
        want = _clickhouse_form(far, far_types, policy)
        assert differences(want, clickhouse_rows(sink, "public.far", far_types), policy) == []


def _nul_json_follows_the_postgres_policy(changelog, batches, make_sink, sinks, nul_json) -> None:
    columns = _types(NUL_JSON)
    for name in ("duckdb", "clickhouse"):
        for batch_id in batches:
            _apply(changelog, sinks[name], batch_id, "public.nul_json")
        assert differences(nul_json, READERS[name](sinks[name], "public.nul_json", columns), name) == []
    with pytest.raises(
        UnrepresentableValueError,
        match=r"a value of public.nul_json.js cannot be written: postgres: "
        r"expected a JSON text without NUL .* found '\"\\\\u0000\"' "
        r"\(and 1 more\); fix: set out_of_range",
    ):
        _apply(changelog, sinks["postgres"], batches[0], "public.nul_json")
    expected = {
        "clamp": {1: '""', 2: '{"a": "xy"}', 3: nul_json[3]["js"], 4: "null"},
        "null": {1: None, 2: None, 3: nul_json[3]["js"], 4: "null"},
    }
    for policy, values in expected.items():
        sink = make_sink("postgres", policy)
        result = [_apply(changelog, sink, b, "public.nul_json").details for b in batches]
        assert result[0]["values_clamped" if policy == "clamp" else "values_nulled"] == 2
        found = postgres_sink_rows(sink, "public.nul_json", columns)
        assert {k: row["js"] for k, row in found.items()} == values
