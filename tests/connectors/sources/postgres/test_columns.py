"""Column selection: excluded columns never reach a sink, ``as_text`` carries an unmappable type as its text form."""

from __future__ import annotations

from dbmazz_connectors.cli import main as cli_main
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch
from dbmazz_connectors.snapshots import plan_snapshot, run_snapshot

from ._pg import assert_folded_equals_source, capture, source_rows

TABLE = "public.places"
DDL = """
CREATE TABLE places (id int PRIMARY KEY, name text, secret text, p point, total int,
                     doubled int GENERATED ALWAYS AS (total * 2) STORED);
INSERT INTO places (id, name, secret, p, total)
SELECT g, 'place ' || g, repeat(md5(g::text), 200), point(g, -g / 3.0), g FROM generate_series(1, 300) g;
"""
COLUMNS = {TABLE: {"exclude": ["secret"], "as_text": ["p"]}}
REPLICATED = "id, name, p::text AS p, total"


def test_unmappable_column_refuses_the_table_with_the_config_that_fixes_it(pg_db, capture_role):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant([TABLE])
    problems = capture_role.source([TABLE]).preflight()
    assert [p.check for p in problems] == ["type"]
    assert "places" in problems[0].message and "point" in problems[0].message
    assert '"exclude": ["p"]' in problems[0].fix
    wrong = capture_role.source([TABLE], columns={TABLE: {"exclude": ["id", "nope"]}}).preflight()
    assert [p.message for p in wrong] == [
        "expected columns nope in public.places (named under 'columns'), found none"
    ]
    key = capture_role.source([TABLE], columns={TABLE: {"exclude": ["id"], "as_text": ["p"]}}).preflight()
    assert [p.message for p in key] == [
        "columns of public.places: primary key column(s) id cannot be excluded"
    ]


def test_excluded_and_text_columns_replicate_as_chosen(pg_db, capture_role, changelog, tmp_path):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant([TABLE])
    source = capture_role.source([TABLE], columns=COLUMNS)
    assert source.preflight() == []
    assert source.omitted_columns() == [
        "public.places.secret: excluded by the pipeline's 'columns'",
        "public.places.doubled: stored generated column (PostgreSQL 15 does not publish generated columns)",
        "public.places.p: carried as text ('as_text')",
    ]
    source.setup()
    plan = plan_snapshot(source, changelog, "p1", [TABLE], reason="initial load")
    with (
        pg_db.connect() as conn
    ):  # an update leaving the TOASTed excluded column unchanged, one changing only it
        conn.execute(
            "UPDATE places SET total = total + 1, p = point(0.5, 1e-7) WHERE id % 3 = 0; "
            "UPDATE places SET secret = 'changed' WHERE id % 4 = 0; DELETE FROM places WHERE id % 10 = 0; "
            "INSERT INTO places (id, name, secret, p, total) VALUES (1000, 'new', 'x', NULL, 7)"
        )
    capture(source, changelog)
    run_snapshot(source, changelog, plan)
    with pg_db.connect() as conn:
        conn.execute("UPDATE places SET name = 'renamed', p = point(-1.25, 3) WHERE id % 7 = 0")
    capture(source, changelog)
    assert assert_folded_equals_source(pg_db, changelog, TABLE, select=REPLICATED) == 271

    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p1"})
    sink.connect()
    try:
        for manifest in changelog.batches("p1"):
            apply_batch(changelog, sink, "p1", manifest.batch_id)
        target = sink.target(sink.table_state(TABLE))
        columns = [r[0] for r in sink.con.execute(f"DESCRIBE {target}").fetchall()]
        assert [c for c in columns if not c.startswith("_dbmazz")] == ["id", "name", "p", "total"]
        found = sink.con.execute(f"SELECT id, name, p, total FROM {target} ORDER BY id").fetchall()
        expected = [tuple(r.values()) for r in source_rows(pg_db, TABLE, select=REPLICATED)]
        assert found == expected
        assert (7, "renamed", "(-1.25,3)", 7) in found
    finally:
        sink.disconnect()


def test_dbmazz_check_says_ok_and_lists_the_columns_that_do_not_reach_the_sinks(
    pg_db, capture_role, tmp_path, capsys, monkeypatch
):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant([TABLE])
    monkeypatch.setenv("P1_PG_PASSWORD", capture_role.password)
    url = pg_db.url_as(capture_role.name, "").replace(":@", "@")
    config = tmp_path / "pipelines.yaml"
    config.write_text(f"""
pipelines:
  p1:
    source: {{url: "{url}", password_env: P1_PG_PASSWORD, publication: dbmazz_p1,
              columns: {{public.places: {{exclude: [secret], as_text: [p]}}}}}}
    tables: [public.places]
    sinks: {{duckdb: {{url: "duckdb:///{tmp_path}/p1.duckdb"}}}}
""")
    assert cli_main(["check", str(config)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "p1: ok",
        "  source: column not replicated as is: public.places.secret: excluded by the pipeline's 'columns'",
        "  source: column not replicated as is: public.places.doubled: stored generated column (PostgreSQL 15 does "
        "not publish generated columns)",
        "  source: column not replicated as is: public.places.p: carried as text ('as_text')",
    ]
