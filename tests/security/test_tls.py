"""TLS to the sources, with verification: PostgreSQL with ``sslmode=verify-full`` and MariaDB with
``ssl_mode=VERIFY_IDENTITY``, each against a CA made here and a throw-away server that refuses plain TCP. Setup,
initial load, capture and apply run over TLS (through Dagster, into DuckDB: the sink equals the source); a
certificate from another CA, or no TLS at all, fails at once with an error that says what to fix.

ClickHouse: the bundled chdb-core server cannot serve HTTPS itself (its clickhouse-local opens only TCP and HTTP
listeners), so it is reached through a TLS-terminating proxy (``infra.tls.TlsProxy``), as behind a load
balancer: the sink verifies the proxy's certificate with ``ca_cert``.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pymysql
import pytest

from dbmazz_connectors.config import PipelineConfig
from dbmazz_connectors.core.errors import ConfigError
from dbmazz_connectors.core.registry import create_sink, create_source
from infra.mariadb import MariaDbServer
from infra.postgres import PostgresServer
from infra.tls import Certificates, TlsProxy, make_certificates
from tests.connectors.sources.mysql.conftest import create_replication_user
from tests.fixtures.servers import PgDatabase
from tests.pipelines._harness import ShopPipeline, churn, make_shop_pipeline, start_shop


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> tuple[Certificates, Certificates]:
    """The servers' CA, and another CA that did not sign them."""
    root = tmp_path_factory.mktemp("tls")
    root.chmod(0o755)
    return make_certificates(str(root / "ca")), make_certificates(str(root / "other"), name="another")


# --- PostgreSQL -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_pg(certificates) -> Iterator[PostgresServer]:
    with PostgresServer(tls=certificates[0]) as server:
        yield server


@pytest.fixture
def tls_pg_db(tls_pg) -> PgDatabase:
    import psycopg

    with psycopg.connect(tls_pg.url(), autocommit=True) as conn:  # the admin too: TLS or nothing
        conn.execute("DROP DATABASE IF EXISTS shop WITH (FORCE)")
        conn.execute("CREATE DATABASE shop")
    return PgDatabase(tls_pg, "shop")


def _with_source(shop: ShopPipeline, **options) -> ShopPipeline:
    config = shop.config.model_copy(update={"source": {**shop.config.source, **options}})
    return ShopPipeline(config, shop.source_url, shop.duckdb_path)


def _pg_source(shop: ShopPipeline):
    source = create_source(shop.config.source_config())
    source.connect()
    return source


def test_postgres_verify_full_replicates_over_tls(tls_pg_db, certificates, tmp_path, monkeypatch):
    ca, _ = certificates
    shop = make_shop_pipeline(tls_pg_db, tmp_path, monkeypatch)
    # libpq's names in the url's query, as a PostgreSQL user writes them
    url = shop.config.source["url"] + f"?sslmode=verify-full&sslrootcert={ca.ca}"
    shop = _with_source(shop, url=url)
    source = _pg_source(shop)
    try:
        ssl, version = source.conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert ssl and version.startswith("TLS"), "the source's connection is encrypted"
    finally:
        source.disconnect()
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)  # setup, initial load (its replication connection too)
        churn(tls_pg_db.url, 1)
        launched = shop.drive(defs, instance)  # capture, apply
        assert launched and all(run.success for run in launched), launched
    for table in ("public.customers", "public.orders"):
        assert shop.sink_rows(table) == shop.source_rows(table), table


def test_postgres_sink_over_verify_full(tls_pg, certificates, tmp_path, monkeypatch):
    """The PostgreSQL sink with the same options: a least-privilege owner of its database, TLS verified."""
    import psycopg

    ca, other = certificates
    with psycopg.connect(tls_pg.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS tls_sink WITH (FORCE)")
        conn.execute("DROP ROLE IF EXISTS tls_sinker")
        conn.execute("CREATE ROLE tls_sinker LOGIN PASSWORD 'sink-pw-1'")
        conn.execute("CREATE DATABASE tls_sink OWNER tls_sinker")
    url = f"postgresql://tls_sinker:sink-pw-1@127.0.0.1:{tls_pg.port}/tls_sink"
    sink = create_sink({"url": url + f"?sslmode=verify-full&sslrootcert={ca.ca}", "pipeline": "p"})
    sink.connect()
    try:
        assert sink.conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]
        assert sink.preflight(tables=["public.orders"]) == []
    finally:
        sink.disconnect()
    for options, needle in (
        ({"sslmode": "verify-full", "sslrootcert": other.ca}, "certificate verify failed"),
        ({"sslmode": "disable"}, "no encryption"),
    ):
        wrong = create_sink({"url": url, "pipeline": "p", **options})
        with pytest.raises(ConfigError) as caught:
            wrong.connect()
        assert "TLS to" in caught.value.message and needle in caught.value.message, caught.value.message
        assert "sslrootcert" in caught.value.hint


