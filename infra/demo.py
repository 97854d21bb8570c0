"""``make demo``: throw-away servers, a sample shop, a steady workload and ``dagster dev`` on http://127.0.0.1:3000.

One pipeline (``shop``) captures PostgreSQL's ``public.customers`` and ``public.orders`` and feeds two sinks from
the same capture: DuckDB (the embedded default) and a throw-away ClickHouse. The shop already holds customers and
orders before the pipeline exists: the capture sensor's first tick sets the source up and plans their initial load,
whose batches run as batch runs taking turns with the streaming run (the default ``run_mode: stream``), which
then captures and applies the workload's changes every second. Ctrl-C, SIGTERM (a process manager's stop) or
SIGHUP stop everything it started and remove the servers' temporary directories.

    python -m infra.demo [--port 3000] [--rate 50] [--no-clickhouse] [--workdir .dbmazz/demo]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .postgres import PostgresServer
from .shop import (
    SHOP_TABLES,
    ShopWorkload,
    create_replication_role,
    create_shop,
    seed_customers,
    seed_orders,
)

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".dbmazz"


def _clickhouse():
    from .clickhouse import ClickHouseServer

    return ClickHouseServer()


def _write_pipelines(path: Path, pg: PostgresServer, ch, changelog: Path, duckdb_path: Path) -> None:
    sinks: dict = {"duckdb": {"url": f"duckdb:///{duckdb_path}"}}
    if ch is not None:
        sinks["clickhouse"] = {
            "url": f"clickhouse://{ch.user}@{ch.host}:{ch.port}/shop",
            "password_env": "DEMO_CH_PASSWORD",
        }
    document = {
        "pipelines": {
            "shop": {
                "source": {
                    "url": f"postgresql://dbmazz@127.0.0.1:{pg.port}/shop",
                    "password_env": "SHOP_PG_PASSWORD",
                    "slot": "dbmazz_shop",
                    "publication": "dbmazz_shop",
                },
                "tables": SHOP_TABLES,
                "sinks": sinks,
                "changelog": str(changelog),
                "poll_interval_seconds": 5,
                # small chunks, so the initial load of the seeded shop shows as a few batches in the UI
                "snapshot": {"chunk_rows": 500, "chunks_per_batch": 2},
            }
        }
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def prepare(pg: PostgresServer, workdir: Path, ch=None, orders: int = 2000) -> dict[str, str]:
    """Create the shop with its data, the capture role and the config; returns the environment for Dagster.

    Nothing of dbmazz is set up here: the capture sensor does it and loads the existing rows (initial load).
    """
    import psycopg

    with psycopg.connect(pg.url(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'").fetchone():
            conn.execute("CREATE DATABASE shop")
    create_shop(pg.url("shop"))
    seed_customers(pg.url("shop"))
    seed_orders(pg.url("shop"), orders)
    password = secrets.token_hex(12)
    create_replication_role(pg.url("shop"), "dbmazz", password, "dbmazz_shop", SHOP_TABLES)
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "infra" / "dagster" / "dagster.local.yaml", home / "dagster.yaml")
    pipelines = workdir / "pipelines.yaml"
    _write_pipelines(pipelines, pg, ch, workdir / "changelog", workdir / "shop.duckdb")
    env = {"DAGSTER_HOME": str(home), "DBMAZZ_PIPELINES": str(pipelines), "SHOP_PG_PASSWORD": password}
    if ch is not None:
        ch.client().command("CREATE DATABASE IF NOT EXISTS shop")
        env["DEMO_CH_PASSWORD"] = ch.password
    return env


def start_dagster(env: dict[str, str], port: int = 3000, log_path: Path | None = None) -> subprocess.Popen:
    """``dagster dev`` (webserver + daemon) on 127.0.0.1:port, in its own process group.

    Its processes get a temporary directory of their own as TMPDIR (code server sockets, run files), removed by
    ``stop_process_group`` even when a process killed on the way could not remove its own files."""
    out = open(log_path, "w") if log_path else None
    temp = tempfile.mkdtemp(prefix="dbmazz-dagster-")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env={**os.environ, **env, "TMPDIR": temp},
        start_new_session=True,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
    )
    proc.dbmazz_temp = temp  # type: ignore[attr-defined]
    return proc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGINT to the whole group (dagster dev then stops its daemon, webserver and code servers), SIGKILL to
    whatever of the group is still there after ``timeout``; then its temporary directory goes."""
    deadline = time.monotonic() + timeout
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    while _group_alive(proc.pid) and time.monotonic() < deadline:  # children may outlive dagster dev briefly
        time.sleep(0.1)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    temp = getattr(proc, "dbmazz_temp", None)
    if temp:
        shutil.rmtree(temp, ignore_errors=True)


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP take Ctrl-C's path: the ``finally`` below stops everything that was started."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="workload changes per second")
    parser.add_argument("--no-clickhouse", action="store_true")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=STATE / "demo",
        help="config, Dagster home, change log and DuckDB file (emptied at start)",
    )
    parser.add_argument(
        "--orders", type=int, default=2000, help="orders in the shop before the pipeline starts"
    )
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    started: list = []
    dagster = None
    try:
        pg = PostgresServer()
        started.append(pg)  # before start(): a signal during start still removes what start() made
        pg.start()
        ch = None
        if not args.no_clickhouse:
            ch = _clickhouse()
            started.append(ch)
            ch.start()
        env = prepare(pg, workdir, ch, orders=args.orders)
        workload = ShopWorkload(pg.url("shop"), rate=args.rate).start()
        started.append(workload)
        dagster = start_dagster(env, args.port)
        print(
            f"\n  dbmazz demo: http://127.0.0.1:{args.port}  (Ctrl-C stops everything)\n"
            f"  source: {pg.url('shop').replace(pg.password, '***')}\n  config: {env['DBMAZZ_PIPELINES']}\n",
            flush=True,
        )
        while dagster.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        # a second Ctrl-C/SIGTERM must not cut the clean-up short (a process manager sends SIGKILL if it is too slow)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if dagster is not None:
            stop_process_group(dagster)
        for thing in reversed(started):
            thing.stop()


if __name__ == "__main__":
    main()
