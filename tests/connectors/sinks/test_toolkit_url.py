"""The toolkit's URL parser: what every sink config reads from a url, and what a user sees when it is wrong."""

from __future__ import annotations

import pickle

import pytest

from dbmazz_connectors.core import ConfigError, create_sink
from dbmazz_connectors.sinks.toolkit import parse_url

SECRET = "s3cr3t/P@ss:w0rd"
URL = "clickhouse://ana%40shop:s3cr3t%2FP%40ss%3Aw0rd@db.example:9000/sales%20eu?secure=1&verify=0"


def test_the_parts_are_decoded_and_the_password_never_shown():
    parts = parse_url(URL, who="clickhouse sink", schemes={"clickhouse"}, example="clickhouse://u@h/db")
    assert (parts.scheme, parts.user, parts.password, parts.host, parts.port, parts.database) == (
        "clickhouse",
        "ana@shop",
        SECRET,
        "db.example",
        9000,
        "sales eu",
    )
    assert dict(parts.query) == {"secure": "1", "verify": "0"}
    assert SECRET not in repr(parts) and SECRET not in str(parts) and "'***'" in repr(parts)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("mysql://u:pw@h/db", None, "expected a url like clickhouse://u@h/db, got the scheme 'mysql'"),
        ("clickhouse://u:pw@h:port/db", None, "expected a numeric port in the url"),
        ("clickhouse://u:pw@h/db?tls=1", {"secure"}, "unknown url parameter(s) tls; expected secure"),
    ],
)
def test_a_wrong_url_says_what_was_expected_without_its_password(url, options, message):
    with pytest.raises(ConfigError) as caught:
        parse_url(
            url, who="clickhouse sink", schemes={"clickhouse"}, example="clickhouse://u@h/db", options=options
        )
    assert message in str(caught.value) and "pw" not in str(caught.value)
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


@pytest.mark.parametrize(
    ("config", "read"),
    [
        ({"url": URL}, lambda c: (c.username, c.password, c.host, c.port, c.database, c.secure, c.verify)),
        (
            {"url": "starrocks://ana%40shop:s3cr3t%2FP%40ss%3Aw0rd@fe:9031/sales%20eu?http_port=8031"},
            lambda c: (c.username, c.password, c.host, c.port, c.database, c.http_port),
        ),
        (
            {"url": "postgresql://ana%40shop:s3cr3t%2FP%40ss%3Aw0rd@pg:5433/sales%20eu"},
            lambda c: (c.user, c.password, c.host, c.port, c.dbname),
        ),
    ],
)
def test_every_sink_config_reads_the_same_url_the_same_way(config, read):
    sink = create_sink({**config, "pipeline": "p"})
    values = read(sink.config)
    assert values[:2] == ("ana@shop", SECRET) and "sales eu" in values
    assert SECRET not in repr(sink.config)


def test_a_duckdb_url_is_a_file_path(tmp_path):
    sink = create_sink({"url": f"duckdb:///{tmp_path}/s.duckdb", "pipeline": "p"})
    assert sink.config.path == f"{tmp_path}/s.duckdb"
    assert create_sink({"url": "duckdb:///:memory:", "pipeline": "p"}).config.path == ":memory:"
