"""A throw-away ClickHouse (26.x, from the pinned ``chdb-core`` wheel) serving HTTP on a free loopback port.

    python -m infra.clickhouse          # start, print the URL, stop on Ctrl-C

From Python: ``with ClickHouseServer() as ch: ch.url()``. There is no ClickHouse server package
recent enough on Debian, so the server is chdb's embedded clickhouse-local run in a child process:
with a ``config.xml`` in its working directory (``listen_host``/``http_port``) the statement
``SYSTEM START LISTEN HTTP`` opens the HTTP interface for as long as that one call runs; the call
ends its SQL by reading a FIFO, so writing to the FIFO stops it. ``stop()`` does that, then kills.

Users (``users.xml``, honoured by the local server): ``dbmazz`` (all rights, random password,
``ch.password``), ``dbmazz_noddl`` (``allow_ddl = 0``, ``ch.noddl_password``) for privilege tests,
and ``default`` without a password, because chdb's own embedded session logs in as ``default``
and cannot be given credentials; it only accepts loopback connections.

Surprises met on the way (chdb-core 26.9.0, pinned in the dev extra):

* ``import chdb`` opens an embedded session at import time, reading ``config.xml`` from the working
  directory, as user ``default``: giving ``default`` a password makes the import itself fail.
* The HTTP interface answers in the output format of the call that opened it; it must be
  ``TabSeparated`` (ClickHouse's HTTP default) or clickhouse-connect cannot parse its handshake.
* The child holds ~0.5 GB RSS once started; ``max_server_memory_usage_to_ram_ratio`` is 0.5.
  Startup takes ~0.3-1 s. Date32/DateTime64 accept years 0000..9999 in this build.
* A SIGKILLed parent cannot remove the temporary directory (the child dies with it through
  ``PR_SET_PDEATHSIG``; the directory under ``/tmp/dbmazz-ch-*`` stays).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import quote

from ._common import InfraError, exit_on_sigterm, free_port, serve_forever, wait_until

__all__ = ["ClickHouseServer"]

STARTUP_TIMEOUT_S = 60.0

_CONFIG = """<clickhouse>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{port}</http_port>
  <logger><level>warning</level><console>0</console><log>{base}/clickhouse.log</log></logger>
  <user_directories><users_xml><path>{base}/users.xml</path></users_xml></user_directories>
  <user_files_path>{base}/user_files/</user_files_path>
  <max_server_memory_usage_to_ram_ratio>0.5</max_server_memory_usage_to_ram_ratio>
</clickhouse>
"""

_USER = """<{name}><password>{password}</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>{profile}</profile><quota>default</quota>{extra}</{name}>"""

_USERS = """<clickhouse>
  <users>
    {users}
  </users>
  <profiles><default/><no_ddl><allow_ddl>0</allow_ddl></no_ddl></profiles>
  <quotas><default/></quotas>
</clickhouse>
"""

# Runs in the child: die with the parent, then serve until the FIFO is written to.
_CHILD = """
import ctypes, os, signal, sys
base = sys.argv[1]
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the parent
os.chdir(base)  # clickhouse-local reads config.xml from the working directory
import chdb._chdb as chdb
chdb.query("SYSTEM START LISTEN HTTP; SELECT * FROM file('" + base + "/stop.fifo', 'RawBLOB')", "TabSeparated",
           path=base + "/data")
