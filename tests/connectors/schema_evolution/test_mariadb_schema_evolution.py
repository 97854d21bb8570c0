"""MariaDB schema changes through each sink, the sink compared with the source row by row after every step.

One table ``t`` lives through: the initial load; ``ADD COLUMN`` without a default (followed as it
comes); ``ADD COLUMN ... DEFAULT`` (the binlog carries no row for the filled rows: the sink holds
NULL there until they change, the documented limitation, and a re-sync makes the sink equal the
source); ``DROP COLUMN`` (the sink keeps the column); widenings (INT -> BIGINT, VARCHAR(10) ->
VARCHAR(100), the primary key INT -> BIGINT); a drop and re-create with another shape (followed
from the binlog: a truncate at the drop, then the new table's rows). The documented behaviour:
docs/operations.md, "Schema changes".
"""

from __future__ import annotations

import pytest

from dbmazz_connectors.snapshots import SnapshotSettings, plan_snapshot, run_snapshot
from tests.connectors.sources.mysql._my import capture

from ._compare import SINKS, T, apply_all, assert_my_sink_equals_source, sink_rows

SETTINGS = SnapshotSettings(chunk_rows=25, chunks_per_batch=2, parallelism=2)
# the default run goes through ClickHouse (PostgreSQL's goes through DuckDB); the others with the slow tests
KINDS = [pytest.param(kind, marks=() if kind == "clickhouse" else pytest.mark.slow) for kind in SINKS]


def _run(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.commit()


@pytest.mark.parametrize("kind", KINDS)
def test_mariadb_schema_changes_reach_the_sink(kind, mysql_db, make_source, changelog, make_sink):
    admin = mysql_db.connect()
    _run(
        admin,
        "CREATE TABLE t (id INT PRIMARY KEY, small INT, name VARCHAR(10), gone TEXT)",
        "INSERT INTO t SELECT seq, seq, CONCAT('n', seq), CONCAT('g', seq) FROM seq_1_to_60",
    )
    source = make_source(["t"])
    table = f"{mysql_db.name}.t"
    sink = make_sink(kind)
    columns = {"id": T("int32"), "small": T("int32"), "name": T("string"), "gone": T("string")}
    position = [source.current_position()]

    def step(what: str, equal: bool = True) -> dict:
        position[0] = capture(source, changelog, position[0]).end
        apply_all(changelog, sink)
        if not equal:
            return sink_rows(kind, sink, table, columns)
        return assert_my_sink_equals_source(kind, sink, admin, mysql_db.name, "t", columns, what)

    run_snapshot(
        source,
        changelog,
        plan_snapshot(source, changelog, "p1", [table], SETTINGS, reason="initial load"),
        SETTINGS,
    )
    _run(admin, "UPDATE t SET name = 'changed' WHERE id = 3")
    step("the initial load")

    # ADD COLUMN without a default: old rows are NULL in the source too
    _run(
        admin,
        "ALTER TABLE t ADD COLUMN extra INT",
        "UPDATE t SET extra = id * 10 WHERE id % 3 = 0",
        "INSERT INTO t VALUES (61, 61, 'n61', 'g61', 610)",
    )
    columns["extra"] = T("int32")
    assert step("ADD COLUMN without a default")[5]["extra"] is None

    # ADD COLUMN with a default: the source fills the existing rows, the binlog has no row event for them
    _run(
        admin,
        "ALTER TABLE t ADD COLUMN flag VARCHAR(5) NOT NULL DEFAULT 'on'",
        "UPDATE t SET flag = 'off' WHERE id = 2",
    )
    columns["flag"] = T("string")
    found = step("ADD COLUMN with a default", equal=False)
    assert found[2]["flag"] == "off", "a row changed after the ALTER carries its value"
    assert found[1]["flag"] is None, "documented: a row filled by the default without a row event stays NULL"
    run_snapshot(
        source,
        changelog,
        plan_snapshot(source, changelog, "p1", [table], SETTINGS, reason="column default"),
        SETTINGS,
    )
    found = step("ADD COLUMN with a default and its re-sync")
    assert found[1]["flag"] == "on"

    # DROP COLUMN: the sink keeps the column with its last values; rows inserted after the drop hold NULL
    _run(
        admin,
        "ALTER TABLE t DROP COLUMN gone",
        "UPDATE t SET name = 'after drop' WHERE id = 4",
        "INSERT INTO t (id, small, name, extra) VALUES (62, 62, 'n62', 620)",
    )
    del columns["gone"]
    step("DROP COLUMN")
    kept = sink_rows(kind, sink, table, {"id": T("int32"), "gone": T("string")})
    assert kept[10]["gone"] == "g10" and kept[4]["gone"] == "g4", "a row untouched or updated keeps its value"
    assert kept[62]["gone"] is None, "a row inserted after the drop has NULL"

    # widenings, the primary key's too
    _run(
        admin,
        "ALTER TABLE t MODIFY small BIGINT, MODIFY name VARCHAR(100), MODIFY id BIGINT",
        "UPDATE t SET small = small + 5000000000, name = REPEAT('wide', 20) WHERE id <= 2",
        "INSERT INTO t (id, small, name) VALUES (9000000000, -9000000000, REPEAT('x', 100))",
    )
    columns.update(id=T("int64"), small=T("int64"))
    found = step("widenings (INT -> BIGINT, VARCHAR(10) -> VARCHAR(100), the key INT -> BIGINT)")
    assert found[9000000000]["small"] == -9000000000 and found[1]["small"] == 5000000001

    # dropped and re-created with another shape: the binlog says everything (a truncate at the drop, then rows)
    _run(
        admin,
        "DROP TABLE t",
        "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT, price DECIMAL(10,2), small BIGINT)",
        "INSERT INTO t SELECT seq, CONCAT('new ', seq), seq / 4, -seq FROM seq_30_to_90",
        "UPDATE t SET price = 1.25 WHERE id = 31",
    )
    columns = {"id": T("int64"), "name": T("string"), "price": T("decimal(10,2)"), "small": T("int64")}
    step("a drop and re-create with another shape")
    admin.close()
