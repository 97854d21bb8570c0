"""A throw-away PostgreSQL (15+, wal_level=logical) on a free loopback port in a temporary directory.

    python -m infra.postgres            # start, print the superuser URL, stop on Ctrl-C

From Python: ``with PostgresServer() as pg: pg.url()``. Password authentication is on for TCP
(scram-sha-256), so wrong-password paths behave as in production; the superuser is ``postgres``
with a random password (``pg.password``).

``PostgresServer(tls=make_certificates(dir))`` (``infra.tls``) serves TLS only (``ssl = on``, and
``hostnossl`` connections rejected), with that server certificate.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import ClassVar
from urllib.parse import quote

from ._common import (
    InfraError,
    apt_install,
    chown_tree,
    exit_on_sigterm,
    free_port,
    is_root,
    serve_forever,
    service_user_prefix,
)
from .tls import Certificates

__all__ = ["PostgresServer", "find_bin_dir"]

MIN_MAJOR = 15

DEFAULT_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "32",
    "max_wal_senders": "32",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "logical_decoding_work_mem": "64MB",
    "fsync": "off",  # throw-away: durability of the test server itself does not matter
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "4GB",
    "timezone": "UTC",
    # every login in server.log (user, database, application_name): the tests check that no dbmazz connection
    # logged in as a superuser (tests/fixtures/least_privilege.py)
    "log_connections": "on",
    "log_line_prefix": "'%m [%p] '",
    "log_timezone": "UTC",
}


def find_bin_dir(install: bool = True) -> str:
    """The newest installed PostgreSQL >= 15 bin directory; installs Debian's package if none."""
    candidates = sorted(
        (d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{d}/postgres")),
        key=lambda d: int(d.split("/")[-2]),
    )
    candidates = [d for d in candidates if int(d.split("/")[-2]) >= MIN_MAJOR]
    if candidates:
        return candidates[-1]
    if os.environ.get("DBMAZZ_PG_BIN"):
        return os.environ["DBMAZZ_PG_BIN"]
    if not install:
        raise InfraError("PostgreSQL >= 15 server binaries not found: apt-get install postgresql")
    apt_install(["postgresql", "postgresql-contrib"], "PostgreSQL server binaries not found")
    return find_bin_dir(install=False)


class PostgresServer:
    """Start/stop one throw-away cluster. ``settings`` override ``DEFAULT_SETTINGS``."""

    user = "postgres"
    # called with the server before it is stopped and its directory (server.log included) removed
    on_stop: ClassVar[list[Callable[[PostgresServer], None]]] = []

    def __init__(self, settings: dict[str, str] | None = None, tls: Certificates | None = None) -> None:
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.tls = tls
        self.password = secrets.token_hex(12)
        self.port: int | None = None
        self.base: str | None = None
        self._bin: str | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        user = user or self.user
        password = self.password if user == self.user and password is None else password
        auth = quote(user) + (f":{quote(password)}" if password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{dbname}"

    @property
    def log_path(self) -> str:
        assert self.base
        return f"{self.base}/server.log"

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*service_user_prefix("postgres"), *args], check=True, capture_output=True, text=True, **kw
        )

    def start(self) -> PostgresServer:
        self._bin = find_bin_dir()
        self.base = tempfile.mkdtemp(prefix="dbmazz-pg-")
        os.chmod(self.base, 0o755)
        data = f"{self.base}/data"
        pwfile = f"{self.base}/pw"
        with open(pwfile, "w") as fh:
            fh.write(self.password)
        chown_tree(self.base, "postgres") if is_root() else None
        try:
            self._run(
                [
                    f"{self._bin}/initdb",
                    "-D",
                    data,
                    "-U",
                    self.user,
                    "--pwfile",
                    pwfile,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        except subprocess.CalledProcessError as exc:
            raise InfraError(f"initdb failed: {exc.stderr}") from exc
        os.remove(pwfile)
        self.port = free_port()
        conf = dict(
            self.settings,
            port=str(self.port),
            listen_addresses="'127.0.0.1'",
            unix_socket_directories=f"'{self.base}'",
        )
        if self.tls:
            for name in ("server.pem", "server.key"):  # the key must belong to the server's user, mode 0600
                shutil.copy(f"{self.tls.directory}/{name}", f"{self.base}/{name}")
                os.chmod(f"{self.base}/{name}", 0o600)
            chown_tree(self.base, "postgres")
            conf.update(
                ssl="on", ssl_cert_file=f"'{self.base}/server.pem'", ssl_key_file=f"'{self.base}/server.key'"
            )
        with open(f"{data}/postgresql.auto.conf", "a") as fh:
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        with open(f"{data}/pg_hba.conf", "a") as fh:
            fh.write("host replication all 127.0.0.1/32 scram-sha-256\n")
        if self.tls:  # the first matching line wins: TCP without TLS is refused
            hba = open(f"{data}/pg_hba.conf").read()
            with open(f"{data}/pg_hba.conf", "w") as fh:
                fh.write(
                    "hostnossl all all 0.0.0.0/0 reject\nhostnossl replication all 0.0.0.0/0 reject\n" + hba
                )
        try:
            self._pg_ctl("-w", "-t", "60", "start")
        except subprocess.CalledProcessError as exc:
            log = (
                open(f"{self.base}/server.log").read()[-3000:]
                if os.path.exists(f"{self.base}/server.log")
                else ""
            )
            raise InfraError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from exc
        atexit.register(self.stop)
        exit_on_sigterm()
        return self

    def restart(self, settings: dict[str, str] | None = None) -> None:
        """Restart with extra settings (for tests of settings that need a restart, like wal_level)."""
        assert self.base and self._bin
        data = f"{self.base}/data"
        if settings:
            with open(f"{data}/postgresql.auto.conf", "a") as fh:
                for key, value in settings.items():
                    fh.write(f"{key} = {value}\n")
        self._pg_ctl("-w", "-t", "60", "restart", "-m", "fast")

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        assert self.base and self._bin
        return self._run(
            [f"{self._bin}/pg_ctl", "-D", f"{self.base}/data", "-l", f"{self.base}/server.log", *args]
        )

    def stop_fast(self) -> None:
        """``pg_ctl stop -m fast`` (an administrator's restart: sessions and replication connections are cut);
        ``start_again()`` brings the same cluster back on the same port."""
        self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash does (its backends exit when they notice); ``start_again()``
        restarts the same cluster (crash recovery) on the same port."""
        assert self.base
        with open(f"{self.base}/data/postmaster.pid") as fh:
            pid = int(fh.readline())
        os.kill(pid, signal.SIGKILL)

    def start_again(self, timeout: float = 60) -> None:
        """Start the stopped or killed cluster again (same data directory and port); retried while the killed
        server's backends are still exiting."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._pg_ctl("-w", "-t", "60", "start")
                return
            except subprocess.CalledProcessError as exc:
                if time.monotonic() > deadline:
                    log = open(f"{self.base}/server.log").read()[-3000:]
                    raise InfraError(f"PostgreSQL did not start again: {exc.stderr}\n{log}") from exc
                time.sleep(0.5)

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
        if self._bin and os.path.exists(f"{base}/data/postmaster.pid"):
            subprocess.run(
                [
                    *service_user_prefix("postgres"),
                    f"{self._bin}/pg_ctl",
                    "-D",
                    f"{base}/data",
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
            )
        shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    server = PostgresServer()
    serve_forever(
        server.start,
        server.stop,
        lambda: json.dumps({"url": server.url(), "port": server.port, "password": server.password}),
    )


if __name__ == "__main__":
    main()
