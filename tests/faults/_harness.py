"""A real pipeline run through Dagster the way production runs it, for fault trials (tests and ``bench/faults.py``).

``FaultRig(source="postgres" | "mariadb")`` starts throw-away servers from ``infra/`` (the source, a PostgreSQL that
also holds the PostgreSQL sink, a ClickHouse), fills the source with ``pgbench -i`` or ``sysbench prepare``,
creates least-privilege roles (capture role, sink owners), writes a ``pipelines.yaml`` and a ``DAGSTER_HOME``
(``infra/dagster/dagster.local.yaml`` plus the production instance's ``run_retries``) in a temporary directory
and starts ``dagster-daemon run`` on ``workspace.yaml``: the capture sensor plans batches, the queued run
coordinator launches each as a run process of its own, as in ``make demo`` and in production.

A trial then writes with the real client (``pgbench``/``sysbench``), kills something with SIGKILL (a run process
while it captures or applies, the daemon, a server), lets the pipeline recover by the normal means (the code
server marks a killed run failed, ``run_retries`` re-executes it, the sensor goes on; a failure left once the
retries are spent is re-executed through Dagster's API, as a user re-executes a run from the UI), then waits
until the pipeline has drained and compares every sink with the source row by row.

Leaving the ``with`` block stops everything it started (each daemon's process group, every process that carries
its ``DAGSTER_HOME``, the clients, the servers) and removes its temporary directory, also when the trial failed.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ scripts import this module by path
    sys.path.insert(0, str(ROOT))

from infra.clickhouse import ClickHouseServer  # noqa: E402
from infra.clients import (  # noqa: E402
    PGBENCH_TABLES,
    ClientRun,
    pgbench_init,
    start_pgbench,
    start_sysbench,
    sysbench_prepare,
)
from infra.mariadb import MariaDbServer  # noqa: E402
from infra.postgres import PostgresServer  # noqa: E402
from infra.shop import create_replication_role  # noqa: E402

PIPELINE = "faults"
JOB = f"{PIPELINE}_batch"
STREAM_JOB = f"{PIPELINE}_stream"
CAPTURE_STEP = f"{PIPELINE}__changes"
DATABASE = "faults"
SINK_DATABASE = "faults_sink"
SYSBENCH_TABLES = 2
PHASES = ("capture", "apply", "daemon", "server")

# The production instance's retries (infra/dagster/dagster.yaml), on top of the local instance of `make demo`.
RUN_RETRIES = {"enabled": True, "max_retries": 2}
# A run that never got to start (its launcher killed with the daemon) is failed after this long.
RUN_MONITORING = {
    "enabled": True,
    "start_timeout_seconds": 60,
    "poll_interval_seconds": 5,
    "free_slots_after_run_end_seconds": 5,
}


class NoRunInPhase(RuntimeError):
    """No batch run reached the phase to kill within the time given."""


@dataclass
class Kill:
    """One kill of a trial: what was killed, when (wall time), and whether it landed where it was aimed."""

    phase: str  # capture, apply, daemon, server
    target: str  # run <id>, daemon <pid>, source postgres, sink clickhouse, ...
    at: float
    hit: bool
    detail: str = ""


@dataclass
class Comparison:
    """Rows compared and differences found per sink (missing, extra or different rows)."""

    rows: int = 0
    diffs: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.diffs.values())


def _count_diffs(actual: list[tuple], expected: list[tuple]) -> tuple[int, list[str]]:
    got = {r[0]: r for r in actual}
    want = {r[0]: r for r in expected}
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    differ = [k for k in want if k in got and got[k] != want[k]]
    doubled = len(actual) - len(got)  # rows of a key the sink holds more than once (a batch applied twice)
    examples = [f"missing {want[k]}" for k in missing[:3]] + [f"extra {got[k]}" for k in extra[:3]]
    examples += [f"differs: sink {got[k]} source {want[k]}" for k in differ[:3]]
    examples += [f"{doubled} keys held twice"] if doubled else []
    return len(missing) + len(extra) + len(differ) + doubled, examples


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class FaultRig:
    """One pipeline (source -> DuckDB, ClickHouse, PostgreSQL) driven by a real Dagster daemon; see the module doc."""

    def __init__(
        self,
        source: str = "postgres",
        *,
        scale: int = 1,
        table_size: int = 10_000,
        clients: int = 2,
        poll_interval: int = 2,
        sinks: tuple[str, ...] = ("duckdb", "clickhouse", "postgres"),
        seed: int | None = None,
        log=print,
        run_mode: str = "batch",
    ) -> None:
        assert source in ("postgres", "mariadb"), source
        assert run_mode in ("batch", "stream"), run_mode
        self.run_mode = run_mode  # written in pipelines.yaml either way (the trials kill batch runs by step)
        self.source_kind = source
        self.scale = scale
        self.table_size = table_size
        self.clients = clients
        self.poll_interval = poll_interval
        self.sink_names = sinks
        self.random = random.Random(seed)
        self.log = log
        self.workdir: Path | None = None
        self.pg: PostgresServer | None = None
        self.my: MariaDbServer | None = None
        self.ch: ClickHouseServer | None = None
        self.env: dict[str, str] = {}
        self.tables: list[str] = []
        self.daemon: subprocess.Popen | None = None
        self._groups: list[
            int
        ] = []  # process groups of every daemon started (a killed daemon leaves children)
        self._instance = None
        self._servers: list = []

    # ---- set-up and clean-up

    def __enter__(self) -> FaultRig:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        began = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="dbmazz-faults-"))
        (self.workdir / "tmp").mkdir()
        self.pg = PostgresServer()
        self._servers.append(self.pg)
        self.pg.start()
        if self.source_kind == "mariadb":
            # binlog_row_metadata FULL as a server option: it must survive the server's restarts
            self.my = MariaDbServer({"binlog-row-metadata": "FULL"})
            self._servers.append(self.my)
            self.my.start()
        if "clickhouse" in self.sink_names:
            # the sink logs in as a user with rights on its database only (and to create MergeTree tables)
            self.env["FAULTS_CH_PASSWORD"] = secrets.token_hex(12)
            self.ch = ClickHouseServer(
                users={
                    "faults_sinker": (
                        self.env["FAULTS_CH_PASSWORD"],
                        [f"GRANT ALL ON {SINK_DATABASE}.*", "GRANT TABLE ENGINE ON *"],
                    )
                }
            )
            self._servers.append(self.ch)
            self.ch.start()
        source = self._prepare_source()
        sinks = self._prepare_sinks()
        self._write_config(source, sinks)
        self.start_daemon()
        self.log(f"rig ({self.source_kind}) ready in {time.monotonic() - began:.1f}s: {self.workdir}")

    def _prepare_source(self) -> dict:
        import psycopg

        password = secrets.token_hex(12)
        self.env["FAULTS_SOURCE_PASSWORD"] = password
        if self.source_kind == "postgres":
            assert self.pg
            with psycopg.connect(self.pg.url(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            pgbench_init(self.pg, DATABASE, self.scale)  # before the pipeline exists: its initial load
            self.tables = [f"public.{t}" for t in PGBENCH_TABLES]
            create_replication_role(
                self.pg.url(DATABASE), "faults_capture", password, f"dbmazz_{PIPELINE}", self.tables
            )
            return {
                "url": f"postgresql://faults_capture@127.0.0.1:{self.pg.port}/{DATABASE}",
                "password_env": "FAULTS_SOURCE_PASSWORD",
                "slot": f"dbmazz_{PIPELINE}",
                "publication": f"dbmazz_{PIPELINE}",
            }
        import pymysql

        assert self.my
        admin = pymysql.connect(**self.my.connect_kwargs())
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
            cur.execute(f"CREATE USER 'faults_capture'@'%' IDENTIFIED BY '{password}'")
            cur.execute("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'faults_capture'@'%'")
            cur.execute(f"GRANT SELECT ON `{DATABASE}`.* TO 'faults_capture'@'%'")
        admin.close()
        sysbench_prepare(self.my, DATABASE, SYSBENCH_TABLES, self.table_size)
        self.tables = [f"{DATABASE}.sbtest{n}" for n in range(1, SYSBENCH_TABLES + 1)]
        return {
            "url": f"mysql://faults_capture@127.0.0.1:{self.my.port}/",
            "password_env": "FAULTS_SOURCE_PASSWORD",
        }

    def _prepare_sinks(self) -> dict:
        import psycopg

        assert self.workdir and self.pg
        sinks: dict = {}
        if "duckdb" in self.sink_names:
            sinks["duckdb"] = {"url": f"duckdb:///{self.workdir}/sink.duckdb", "lock_wait_seconds": 30}
        if "clickhouse" in self.sink_names:
            assert self.ch
            self.ch.client().command(f"CREATE DATABASE IF NOT EXISTS {SINK_DATABASE}")
            sinks["clickhouse"] = {
                "url": f"clickhouse://faults_sinker@127.0.0.1:{self.ch.port}/{SINK_DATABASE}",
                "password_env": "FAULTS_CH_PASSWORD",
            }
        if "postgres" in self.sink_names:
            password = secrets.token_hex(12)
            self.env["FAULTS_PGSINK_PASSWORD"] = password
            with psycopg.connect(
                self.pg.url(), autocommit=True
            ) as conn:  # a role owning its database, no more
                conn.execute(f"CREATE ROLE faults_sinker LOGIN PASSWORD '{password}'")
                conn.execute(f"CREATE DATABASE {SINK_DATABASE} OWNER faults_sinker")
            sinks["postgres"] = {
                "url": f"postgresql://faults_sinker@127.0.0.1:{self.pg.port}/{SINK_DATABASE}",
                "password_env": "FAULTS_PGSINK_PASSWORD",
            }
        return sinks

    def _write_config(self, source: dict, sinks: dict) -> None:
        assert self.workdir
        home = self.workdir / "dagster_home"
        home.mkdir()
        instance = yaml.safe_load((ROOT / "infra" / "dagster" / "dagster.local.yaml").read_text())
        instance.update(run_retries=RUN_RETRIES, run_monitoring=RUN_MONITORING)
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
        self.sinks_config = sinks
        self.source_config = source
        document = {
            "pipelines": {
                PIPELINE: {
                    "source": source,
                    "tables": self.tables,
                    "sinks": sinks,
                    "changelog": str(self.workdir / "changelog"),
                    "poll_interval_seconds": self.poll_interval,
                    "check_interval_minutes": 59,
                    "snapshot": {"chunk_rows": 50_000, "chunks_per_batch": 2},
                    "run_mode": self.run_mode,
                }
            }
        }
        (self.workdir / "pipelines.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        self.env.update(DAGSTER_HOME=str(home), DBMAZZ_PIPELINES=str(self.workdir / "pipelines.yaml"))

    def start_daemon(self) -> None:
        """``dagster-daemon run`` on the repository's workspace.yaml, in a process group of its own."""
        assert self.workdir
        log = open(self.workdir / "daemon.log", "a")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT,
            env={**os.environ, **self.env, "TMPDIR": str(self.workdir / "tmp")},
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self._groups.append(self.daemon.pid)

    def _our_processes(self) -> list[int]:
        """Every process whose environment holds this rig's DAGSTER_HOME (daemons, code servers, run workers)."""
        marker = f"DAGSTER_HOME={self.env.get('DAGSTER_HOME')}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if marker in fh.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def stop_dagster(self, timeout: float = 15) -> None:
        """SIGTERM to every daemon's group, SIGKILL to what is left after ``timeout``; stragglers by environment."""
        for pgid in self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in self._our_processes()):
            time.sleep(0.2)
        for pgid in self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if "DAGSTER_HOME" in self.env:
            for pid in self._our_processes():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self.daemon is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.wait(5)
        self._groups.clear()

    def close(self) -> None:
        try:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None
            self.stop_dagster()
        finally:
            for server in reversed(self._servers):
                with contextlib.suppress(Exception):
                    server.stop()
            self._servers.clear()
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    # ---- Dagster, as a user reads it

    @property
    def instance(self):
        import dagster as dg

        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])
        return self._instance

    def runs(self, statuses=None) -> list:
        import dagster as dg

        return list(self.instance.get_run_records(dg.RunsFilter(job_name=JOB, statuses=statuses or [])))

    def running(self) -> list:
        import dagster as dg

        return self.runs([dg.DagsterRunStatus.STARTED])

    def in_flight(self) -> list:
        from dbmazz_pipelines.sensors import IN_FLIGHT

        return self.runs(IN_FLIGHT)

    def _run_pid(self, run_id: str) -> int | None:
        import dagster as dg

        for record in self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ENGINE_EVENT
        ).records:
            message = record.event_log_entry.dagster_event.message or ""
            if message.startswith("Started process for run (pid: "):
                return int(message.split("pid: ", 1)[1].rstrip(")."))
        return None

    def _steps(self, run_id: str) -> tuple[set[str], set[str]]:
        """Steps of a run that started, and those that ended (success or failure)."""
        import dagster as dg

        started, ended = set(), set()
        types = {
            dg.DagsterEventType.STEP_START,
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        }
        for record in self.instance.get_records_for_run(run_id, of_type=types).records:
            event = record.event_log_entry.dagster_event
            (started if event.event_type == dg.DagsterEventType.STEP_START else ended).add(event.step_key)
        return started, ended

    def _current_step(self, run_id: str) -> str | None:
        started, ended = self._steps(run_id)
        running = started - ended
        return next(iter(running), None)

    def step_errors(self, run_id: str) -> list[tuple[str, str, str]]:
        """The failed steps of a run as the UI shows them: (step, error class, message), the error being the
        one the step raised (the cause of Dagster's step execution error)."""
        import dagster as dg

        found = []
        records = self.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        for record in records:
            event = record.event_log_entry.dagster_event
            error = event.step_failure_data.error
            chain = []
            while error is not None:
                chain.append(error)
                error = error.cause or error.context
            chosen = next(
                (e for e in chain if e.cls_name and not e.cls_name.startswith("Dagster")),
                chain[0] if chain else None,
            )
            if chosen is not None:
                message = chosen.message.strip()
                prefix = f"{chosen.cls_name}: "  # 'module.Class: message' as Dagster serializes it
                message = message.split(prefix, 1)[1] if prefix in message else message
                found.append((event.step_key, chosen.cls_name or "", message))
        return found

    @staticmethod
    def _phase_of(step: str | None) -> str | None:
        if step is None:
            return None
        return "capture" if step == CAPTURE_STEP else "apply"

    def wait_done(self, predicate, timeout: float, what: str, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"{what} not within {timeout:.0f}s (daemon log: {self.workdir}/daemon.log)")

    # ---- kills

    def kill_run(self, phase: str, timeout: float = 60) -> Kill:
        """SIGKILL the run process of the next batch run found in ``phase`` (capture or apply) at a random moment
        of it; ``hit`` says whether the step was still running (started, not ended) when the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.running():
                run_id = record.dagster_run.run_id
                if self._phase_of(self._current_step(run_id)) != phase:
                    continue
                pid = self._run_pid(run_id)
                if pid is None or not _alive(pid):
                    continue
                time.sleep(self.random.uniform(0, 0.3))
                step = self._current_step(run_id)
                if (
                    self._phase_of(step) != phase
                ):  # the step ended during the random wait: look again, kill nothing
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                at = time.time()
                time.sleep(0.5)
                started, ended = self._steps(run_id)
                hit = self._phase_of(step) == phase and step in started and step not in ended
                return Kill(phase, f"run {run_id[:8]} pid {pid}", at, hit, f"step {step}")
            time.sleep(0.05)
        raise NoRunInPhase(f"no batch run was in its {phase} step within {timeout:.0f}s")

    def _wait_for_a_run(self, timeout: float) -> None:
        """Until a batch run is in progress (so the kill cuts one), or ``timeout``; then a random instant of it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.running():
            time.sleep(0.1)
        time.sleep(self.random.uniform(0, 1.0))

    def kill_daemon(self, down_seconds: float, timeout: float = 30) -> Kill:
        """SIGKILL the daemon process while a run is in progress (its code server and the run live on, as after
        a crash of the daemon alone), start a new daemon ``down_seconds`` later. Hit: a run was in progress."""
        assert self.daemon is not None
        self._wait_for_a_run(timeout)
        busy = bool(self.running())
        pid = self.daemon.pid
        alive = self.daemon.poll() is None
        os.kill(pid, signal.SIGKILL)
        at = time.time()
        self.daemon.wait(10)
        time.sleep(down_seconds)
        self.start_daemon()
        return Kill(
            "daemon",
            f"daemon pid {pid}",
            at,
            alive and busy,
            f"run in progress: {busy}, down {down_seconds:.1f}s",
        )

    def kill_server(self, which: str, down_seconds: float, timeout: float = 30) -> Kill:
        """SIGKILL a server (``source`` or ``sink``) while a run is in progress, restart it on the same port and
        data directory ``down_seconds`` later. Hit: a run was in progress when the server died."""
        server = self.source_server if which == "source" else self.sink_server
        self._wait_for_a_run(timeout)
        busy = bool(self.running())
        server.kill()
        at = time.time()
        time.sleep(down_seconds)
        server.start_again()
        name = type(server).__name__
        return Kill(
            "server", f"{which} {name}", at, busy, f"run in progress: {busy}, down {down_seconds:.1f}s"
        )

    @property
    def source_server(self):
        return self.pg if self.source_kind == "postgres" else self.my

    @property
    def sink_server(self):
        """The sink server that is not the source: ClickHouse (or the PostgreSQL sink under a MariaDB source)."""
        if self.ch is not None:
            return self.ch
        assert self.source_kind == "mariadb" and self.pg
        return self.pg

    # ---- the writer

    def client(self, seconds: int, rate: int | None = None) -> ClientRun:
        """The real client for ``seconds``; ``rate``: pgbench transactions per second at most (steady load)."""
        if self.source_kind == "postgres":
            assert self.pg
            return start_pgbench(self.pg, DATABASE, self.clients, seconds, rate=rate)
        assert self.my
        return start_sysbench(self.my, DATABASE, SYSBENCH_TABLES, self.table_size, self.clients, seconds)

    # ---- recovery and drain

    def _partition_states(self) -> dict[str, tuple[bool, bool, object]]:
        """Per partition: (succeeded once, in flight, newest run record)."""
        import dagster as dg

        from dbmazz_pipelines.sensors import IN_FLIGHT

        states: dict[str, tuple[bool, bool, object]] = {}
        for record in sorted(self.runs(), key=lambda r: r.create_timestamp.timestamp()):
            partition = record.dagster_run.tags.get("dagster/partition")
            if partition is None:
                continue
            done, flying, _ = states.get(partition, (False, False, None))
            status = record.dagster_run.status
            states[partition] = (
                done or status == dg.DagsterRunStatus.SUCCESS,
                flying or status in IN_FLIGHT,
                record,
            )
        return states

    def failed_partitions(self, older_than: float = 0.0) -> list:
        """Newest runs of partitions that never succeeded, have nothing in flight and ended ``older_than`` s ago."""
        now = time.time()
        failed = []
        for done, flying, record in self._partition_states().values():
            if done or flying:
                continue
            ended = record.end_time or record.update_timestamp.timestamp()
            if now - ended >= older_than:
                failed.append(record)
        return failed

    def unfinished(self) -> list[str]:
        """Batch partitions (log and snapshot) without a successful run yet."""
        from dbmazz_pipelines.naming import batch_partitions

        states = self._partition_states()
        partitions = self.instance.get_dynamic_partitions(batch_partitions(PIPELINE).name)
        return [p for p in partitions if not states.get(p, (False,))[0]]

    def reexecute(self, records: list) -> list[str]:
        """Re-execute failed runs (all steps), as the UI's 'Re-execute all' does, through the queue (so the
        pipeline's one-run-at-a-time limit holds); the new runs' ids."""
        from dagster._core.execution.plan.resume_retry import ReexecutionStrategy
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import WorkspaceFileTarget

        ids = []
        # the code server it starts loads the pipelines as the daemon does: from this rig's environment
        saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        try:
            with WorkspaceProcessContext(
                self.instance, WorkspaceFileTarget([str(ROOT / "workspace.yaml")])
            ) as ctx:
                ids += self._submit_reexecutions(ctx, records, ReexecutionStrategy.ALL_STEPS)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return ids

    def _submit_reexecutions(self, process, records: list, strategy) -> list[str]:
        ids = []
        context = process.create_request_context()
        for record in records:
            parent = record.dagster_run
            origin = parent.remote_job_origin.repository_origin
            location = context.get_code_location(origin.code_location_origin.location_name)
            remote_job = location.get_repository(origin.repository_name).get_full_job(parent.job_name)
            run = self.instance.create_reexecuted_run(
                request_context=context,
                parent_run=parent,
                code_location=location,
                remote_job=remote_job,
                strategy=strategy,
                use_parent_run_tags=True,
            )
            self.instance.submit_run(run.run_id, context)
            ids.append(run.run_id)
        return ids

    def source_position(self):
        """The source's current log position, read as the capture role."""
        from dbmazz_connectors.core import create_source

        config = {k: v for k, v in self.source_config.items() if k != "password_env"}
        source = create_source(
            {
                **config,
                "password": self.env["FAULTS_SOURCE_PASSWORD"],
                "pipeline": PIPELINE,
                "tables": self.tables,
            }
        )
        source.connect()
        try:
            return source.current_position()
        finally:
            source.disconnect()

    def checkpoint(self):
        from dbmazz_connectors.changelog import ChangeLog

        assert self.workdir
        return ChangeLog(str(self.workdir / "changelog")).checkpoint(PIPELINE)

    def drain(self, timeout: float = 240, retry_after: float = 8.0) -> list[str]:
        """Wait until the checkpoint reaches the source's position now, nothing is in flight and every
        partition's batch ran successfully; failed partitions whose retries are spent are re-executed (each
        at most 3 times). The re-executed run ids. With ``run_mode: stream`` the streaming run is always in
        flight: drained means every batch partition is materialized for every sink table (``drain_stream``)."""
        if self.run_mode == "stream":
            return self.drain_stream(timeout, retry_after)
        target = self.source_position()
        reexecuted: list[str] = []
        attempts: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            failed = self.failed_partitions(older_than=retry_after)
            for record in failed:
                partition = record.dagster_run.tags["dagster/partition"]
                attempts[partition] = attempts.get(partition, 0) + 1
                if attempts[partition] > 3:
                    raise AssertionError(
                        f"partition {partition} still fails after 3 re-executions: run "
                        f"{record.dagster_run.run_id}: {self.step_errors(record.dagster_run.run_id)}"
                        f" (daemon log: {self.workdir}/daemon.log)"
                    )
            if failed:
                reexecuted += self.reexecute(failed)
                self.log(
                    f"  re-executed {len(failed)} failed partitions: "
                    f"{', '.join(r.dagster_run.tags['dagster/partition'] for r in failed[:5])}"
                )
            checkpoint = self.checkpoint()
            caught_up = checkpoint is not None and checkpoint.version >= target.version
            if caught_up and not self.in_flight() and not self.failed_partitions() and not self.unfinished():
                return reexecuted
            time.sleep(1)
        raise TimeoutError(
            f"the pipeline did not drain within {timeout:.0f}s: checkpoint {self.checkpoint()}, "
            f"target {target}, in flight {len(self.in_flight())}, failed "
            f"{[r.dagster_run.tags.get('dagster/partition') for r in self.failed_partitions()]} "
            f"(daemon log: {self.workdir}/daemon.log)"
        )

    # ---- streaming runs (run_mode: stream)

    def stream_runs(self, statuses=None) -> list:
        import dagster as dg

        return list(
            self.instance.get_run_records(dg.RunsFilter(job_name=STREAM_JOB, statuses=statuses or []))
        )

    def sink_keys(self) -> list:
        from dbmazz_pipelines.naming import sink_key

        return [sink_key(PIPELINE, sink, table) for sink in self.sinks_config for table in self.tables]

    def log_partitions(self) -> list[str]:
        from dbmazz_pipelines.naming import batch_partitions

        found = self.instance.get_dynamic_partitions(batch_partitions(PIPELINE).name)
        return sorted(p for p in found if not p.startswith("snap-"))

    def stream_phase(self) -> tuple[str | None, str | None]:
        """(phase, batch) of the streaming run's loop as the event log tells it: ``capture`` while the newest
        planned batch has no ``changes`` materialization, ``apply`` while it has one but some sink table has
        none for it, else None (between batches). Read after a kill, it is where the run died."""
        from dbmazz_pipelines.naming import changes_key

        partitions = self.log_partitions()
        if not partitions:
            return None, None
        newest = partitions[-1]
        if newest not in self.instance.get_materialized_partitions(changes_key(PIPELINE)):
            return "capture", newest
        if any(newest not in self.instance.get_materialized_partitions(k) for k in self.sink_keys()):
            return "apply", newest
        return None, newest

    def kill_stream_run(self, phase: str, timeout: float = 60) -> Kill:
        """SIGKILL the streaming run's process at a random moment of ``phase`` (capture or apply) of one of its
        batches; ``hit`` says whether the run died in that phase (read from the event log after the kill)."""
        import dagster as dg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.stream_runs([dg.DagsterRunStatus.STARTED]):
                run_id = record.dagster_run.run_id
                pid = self._run_pid(run_id)
                if pid is None or not _alive(pid) or self.stream_phase()[0] != phase:
                    continue
                if phase == "apply":  # a random moment of it (a capture lasts a few tens of ms: at once)
                    time.sleep(self.random.uniform(0, 0.1))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                at = time.time()
                time.sleep(0.5)
                died_in, batch = self.stream_phase()
                return Kill(
                    phase,
                    f"run {run_id[:8]} pid {pid}",
                    at,
                    died_in == phase,
                    f"died in {died_in or 'between batches'} of batch {batch}",
                )
            time.sleep(0.02)
        raise NoRunInPhase(f"no streaming run was in its {phase} phase within {timeout:.0f}s")

    def unapplied(self) -> list[str]:
        """Batch partitions (log and snapshot) some sink table has no materialization for."""
        from dbmazz_pipelines.naming import batch_partitions

        partitions = set(self.instance.get_dynamic_partitions(batch_partitions(PIPELINE).name))
        missing: set[str] = set()
        for key in self.sink_keys():
            missing |= partitions - set(self.instance.get_materialized_partitions(key))
        return sorted(missing)

    def drain_stream(self, timeout: float = 240, retry_after: float = 8.0) -> list[str]:
        """``drain`` for ``run_mode: stream``: until the checkpoint reaches the source's position now and every
        batch partition is materialized for every sink table (a killed streaming run is marked failed by run
        monitoring; its retry or the sensor's next streaming run finishes its batches). Snapshot batches run
        as batch runs: those whose retries are spent are re-executed as in ``drain``."""
        target = self.source_position()
        reexecuted: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            failed = self.failed_partitions(older_than=retry_after)
            if failed:
                reexecuted += self.reexecute(failed)
            checkpoint = self.checkpoint()
            caught_up = checkpoint is not None and checkpoint.version >= target.version
            if caught_up and not self.unapplied() and not self.failed_partitions():
                return reexecuted
            time.sleep(1)
        raise TimeoutError(
            f"the streaming pipeline did not drain within {timeout:.0f}s: checkpoint "
            f"{self.checkpoint()}, target {target}, unapplied {self.unapplied()[:5]}, streaming runs "
            f"{[(r.dagster_run.run_id[:8], r.dagster_run.status.value) for r in self.stream_runs()[:5]]}"
            f" (daemon log: {self.workdir}/daemon.log)"
        )

    # ---- comparison

    @contextlib.contextmanager
    def _sinks(self) -> Iterator[dict]:
        from dbmazz_connectors.core import create_sink

        made = {}
        try:
            for name, config in self.sinks_config.items():
                password = self.env.get(config.get("password_env", ""), None)
                options = {k: v for k, v in config.items() if k != "password_env"}
                sink = create_sink(
                    {**options, **({"password": password} if password else {}), "pipeline": PIPELINE}
                )
                sink.connect()
                made[name] = sink
            yield made
        finally:
            for sink in made.values():
                sink.disconnect()

    def _source_reader(self, stack: contextlib.ExitStack):
        from tests.e2e.test_real_clients import mysql_reader, pg_reader

        if self.source_kind == "postgres":
            import psycopg

            assert self.pg
            return pg_reader(stack.enter_context(psycopg.connect(self.pg.url(DATABASE), autocommit=True)))
        import pymysql

        assert self.my
        return mysql_reader(
            stack.enter_context(contextlib.closing(pymysql.connect(**self.my.connect_kwargs(DATABASE))))
        )

    def schemas(self) -> list:
        from dbmazz_connectors.core import create_source

        config = {k: v for k, v in self.source_config.items() if k != "password_env"}
        source = create_source(
            {
                **config,
                "password": self.env["FAULTS_SOURCE_PASSWORD"],
                "pipeline": PIPELINE,
                "tables": self.tables,
            }
        )
        source.connect()
        try:
            found = source.table_schemas()
            return [found[t] for t in self.tables]
        finally:
            source.disconnect()

    def compare(self, window: int = 100_000) -> Comparison:
        """Every sink against the source, row by row in key windows (the real-client tests' readers)."""
        from tests.e2e.test_real_clients import sink_reader

        result = Comparison()
        schemas = self.schemas()
        with contextlib.ExitStack() as stack, self._sinks() as sinks:
            source = self._source_reader(stack)
            readers = {name: sink_reader(name, sink) for name, sink in sinks.items()}
            result.diffs = {name: 0 for name in readers}
            for schema in schemas:
                top = max(reader.max_key(schema) for reader in (source, *readers.values()))
                for lo in range(0, top + 1, window):
                    want = source.rows(schema, lo, lo + window)
                    result.rows += len(want)
                    for name, reader in readers.items():
                        count, examples = _count_diffs(reader.rows(schema, lo, lo + window), want)
                        result.diffs[name] += count
                        result.examples += [f"{name} {schema.qualified_name}: {e}" for e in examples]
        return result


