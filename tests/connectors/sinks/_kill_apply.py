"""Apply change-log batches to a sink and SIGKILL this process in the middle of one batch's write.

    python -m tests.connectors.sinks._kill_apply '<json>'

JSON: ``sink`` (create_sink config), ``changelog``, ``pipeline``, ``batches`` (ids, in order),
``kill_batch`` (id) and ``kill_at`` (text the fatal statement starts with, or ``COMMIT``: just
after the batch's transaction committed). The sink's ``execute``
(its driver call) is wrapped: after the driver has run the matching statement of ``kill_batch``,
inside the open transaction, the process kills itself. No failpoint lives in production code.
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
    driver_execute = sink.execute

    def execute(sql, params=()):
        result = driver_execute(sql, params)
        if current["batch"] == spec["kill_batch"] and sql.lstrip().startswith(spec["kill_at"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    def commit():
        driver_commit()
        if current["batch"] == spec["kill_batch"] and spec["kill_at"] == "COMMIT":
            os.kill(os.getpid(), signal.SIGKILL)

    driver_commit = sink.commit
    sink.execute = execute
    sink.commit = commit
    for batch_id in spec["batches"]:
        current["batch"] = batch_id
        apply_batch(changelog, sink, spec["pipeline"], batch_id)
    sink.disconnect()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
