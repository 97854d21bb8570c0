"""Shutdown: ``make demo`` (``python -m infra.demo``) and the ``dbmazz`` command stopped with SIGTERM, as a process
manager stops them, leave no process running and no temporary directory behind (as Ctrl-C does)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from infra._common import free_port

ROOT = Path(__file__).resolve().parents[2]


def _marked_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process whose environment holds ``marker``: all that the demo started
    (servers, dagster webserver/daemon/code servers, run workers) inherit it, even once reparented to init."""
    found = []
    needle = f"DBMAZZ_TEST_MARKER={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # a zombie: already dead, waiting for its parent to reap it
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                found.append((int(entry), fh.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _start(args: list[str], tmp_path: Path, **extra_env: str) -> tuple[subprocess.Popen, str, Path]:
    marker = uuid.uuid4().hex
    # TMPDIR of everything started: every temporary directory lands here (outside pytest's 0700 tmp_path, which
    # the postgres service user could not enter)
    temp = Path(tempfile.mkdtemp(prefix="dbmazz-sigterm-"))
    temp.chmod(0o755)
    env = {**os.environ, "TMPDIR": str(temp), "DBMAZZ_TEST_MARKER": marker, **extra_env}
    log = open(tmp_path / "out.log", "w")
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, marker, temp


def _stop_and_assert_clean(
    proc: subprocess.Popen, marker: str, temp: Path, tmp_path: Path, timeout: float
) -> float:
    before = _marked_processes(marker)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"still running {timeout:.0f}s after SIGTERM:\n{(tmp_path / 'out.log').read_text()[-3000:]}"
        )
    took = time.monotonic() - began
    deadline = time.monotonic() + 5  # children reparented to init may take a moment to be reaped
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert not left, f"processes left running after SIGTERM (of {len(before)}): {left}"
        left_files = sorted(str(f.relative_to(temp)) for f in temp.rglob("*"))
        assert left_files == [], f"temporary files left behind after SIGTERM: {left_files[:20]}"
    finally:
        for pid, _ in _marked_processes(marker):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
    return took


def _demo(tmp_path: Path, clickhouse: bool) -> tuple[subprocess.Popen, str, Path, int]:
    port = free_port()
    args = [
        "-m",
        "infra.demo",
        "--port",
        str(port),
        "--workdir",
        str(tmp_path / "demo"),
        "--orders",
        "200",
        "--rate",
        "20",
    ] + ([] if clickhouse else ["--no-clickhouse"])
    proc, marker, temp = _start(args, tmp_path)
    return proc, marker, temp, port


def _wait(proc: subprocess.Popen, tmp_path: Path, ready, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited before {what}:\n{(tmp_path / 'out.log').read_text()[-3000:]}")
        if ready():
            return
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{what} not reached within {timeout:.0f}s:\n{(tmp_path / 'out.log').read_text()[-3000:]}")


def test_demo_stopped_by_sigterm_during_startup_leaves_nothing(tmp_path):
    """SIGTERM while the throw-away PostgreSQL is being created (before anything is served)."""
    proc, marker, temp, _ = _demo(tmp_path, clickhouse=False)
    _wait(proc, tmp_path, lambda: any(temp.iterdir()), 60, "the first temporary directory")
    time.sleep(0.3)
    _stop_and_assert_clean(proc, marker, temp, tmp_path, 60)


def test_demo_stopped_by_sigterm_leaves_nothing(tmp_path):
    """The demo serving (PostgreSQL, workload, dagster dev's webserver and daemon): SIGTERM stops them all."""
    proc, marker, temp, port = _demo(tmp_path, clickhouse=False)
    _wait(
        proc, tmp_path, lambda: _answers(f"http://127.0.0.1:{port}/server_info"), 150, "the Dagster webserver"
    )
    names = " ".join(cmd for _, cmd in _marked_processes(marker))
    assert "postgres" in names and "dagster" in names, names
    took = _stop_and_assert_clean(proc, marker, temp, tmp_path, 60)
    assert took < 40, f"SIGTERM took {took:.1f}s to stop the demo"


def _run_in_progress(port: int) -> bool:
    query = (
        b'{"query": "{ runsOrError(filter: {statuses: [STARTED]}) { ... on Runs { results { runId } } } }"}'
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=query, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return b"runId" in response.read()
    except OSError:
        return False


@pytest.mark.slow
def test_demo_with_clickhouse_stopped_by_sigterm_mid_run_leaves_nothing(tmp_path):
    """The whole demo (ClickHouse too) stopped while a run's worker process is capturing or applying."""
    proc, marker, temp, port = _demo(tmp_path, clickhouse=True)
    _wait(proc, tmp_path, lambda: _run_in_progress(port), 240, "a run in progress")
    _stop_and_assert_clean(proc, marker, temp, tmp_path, 90)


def test_dbmazz_check_stopped_by_sigterm_exits_at_once_with_a_message(tmp_path):
    """``dbmazz check`` waiting on a source that accepts TCP but never answers (a hung host), stopped by SIGTERM:
    it exits at once (not after its 10 s connect timeout) with 128+15 and says why, and nothing is left."""
    import socket

    import yaml

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)  # never accepted: the client's connection waits for a greeting that never comes
    port = hung.getsockname()[1]
    config = tmp_path / "pipelines.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipelines": {
                    "shop": {
                        "source": {
                            "url": f"postgresql://dbmazz@127.0.0.1:{port}/shop",
                            "password_env": "SHOP_PW",
                        },
                        "tables": ["public.t"],
                        "sinks": {"duckdb": {"url": f"duckdb:///{tmp_path}/s.duckdb"}},
                    }
                }
            }
        )
    )
    proc, marker, temp = _start(
        ["-m", "dbmazz_connectors.cli", "check", str(config)], tmp_path, SHOP_PW="not-checked"
    )
    try:
        time.sleep(2.5)  # the interpreter is up and the connection waits
        assert proc.poll() is None, (tmp_path / "out.log").read_text()
        took = _stop_and_assert_clean(proc, marker, temp, tmp_path, 10)
    finally:
        hung.close()
    assert proc.returncode == 128 + signal.SIGTERM
    assert took < 5
    assert "dbmazz: stopped by SIGTERM" in (tmp_path / "out.log").read_text()


@pytest.mark.parametrize("server", ["postgres", "mariadb", "clickhouse"])
def test_a_script_holding_a_throw_away_server_stopped_by_sigterm_leaves_nothing(server, tmp_path):
    """A benchmark or a test session killed by SIGTERM (a CI timeout): the servers it started are stopped too."""
    kind = {"postgres": "PostgresServer", "mariadb": "MariaDbServer", "clickhouse": "ClickHouseServer"}[
        server
    ]
    code = (
        f"import time; from infra.{server} import {kind}; s = {kind}().start(); print('up', flush=True); "
        "time.sleep(120)"
    )
    proc, marker, temp = _start(["-c", code], tmp_path)
    _wait(proc, tmp_path, lambda: "up" in (tmp_path / "out.log").read_text(), 90, f"the {server} server")
    _stop_and_assert_clean(proc, marker, temp, tmp_path, 30)