# ---- trials


@dataclass
class Trial:
    """One randomized trial: the kill, how long recovery took, the comparison after the drain."""

    number: int
    source: str
    phase: str
    write_seconds: int
    kill: Kill | None = None
    recovery_seconds: float | None = None
    drain_seconds: float = 0.0
    reexecuted: int = 0
    rows_compared: int = 0
    diffs: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    client_transactions: int = 0
    error: str | None = None

    def as_dict(self) -> dict:
        kill = self.kill
        return {
            "trial": self.number,
            "source": self.source,
            "phase": self.phase,
            "write_seconds": self.write_seconds,
            "target": kill.target if kill else None,
            "kill_point_hit": bool(kill and kill.hit),
            "kill_detail": kill.detail if kill else None,
            "recovery_seconds": self.recovery_seconds,
            "drain_seconds": round(self.drain_seconds, 1),
            "reexecuted_runs": self.reexecuted,
            "rows_compared": self.rows_compared,
            "diffs": self.diffs,
            "diff_examples": self.examples[:6],
            "client_transactions": self.client_transactions,
            "error": self.error,
        }


def _recovery_seconds(rig: FaultRig, kill: Kill) -> float | None:
    """From the kill to the end of the first batch run started after it that succeeded."""
    import dagster as dg

    ends = [
        r.end_time
        for r in rig.runs([dg.DagsterRunStatus.SUCCESS])
        if r.start_time and r.end_time and r.start_time >= kill.at
    ]
    return round(min(ends) - kill.at, 1) if ends else None