def test_postgres_wrong_ca_or_no_tls_fails_clearly(tls_pg_db, certificates, tmp_path, monkeypatch):
    _, other = certificates
    shop = make_shop_pipeline(tls_pg_db, tmp_path, monkeypatch)
    wrong = _with_source(shop, sslmode="verify-full", sslrootcert=other.ca)
    with pytest.raises(ConfigError) as caught:
        _pg_source(wrong)
    assert "over TLS" in caught.value.message and "certificate verify failed" in caught.value.message
    assert "sslrootcert" in caught.value.hint
    plain = _with_source(shop, sslmode="disable")
    with pytest.raises(ConfigError) as caught:
        _pg_source(plain)
    assert "refused a connection without TLS" in caught.value.message and "sslmode" in caught.value.hint
    with pytest.raises(ConfigError, match="sslmode=verify-full needs sslrootcert"):
        _with_source(shop, sslmode="verify-full").config.source_config() and _pg_source(
            _with_source(shop, sslmode="verify-full")
        )
    with pytest.raises(ConfigError, match="expected sslmode to be one of"):
        _pg_source(_with_source(shop, sslmode="verify_full"))
    with pytest.raises(ConfigError, match="is not a readable file"):
        _pg_source(_with_source(shop, sslmode="verify-full", sslrootcert=str(tmp_path / "missing.pem")))


def test_postgres_verify_full_checks_the_host_name(tls_pg_db, tmp_path, monkeypatch):
    """A certificate for localhost only: verify-ca accepts it at 127.0.0.1, verify-full does not."""
    localhost_only = make_certificates(str(tmp_path / "localhost"), hosts=("localhost",))
    with PostgresServer(tls=localhost_only) as server:
        import psycopg

        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
        shop = make_shop_pipeline(PgDatabase(server, "shop"), tmp_path, monkeypatch)
        source = _pg_source(_with_source(shop, sslmode="verify-ca", sslrootcert=localhost_only.ca))
        source.disconnect()
        with pytest.raises(ConfigError) as caught:
            _pg_source(_with_source(shop, sslmode="verify-full", sslrootcert=localhost_only.ca))
        assert "does not match host name" in caught.value.message, caught.value.message


# --- MariaDB ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_mariadb(certificates) -> Iterator[MariaDbServer]:
    with MariaDbServer(tls=certificates[0], options={"binlog-row-metadata": "FULL"}) as server:
        yield server


def _mysql_pipeline(server: MariaDbServer, tmp_path, monkeypatch, **source) -> tuple[ShopPipeline, object]:
    admin = pymysql.connect(**server.connect_kwargs())  # verified TLS (the server requires secure transport)
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS shop")
        cur.execute("CREATE DATABASE shop")
        cur.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(64), amount DECIMAL(10,2))")
        cur.execute("INSERT INTO shop.orders VALUES (1, 'first', 1.50), (2, 'second', 2.25)")
    user, password = create_replication_user(admin, "shop")
    monkeypatch.setenv("TLS_MY_PASSWORD", password)
    config = PipelineConfig(
        name="tls_my",
        source={"url": server.url("", user=user), "password_env": "TLS_MY_PASSWORD", **source},
        tables=["shop.orders"],
        sinks={"duckdb": {"url": f"duckdb:///{tmp_path}/my.duckdb", "lock_wait_seconds": 2}},
        changelog=str(tmp_path / "changelog"),
    )
    return ShopPipeline(config, "", tmp_path / "my.duckdb"), admin


def _rows(admin) -> list[tuple]:
    with admin.cursor() as cur:
        cur.execute("SELECT id, note, amount FROM shop.orders ORDER BY id")
        return [tuple(r) for r in cur.fetchall()]


