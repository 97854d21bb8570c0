"""Apply change-log batches to a sink and SIGKILL this process in the middle of one batch.

    python -m tests.connectors.sinks.conformance._kill '<json>'

JSON: ``sink`` (create_sink config), ``hooks`` ("module:function"), ``changelog``, ``pipeline``, ``batches``
(ids, in order), ``kill_batch`` (id) and ``kill_at`` (text the fatal statement starts with). ``hooks`` wraps
the sink's driver calls (below, one per kind of sink) so that ``die(statement)`` runs after each one: once the
server has run the matching statement of ``kill_batch``, the process kills itself. No failpoint lives in
production code.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from collections.abc import Callable

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch

Die = Callable[[str], None]


def sql_hooks(sink, die: Die) -> None:
    """Sinks with one transaction per batch (DuckDB, PostgreSQL, the SQLite example): ``execute`` and ``commit``;
    ``COMMIT`` is the point just after the batch's transaction committed."""
    driver_execute, driver_commit = sink.execute, sink.commit

    def execute(sql, params=()):
        result = driver_execute(sql, params)
        die(sql)
        return result

    def commit():
        driver_commit()
        die("COMMIT")

    sink.execute, sink.commit = execute, commit


def clickhouse_hooks(sink, die: Die) -> None:
    """ClickHouse: ``command`` and ``insert`` (an insert reads as ``INSERT INTO <table>``)."""
    driver_command, driver_insert = sink.command, sink.insert

    def command(sql, settings=None):
        result = driver_command(sql, settings)
        die(sql)
        return result

    def insert(table, data, token):
        driver_insert(table, data, token)
        die(f"INSERT INTO {table}")

    sink.command, sink.insert = command, insert


def starrocks_hooks(sink, die: Die) -> None:
    """StarRocks: ``execute`` over the MySQL protocol and ``load`` (a committed Stream Load reads as ``LOAD <table>``)."""
    driver_execute, driver_load = sink.execute, sink.load

    def execute(sql, params=None):
        driver_execute(sql, params)
        die(sql)

    def load(target, headers, body, source_table):
        result = driver_load(target, headers, body, source_table)
        die(f"LOAD {target}")
        return result

    sink.execute, sink.load = execute, load


def main(spec: dict) -> None:
    sink = create_sink(spec["sink"])
    sink.connect()
    changelog = ChangeLog(spec["changelog"])
    current = {"batch": None}

    def die(statement: str) -> None:
        if current["batch"] == spec["kill_batch"] and statement.lstrip().startswith(spec["kill_at"]):
            os.kill(os.getpid(), signal.SIGKILL)

    module, _, function = spec["hooks"].partition(":")
    getattr(importlib.import_module(module), function)(sink, die)
    for batch_id in spec["batches"]:
        current["batch"] = batch_id
        apply_batch(changelog, sink, spec["pipeline"], batch_id)
    sink.disconnect()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