def run_trial(rig: FaultRig, number: int, phase: str, write_seconds: int) -> Trial:
    """Write for ``write_seconds`` with the real client, kill at a random moment in ``phase``, recover, drain,
    compare. Exceptions of the pipeline are recorded in the trial (``error``), not raised."""
    trial = Trial(number, rig.source_kind, phase, write_seconds)
    client = rig.client(write_seconds)
    try:
        time.sleep(rig.random.uniform(2, max(3, write_seconds * 0.6)))
        if phase in ("capture", "apply"):
            for _ in range(
                3
            ):  # a step can end between the last look and the kill: then kill the next run too
                trial.kill = rig.kill_run(phase, timeout=max(30, write_seconds))
                if trial.kill.hit:
                    break
                rig.log(f"  trial {number}: missed ({trial.kill.detail}), killing again")
        elif phase == "daemon":
            trial.kill = rig.kill_daemon(rig.random.uniform(0.5, 5))
        else:
            which = rig.random.choice(["source", "sink"])
            for _ in range(3):  # no run was in progress when the server went down: take it down again
                trial.kill = rig.kill_server(which, rig.random.uniform(0.5, 3))
                if trial.kill.hit:
                    break
                rig.log(f"  trial {number}: missed ({trial.kill.detail}), killing the {which} again")
            if which == "source" and not client.running():  # the client lost its connections: write on
                left = max(1, int(write_seconds - (time.monotonic() - client.started)))
                client.kill()
                client = rig.client(left)
        rig.log(
            f"  trial {number}: killed {trial.kill.target} ({phase}, hit={trial.kill.hit}, {trial.kill.detail})"
        )
        with contextlib.suppress(Exception):  # a client cut off by a server kill ends with an error
            trial.client_transactions = client.wait(write_seconds + 60).transactions
        _drain_and_compare(rig, trial, _recovery_seconds)
    except NoRunInPhase as exc:
        trial.error = str(exc)
        client.wait(write_seconds + 60)
        rig.drain()
    except Exception as exc:  # noqa: BLE001 - recorded: the bench reports every trial
        trial.error = f"{type(exc).__name__}: {exc}"
    finally:
        client.kill()
        with contextlib.suppress(OSError):
            os.remove(client.log_path)
    rig.log(
        f"  trial {number}: recovery {trial.recovery_seconds}s, drain {trial.drain_seconds:.1f}s, "
        f"{trial.rows_compared} rows compared, diffs {trial.diffs}, error {trial.error}"
    )
    return trial


