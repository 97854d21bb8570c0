"""Bad ClickHouse sink settings fail with a message that says what to fix, never with the password."""

import pytest

from dbmazz_connectors.core import ConfigError, create_sink
from infra._common import free_port

SECRET = "s3cr3t-Pa55"


def _connect_error(url: str) -> ConfigError:
    sink = create_sink({"url": url, "pipeline": "p"})
    with pytest.raises(ConfigError) as info:
        sink.connect()
    problems = sink.preflight()
    assert problems and SECRET not in str(problems[0])
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.args)
    return info.value


def test_unreachable_host_names_host_and_port():
    port = free_port()
    exc = _connect_error(f"clickhouse://dbmazz:{SECRET}@127.0.0.1:{port}/default")
    assert f"cannot reach dbmazz@127.0.0.1:{port}/default over HTTP" in str(exc)
    assert "fix: check host and port" in str(exc)


def test_wrong_password_says_so(ch_db):
    exc = _connect_error(ch_db.url_as("dbmazz", SECRET))
    assert "refused user dbmazz (wrong password or unknown user)" in str(exc)


def test_missing_database_says_how_to_create_it(clickhouse_server):
    url = clickhouse_server.url("nope_db").replace(clickhouse_server.password, SECRET)
    sink = create_sink({"url": clickhouse_server.url("nope_db"), "pipeline": "p"})
    with pytest.raises(ConfigError, match=r"expected the database 'nope_db'.*fix: CREATE DATABASE `nope_db`"):
        sink.connect()
    assert "wrong password" in str(_connect_error(url))


def test_no_ddl_privilege_is_reported_by_preflight_and_connect(ch_db):
    server = ch_db.server
    sink = create_sink({"url": ch_db.url_as(server.noddl_user, server.noddl_password), "pipeline": "p"})
    problems = sink.preflight()
    assert [p.check for p in problems] == ["clickhouse_ddl"]
    assert "expected user dbmazz_noddl to be allowed DDL, found readonly = 0, allow_ddl = 0" in problems[0].message
    with pytest.raises(ConfigError, match=r"user dbmazz_noddl may not run CREATE TABLE.*fix: give the user DDL"):
        sink.connect()
    assert server.noddl_password not in str(problems[0])


def test_a_good_config_passes_preflight(ch_db):
    assert create_sink({"url": ch_db.url}).preflight() == []


@pytest.mark.parametrize("config,message", [
    ({"url": "postgresql://x/y", "type": "clickhouse"}, "expected a url like clickhouse://"),
    ({"type": "clickhouse"}, "expected 'url'"),
    ({"url": "clickhouse://h/db", "databse": "x"}, "unknown option"),
    ({"url": "clickhouse://h:notaport/db"}, "expected a numeric port"),
])
def test_bad_options_are_refused_before_connecting(config, message):
    with pytest.raises(ConfigError, match=message):
        create_sink(config)


def test_url_and_keys_are_parsed():
    sink = create_sink({"url": f"clickhouse+https://u%40x:{SECRET}@ch.example:9440/analytics", "part_rows": "5000"})
    cfg = sink.config
    assert (cfg.host, cfg.port, cfg.username, cfg.password, cfg.database, cfg.secure, cfg.part_rows) == (
        "ch.example", 9440, "u@x", SECRET, "analytics", True, 5000)
    assert SECRET not in repr(cfg)
