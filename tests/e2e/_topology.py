"""The production topology on one machine: several pipelines under one Dagster instance, as deployed.

``Topology()`` starts throw-away servers from ``infra/`` and wires them the way infra/dagster/dagster.yaml does:

- Dagster's run, event-log and schedule storage in PostgreSQL (dagster-postgres), in a database ``dagster``
  owned by a role that is not a superuser;
- the QueuedRunCoordinator with production's per-pipeline limit (tag ``dbmazz/pipeline``, one run per value),
  and production's ``run_retries``;
- ``dagster-daemon run`` as a process of its own, launching every run as a process of its own
  (DefaultRunLauncher: the one thing that differs from production, where a container or a pod is the process);
- three pipelines at once: two PostgreSQL databases (the shop, written by ``ShopWorkload``; pgbench) and a
  MariaDB (sysbench), into DuckDB and ClickHouse, each source read by a least-privilege capture role;
- the change log in an S3-compatible object store over HTTP (moto's server, ``infra/s3.py``), its credentials
  in the environment only.

Leaving the ``with`` block stops the daemon (and every process carrying its DAGSTER_HOME), the servers, and
removes the temporary directory.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from infra.clickhouse import ClickHouseServer
from infra.clients import (
    PGBENCH_TABLES,
    ClientRun,
    pgbench_init,
    start_pgbench,
    start_sysbench,
    sysbench_prepare,
)
from infra.mariadb import MariaDbServer
from infra.postgres import PostgresServer
from infra.s3 import S3Server
from infra.shop import (
    SHOP_TABLES,
    ShopWorkload,
    create_replication_role,
    create_shop,
    seed_customers,
    seed_orders,
)
from tests.faults._harness import _alive, _count_diffs

ROOT = Path(__file__).resolve().parents[2]
CHANGELOG_PREFIX = "changelog"
SYSBENCH_TABLES = 2
SYSBENCH_ROWS = 5_000
CH_USER = "topology_sinker"


@dataclass
class Pipeline:
    """One pipeline of the topology: its source kind and database, tables, and sinks' configuration."""

    name: str
    kind: str  # postgres, mariadb
    database: str
    tables: list[str]
    sinks: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    @property
    def job(self) -> str:
        return f"{self.name}_batch"

    @property
    def password_env(self) -> str:
        return f"{self.name.upper()}_CAPTURE_PASSWORD"


@dataclass
class Writers:
    """The writers of a phase: the shop's thread and the real clients' processes."""

    shop: ShopWorkload
    clients: list[ClientRun]

    def stop(self, timeout: float) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.wait(timeout)
        self.shop.stop()
        for client in self.clients:
            client.kill()
            with contextlib.suppress(OSError):
                os.remove(client.log_path)


def _normal(value):
    """One value as the comparison sees it: instants in UTC without a zone (the sinks keep UTC, the source
    hands back aware values), JSON as its sorted text (PostgreSQL hands back objects, sinks text)."""
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.UTC).replace(tzinfo=None)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in "{[":
        with contextlib.suppress(ValueError):
            return json.dumps(json.loads(value), sort_keys=True)
    return value


def _normal_rows(rows: list[tuple]) -> list[tuple]:
    return [tuple(_normal(v) for v in row) for row in rows]


