"""A throw-away MariaDB (10.11+, ROW binlog, FULL row image) on a free loopback port in a temporary directory.

    python -m infra.mariadb             # start, print the admin URL, stop on Ctrl-C

From Python: ``with MariaDbServer() as db: db.url()``. ``root`` stays socket-only; the admin
account for tests is ``dbmazz_admin`` with a random password (``db.password``).

``MariaDbServer(tls=make_certificates(dir))`` (``infra.tls``) serves TLS with that certificate and
requires it (``require_secure_transport = ON``); ``connect_kwargs()`` then verifies the server.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from typing import ClassVar
from urllib.parse import quote

from ._common import InfraError, apt_install, exit_on_sigterm, free_port, port_open, serve_forever, wait_until
from .tls import Certificates

__all__ = ["MariaDbServer"]

DEFAULT_OPTIONS: dict[str, str] = {
    "log-bin": "mysql-bin",
    "binlog-format": "ROW",
    "binlog-row-image": "FULL",
    "server-id": "1",
    "character-set-server": "utf8mb4",
    "collation-server": "utf8mb4_unicode_ci",
    "innodb-buffer-pool-size": "256M",
    "innodb-flush-log-at-trx-commit": "2",
    "sync-binlog": "0",
    "max-allowed-packet": "256M",
    "default-time-zone": "+00:00",
    "skip-name-resolve": "",
}


def _binaries() -> tuple[str, str]:
    server = shutil.which("mariadbd") or (
        "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None
    )
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if server and install:
        return server, install
    apt_install(["mariadb-server", "mariadb-client"], "MariaDB server binaries not found")
    server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if not (os.path.exists(server) and install):
        raise InfraError("MariaDB >= 10.11 not found after install: apt-get install mariadb-server")
    return server, install


class MariaDbServer:
    """Start/stop one throw-away MariaDB. ``options`` override ``DEFAULT_OPTIONS`` (value None removes one)."""

    admin_user = "dbmazz_admin"
    # called with the server before it is stopped and its directory (general.log included) removed
    on_stop: ClassVar[list[Callable[[MariaDbServer], None]]] = []

    def __init__(self, options: dict[str, str | None] | None = None, tls: Certificates | None = None) -> None:
        tls_options = (
            {"ssl-ca": tls.ca, "ssl-cert": tls.cert, "ssl-key": tls.key, "require-secure-transport": "ON"}
            if tls
            else {}
        )
        merged = {**DEFAULT_OPTIONS, **tls_options, **(options or {})}
        self.tls = tls
        self.options = {k: v for k, v in merged.items() if v is not None}
        self.password = secrets.token_hex(12)
        self.port: int | None = None
        self.base: str | None = None
        self._proc: subprocess.Popen | None = None
        self._args: list[str] = []

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def socket(self) -> str:
        assert self.base
        return f"{self.base}/mysqld.sock"

    def url(self, database: str = "", user: str | None = None, password: str | None = None) -> str:
        user = user or self.admin_user
        password = self.password if user == self.admin_user and password is None else password
        auth = quote(user) + (f":{quote(password)}" if password else "")
        return f"mysql://{auth}@{self.host}:{self.port}/{database}"

    @property
    def general_log_path(self) -> str:
        assert self.base
        return f"{self.base}/general.log"

    def connect_kwargs(self, database: str | None = None) -> dict:
        kw = {
            "host": self.host,
            "port": self.port,
            "user": self.admin_user,
            "password": self.password,
            "autocommit": True,
            "charset": "utf8mb4",
        }
        if database:
            kw["database"] = database
        if self.tls:
            kw.update(ssl_ca=self.tls.ca, ssl_verify_cert=True, ssl_verify_identity=True)
        return kw

    def start(self) -> MariaDbServer:
        server, install = _binaries()
        self.base = tempfile.mkdtemp(prefix="dbmazz-mariadb-")
        data = f"{self.base}/data"
        result = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise InfraError(f"mariadb-install-db failed: {result.stderr[-2000:]}")
        self.port = free_port()
        args = [
            server,
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.base}/mysqld.pid",
            f"--log-error={self.base}/error.log",
            "--user=root",
        ]
        if os.environ.get(
            "DBMAZZ_GENERAL_LOG"
        ):  # every login and command, for tests/fixtures/least_privilege.py
            args += ["--general-log=ON", f"--general-log-file={self.general_log_path}"]
        args += [f"--{k}={v}" if v != "" else f"--{k}" for k, v in self.options.items()]
        self._args = args
        self._launch()
        atexit.register(self.stop)
        exit_on_sigterm()
        self._bootstrap()
        return self

    def _launch(self) -> None:
        self._proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(
            lambda: port_open(self.port) or self._proc.poll() is not None,
            60,
            "MariaDB",
            f"{self.base}/error.log",
        )
        if self._proc.poll() is not None:
            raise InfraError("MariaDB exited at start:\n" + open(f"{self.base}/error.log").read()[-3000:])

    def kill(self) -> None:
        """SIGKILL the server, as a crash does; ``start_again()`` restarts it on the same data and port."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(30)

    def shutdown(self) -> None:
        """A clean shutdown (SIGTERM: sessions and binlog dump threads are cut); ``start_again()`` restarts it."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(60)

    def start_again(self) -> None:
        """Start the killed or shut-down server again: same data directory, same port (InnoDB recovers)."""
        assert self.base and self._proc is not None and self._proc.poll() is not None
        self._launch()

    def restart(self, options: dict[str, str | None]) -> None:
        """Shut down cleanly and start again on the same data and port with ``options`` changed (None removes one),
        as an operator changes a setting that needs a restart."""
        self.shutdown()
        merged = {**self.options, **options}
        self.options = {k: v for k, v in merged.items() if v is not None}
        server = self._args[0]
        base_args = [
            a for a in self._args[1:] if not any(a == f"--{k}" or a.startswith(f"--{k}=") for k in options)
        ]
        self._args = [
            server,
            *base_args,
            *(f"--{k}={v}" if v != "" else f"--{k}" for k, v in self.options.items() if k in options),
        ]
        self.start_again()

    def _bootstrap(self) -> None:
        import pymysql

        conn = pymysql.connect(unix_socket=self.socket, user="root", autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER '{self.admin_user}'@'%' IDENTIFIED BY '{self.password}'")
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{self.admin_user}'@'%' WITH GRANT OPTION")
        conn.close()

    def stop(self) -> None:
        if self.base is None:
            return
        try:
            for hook in self.on_stop:
                hook(self)
        finally:
            self._remove()

    def _remove(self) -> None:
        assert self.base
        base, self.base = self.base, None
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> MariaDbServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    server = MariaDbServer()
    serve_forever(
        server.start,
        server.stop,
        lambda: json.dumps({"url": server.url(), "port": server.port, "password": server.password}),
    )


if __name__ == "__main__":
    main()
