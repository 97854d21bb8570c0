"""A table without a primary key: `dbmazz check` prints a statement that runs as printed (a unique index on
NOT NULL columns becomes the key), or says to remove the table; afterwards the check is ok and rows replicate."""

from __future__ import annotations

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch, set_up_source
from dbmazz_connectors.snapshots import plan_snapshot, run_snapshot
from tests.connectors.sources.mysql._my import capture as my_capture
from tests.connectors.sources.postgres._pg import capture as pg_capture
from tests.connectors.values._canon import differences, duckdb_rows, mariadb_rows, pg_rows

from ..schema_evolution._compare import T
from ._check import dbmazz_check

COLUMNS = {"code": T("string"), "region": T("int32"), "v": T("string")}


def _apply_all(changelog, tmp_path, pipeline: str = "p1"):
    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": pipeline})
    sink.connect()
    for manifest in changelog.batches(pipeline):
        apply_batch(changelog, sink, pipeline, manifest.batch_id)
    return sink


def test_postgres_primary_key_fix_runs_as_printed(
    pg_db, capture_role, changelog, tmp_path, monkeypatch, capsys
):
    keyless, bare = "public.Keyless Orders", "public.bare"
    with pg_db.connect() as conn:
        conn.execute(
            'CREATE TABLE "Keyless Orders" (code text NOT NULL UNIQUE, region int NOT NULL, v text, '
            "n int UNIQUE, UNIQUE (region, code))"
        )  # n: unique but nullable, not a key
        conn.execute("CREATE TABLE bare (a int, b text)")
        conn.execute(
            "INSERT INTO \"Keyless Orders\" SELECT 'c' || g, g % 3, 'v' || g, g FROM generate_series(1, 20) g"
        )
    url = pg_db.url_as(capture_role.name, "x").replace(":x@", "@")
    code, out = dbmazz_check(tmp_path, monkeypatch, capsys, url, capture_role.password, [keyless, bare])
    assert code == 1
    assert (
        "[primary_key] expected a primary key on public.Keyless Orders, found none\n    fix: as the table owner: "
        'ALTER TABLE "public"."Keyless Orders" ADD PRIMARY KEY ("code");'
    ) in out, out
    assert (
        "[primary_key] expected a primary key on public.bare, found none\n    fix: remove public.bare from the "
        "pipeline's tables"
    ) in out, out
    for _ in range(3):  # the owner runs every printed statement, exactly as printed, until none is left
        source = capture_role.source([keyless, bare])
        statements = [p.fix.split(": ", 1)[1] for p in source.preflight() if p.fix.startswith("as ")]
        source.disconnect()
        with pg_db.connect() as conn:
            for statement in statements:
                conn.execute(statement)
    code, out = dbmazz_check(tmp_path, monkeypatch, capsys, url, capture_role.password, [keyless, bare])
    assert out.count("[") == 1 and "[primary_key] expected a primary key on public.bare" in out, out
    code, out = dbmazz_check(tmp_path, monkeypatch, capsys, url, capture_role.password, [keyless])
    assert (code, out.strip()) == (0, "p1: ok"), out  # the other fix followed: the table left the pipeline

    source = capture_role.source([keyless])  # setup, first capture and first apply as the same role
    set_up_source(source)
    run_snapshot(source, changelog, plan_snapshot(source, changelog, "p1", [keyless], reason="initial load"))
    with pg_db.connect() as conn:
        conn.execute("UPDATE \"Keyless Orders\" SET v = 'changed' WHERE code = 'c3'")
        conn.execute("DELETE FROM \"Keyless Orders\" WHERE code = 'c4'")
    pg_capture(source, changelog)
    sink = _apply_all(changelog, tmp_path)
    with pg_db.connect() as conn:
        expected = pg_rows(conn, '"public"."Keyless Orders"', COLUMNS)
    assert not differences(expected, duckdb_rows(sink, keyless, COLUMNS), "duckdb") and len(expected) == 19
    sink.disconnect()
    source.disconnect()


def test_mariadb_primary_key_fix_runs_as_printed(mysql_db, make_source, changelog, tmp_path):
    admin = mysql_db.connect()
    with admin.cursor() as cur:
        cur.execute(
            "CREATE TABLE `key``less` (code VARCHAR(20) NOT NULL, region INT NOT NULL, v TEXT, n INT, "
            "UNIQUE KEY u_pair (region, code), UNIQUE KEY u_code (code), UNIQUE KEY u_n (n), "
            "UNIQUE KEY u_prefix (v(10)))"
        )
        cur.execute("CREATE TABLE bare (a INT, b TEXT)")
        cur.execute(
            "INSERT INTO `key``less` SELECT CONCAT('c', seq), seq % 3, CONCAT('v', seq), seq FROM seq_1_to_20"
        )
    admin.commit()
    source = make_source(["key`less", "bare"])
    found = {p.message: p.fix for p in source.preflight()}
    table = f"{mysql_db.name}.key`less"
    fix = found[f"expected a primary key on {table}, found none"]
    assert fix == f"ALTER TABLE `{mysql_db.name}`.`key``less` ADD PRIMARY KEY (`code`)", fix
    assert found[f"expected a primary key on {mysql_db.name}.bare, found none"].startswith(
        f"remove {mysql_db.name}.bare from the pipeline's tables"
    )
    with admin.cursor() as cur:
        cur.execute(fix)  # as printed
    source = make_source(["key`less"])
    assert source.preflight() == []
    set_up_source(source)
    start = source.current_position()
    run_snapshot(source, changelog, plan_snapshot(source, changelog, "p1", [table], reason="initial load"))
    with admin.cursor() as cur:
        cur.execute("UPDATE `key``less` SET v = 'changed' WHERE code = 'c3'")
        cur.execute("DELETE FROM `key``less` WHERE code = 'c4'")
    admin.commit()
    my_capture(source, changelog, start)
    sink = _apply_all(changelog, tmp_path)
    expected = mariadb_rows(admin, "key`less".replace("`", "``"), COLUMNS)
    assert not differences(expected, duckdb_rows(sink, table, COLUMNS), "duckdb") and len(expected) == 19
    sink.disconnect()
    admin.close()
