"""The StarRocks sink's connections: the FE's MySQL protocol (pymysql) for DDL, state and reads, and
Stream Load over HTTP for rows. Every call the sink makes goes through ``execute``, ``query_rows`` or
``load``: one place turns driver errors into dbmazz errors without the password (and one place tests
wrap to kill the process mid-write)."""

from __future__ import annotations

import socket
from typing import Any

from ...core.errors import ConfigError, DbmazzError, Problem, SinkError, TransientError, redact
from ._stream_load import LoadResponse, put_stream_load
from .config import StarRocksConfig

__all__ = ["StarRocksClient"]

# MySQL error codes (StarRocks' FE answers with these)
_ACCESS_DENIED = 1045
_DB_DENIED = {1044, 1142, 1227}
_UNREACHABLE = {2003, 2006, 2013, 2055}


class StarRocksClient:
    """One FE connection; subclassed by the sink."""

    def __init__(self, config: StarRocksConfig) -> None:
        self.config = config
        self.conn: Any = None

    @staticmethod
    def q(identifier: str) -> str:
        return "`" + identifier.replace("`", "``") + "`"

    def literal(self, value: Any) -> str:
        return str(self.conn.escape(value))

    def open(self) -> None:
        import pymysql

        cfg = self.config
        try:
            self.conn = pymysql.connect(
                host=cfg.host,
                port=cfg.port,
                user=cfg.username,
                password=cfg.password,
                connect_timeout=cfg.connect_timeout,
                autocommit=True,
                charset="utf8mb4",
            )
        except Exception as exc:  # noqa: BLE001 - every driver failure becomes a clear dbmazz error
            raise self._error(exc, "connect") from None

    def disconnect(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self.conn = None

    # ---- the driver calls
    def execute(self, sql: str, params: tuple[Any, ...] | None = None) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, sql) from None

    def query_rows(self, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, sql) from None

    def query_named(self, sql: str, params: tuple[Any, ...] | None = None) -> list[dict[str, Any]]:
        """Rows as {column: value} (for SHOW statements, whose columns are known by name)."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, params)
                names = [d[0] for d in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, sql) from None

    def load(self, target: str, headers: dict[str, str], body: bytes, source_table: str) -> LoadResponse:
        """One Stream Load into ``target`` of the configured database."""
        cfg = self.config
        return put_stream_load(
            cfg.host,
            cfg.http_port,
            cfg.database,
            target,
            headers,
            body,
            user=cfg.username,
            password=cfg.password,
            timeout=cfg.load_timeout,
            source_table=source_table,
        )

    # ---- checks and errors
    def check_access(self) -> list[Problem]:
        """Reachability and credentials on both ports, without changing anything."""
        try:
            if self.conn is None:
                self.open()
            self.query_rows("SELECT 1")
        except DbmazzError as exc:
            return [Problem("starrocks_connect", exc.message, exc.hint)]
        try:
            socket.create_connection(
                (self.config.host, self.config.http_port), timeout=self.config.connect_timeout
            ).close()
        except OSError as exc:
            return [
                Problem(
                    "starrocks_http",
                    f"cannot reach the FE's HTTP port {self.config.host}:"
                    f"{self.config.http_port} ({type(exc).__name__})",
                    "set http_port (in the url: ?http_port=8030) to the FE's http_port",
                )
            ]
        return []

    def _error(self, exc: Exception, sql: str) -> DbmazzError:
        cfg = self.config
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        text = redact(str(exc.args[1]) if len(exc.args) > 1 else str(exc))[:300]
        statement = redact(sql.split("(")[0].strip()[:80])
        if code == _ACCESS_DENIED:
            return ConfigError(
                f"starrocks sink: the FE at {cfg.host}:{cfg.port} refused user {cfg.username} "
                "(wrong password or unknown user)",
                hint="check the user and password of the sink (the 'password' key or password_env)",
            )
        if code in _DB_DENIED:
            return ConfigError(
                f"starrocks sink: user {cfg.username} may not run {statement}: {text}",
                hint=f"GRANT CREATE TABLE, ALTER, INSERT, SELECT, DELETE ON DATABASE "
                f"{cfg.database} TO {cfg.username} (and CREATE DATABASE, or create it first)",
            )
        if code in _UNREACHABLE or isinstance(exc, OSError):
            if sql == "connect":
                return TransientError(
                    f"starrocks sink: cannot reach {cfg.describe()} over the MySQL protocol ({text})",
                    hint="check host and port (the FE's query_port, 9030 by default) and that the "
                    "FE is running; a retry succeeds once it is reachable",
                )
            return TransientError(
                f"starrocks sink: lost the connection to {cfg.describe()} during {statement} ({text})",
                hint="re-run the batch; applying it again is idempotent",
            )
        return SinkError(f"starrocks sink: {statement} failed: {text}")
