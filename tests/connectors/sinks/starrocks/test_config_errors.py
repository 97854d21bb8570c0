"""Bad StarRocks sink settings fail with a message that says what to fix, never with the password."""

import pytest

from dbmazz_connectors.core import ConfigError, DbmazzError, TransientError, create_sink
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


def test_wrong_password_says_so_without_the_password(sr_db):
    exc = _connect_error(sr_db.url_as("root", SECRET))
    assert (
        f"the FE at 127.0.0.1:{sr_db.server.query_port} refused user root (wrong password or unknown user)"
        in str(exc)
    )
    assert "fix: check the user and password" in str(exc)


def test_an_unreachable_fe_is_transient_and_names_host_and_port():
    port = free_port()  # nothing listens there
    exc = _connect_error(f"starrocks://root:{SECRET}@127.0.0.1:{port}/db", TransientError)
    assert exc.transient and f"cannot reach root@127.0.0.1:{port}/db over the MySQL protocol" in str(exc)


def test_a_wrong_http_port_is_found_by_preflight(sr_db):
    port = free_port()
    sink = create_sink({"url": sr_db.url.replace(f"http_port={sr_db.server.http_port}", f"http_port={port}")})
    problems = sink.preflight()
    assert [p.check for p in problems] == ["starrocks_http"]
    assert f"cannot reach the FE's HTTP port 127.0.0.1:{port}" in problems[0].message
    sink.disconnect()


def test_a_good_config_passes_preflight(sr_db):
    sink = create_sink({"url": sr_db.url})
    assert sink.preflight() == []
    sink.disconnect()


@pytest.mark.parametrize(
    "config,message",
    [
        ({"url": "postgresql://x/y", "type": "starrocks"}, "expected a url like starrocks://"),
        ({"type": "starrocks"}, "expected 'url'"),
        ({"url": "starrocks://h/db", "databse": "x"}, "unknown option"),
        ({"url": "starrocks://h:notaport/db"}, "expected a numeric port"),
        ({"url": "starrocks://h/db?http_prot=8030"}, "unknown url parameter"),
        ({"url": "starrocks://h/db", "part_rows": 0}, "expected part_rows >= 1"),
    ],
)
def test_bad_options_are_refused_before_connecting(config, message):
    with pytest.raises(ConfigError, match=message):
        create_sink(config)


def test_the_url_gives_every_part():
    sink = create_sink(
        {"url": f"starrocks://loader:{SECRET}@fe.internal:9031/shop?http_port=8040", "pipeline": "x"}
    )
    cfg = sink.config
    assert (cfg.host, cfg.port, cfg.http_port, cfg.username, cfg.password, cfg.database) == (
        "fe.internal",
        9031,
        8040,
        "loader",
        SECRET,
        "shop",
    )
    assert SECRET not in repr(cfg) and cfg.describe() == "loader@fe.internal:9031/shop"