def _drain_and_compare(
    rig: FaultRig, trial: Trial, recovery: Callable[[FaultRig, Kill], float | None]
) -> None:
    """The end of a trial once its kill landed: drain the pipeline, time the recovery, compare sinks and source."""
    assert trial.kill is not None
    began = time.monotonic()
    trial.reexecuted = len(rig.drain())
    trial.drain_seconds = time.monotonic() - began
    trial.recovery_seconds = recovery(rig, trial.kill)
    comparison = rig.compare()
    trial.rows_compared, trial.diffs, trial.examples = comparison.rows, comparison.diffs, comparison.examples


def _stream_recovery_seconds(rig: FaultRig, kill: Kill) -> float | None:
    """From the kill to the first batch a later streaming run applied to a sink table."""
    import dagster as dg

    firsts = []
    for key in rig.sink_keys():
        found = rig.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_timestamp=kill.at + 0.5), limit=1, ascending=True
        ).records
        firsts += [r.timestamp for r in found]
    return round(min(firsts) - kill.at, 1) if firsts else None


def run_stream_trial(rig: FaultRig, number: int, phase: str, write_seconds: int, attempts: int = 3) -> Trial:
    """``run_trial`` for ``run_mode: stream``: the real client writes, the streaming run's process is SIGKILLed
    while it captures or applies a batch (again, up to ``attempts`` times, if it died elsewhere), run monitoring
    marks it failed, a new streaming run (its retry or the sensor's) goes on; drain, compare."""
    assert rig.run_mode == "stream" and phase in ("capture", "apply"), (rig.run_mode, phase)
    trial = Trial(number, rig.source_kind, phase, write_seconds)
    client = rig.client(write_seconds)
    try:
        time.sleep(rig.random.uniform(2, max(3, write_seconds * 0.4)))
        for _ in range(attempts):
            trial.kill = rig.kill_stream_run(phase, timeout=max(60, write_seconds))
            if trial.kill.hit:
                break
            rig.log(f"  trial {number}: missed ({trial.kill.detail}), killing the next streaming run")
            if not client.running():  # the next streaming run needs changes to capture: write on
                trial.client_transactions += client.wait(10).transactions
                with contextlib.suppress(OSError):
                    os.remove(client.log_path)
                client = rig.client(write_seconds)
        assert trial.kill is not None
        rig.log(
            f"  trial {number}: killed {trial.kill.target} ({phase}, hit={trial.kill.hit}, {trial.kill.detail})"
        )
        trial.client_transactions += client.wait(write_seconds + 120).transactions
        _drain_and_compare(rig, trial, _stream_recovery_seconds)
    except Exception as exc:  # noqa: BLE001 - recorded, as in run_trial
        trial.error = f"{type(exc).__name__}: {exc}"
    finally:
        client.kill()
        with contextlib.suppress(OSError):
            os.remove(client.log_path)
    rig.log(
        f"  trial {number}: recovery {trial.recovery_seconds}s, drain {trial.drain_seconds:.1f}s, "
        f"{trial.rows_compared} rows compared, diffs {trial.diffs}, error {trial.error}"
    )
    return trial


