"""Real database clients against the throw-away servers: pgbench (PostgreSQL) and sysbench (MariaDB).

    with start_pgbench(server, "db", clients=4, seconds=15) as run:
        ...                                 # the benchmark writes while you capture
        result = run.wait()                 # its exit, its transaction count, its log

A running client is a process group started in its own session: leaving the ``with`` block (a
failed test included) kills the whole group, so no client outlives its test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

from ._common import InfraError, apt_install
from .mariadb import MariaDbServer
from .postgres import PostgresServer, find_bin_dir

__all__ = [
    "ClientResult",
    "ClientRun",
    "pgbench_bin",
    "pgbench_init",
    "start_pgbench",
    "sysbench_bin",
    "sysbench_prepare",
    "start_sysbench",
]

PGBENCH_TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers")  # pgbench_history has no key


@dataclass(frozen=True)
class ClientResult:
    """A finished client: its command name, the transactions it committed, how long it ran and its output."""

    name: str
    transactions: int
    seconds: float
    output: str


@dataclass(frozen=True)
class ClientRun:
    """A running client process (a process group of its own); a context manager that kills it on exit."""

    name: str
    process: subprocess.Popen
    log_path: str
    started: float

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> ClientResult:
        """Wait for the client to end; its result, or InfraError (with its output) if it failed."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise InfraError(
                f"{self.name} did not finish within {timeout:.0f}s:\n{self.output()[-2000:]}"
            ) from exc
        seconds = time.monotonic() - self.started
        output = self.output()
        if code != 0:
            raise InfraError(f"{self.name} exited with {code}:\n{output[-3000:]}")
        return ClientResult(self.name, _transactions(output), round(seconds, 1), output)

    def output(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def kill(self) -> None:
        """Kill the client's whole process group (a no-op once it has ended)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)

    def __enter__(self) -> ClientRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        try:
            os.remove(self.log_path)
        except FileNotFoundError:
            pass


def _transactions(output: str) -> int:
    """pgbench: 'number of transactions actually processed: N'; sysbench: 'transactions: N (...)'."""
    match = re.search(r"transactions actually processed: (\d+)", output) or re.search(
        r"^\s*transactions:\s+(\d+)", output, re.MULTILINE
    )
    return int(match.group(1)) if match else 0


def _start(name: str, args: list[str], env: dict[str, str] | None = None) -> ClientRun:
    fd, log_path = tempfile.mkstemp(prefix=f"dbmazz-{name}-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return ClientRun(name, process, log_path, time.monotonic())


def _run(
    name: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 1800
) -> ClientResult:
    with _start(name, args, env) as run:
        return run.wait(timeout)


# pgbench
def pgbench_bin() -> str:
    """pgbench of the PostgreSQL the throw-away servers run (Debian ships it in the server package)."""
    path = f"{find_bin_dir()}/pgbench"
    if not os.path.exists(path):
        raise InfraError(
            f"expected pgbench next to the server binaries at {path}, found none: apt-get install postgresql"
        )
    return path


def _pg_env(server: PostgresServer, database: str) -> dict[str, str]:
    """libpq variables (the password never appears on a command line)."""
    return dict(
        os.environ,
        PGHOST=server.host,
        PGPORT=str(server.port),
        PGUSER=server.user,
        PGPASSWORD=server.password,
        PGDATABASE=database,
        PGAPPNAME="pgbench",
    )


def pgbench_init(server: PostgresServer, database: str, scale: int) -> ClientResult:
    """``pgbench -i -s <scale>``: 100,000 accounts, 10 tellers and 1 branch per scale unit, with primary keys."""
    return _run("pgbench-init", [pgbench_bin(), "-i", "-s", str(scale), "--quiet"], _pg_env(server, database))


def start_pgbench(
    server: PostgresServer, database: str, clients: int, seconds: int, rate: int | None = None
) -> ClientRun:
    """``pgbench -c <clients> -T <seconds>`` (TPC-B-like: 3 updates and an insert per transaction), started now;
    ``rate``: at most that many transactions per second (``-R``), for a steady load."""
    args = [pgbench_bin(), "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds), "--no-vacuum"]
    args += ["-R", str(rate)] if rate else []
    return _start("pgbench", args, _pg_env(server, database))


# sysbench
def sysbench_bin() -> str:
    """The sysbench executable (installs Debian's package ``sysbench`` if missing)."""
    path = shutil.which("sysbench")
    if path is None:
        apt_install(["sysbench"], "sysbench not found")
        path = shutil.which("sysbench")
    if path is None:
        raise InfraError("expected sysbench on PATH, found none: apt-get install sysbench")
    return path


def _sysbench_args(server: MariaDbServer, database: str, tables: int, table_size: int) -> list[str]:
    return [
        sysbench_bin(),
        "oltp_read_write",
        "--db-driver=mysql",
        f"--mysql-host={server.host}",
        f"--mysql-port={server.port}",
        f"--mysql-user={server.admin_user}",
        f"--mysql-db={database}",
        f"--tables={tables}",
        f"--table-size={table_size}",
    ]


def _sysbench_env(server: MariaDbServer) -> dict[str, str]:
    """sysbench's MySQL driver reads MYSQL_PWD when no --mysql-password is given (keeps it off ps)."""
    return dict(os.environ, MYSQL_PWD=server.password)


def sysbench_prepare(server: MariaDbServer, database: str, tables: int, table_size: int) -> ClientResult:
    """``sysbench oltp_read_write prepare``: tables sbtest1..N of ``table_size`` rows (id, k, c, pad)."""
    return _run(
        "sysbench-prepare",
        [*_sysbench_args(server, database, tables, table_size), "prepare"],
        _sysbench_env(server),
    )


def start_sysbench(
    server: MariaDbServer, database: str, tables: int, table_size: int, threads: int, seconds: int
) -> ClientRun:
    """``sysbench oltp_read_write run`` (reads, index/non-index updates, a delete and a re-insert per event)."""
    args = [
        *_sysbench_args(server, database, tables, table_size),
        f"--threads={threads}",
        f"--time={seconds}",
        "run",
    ]
    return _start("sysbench", args, _sysbench_env(server))