class Topology:
    """See the module doc."""

    def __init__(self, log=print, poll_interval: int = 2) -> None:
        self.log = log
        self.poll_interval = poll_interval
        self.workdir: Path | None = None
        self.pg: PostgresServer | None = None
        self.my: MariaDbServer | None = None
        self.ch: ClickHouseServer | None = None
        self.s3: S3Server | None = None
        self.env: dict[str, str] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.daemon: subprocess.Popen | None = None
        self._instance = None
        self._servers: list = []

    # ---- set-up and clean-up

    def __enter__(self) -> Topology:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _server(self, server):
        self._servers.append(server)
        server.start()
        return server

    def start(self) -> None:
        began = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="dbmazz-topology-"))
        (self.workdir / "tmp").mkdir()
        self.pg = self._server(PostgresServer())
        self.my = self._server(MariaDbServer({"binlog-row-metadata": "FULL"}))
        self.env["TOPOLOGY_CH_PASSWORD"] = secrets.token_hex(12)
        grants = [f"GRANT ALL ON {db}.*" for db in ("shop_sink", "maria_sink")] + ["GRANT TABLE ENGINE ON *"]
        self.ch = self._server(ClickHouseServer(users={CH_USER: (self.env["TOPOLOGY_CH_PASSWORD"], grants)}))
        self.s3 = self._server(S3Server())
        self.env.update(self.s3.env())
        self._dagster_storage()
        for pipeline in (self._shop(), self._bench(), self._maria()):
            self.pipelines[pipeline.name] = pipeline
        self._write_config()
        self.start_daemon()
        self.log(f"topology ready in {time.monotonic() - began:.1f}s: {self.workdir}")

    def _dagster_storage(self) -> None:
        """A database ``dagster`` owned by a role that may do nothing else (no superuser, no CREATEDB)."""
        import psycopg

        assert self.pg
        password = secrets.token_hex(12)
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE dagster_storage LOGIN PASSWORD '{password}'")
            conn.execute("CREATE DATABASE dagster OWNER dagster_storage")
        self.env.update(
            DAGSTER_PG_HOST=self.pg.host,
            DAGSTER_PG_PORT=str(self.pg.port),
            DAGSTER_PG_DB="dagster",
            DAGSTER_PG_USER="dagster_storage",
            DAGSTER_PG_PASSWORD=password,
        )

    def _pg_pipeline(self, name: str, database: str, tables: list[str]) -> Pipeline:
        assert self.pg
        pipeline = Pipeline(name, "postgres", database, tables)
        password = self.env[pipeline.password_env] = secrets.token_hex(12)
        role = f"{name}_capture"
        create_replication_role(self.pg.url(database), role, password, f"dbmazz_{name}", tables)
        pipeline.source = {
            "url": f"postgresql://{role}@127.0.0.1:{self.pg.port}/{database}",
            "password_env": pipeline.password_env,
            "slot": f"dbmazz_{name}",
            "publication": f"dbmazz_{name}",
        }
        return pipeline

    def _shop(self) -> Pipeline:
        import psycopg

        assert self.pg and self.ch and self.workdir
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
        create_shop(self.pg.url("shop"))
        seed_customers(self.pg.url("shop"))
        seed_orders(self.pg.url("shop"), 2_000)
        pipeline = self._pg_pipeline("shop", "shop", list(SHOP_TABLES))
        pipeline.sinks = {"duckdb": self._duckdb("shop"), "clickhouse": self._clickhouse("shop_sink")}
        return pipeline

    def _bench(self) -> Pipeline:
        import psycopg

        assert self.pg
        with psycopg.connect(self.pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        pgbench_init(self.pg, "bench", 1)
        pipeline = self._pg_pipeline("bench", "bench", [f"public.{t}" for t in PGBENCH_TABLES])
        pipeline.sinks = {"duckdb": self._duckdb("bench")}
        return pipeline

    def _maria(self) -> Pipeline:
        import pymysql

        assert self.my
        pipeline = Pipeline(
            "maria", "mariadb", "maria", [f"maria.sbtest{n}" for n in range(1, SYSBENCH_TABLES + 1)]
        )
        password = self.env[pipeline.password_env] = secrets.token_hex(12)
        admin = pymysql.connect(**self.my.connect_kwargs())
        with admin.cursor() as cur:
            cur.execute("CREATE DATABASE maria")
            cur.execute(f"CREATE USER 'maria_capture'@'%' IDENTIFIED BY '{password}'")
            cur.execute("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'maria_capture'@'%'")
            cur.execute("GRANT SELECT ON `maria`.* TO 'maria_capture'@'%'")
        admin.close()
        sysbench_prepare(self.my, "maria", SYSBENCH_TABLES, SYSBENCH_ROWS)
        pipeline.source = {
            "url": f"mysql://maria_capture@127.0.0.1:{self.my.port}/",
            "password_env": pipeline.password_env,
        }
        pipeline.sinks = {"duckdb": self._duckdb("maria"), "clickhouse": self._clickhouse("maria_sink")}
        return pipeline

    def _duckdb(self, name: str) -> dict:
        assert self.workdir
        # not <name>.duckdb: DuckDB calls the catalog after the file, and a catalog named like the source schema
        # (MariaDB: the database) makes the sink's schema-qualified names ambiguous
        return {"url": f"duckdb:///{self.workdir}/{name}_sink.duckdb", "lock_wait_seconds": 30}

    def _clickhouse(self, database: str) -> dict:
        assert self.ch
        self.ch.client().command(f"CREATE DATABASE IF NOT EXISTS {database}")
        return {
            "url": f"clickhouse://{CH_USER}@127.0.0.1:{self.ch.port}/{database}",
            "password_env": "TOPOLOGY_CH_PASSWORD",
        }

    @property
    def changelog_uri(self) -> str:
        assert self.s3
        return self.s3.uri(CHANGELOG_PREFIX)

    def instance_config(self) -> dict:
        """infra/dagster/dagster.yaml with the run launcher left at its default (a process per run), the
        storage's port from the environment, and the queue looked at every second (tests wait less)."""
        config = yaml.safe_load((ROOT / "infra" / "dagster" / "dagster.yaml").read_text())
        config.pop("run_launcher")
        config["storage"]["postgres"]["postgres_db"]["port"] = {"env": "DAGSTER_PG_PORT"}
        config["run_coordinator"].setdefault("config", {})["dequeue_interval_seconds"] = 1
        config["run_monitoring"] |= {"start_timeout_seconds": 60, "poll_interval_seconds": 5}
        return config

    def _write_config(self) -> None:
        assert self.workdir
        home = self.workdir / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(self.instance_config(), sort_keys=False))
        document = {
            "pipelines": {
                p.name: {
                    "source": p.source,
                    "tables": p.tables,
                    "sinks": p.sinks,
                    "changelog": self.changelog_uri,
                    "poll_interval_seconds": self.poll_interval,
                    "check_interval_minutes": 59,
                    "run_mode": "batch",  # the rehearsal counts and times one run per batch
                    "snapshot": {
                        "chunk_rows": 50_000,
                        "chunks_per_batch": 4,
                    },  # one snapshot batch per table set
                }
                for p in self.pipelines.values()
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

    def _our_processes(self) -> list[int]:
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

    def stop_daemon(self, timeout: float = 20) -> None:
        """SIGTERM to the daemon's group, SIGKILL to whatever carries this DAGSTER_HOME after ``timeout``."""
        import signal

        if self.daemon is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.daemon.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in self._our_processes()):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.daemon.pid, signal.SIGKILL)
        for pid in self._our_processes():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.daemon.wait(5)
        self.daemon = None

    def close(self) -> None:
        try:
            if self._instance is not None:
                self._instance.dispose()
                self._instance = None
            self.stop_daemon()
        finally:
            for server in reversed(self._servers):
                with contextlib.suppress(Exception):
                    server.stop()
            self._servers.clear()
            if self.workdir is not None and not os.environ.get(
                "DBMAZZ_KEEP_WORKDIR"
            ):  # kept to read its logs
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    # ---- Dagster, as a user reads it

    @property
    def instance(self):
        import dagster as dg

        if self._instance is None:
            saved = {k: os.environ.get(k) for k in self.env}
            os.environ.update(self.env)  # the instance's storage settings come from the environment
            try:
                self._instance = dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])
            finally:
                for key, value in saved.items():
                    os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        return self._instance

    def runs(self, pipeline: Pipeline, statuses=None) -> list:
        import dagster as dg

        return list(
            self.instance.get_run_records(dg.RunsFilter(job_name=pipeline.job, statuses=statuses or []))
        )

    def run_pid(self, run_id: str) -> int | None:
        """The run process's pid, from the launcher's engine event ('Started process for run (pid: N).')."""
        import dagster as dg

        for record in self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ENGINE_EVENT
        ).records:
            message = record.event_log_entry.dagster_event.message or ""
            if message.startswith("Started process for run (pid: "):
                return int(message.split("pid: ", 1)[1].rstrip(")."))
        return None

    def changelog(self):
        from dbmazz_connectors.changelog import ChangeLog

        saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
        os.environ.update({k: self.env[k] for k in saved})
        try:
            return ChangeLog(self.changelog_uri)
        finally:
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)

    # ---- writers

    def start_writers(self, seconds: int) -> Writers:
        assert self.pg and self.my
        shop = ShopWorkload(self.pg.url("shop"), rate=100).start()
        bench = start_pgbench(self.pg, "bench", 2, seconds, rate=50)
        maria = start_sysbench(self.my, "maria", SYSBENCH_TABLES, SYSBENCH_ROWS, 1, seconds)
        return Writers(shop, [bench, maria])

    # ---- drain and comparison

    def _source(self, pipeline: Pipeline):
        from dbmazz_connectors.core import create_source

        config = {k: v for k, v in pipeline.source.items() if k != "password_env"}
        return create_source(
            {
                **config,
                "password": self.env[pipeline.password_env],
                "pipeline": pipeline.name,
                "tables": pipeline.tables,
            }
        )

    def source_position(self, pipeline: Pipeline):
        source = self._source(pipeline)
        source.connect()
        try:
            return source.current_position()
        finally:
            source.disconnect()

    def unfinished(self, pipeline: Pipeline) -> list[str]:
        """Batch partitions without a successful run yet."""
        import dagster as dg

        from dbmazz_pipelines.naming import batch_partitions

        done = {
            r.dagster_run.tags.get("dagster/partition")
            for r in self.runs(pipeline, [dg.DagsterRunStatus.SUCCESS])
        }
        partitions = self.instance.get_dynamic_partitions(batch_partitions(pipeline.name).name)
        return [p for p in partitions if p not in done]

    def in_flight(self, pipeline: Pipeline) -> list:
        from dbmazz_pipelines.sensors import IN_FLIGHT

        return self.runs(pipeline, IN_FLIGHT)

    def drained(self, pipeline: Pipeline, target) -> bool:
        checkpoint = self.changelog().checkpoint(pipeline.name)
        return (
            checkpoint is not None
            and checkpoint.version >= target.version
            and not self.in_flight(pipeline)
            and not self.unfinished(pipeline)
        )

    def drain(self, timeout: float = 240) -> float:
        """Until every pipeline's checkpoint reaches its source's position now and every batch ran; seconds."""
        began = time.monotonic()
        targets = {name: self.source_position(p) for name, p in self.pipelines.items()}
        waiting = dict(self.pipelines)
        while waiting and time.monotonic() - began < timeout:
            for name in [n for n, p in waiting.items() if self.drained(p, targets[n])]:
                del waiting[name]
            time.sleep(1)
        if waiting:
            states = {
                n: (
                    self.changelog().checkpoint(n),
                    targets[n],
                    len(self.in_flight(p)),
                    self.unfinished(p)[:3],
                )
                for n, p in waiting.items()
            }
            raise TimeoutError(
                f"not drained within {timeout:.0f}s (checkpoint, target, in flight, unfinished): "
                f"{states} (daemon log: {self.workdir}/daemon.log)"
            )
        return time.monotonic() - began

    @contextlib.contextmanager
    def _sinks(self, pipeline: Pipeline):
        from dbmazz_connectors.core import create_sink

        made = {}
        try:
            for name, config in pipeline.sinks.items():
                password = self.env.get(config.get("password_env", ""))
                options = {k: v for k, v in config.items() if k != "password_env"}
                sink = create_sink(
                    {**options, **({"password": password} if password else {}), "pipeline": pipeline.name}
                )
                sink.connect()
                made[name] = sink
            yield made
        finally:
            for sink in made.values():
                sink.disconnect()

    def _source_reader(self, pipeline: Pipeline, stack: contextlib.ExitStack):
        from tests.e2e.test_real_clients import mysql_reader, pg_reader

        if pipeline.kind == "postgres":
            import psycopg

            assert self.pg
            return pg_reader(
                stack.enter_context(psycopg.connect(self.pg.url(pipeline.database), autocommit=True))
            )
        import pymysql

        assert self.my
        conn = pymysql.connect(**self.my.connect_kwargs(pipeline.database))
        return mysql_reader(stack.enter_context(contextlib.closing(conn)))

    def compare(self, pipeline: Pipeline, window: int = 100_000) -> tuple[int, dict[str, int], list[str]]:
        """Every sink of ``pipeline`` against its source, row by row: (rows compared, diffs per sink, examples)."""
        from tests.e2e.test_real_clients import sink_reader

        source = self._source(pipeline)
        source.connect()
        try:
            found = source.table_schemas()
            schemas = [found[t] for t in pipeline.tables]
        finally:
            source.disconnect()
        rows, diffs, examples = 0, {}, []
        with contextlib.ExitStack() as stack, self._sinks(pipeline) as sinks:
            reader = self._source_reader(pipeline, stack)
            readers = {name: sink_reader(name, sink) for name, sink in sinks.items()}
            diffs = dict.fromkeys(readers, 0)
            for schema in schemas:
                top = max(r.max_key(schema) for r in (reader, *readers.values()))
                for lo in range(0, top + 1, window):
                    want = _normal_rows(reader.rows(schema, lo, lo + window))
                    rows += len(want)
                    for name, sink_side in readers.items():
                        got = _normal_rows(sink_side.rows(schema, lo, lo + window))
                        count, found_examples = _count_diffs(got, want)
                        diffs[name] += count
                        examples += [f"{name} {schema.qualified_name}: {e}" for e in found_examples]
        return rows, diffs, examples

    # ---- secrets

    def secrets(self) -> dict[str, str]:
        """Every secret of the topology by the name of its environment variable."""
        return {k: v for k, v in self.env.items() if "PASSWORD" in k or k == "AWS_SECRET_ACCESS_KEY"}