def wait_initial_load(rig: FaultRig, timeout: float = 240) -> float:
    """The sensor sets the source up and runs the initial load; returns when it has drained."""
    began = time.monotonic()
    rig.wait_done(lambda: rig.checkpoint() is not None, timeout, "the capture sensor's first tick")
    rig.drain(timeout=timeout)
    return time.monotonic() - began


# ---- outages


def slot_wal(rig: FaultRig) -> tuple[int, int]:
    """(WAL retained by the pipeline's slot: current LSN - restart_lsn, the current LSN), as the capture role."""
    import psycopg

    assert rig.pg
    url = rig.pg.url(DATABASE, user="faults_capture", password=rig.env["FAULTS_SOURCE_PASSWORD"])
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint FROM pg_replication_slots WHERE slot_name = %s",
            (f"dbmazz_{PIPELINE}",),
        ).fetchone()
    return int(row[0]), int(row[1])


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Outage:
    """A sink server down while the client writes: what capture did meanwhile, the slot's retained WAL, catch-up."""

    sink: str
    outage_seconds: float
    wal_written_during_outage: int = 0
    peak_retained_wal_during_outage: int = 0
    peak_retained_wal: int = 0
    retained_wal_at_outage_end: int = 0
    retained_wal_after_catch_up: int = 0
    checkpoint_moved_during_outage: bool = False
    batches_planned_during_outage: int = 0
    changelog_bytes_before: int = 0
    changelog_bytes_after_outage: int = 0
    failed_runs_during_outage: int = 0  # runs created while the sink was down that failed
    failed_runs_since_outage: int = 0  # runs that failed after the sink went down (retried or re-executed)
    sink_errors: list[str] = field(default_factory=list)
    catch_up_seconds: float = 0.0
    reexecuted: int = 0
    client_transactions: int = 0
    rows_compared: int = 0
    diffs: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, int]] = field(
        default_factory=list
    )  # (seconds since outage start, retained bytes)

    def as_dict(self) -> dict:
        mib = 1024 * 1024
        return {
            "sink": self.sink,
            "outage_seconds": round(self.outage_seconds, 1),
            "wal_written_during_outage_mib": round(self.wal_written_during_outage / mib, 2),
            "peak_retained_wal_during_outage_mib": round(self.peak_retained_wal_during_outage / mib, 2),
            "peak_retained_wal_mib": round(self.peak_retained_wal / mib, 2),
            "retained_wal_at_outage_end_mib": round(self.retained_wal_at_outage_end / mib, 2),
            "retained_wal_after_catch_up_mib": round(self.retained_wal_after_catch_up / mib, 2),
            "checkpoint_moved_during_outage": self.checkpoint_moved_during_outage,
            "batches_planned_during_outage": self.batches_planned_during_outage,
            "changelog_mib_before": round(self.changelog_bytes_before / mib, 2),
            "changelog_mib_after_outage": round(self.changelog_bytes_after_outage / mib, 2),
            "failed_runs_during_outage": self.failed_runs_during_outage,
            "failed_runs_since_outage": self.failed_runs_since_outage,
            "sink_errors": self.sink_errors[:3],
            "catch_up_seconds": round(self.catch_up_seconds, 1),
            "reexecuted_runs": self.reexecuted,
            "client_transactions": self.client_transactions,
            "rows_compared": self.rows_compared,
            "diffs": self.diffs,
            "retained_wal_mib_every_10s": [(round(t), round(b / mib, 2)) for t, b in self.samples[::10]],
        }