def test_mariadb_verify_identity_replicates_over_tls(tls_mariadb, certificates, tmp_path, monkeypatch):
    ca, _ = certificates
    shop, admin = _mysql_pipeline(
        tls_mariadb, tmp_path, monkeypatch, ssl_mode="VERIFY_IDENTITY", ssl_ca=ca.ca
    )
    source = _pg_source(shop)
    try:
        with source.conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            assert cur.fetchone()[1].startswith("TLS"), "the source's connection is encrypted"
    finally:
        source.disconnect()
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        launched = shop.drive(defs, instance)  # setup, initial load
        with admin.cursor() as cur:
            cur.execute("INSERT INTO shop.orders VALUES (3, 'third', 3.00)")
            cur.execute("UPDATE shop.orders SET note = 'changed' WHERE id = 1")
            cur.execute("DELETE FROM shop.orders WHERE id = 2")
        launched += shop.drive(defs, instance)  # capture (the binlog dump over TLS), apply
        assert launched and all(run.success for run in launched), launched
    import duckdb

    with duckdb.connect(str(shop.duckdb_path), read_only=True) as conn:
        sink = conn.execute("SELECT id, note, amount FROM shop.orders ORDER BY id").fetchall()
    assert sink == _rows(admin)
    admin.close()


def test_mariadb_wrong_ca_or_no_tls_fails_clearly(tls_mariadb, certificates, tmp_path, monkeypatch):
    _, other = certificates
    shop, admin = _mysql_pipeline(
        tls_mariadb, tmp_path, monkeypatch, ssl_ca=other.ca
    )  # ssl_ca alone: verify all
    with pytest.raises(ConfigError) as caught:
        _pg_source(shop)
    assert "over TLS" in caught.value.message and "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    assert "ssl_ca" in caught.value.hint
    with pytest.raises(ConfigError) as caught:
        _pg_source(_with_source(shop, ssl_mode="DISABLED", ssl_ca=None))
    # MariaDB's require_secure_transport answers a plain connection with "Access denied": the hint says TLS
    assert "(using password: YES)" in caught.value.message and "require_secure_transport" in caught.value.hint
    with pytest.raises(ConfigError, match="ssl_mode VERIFY_CA needs ssl_ca"):
        _pg_source(_with_source(shop, ssl_mode="VERIFY_CA", ssl_ca=None))
    admin.close()


def test_mariadb_required_refuses_a_server_without_tls(mariadb_server, tmp_path, monkeypatch):
    """ssl_mode REQUIRED against a server that offers no TLS: refused, not a silent plain connection."""
    admin = pymysql.connect(**mariadb_server.connect_kwargs())
    with admin.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS tls_none")
    user, password = create_replication_user(admin, "tls_none")
    source = create_source(
        {
            "url": mariadb_server.url("", user=user, password=password),
            "pipeline": "p",
            "tables": ["tls_none.t"],
            "ssl_mode": "REQUIRED",
        }
    )
    try:
        with pytest.raises(ConfigError) as caught:
            source.connect()
        assert "does not offer TLS" in caught.value.message, caught.value.message
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")
            cur.execute("DROP DATABASE tls_none")
        admin.close()


# --- ClickHouse (HTTPS through a TLS-terminating proxy) ----------------------------------------------------------


def test_clickhouse_sink_over_https_verifies_the_server(pg_db, ch_db, certificates, tmp_path, monkeypatch):
    ca, other = certificates
    server = ch_db.server
    monkeypatch.setenv("TLS_CH_PASSWORD", server.password)
    with TlsProxy(ca, server.port) as proxy:
        https = f"clickhouse+https://{server.user}@127.0.0.1:{proxy.port}/{ch_db.name}"
        shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
        sink = {"url": f"{https}?ca_cert={ca.ca}", "password_env": "TLS_CH_PASSWORD"}
        shop = ShopPipeline(
            shop.config.model_copy(update={"sinks": {"clickhouse": sink}}), shop.source_url, shop.duckdb_path
        )
        defs = shop.definitions()
        with dg.instance_for_test() as instance:
            start_shop(shop, defs, instance)
            churn(pg_db.url, 3)
            launched = shop.drive(defs, instance)
            assert launched and all(run.success for run in launched), launched
        got = ch_db.client().query("SELECT id, quantity, status FROM orders_current ORDER BY id").result_rows
        with pg_db.connect() as conn:
            want = conn.execute("SELECT id, quantity, status FROM orders ORDER BY id").fetchall()
        assert [tuple(r) for r in got] == want and want

        for bad, needle in (
            ({"url": https, "ca_cert": other.ca}, "CERTIFICATE_VERIFY_FAILED"),  # another CA
            ({"url": https}, "CERTIFICATE_VERIFY_FAILED"),
        ):  # the system's CAs do not know ours
            wrong = create_sink({**bad, "password": server.password, "pipeline": "shop"})
            with pytest.raises(ConfigError) as caught:
                wrong.connect()
                wrong.preflight(tables=["public.orders"])
            assert "TLS to" in caught.value.message and needle in caught.value.message, caught.value.message
            assert "ca_cert" in caught.value.hint