"""


class ClickHouseServer:
    """Start/stop one throw-away ClickHouse HTTP server (a child process; ``stop()`` always ends it)."""

    user = "dbmazz"
    noddl_user = "dbmazz_noddl"

    def __init__(self, users: dict[str, tuple[str, list[str]]] | None = None) -> None:
        """``users``: more users, name -> (password, grants such as ``"GRANT ALL ON shop.*"``), for
        least-privilege logins (``users.xml`` is the only user directory: ``CREATE USER`` is not available)."""
        self.users = dict(users or {})
        self.password = secrets.token_hex(12)
        self.noddl_password = secrets.token_hex(12)
        self.port: int | None = None
        self.base: str | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, database: str = "default", user: str | None = None, password: str | None = None) -> str:
        """``clickhouse://user:password@127.0.0.1:port/database`` (the sink's URL form)."""
        user = user or self.user
        if password is None:
            password = {self.user: self.password, self.noddl_user: self.noddl_password}.get(user, "")
        auth = quote(user) + (f":{quote(password)}" if password else "")
        return f"clickhouse://{auth}@{self.host}:{self.port}/{database}"

    def client(self, database: str = "default"):
        """A clickhouse-connect client as the all-rights user (for tests and benchmarks)."""
        import clickhouse_connect

        return clickhouse_connect.get_client(
            host=self.host, port=self.port, username=self.user, password=self.password, database=database
        )

    def _write_config(self) -> None:
        assert self.base
        users = "\n    ".join(
            [
                _USER.format(name="default", password="", profile="default", extra=""),
                _USER.format(
                    name=self.user,
                    password=self.password,
                    profile="default",
                    extra="<access_management>1</access_management>",
                ),
                _USER.format(name=self.noddl_user, password=self.noddl_password, profile="no_ddl", extra=""),
                *(
                    _USER.format(
                        name=name,
                        password=password,
                        profile="default",
                        extra="<grants>" + "".join(f"<query>{g}</query>" for g in grants) + "</grants>",
                    )
                    for name, (password, grants) in self.users.items()
                ),
            ]
        )
        with open(f"{self.base}/config.xml", "w") as fh:
            fh.write(_CONFIG.format(port=self.port, base=self.base))
        with open(f"{self.base}/users.xml", "w") as fh:
            fh.write(_USERS.format(users=users))
        os.makedirs(f"{self.base}/user_files", exist_ok=True)
        os.mkfifo(f"{self.base}/stop.fifo")

    def _ping(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise InfraError(
                f"ClickHouse exited during startup (code {self._proc.returncode}):\n{self._log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/ping", timeout=1) as resp:
                return resp.read().strip() == b"Ok."
        except OSError:
            return False

    def _log_tail(self) -> str:
        tail = ""
        for name in ("child.log", "clickhouse.log"):
            path = f"{self.base}/{name}"
            if os.path.exists(path):
                with open(path, errors="replace") as fh:
                    tail += "".join(fh.readlines()[-15:])
        return tail

    def start(self) -> ClickHouseServer:
        began = time.monotonic()
        self.base = tempfile.mkdtemp(prefix="dbmazz-ch-")
        self.port = free_port()
        self._write_config()
        with open(f"{self.base}/child.log", "w") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, self.base],
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        atexit.register(self.stop)
        exit_on_sigterm()
        try:
            wait_until(
                self._ping,
                STARTUP_TIMEOUT_S,
                "ClickHouse (chdb) HTTP interface",
                f"{self.base}/clickhouse.log",
            )
        except Exception:
            self.stop()
            raise
        self.startup_seconds = round(time.monotonic() - began, 2)
        return self

    def kill(self) -> None:
        """SIGKILL the server process (its data directory stays); ``start_again()`` serves it again on the
        same port."""
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait(10)

    def start_again(self) -> None:
        """Serve the killed server's data directory again on the same port."""
        assert self.base and self._proc is not None and self._proc.poll() is not None
        with open(f"{self.base}/child.log", "a") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, self.base],
                cwd=self.base,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_until(
            self._ping, STARTUP_TIMEOUT_S, "ClickHouse (chdb) HTTP interface", f"{self.base}/clickhouse.log"
        )

    def _request_stop(self) -> None:
        assert self.base
        try:
            fd = os.open(f"{self.base}/stop.fifo", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return  # nobody reads the FIFO (not started yet, or already gone)
        try:
            os.write(fd, b"stop\n")
        finally:
            os.close(fd)

    def stop(self) -> None:
        if self.base is None:
            return
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            self._request_stop()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        base, self.base = self.base, None
        shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> ClickHouseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    server = ClickHouseServer()
    serve_forever(
        server.start,
        server.stop,
        lambda: json.dumps(
            {
                "url": server.url(),
                "port": server.port,
                "password": server.password,
                "startup_seconds": server.startup_seconds,
            }
        ),
    )


if __name__ == "__main__":
    main()