def sink_outage(
    rig: FaultRig,
    outage_seconds: float,
    *,
    lead_seconds: float = 5,
    tail_seconds: float = 10,
    rate: int | None = None,
) -> Outage:
    """Stop the ClickHouse sink (SIGKILL) while the client writes, keep it down ``outage_seconds``, bring it back
    on the same port and data; drain (failed partitions re-executed as a user does) and compare."""
    import threading

    import dagster as dg

    from dbmazz_pipelines.naming import batch_partitions

    assert rig.ch is not None and rig.source_kind == "postgres" and rig.workdir
    result = Outage("clickhouse", outage_seconds)
    partitions = lambda: len(rig.instance.get_dynamic_partitions(batch_partitions(PIPELINE).name))  # noqa: E731
    stop = threading.Event()
    began = [0.0, 0.0]  # outage start, end (monotonic)
    samples: list[tuple[float, int, int]] = []

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                retained, lsn = slot_wal(rig)
                samples.append((time.monotonic(), retained, lsn))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    client = rig.client(int(lead_seconds + outage_seconds + tail_seconds), rate=rate)
    sampler.start()
    try:
        time.sleep(lead_seconds)
        checkpoint_before = rig.checkpoint()
        planned_before = partitions()
        result.changelog_bytes_before = _tree_bytes(rig.workdir / "changelog")
        kill_at = time.time()
        rig.ch.kill()
        began[0] = time.monotonic()
        time.sleep(outage_seconds)
        began[1] = time.monotonic()
        checkpoint_after = rig.checkpoint()
        result.checkpoint_moved_during_outage = checkpoint_after.version > checkpoint_before.version
        result.batches_planned_during_outage = partitions() - planned_before
        result.changelog_bytes_after_outage = _tree_bytes(rig.workdir / "changelog")
        rig.ch.start_again()
        back_at = time.time()
        result.client_transactions = client.wait(tail_seconds + 120).transactions
        catch_up = time.monotonic()
        result.reexecuted = len(rig.drain(timeout=max(300, outage_seconds * 2)))
        result.catch_up_seconds = time.monotonic() - catch_up
        failed = [
            r
            for r in rig.runs([dg.DagsterRunStatus.FAILURE])
            if kill_at <= r.create_timestamp.timestamp() <= back_at
        ]
        result.failed_runs_during_outage = len(failed)
        noticed = [r for r in rig.runs([dg.DagsterRunStatus.FAILURE]) if (r.end_time or 0) >= kill_at]
        result.failed_runs_since_outage = len(noticed)
        for record in noticed[:3]:
            result.sink_errors += [
                f"{step}: {cls}: {msg}" for step, cls, msg in rig.step_errors(record.dagster_run.run_id)
            ]
        result.retained_wal_after_catch_up = slot_wal(rig)[0]
    finally:
        stop.set()
        sampler.join(5)
        client.kill()
        with contextlib.suppress(OSError):
            os.remove(client.log_path)
    during = [s for s in samples if began[0] <= s[0] <= began[1]]
    if during:
        result.wal_written_during_outage = during[-1][2] - during[0][2]
        result.peak_retained_wal_during_outage = max(s[1] for s in during)
        result.retained_wal_at_outage_end = during[-1][1]
    result.peak_retained_wal = max((s[1] for s in samples), default=0)
    result.samples = [(round(t - began[0], 1), b) for t, b, _ in samples]
    comparison = rig.compare()
    result.rows_compared, result.diffs = comparison.rows, comparison.diffs
    return result


