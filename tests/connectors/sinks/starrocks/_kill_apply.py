"""Apply change-log batches to the StarRocks sink and SIGKILL this process in the middle of one batch.

    python -m tests.connectors.sinks.starrocks._kill_apply '<json>'

JSON: ``sink`` (create_sink config), ``changelog``, ``pipeline``, ``batches`` (ids, in order),
``kill_batch`` (id) and ``kill_at`` (text the fatal statement starts with; a Stream Load reads as
``LOAD <table>``). The sink's calls (``execute``, ``load``) are wrapped: once the server has run
the matching statement or committed the matching load of ``kill_batch``, the process kills itself.
No failpoint lives in production code.
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
    driver_execute, driver_load = sink.execute, sink.load

    def maybe_die(statement: str) -> None:
        if current["batch"] == spec["kill_batch"] and statement.lstrip().startswith(spec["kill_at"]):
            os.kill(os.getpid(), signal.SIGKILL)

    def execute(sql, params=None):
        driver_execute(sql, params)
        maybe_die(sql)

    def load(target, headers, body, source_table):
        result = driver_load(target, headers, body, source_table)
        maybe_die(f"LOAD {target}")
        return result

    sink.execute, sink.load = execute, load
    for batch_id in spec["batches"]:
        current["batch"] = batch_id
        apply_batch(changelog, sink, spec["pipeline"], batch_id)
    sink.disconnect()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
