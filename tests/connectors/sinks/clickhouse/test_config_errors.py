"""Bad ClickHouse sink settings fail with a message that says what to fix, never with the password."""

import pytest

from dbmazz_connectors.core import BatchRef, ConfigError, DbmazzError, TransientError, create_sink
from infra._common import free_port

SECRET = "s3cr3t-Pa55"


def _connect_error(url: str, kind: type[DbmazzError] = ConfigError) -> DbmazzError:
    sink = create_sink({"url": url, "pipeline": "p"})
    with pytest.raises(kind) as info:
        sink.connect()
    problems = sink.preflight()
    assert problems and SECRET not in str(problems[0])
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.args)
    return info.value


def _driver_noise(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Http Driver" in r.getMessage()]


def test_an_unreachable_server_is_transient_and_names_host_and_port(caplog):
    port = free_port()  # nothing listens there
    exc = _connect_error(f"clickhouse://dbmazz:{SECRET}@127.0.0.1:{port}/default", TransientError)
    assert exc.transient and not isinstance(exc, ConfigError)
    assert f"cannot reach dbmazz@127.0.0.1:{port}/default over HTTP" in str(exc)
    assert "fix: check host and port" in str(exc)
    assert _driver_noise(caplog) == [], "the driver's own warning is not repeated in the log"


def test_a_server_that_stops_between_batches_fails_the_next_one_as_transient(caplog):
    from infra.clickhouse import ClickHouseServer

    from .._types import type_batch

    with ClickHouseServer() as server:
        server.client().command("CREATE DATABASE stops")
        sink = create_sink({"url": server.url("stops"), "pipeline": "p"})
        sink.connect()
        sink.write_batch(type_batch(["c_int64"]), BatchRef("p", "b1"))
    with pytest.raises(
        TransientError, match=r"clickhouse sink: lost the connection to dbmazz@127.0.0.1:\d+/stops"
    ):
        sink.write_batch(type_batch(["c_int64"]), BatchRef("p", "b2"))
    assert _driver_noise(caplog) == []
    sink.disconnect()


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
    assert (
        "expected user dbmazz_noddl to be allowed DDL, found readonly = 0, allow_ddl = 0"
        in problems[0].message
    )
    with pytest.raises(
        ConfigError,
        match=r"user dbmazz_noddl may not run CREATE TABLE.*fix: give the user a profile with readonly = 0 and allow_ddl = 1",
    ):
        sink.connect()
    assert server.noddl_password not in str(problems[0])


def test_a_good_config_passes_preflight(ch_db):
    assert create_sink({"url": ch_db.url}).preflight() == []


@pytest.mark.parametrize(
    "config,message",
    [
        ({"url": "postgresql://x/y", "type": "clickhouse"}, "expected a url like clickhouse://"),
        ({"type": "clickhouse"}, "expected 'url'"),
        ({"url": "clickhouse://h/db", "databse": "x"}, "unknown option"),
        ({"url": "clickhouse://h:notaport/db"}, "expected a numeric port"),
    ],
)
def test_bad_options_are_refused_before_connecting(config, message):
    with pytest.raises(ConfigError, match=message):
        create_sink(config)


def test_url_and_keys_are_parsed():
    sink = create_sink(
        {"url": f"clickhouse+https://u%40x:{SECRET}@ch.example:9440/analytics", "part_rows": "5000"}
    )
    cfg = sink.config
    assert (cfg.host, cfg.port, cfg.username, cfg.password, cfg.database, cfg.secure, cfg.part_rows) == (
        "ch.example",
        9440,
        "u@x",
        SECRET,
        "analytics",
        True,
        5000,
    )
    assert SECRET not in repr(cfg)