@dataclass
class SourceRestart:
    """A source restarted by its administrator while a run captured: what that run's failure said, then the drain."""

    run_id: str = ""
    cut_during_capture: bool = False
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (step, error class, message)
    converged_seconds: float | None = None
    rows_compared: int = 0
    diffs: dict[str, int] = field(default_factory=dict)


def _stop_dagster_idle(rig: FaultRig, timeout: float = 120) -> None:
    """Stop the daemon and its runs once no batch run is in flight (a run left STARTED would hold the sensor)."""
    rig.wait_done(lambda: not rig.in_flight(), timeout, "an idle moment between batch runs", interval=0.2)
    rig.stop_dagster()
    for record in rig.in_flight():  # started in the instant between: a user marks it failed in the UI
        rig.instance.report_run_failed(record.dagster_run, "stopped with the daemon by the test")


def _finished(rig: FaultRig, run_id: str):
    run = rig.instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def source_restart(
    rig: FaultRig, backlog_seconds: float = 10, down_seconds: float = 2, attempts: int = 3
) -> SourceRestart:
    """Let a backlog build (daemon stopped, client writing), start the daemon, and when its run is capturing,
    restart the source the way an administrator does (PostgreSQL ``pg_ctl stop -m fast``, MariaDB a clean
    shutdown) then start it again. Retried (``attempts``) when the capture ended before the server went down.
    Then the drain (run_retries re-executes the failed run) and the comparison."""
    import dagster as dg

    server = rig.source_server
    outcome = SourceRestart()
    for _ in range(attempts):
        _stop_dagster_idle(rig)
        client = rig.client(int(backlog_seconds + 60))
        try:
            time.sleep(backlog_seconds)
            rig.start_daemon()
            deadline = time.monotonic() + 120
            run_id = None
            while run_id is None and time.monotonic() < deadline:
                for record in rig.running():
                    if rig._current_step(record.dagster_run.run_id) == CAPTURE_STEP:
                        run_id = record.dagster_run.run_id
                        break
                time.sleep(0.05)
            assert run_id is not None, "no run reached its capture step"
            (server.stop_fast if rig.source_kind == "postgres" else server.shutdown)()
            down_at = time.time()
            started, ended = rig._steps(run_id)
            time.sleep(down_seconds)
            server.start_again()
        finally:
            client.kill()
            with contextlib.suppress(OSError):
                os.remove(client.log_path)
        run = rig.wait_done(partial(_finished, rig, run_id), 120, f"run {run_id[:8]} to end")
        errors = rig.step_errors(run_id)
        outcome.run_id = run_id
        outcome.errors = errors
        outcome.cut_during_capture = run.status == dg.DagsterRunStatus.FAILURE and any(
            step == CAPTURE_STEP for step, _, _ in errors
        )
        if outcome.cut_during_capture:
            break
        rig.log(f"  the capture ended before the server went down (steps ended: {sorted(ended)}); again")
    rig.drain()
    ends = [
        r.end_time
        for r in rig.runs([dg.DagsterRunStatus.SUCCESS])
        if r.start_time and r.start_time >= down_at
    ]
    outcome.converged_seconds = round(min(ends) - down_at, 1) if ends else None
    comparison = rig.compare()
    outcome.rows_compared, outcome.diffs = comparison.rows, comparison.diffs
    return outcome
