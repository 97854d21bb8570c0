"""After PostgreSQL invalidates the slot, the documented fix (drop it, restart with a re-sync) converges."""

from __future__ import annotations

import re
import secrets

import psycopg
import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import PreflightError, SlotInvalidatedError, create_sink
from dbmazz_connectors.engine import apply_batch, capture_range
from dbmazz_connectors.snapshots import SnapshotSettings, restart_after_lost_log, run_snapshot
from dbmazz_connectors.sources.postgres import PostgresSource
from infra.postgres import PostgresServer
from infra.shop import create_replication_role

from ._scenario import POSTGRES, Dialect, assert_tables_equal, seed_tables
from .conftest import _duckdb_rows


def test_invalidated_slot_then_restart_with_a_resync(tmp_path):
    with PostgresServer(settings={"max_slot_wal_keep_size": "1MB", "max_wal_size": "64MB"}) as server:
        dialect = Dialect(connect=lambda: psycopg.connect(server.url()), schema="public", **POSTGRES)
        seed_tables(dialect)
        password = secrets.token_hex(8)  # the documented least-privilege capture role
        create_replication_role(server.url(), "dbmazz_capture", password, "dbmazz_p", dialect.tables)
        url = server.url(user="dbmazz_capture", password=password)
        source = PostgresSource.from_config({"url": url, "pipeline": "p", "tables": dialect.tables})
        source.connect()
        log = ChangeLog(str(tmp_path / "log"))
        sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p"})
        sink.connect()
        settings = SnapshotSettings(chunk_rows=500, chunks_per_batch=4, parallelism=2)
        first = restart_after_lost_log(
            source, log, "p", dialect.tables, settings
        )  # also the plain first start
        for manifest in run_snapshot(source, log, first, settings):
            apply_batch(log, sink, "p", manifest.batch_id)
        checkpoint = log.checkpoint("p")
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE filler (id int PRIMARY KEY, pad text)")
            conn.execute("DELETE FROM items WHERE id % 4 = 0")  # lost with the WAL: only a re-sync brings it
            for round_ in range(40):
                conn.execute(
                    "INSERT INTO filler SELECT g, repeat('x', 500) FROM generate_series(%s::int, %s::int) g",
                    (round_ * 10_000, round_ * 10_000 + 9_999),
                )
                conn.execute("SELECT pg_switch_wal()")
                conn.execute("CHECKPOINT")
                if conn.execute("SELECT wal_status FROM pg_replication_slots").fetchone()[0] == "lost":
                    break
            conn.execute("UPDATE items SET n = -1 WHERE id % 5 = 0")
        with pytest.raises(SlotInvalidatedError):
            capture_range(source, log, "p", checkpoint, source.current_position())
        with pytest.raises(PreflightError) as failure:
            restart_after_lost_log(source, log, "p", dialect.tables, settings)
        drop = re.search(r"SELECT pg_drop_replication_slot\('dbmazz_p'\)", failure.value.problems[0].fix)
        assert drop is not None, failure.value.problems[0].fix
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(drop.group(0))  # the fix, as printed
        plan = restart_after_lost_log(source, log, "p", dialect.tables, settings)
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("UPDATE items SET label = 'after restart' WHERE id % 7 = 0")
        for manifest in run_snapshot(source, log, plan, settings):
            apply_batch(log, sink, "p", manifest.batch_id)
        cdc = capture_range(source, log, "p", log.checkpoint("p"), source.current_position())
        apply_batch(log, sink, "p", cdc.batch_id)
        assert_tables_equal(dialect, lambda table, columns: _duckdb_rows(sink, table, columns))
        sink.disconnect()
        source.disconnect()
