"""Bad PostgreSQL sink settings fail with a message that says what to fix and never shows the password."""

import uuid

import pytest

from dbmazz_connectors.core import ConfigError, DbmazzError, create_sink
from infra._common import free_port

SECRET = "s3cr3t-Pa55word"


def _connect_error(config, secret=SECRET) -> DbmazzError:
    sink = create_sink(config)
    problems = sink.preflight()
    assert len(problems) == 1 and secret not in str(problems[0])
    with pytest.raises(DbmazzError) as info:
        sink.connect()
    assert secret not in str(info.value) and secret not in repr(info.value.args)
    return info.value


def test_unreachable_host_names_host_and_port(pg_server):
    port = free_port()
    error = _connect_error(
        {"url": f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres", "connect_timeout": 3}
    )
    assert f"cannot reach 127.0.0.1:{port}" in str(error) and "check host and port" in str(error)
    assert error.transient


def test_wrong_password_says_the_login_was_refused(pg_db):
    error = _connect_error({"url": pg_db.url_as("postgres", SECRET)})
    assert isinstance(error, ConfigError) and not error.transient
    assert "refused the login of postgres@127.0.0.1" in str(
        error
    ) and "password authentication failed" in str(error)


@pytest.fixture
def role_without_ddl(pg_db):
    role = f"r_{uuid.uuid4().hex[:8]}"
    with pg_db.connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
    yield role
    with pg_db.connect() as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_role_without_create_privilege_gets_the_grant_to_run(pg_db, role_without_ddl):
    error = _connect_error({"url": pg_db.url_as(role_without_ddl, SECRET)})
    assert isinstance(error, ConfigError)
    assert f"{role_without_ddl} lacks a privilege" in str(error)
    assert str(error).endswith(f'fix: GRANT CREATE ON DATABASE "{pg_db.name}" TO "{role_without_ddl}"')


def test_missing_database_is_named(pg_db):
    role, password = pg_db.sink_role  # the sink's least-privilege role, into a database that does not exist
    error = _connect_error(
        {"url": pg_db.server.url("nope_db", user=role, password=password)}, secret=password
    )
    assert isinstance(error, ConfigError)
    assert 'database "nope_db" does not exist' in str(error) and "CREATE DATABASE nope_db" in str(error)


def test_bad_option_is_refused_before_connecting():
    with pytest.raises(ConfigError, match="unknown option"):
        create_sink({"url": "postgresql://u@h/db", "shema": "x"})


def test_preflight_names_the_missing_create_right_when_the_metadata_schema_exists(pg_db, role_without_ddl):
    with pg_db.connect() as conn:
        conn.execute("CREATE SCHEMA _dbmazz")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA _dbmazz TO {role_without_ddl}")
    problems = create_sink({"url": pg_db.url_as(role_without_ddl, SECRET)}).preflight()
    assert [p.check for p in problems] == ["postgres.privileges"]
    assert problems[0].fix == f'GRANT CREATE ON DATABASE "{pg_db.name}" TO "{role_without_ddl}"'


def test_create_on_the_database_is_not_enough_for_public_on_postgres_15(pg_db, role_without_ddl, changelog):
    """PostgreSQL 15 grants no CREATE on schema public to everyone: check says so, and its fix makes apply work."""
    from dbmazz_connectors.engine import apply_batch
    from tests.connectors.sinks._workload import mixed_workload, write_batches

    with pg_db.connect() as conn:
        conn.execute(f'GRANT CREATE ON DATABASE "{pg_db.name}" TO {role_without_ddl}')
        conn.execute(
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC"
        )  # PostgreSQL 15's default, whatever the server
    sink = create_sink({"url": pg_db.url_as(role_without_ddl, SECRET), "pipeline": "p"})
    problems = sink.preflight(tables=["public.orders"])
    assert [(p.check, p.fix) for p in problems] == [
        ("postgres.privileges", f'GRANT USAGE, CREATE ON SCHEMA "public" TO "{role_without_ddl}"')
    ]
    workload = mixed_workload(seed=3)
    batch_ids = write_batches(changelog, "p", workload.batches)
    with pytest.raises(DbmazzError, match="public"):
        apply_batch(changelog, sink, "p", batch_ids[0])  # what check warned about
    with pg_db.connect() as conn:
        conn.execute(problems[0].fix)  # the fix, as printed
    assert sink.preflight(tables=["public.orders"]) == []
    for batch_id in batch_ids:
        apply_batch(changelog, sink, "p", batch_id)
    assert sink.row_count("public.orders") == len(workload.expected)
    sink.disconnect()


def test_dbmazz_check_names_the_schema_grant_for_the_pipeline_tables(
    pg_db, pg_capture_login, role_without_ddl, tmp_path, capsys, monkeypatch
):
    from dbmazz_connectors.cli import main as cli_main

    with pg_db.connect() as conn:
        conn.execute(f'GRANT CREATE ON DATABASE "{pg_db.name}" TO {role_without_ddl}')
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    pg_capture_login.grant(["public.orders"])
    monkeypatch.setenv("SINK_PASSWORD", SECRET)
    config = tmp_path / "pipelines.yaml"
    config.write_text(
        f"""
pipelines:
  p1:
    source: {{url: "{pg_db.url_as(pg_capture_login.name, "").replace(":@", "@")}"}}
    tables: [public.orders]
    sinks: {{pg: {{url: "{pg_db.url_as(role_without_ddl, "").replace(":@", "@")}", password_env: SINK_PASSWORD}}}}
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("PGPASSWORD", pg_capture_login.password)  # the source's (the sink's is SINK_PASSWORD)
    cli_main(["check", str(config)])
    out = capsys.readouterr().out
    assert f"sink pg: [postgres.privileges] {role_without_ddl} may not create tables in schema public" in out
    assert f'fix: GRANT USAGE, CREATE ON SCHEMA "public" TO "{role_without_ddl}"' in out
    assert SECRET not in out
