"""Preflight: each unmet requirement is reported with its specific message and the statement that fixes it."""

from __future__ import annotations

import secrets
import uuid

import psycopg
import pytest

from dbmazz_connectors.cli import main as cli_main
from dbmazz_connectors.core.errors import PreflightError, SlotInvalidatedError
from dbmazz_connectors.sources.postgres import PostgresSource
from infra.postgres import PostgresServer
from infra.shop import create_replication_role


def _problems(source: PostgresSource) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in source.preflight():
        found.setdefault(problem.check, []).append(f"{problem.message} | fix: {problem.fix}")
    return found


def test_ready_database_has_no_problem_and_setup_is_idempotent(pg_db, capture_role):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    capture_role.grant(["public.t"])
    source = capture_role.source(["public.t"])
    assert source.preflight() == []
    source.setup()
    source.setup()
    assert source.preflight() == []
    assert source.checkpoint_position() is not None


def test_table_without_primary_key_missing_select_and_replica_identity_nothing(pg_db, capture_role):
    with pg_db.connect() as conn:
        conn.execute(
            "CREATE TABLE nopk (a int); CREATE TABLE secret (id int PRIMARY KEY);"
            "CREATE TABLE ident (id int PRIMARY KEY); ALTER TABLE ident REPLICA IDENTITY NOTHING"
        )
    capture_role.grant(["public.nopk", "public.ident"], publication=None)
    with pg_db.connect() as conn:
        conn.execute("CREATE PUBLICATION dbmazz_p1 FOR TABLE nopk, secret, ident")
        conn.execute(f"ALTER PUBLICATION dbmazz_p1 OWNER TO {capture_role.name}")
    source = capture_role.source(["public.nopk", "public.secret", "public.ident", "public.ghost"])
    found = _problems(source)
    assert found["primary_key"] == [
        "expected a primary key on public.nopk, found none | fix: remove public.nopk "
        "from the pipeline's tables (no unique index on NOT NULL columns could become "
        "its primary key; REPLICA IDENTITY FULL is not enough: rows need a key in the "
        "sinks)"
    ]
    assert found["privilege"] == [
        f"expected SELECT on public.secret for role {capture_role.name}, found none | fix: "
        f'as the table owner: GRANT SELECT ON "public"."secret" TO "{capture_role.name}";'
    ]
    assert found["replica_identity"] == [
        "expected REPLICA IDENTITY DEFAULT or FULL on public.ident, found NOTHING "
        "(updates and deletes would not be replicated) | fix: as the table owner: ALTER TABLE "
        '"public"."ident" REPLICA IDENTITY DEFAULT;'
    ]
    assert found["table"] == [
        "expected table public.ghost to exist, found none | fix: create it, or remove "
        "public.ghost from the pipeline's tables"
    ]
    with pytest.raises(PreflightError, match="preflight found 4 problem"):
        source.setup()
    assert source.checkpoint_position() is None, "setup changed nothing"


def test_role_without_replication_and_publication_it_cannot_create(pg_db):
    role, password = f"norep_{uuid.uuid4().hex[:8]}", secrets.token_hex(8)
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"GRANT SELECT ON t TO {role}")
    try:
        source = PostgresSource.from_config(
            {"url": pg_db.url_as(role, password), "pipeline": "p1", "tables": ["public.t"]}
        )
        source.connect()
        found = _problems(source)
        source.disconnect()
        assert found["privilege"] == [
            f"expected role {role} to have the REPLICATION attribute, it has not | fix: "
            f'as a superuser: ALTER ROLE "{role}" WITH REPLICATION;'
        ]
        assert found["publication"] == [
            f"expected publication dbmazz_p1 to exist (role {role} cannot create it: CREATE PUBLICATION needs "
            'ownership of the tables) | fix: as the tables\' owner: CREATE PUBLICATION "dbmazz_p1" FOR TABLE '
            f'"public"."t" WITH (publish_via_partition_root = true); ALTER PUBLICATION "dbmazz_p1" OWNER TO "{role}";'
        ]
    finally:
        with pg_db.connect() as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def _capture_url(server: PostgresServer) -> str:
    """The documented least-privilege capture role on ``public.t`` of the server's ``postgres`` database."""
    password = secrets.token_hex(8)
    create_replication_role(server.url(), "dbmazz_capture", password, "dbmazz_p1", ["public.t"])
    return server.url(user="dbmazz_capture", password=password)


