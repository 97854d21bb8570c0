"""The driver calls of the ClickHouse sink (clickhouse-connect over HTTP) and their error translation.

Every call the sink makes to the server goes through ``command``, ``insert``, ``query_rows`` or
``query_arrow``: one place turns driver errors into dbmazz errors without the password (and one
place tests wrap to kill the process mid-write).
"""

from __future__ import annotations

import logging
import secrets
import ssl
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ...core.errors import ConfigError, DbmazzError, Problem, SinkError, TransientError, caused_by, redact
from .config import ClickHouseConfig

__all__ = ["ClickHouseClient"]

# ClickHouse error codes that mean "the configuration is wrong", with the fix
# What the sink's user needs on its database (README, "Requirements"); TABLE ENGINE where the server asks for it
SINK_PRIVILEGES = ("SELECT", "INSERT", "ALTER", "CREATE TABLE", "CREATE VIEW", "DROP TABLE", "DROP VIEW")
_SYNC = {"mutations_sync": 2, "lightweight_deletes_sync": 2}
_AUTH = 516
_UNKNOWN_DATABASE = 81
_MISSING_GRANT = 497
_DENIED = {392: "allow_ddl = 0", 164: "readonly", _MISSING_GRANT: "missing grant"}
# clickhouse-connect logs this warning before raising the error the sink turns into its own message
_DRIVER_NOISE = "Unexpected Http Driver Exception"
_DRIVER_LOGGERS = ("clickhouse_connect.driver._backend.http_sync", "clickhouse_connect.driver.httpclient")


class _WithoutDriverNoise(logging.Filter):
    """Drops the driver's own warning about a failed request: the sink raises a clear error for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _DRIVER_NOISE


def _silence_driver_noise() -> None:
    for name in _DRIVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _WithoutDriverNoise) for f in logger.filters):
            logger.addFilter(_WithoutDriverNoise())


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no message"


def _unreachable(exc: Exception) -> bool:
    """A failure to reach the server (refused, timed out, reset, unknown host), not a server's answer."""
    from clickhouse_connect.driver.exceptions import OperationalError

    return isinstance(exc, OperationalError | OSError)


