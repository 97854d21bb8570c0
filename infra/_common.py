"""Shared helpers for the throw-away servers: free ports, binaries, waiting, running as a service user."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable


class InfraError(RuntimeError):
    """A throw-away server could not be installed or started; the message says what to do."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(packages: list[str], why: str) -> None:
    """Install Debian packages when running as root with apt; otherwise say exactly what to install."""
    if not (is_root() and shutil.which("apt-get")):
        raise InfraError(
            f"{why}: install the Debian packages {' '.join(packages)} (apt-get install {' '.join(packages)})"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def service_user_prefix(user: str) -> list[str]:
    """Command prefix that runs a program as ``user`` when we are root (PostgreSQL refuses root)."""
    if not is_root():
        return []
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True)
    return ["runuser", "-u", user, "--"]


def chown_tree(path: str, user: str) -> None:
    if is_root():
        entry = pwd.getpwnam(user)
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def wait_until(check: Callable[[], bool], timeout: float, what: str, log_path: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tail = ""
    if log_path and os.path.exists(log_path):
        with open(log_path, errors="replace") as fh:
            tail = "\n" + "".join(fh.readlines()[-20:])
    raise InfraError(f"{what} did not become ready within {timeout:.0f}s{tail}")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def exit_on_sigterm() -> None:
    """Make SIGTERM take Ctrl-C's path (KeyboardInterrupt), so ``finally``/fixture teardown and ``atexit`` stop the
    throw-away servers this process started; by default SIGTERM kills Python at once and leaves them running
    (a benchmark or a test session stopped by a CI timeout). Only from the main thread, and only where nobody
    installed a handler of their own."""
    import threading

    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _interrupt)


def serve_forever(start: Callable[[], object], stop: Callable[[], None], describe: Callable[[], str]) -> None:
    """CLI helper: start a server, print how to reach it, stop it on Ctrl-C or SIGTERM."""
    start()
    print(describe(), flush=True)

    def _stop(*_: object) -> None:
        stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while True:
        signal.pause()
