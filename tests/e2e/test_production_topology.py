"""The production topology rehearsed on one machine (tests/e2e/_topology.py): dagster-postgres storage, the
queued run coordinator with its per-pipeline limit, ``dagster-daemon run`` launching each run as a process of
its own, three pipelines at once (two PostgreSQL databases, a MariaDB; into DuckDB and ClickHouse), the change
log in an S3-compatible store over HTTP. Under writers, then drained: every sink equals its source row by row,
each pipeline ran one run at a time, each run in its own process, the manifests are in the bucket, and no
secret appears in a log, in Dagster's storage or in the instance's folder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] (dev extra) serves the S3 API")
pytest.importorskip("dagster_postgres", reason="dagster-postgres (dagster extra) stores the instance")

# the default run writes briefly (the initial loads and the drains take most of its time); the slow one a minute
SHORT_WRITE = int(os.environ.get("DBMAZZ_TOPOLOGY_WRITE_SECONDS", "15"))


def _overlaps(records) -> list[tuple[str, str]]:
    """Pairs of runs whose [start, end] intervals intersect."""
    spans = sorted((r.start_time, r.end_time, r.dagster_run.run_id) for r in records)
    return [(a[2][:8], b[2][:8]) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]


def _storage_text(topology) -> str:
    """Every row of every table of Dagster's storage database, as text (runs, events, ticks, instigators)."""
    import psycopg

    url = topology.pg.url("dagster")
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        return "\n".join(
            row[0] for t in tables for row in conn.execute(f"SELECT t::text FROM {t} t").fetchall()
        )


def _files_text(folder: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace")
        for p in folder.rglob("*")
        if p.is_file() and p.stat().st_size < 50_000_000
    )


@pytest.mark.parametrize("write_seconds", [SHORT_WRITE, pytest.param(60, marks=pytest.mark.slow)])
def test_three_pipelines_under_writers_on_postgres_storage_and_s3(write_seconds):
    import dagster as dg
    import pyarrow.fs as pafs

    from tests.e2e._topology import CHANGELOG_PREFIX, Topology

    began = time.monotonic()
    with Topology() as topology:
        assert (
            "?" in topology.changelog_uri
            and topology.env["AWS_SECRET_ACCESS_KEY"] not in topology.changelog_uri
        )
        initial = topology.drain(timeout=300)  # the sensors set the sources up and run the initial loads
        writers = topology.start_writers(write_seconds)
        time.sleep(write_seconds)
        writers.stop(timeout=30)
        assert writers.shop.error is None and writers.shop.changes > 0
        drained = topology.drain(timeout=300)

        for pipeline in topology.pipelines.values():
            rows, diffs, examples = topology.compare(pipeline)
            assert rows > 0 and set(diffs) == set(pipeline.sinks)
            assert sum(diffs.values()) == 0, f"{pipeline.name}: {diffs} {examples[:6]}"

        instance = topology.instance  # the test reads the same dagster.yaml as the daemon
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        daemon_pid = topology.daemon.pid
        pids: dict[int, str] = {}
        for pipeline in topology.pipelines.values():
            records = topology.runs(pipeline, [dg.DagsterRunStatus.SUCCESS])
            assert len(records) >= 2, (
                f"{pipeline.name}: an initial load and captures, got {len(records)} runs"
            )
            for record in records:
                pid = topology.run_pid(record.dagster_run.run_id)
                assert pid is not None and pid != daemon_pid, f"run {record.dagster_run.run_id}: pid {pid}"
                assert pid not in pids, f"runs {pids[pid]} and {record.dagster_run.run_id} share pid {pid}"
                pids[pid] = record.dagster_run.run_id
                assert record.dagster_run.tags["dbmazz/pipeline"] == pipeline.name
                queued = instance.get_records_for_run(
                    record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED
                ).records
                assert queued, f"run {record.dagster_run.run_id} did not go through the queue"
            finished = [r for r in topology.runs(pipeline) if r.start_time and r.end_time]
            assert not _overlaps(finished), f"{pipeline.name}: runs at the same time {_overlaps(finished)}"
        # runs of different pipelines did overlap: the limit is per pipeline, not one run for the whole instance
        every = [
            r for p in topology.pipelines.values() for r in topology.runs(p) if r.start_time and r.end_time
        ]
        assert _overlaps(every), "no two pipelines ever ran at the same time"

        bucket = topology.s3.filesystem()
        for pipeline in topology.pipelines.values():
            found = bucket.get_file_info(
                pafs.FileSelector(
                    f"{topology.s3.bucket}/{CHANGELOG_PREFIX}/{pipeline.name}/_batches", allow_not_found=True
                )
            )
            manifests = {Path(i.path).stem for i in found if i.path.endswith(".json")}
            assert manifests == {m.batch_id for m in topology.changelog().batches(pipeline.name)} != set()

        storage = _storage_text(topology)
        assert "dbmazz/pipeline" in storage  # the dump does hold the runs
        files = _files_text(topology.workdir / "dagster_home") + (topology.workdir / "daemon.log").read_text()
        # and every login, as the PostgreSQL server logged it
        files += Path(topology.pg.log_path).read_text(errors="replace")
        for name, secret in topology.secrets().items():
            assert secret not in storage, f"{name} is in Dagster's storage"
            assert secret not in files, f"{name} is in a log or in DAGSTER_HOME"
        topology.log(
            f"topology: initial loads {initial:.1f}s, wrote {write_seconds}s, drained in {drained:.1f}s, "
            f"{len(pids)} runs, total {time.monotonic() - began:.1f}s"
        )