class ClickHouseClient:
    """A connection to one ClickHouse database; subclassed by the sink."""

    def __init__(self, config: ClickHouseConfig) -> None:
        self.config = config
        self.client: Any = None

    @staticmethod
    def q(identifier: str) -> str:
        from clickhouse_connect.driver.binding import quote_identifier

        return quote_identifier(identifier)

    def open(self) -> None:
        import clickhouse_connect

        cfg = self.config
        _silence_driver_noise()
        try:
            self.client = clickhouse_connect.get_client(
                host=cfg.host,
                port=cfg.port,
                username=cfg.username,
                password=cfg.password,
                database=cfg.database,
                secure=cfg.secure,
                connect_timeout=cfg.connect_timeout,
                send_receive_timeout=600,
                autogenerate_session_id=False,
                query_retries=0,
                **({"verify": cfg.verify, "ca_cert": cfg.ca_cert} if cfg.secure else {}),
            )
        except Exception as exc:  # noqa: BLE001 - every driver failure becomes a clear dbmazz error
            raise self._config_error(exc) from None

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    # ---- the driver calls
    def command(self, sql: str, settings: Mapping[str, Any] | None = None) -> Any:
        try:
            return self.client.command(sql, settings=dict(settings or {}))
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, sql) from None

    def insert(self, table: str, data: pa.Table, token: str | None) -> None:
        """Insert an Arrow table; with ``token`` a repeat of the same (token, table) is a no-op."""
        settings: dict[str, Any] = {"insert_deduplicate": 1 if token else 0}
        if token:
            settings["insert_deduplication_token"] = token
        try:
            self.client.insert_arrow(table, data, settings=settings)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, f"INSERT INTO {table}") from None

    def query_rows(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple]:
        try:
            return list(self.client.query(sql, parameters=dict(parameters or {})).result_rows)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, sql) from None

    def query_arrow(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        tables: Mapping[str, tuple[pa.Table, str]] | None = None,
    ) -> pa.Table:
        """Run a query and return its result as Arrow.

        ``tables``: name -> (Arrow table, ClickHouse structure) sent along as external data, which
        the query reads as a table of that name (so values never pass through Python objects).
        """
        external = _external_data(tables) if tables else None
        try:
            return self.client.query_arrow(
                sql,
                parameters=dict(parameters or {}),
                settings={"output_format_arrow_string_as_string": 0},
                external_data=external,
            )
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, sql) from None

    # ---- checks and errors
    def check_access(self) -> list[Problem]:
        """Reachability, credentials, database and DDL rights, without changing anything."""
        try:
            if self.client is None:
                self.open()
            readonly, allow_ddl = self.query_rows(
                "SELECT toUInt8(getSetting('readonly')), toUInt8(getSetting('allow_ddl'))"
            )[0]
        except DbmazzError as exc:
            return [Problem("clickhouse_connect", exc.message, exc.hint)]
        if int(readonly) or not int(allow_ddl):
            return [
                Problem(
                    "clickhouse_ddl",
                    f"expected user {self.config.username} to be allowed DDL, found "
                    f"readonly = {readonly}, allow_ddl = {allow_ddl}",
                    "give the user a profile with readonly = 0 and allow_ddl = 1, and " + self.grants(),
                )
            ]
        return self._probe_rights()

    def grants(self) -> str:
        """The statements that give the sink's user every right an apply uses, runnable as printed."""
        db, user = self.q(self.config.database), self.q(self.config.username)
        return (
            f"GRANT {', '.join(SINK_PRIVILEGES)} ON {db}.* TO {user}; "
            f"GRANT TABLE ENGINE ON ReplacingMergeTree TO {user}"
        )

    def _probe_rights(self) -> list[Problem]:
        """Do, on scratch tables, each kind of statement an apply runs (a rebuild's EXCHANGE and DROP, the view,
        mutations and lightweight deletes included): a grant that is missing fails here, not in the first apply."""
        name = f"_dbmazz_check_{secrets.token_hex(4)}"
        table, other, view = self.q(name), self.q(name + "_w"), self.q(name + "_current")
        steps = [
            (
                "create a ReplacingMergeTree table",
                f"CREATE TABLE {table} (k UInt64, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY k",
            ),
            ("add a column", f"ALTER TABLE {table} ADD COLUMN c Nullable(String)"),
            ("insert", f"INSERT INTO {table} (k, v, c) VALUES (1, 1, 'x')"),
            ("read", f"SELECT count() FROM {table}"),
            ("delete rows", f"DELETE FROM {table} WHERE k = 0"),
            ("run a mutation", f"ALTER TABLE {table} DELETE WHERE k = 0"),
            ("create a view", f"CREATE OR REPLACE VIEW {view} AS SELECT k FROM {table}"),
            ("exchange tables", f"CREATE TABLE {other} AS {table}"),
            ("exchange tables", f"EXCHANGE TABLES {table} AND {other}"),
        ]
        problems: list[Problem] = []
        for what, sql in steps:
            try:
                self.command(sql, settings=_SYNC)
            except DbmazzError as exc:
                problems.append(
                    Problem(
                        "clickhouse_rights",
                        f"expected user {self.config.username} to be allowed "
                        f"to {what} in {self.config.database}, the server refused: {exc.message}",
                        self.grants(),
                    )
                )
                break
        for drop in (
            f"DROP VIEW IF EXISTS {view} SYNC",
            f"DROP TABLE IF EXISTS {other} SYNC",
            f"DROP TABLE IF EXISTS {table} SYNC",
        ):
            try:
                self.command(drop)
            except DbmazzError as exc:  # the scratch tables stay: say so, with the rights that are missing
                problems.append(
                    Problem(
                        "clickhouse_rights",
                        f"expected user {self.config.username} to be allowed "
                        f"to drop tables and views in {self.config.database} (left {name}*: drop "
                        f"them), the server refused: {exc.message}",
                        self.grants(),
                    )
                )
                break
        return problems

    @staticmethod
    def _code(exc: Exception) -> int | None:
        """The server's error code, which clickhouse-connect takes from the X-ClickHouse-Exception-Code header."""
        code = getattr(exc, "code", None)
        return code if isinstance(code, int) else None

    def _config_error(self, exc: Exception) -> DbmazzError:
        cfg, code, text = self.config, self._code(exc), _first_line(redact(str(exc)))[:300]
        where = cfg.describe()
        if code == _AUTH:
            return ConfigError(
                f"clickhouse sink: the server at {cfg.host}:{cfg.port} refused user {cfg.username} "
                "(wrong password or unknown user)",
                hint="check the user and password in the sink url (the 'password' key)",
            )
        if code == _UNKNOWN_DATABASE:
            return ConfigError(
                f"clickhouse sink: expected the database {cfg.database!r} on {cfg.host}:{cfg.port}, "
                "found none",
                hint=f"CREATE DATABASE {self.q(cfg.database)}",
            )
        if code is None and caused_by(exc, ssl.SSLError):
            return self._tls_error(text)
        if code is None and _unreachable(exc):
            return TransientError(
                f"clickhouse sink: cannot reach {where} over HTTP{'S' if cfg.secure else ''} "
                f"({type(exc).__name__}: {text})",
                hint="check host and port (the HTTP interface, 8123 by default) and that the "
                "server is running; a retry succeeds once it is reachable",
            )
        return ConfigError(f"clickhouse sink: cannot connect to {where}: {text}")

    def _tls_error(self, text: str) -> ConfigError:
        """Verification failed, or the port does not speak TLS (connecting or mid-statement alike)."""
        return ConfigError(
            f"clickhouse sink: TLS to {self.config.host}:{self.config.port} failed: {text}",
            hint="check ca_cert (the CA that signed the server's certificate), that the url's host "
            "is a name the certificate carries, and that the port serves HTTPS (8443)",
        )

    def _error(self, exc: Exception, sql: str) -> DbmazzError:
        code, text = self._code(exc), redact(str(exc))
        statement = redact(sql.split("(")[0].strip()[:80])
        if code in _DENIED:
            return ConfigError(
                f"clickhouse sink: user {self.config.username} may not run {statement} "
                f"({_DENIED[code]}): {_first_line(text)[:200]}",
                hint=self.grants()
                if code == _MISSING_GRANT
                else "give the user a profile with readonly = 0 and allow_ddl = 1, and " + self.grants(),
            )
        if code in (_AUTH, _UNKNOWN_DATABASE):
            return self._config_error(exc)
        if code is None and caused_by(exc, ssl.SSLError):
            return self._tls_error(text)
        if code is None and _unreachable(exc):
            return TransientError(
                f"clickhouse sink: lost the connection to {self.config.describe()} during "
                f"{statement} ({type(exc).__name__}: {_first_line(text)[:200]})",
                hint="re-run the batch; applying it again is idempotent",
            )
        if code is None:
            return SinkError(
                f"clickhouse sink: {statement} failed in the driver ({type(exc).__name__}: "
                f"{_first_line(text)[:300]})"
            )
        return SinkError(f"clickhouse sink: {statement} failed: {text[:500]}")


def _external_data(tables: Mapping[str, tuple[pa.Table, str]]) -> Any:
    from clickhouse_connect.driver.external import ExternalData

    external = ExternalData()
    for name, (table, structure) in tables.items():
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        external.add_file(
            file_name=name, data=sink.getvalue().to_pybytes(), fmt="ArrowStream", structure=structure
        )
    return external