def test_wal_level_replica():
    with PostgresServer(settings={"wal_level": "replica"}) as server:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
        source = PostgresSource.from_config(
            {"url": _capture_url(server), "pipeline": "p1", "tables": ["public.t"]}
        )
        source.connect()
        found = _problems(source)
        assert found == {
            "wal_level": [
                "expected wal_level = logical, found replica | fix: ALTER SYSTEM SET "
                "wal_level = logical; then restart PostgreSQL"
            ]
        }
        with pytest.raises(PreflightError, match="wal_level"):
            source.setup()
        source.disconnect()


def test_invalidated_slot():
    with PostgresServer(settings={"max_slot_wal_keep_size": "1MB", "max_wal_size": "64MB"}) as server:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)")
            source = PostgresSource.from_config(
                {"url": _capture_url(server), "pipeline": "p1", "tables": ["public.t"]}
            )
            source.connect()
            source.setup()
            start = source.checkpoint_position()
            for round_ in range(30):
                conn.execute(
                    "INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(%s::int, %s::int) g",
                    (round_ * 10_000, round_ * 10_000 + 9_999),
                )
                conn.execute("SELECT pg_switch_wal()")
                conn.execute("CHECKPOINT")
                status = conn.execute("SELECT wal_status FROM pg_replication_slots").fetchone()[0]
                if status == "lost":
                    break
            assert status == "lost"
        found = _problems(source)
        assert (
            list(found) == ["slot"]
            and "replication slot 'dbmazz_p1' was invalidated by the server" in found["slot"][0]
        )
        assert "pg_drop_replication_slot('dbmazz_p1')" in found["slot"][0]
        with pytest.raises(SlotInvalidatedError, match="re-snapshot"):
            list(source.read_changes(start, source.current_position()))
        with pytest.raises(SlotInvalidatedError):
            source.checkpoint(source.current_position())
        # the server's error while decoding (SQLSTATE 55000) is told apart by asking the slot's state, not by its text
        with pytest.raises(SlotInvalidatedError, match="can no longer get changes"):
            with source._errors():
                source.conn.execute(
                    "SELECT count(*) FROM pg_logical_slot_peek_changes('dbmazz_p1', NULL, NULL, "
                    "'proto_version', '1', 'publication_names', 'dbmazz_p1')"
                )
        source.disconnect()


def test_dbmazz_check_cli(pg_db, capture_role, tmp_path, capsys, monkeypatch):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE good (id int PRIMARY KEY); CREATE TABLE nopk (a int)")
    capture_role.grant(["public.good", "public.nopk"])
    monkeypatch.setenv("P1_PG_PASSWORD", capture_role.password)
    url = pg_db.url_as(capture_role.name, "").replace(":@", "@")
    config = tmp_path / "pipelines.yaml"
    config.write_text(f"""
pipelines:
  p1:
    source: {{url: "{url}", password_env: P1_PG_PASSWORD}}
    tables: [public.good, public.nopk]
    sinks: {{duckdb: {{url: "duckdb:///{tmp_path}/p1.duckdb"}}}}
  p2:
    source: {{url: "{url}", password_env: P1_PG_PASSWORD, publication: dbmazz_p1}}
    tables: [public.good]
    sinks: {{duckdb: {{url: "duckdb:///{tmp_path}/p2.duckdb"}}}}
""")
    assert cli_main(["check", str(config)]) == 1
    out = capsys.readouterr().out
    assert (
        "p1: 1 problem(s)\n  source: [primary_key] expected a primary key on public.nopk, found none" in out
    )
    assert "p2: ok" in out
    assert capture_role.password not in out
