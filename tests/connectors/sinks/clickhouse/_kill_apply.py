"""Apply change-log batches to the ClickHouse sink and SIGKILL this process in the middle of one batch.

    python -m tests.connectors.sinks.clickhouse._kill_apply '<json>'

JSON: ``sink`` (create_sink config), ``changelog``, ``pipeline``, ``batches`` (ids, in order),
``kill_batch`` (id) and ``kill_at`` (text the fatal statement starts with; inserts read as
``INSERT INTO <table>``). The sink's driver calls (``command``, ``insert``) are wrapped: once the
server has run the matching statement of ``kill_batch``, the process kills itself. No failpoint
lives in production code.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import create_sink
from dbmazz_connectors.engine import apply_batch


def main(spec: dict) -> None:
    sink = create_sink(spec["sink"])
    sink.connect()
    changelog = ChangeLog(spec["changelog"])
    current = {"batch": None}
    driver_command, driver_insert = sink.command, sink.insert

    def maybe_die(statement: str) -> None:
        if current["batch"] == spec["kill_batch"] and statement.lstrip().startswith(spec["kill_at"]):
            os.kill(os.getpid(), signal.SIGKILL)

    def command(sql, settings=None):
        result = driver_command(sql, settings)
        maybe_die(sql)
        return result

    def insert(table, data, token):
        driver_insert(table, data, token)
        maybe_die(f"INSERT INTO {table}")

    sink.command, sink.insert = command, insert
    for batch_id in spec["batches"]:
        current["batch"] = batch_id
        apply_batch(changelog, sink, spec["pipeline"], batch_id)
    sink.disconnect()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
