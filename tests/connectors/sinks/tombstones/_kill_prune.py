"""Prune a sink's tombstones and SIGKILL this process right after the first statement starting with ``kill_at``.

    python -m tests.connectors.sinks.tombstones._kill_prune '{"sink": {...}, "below": 3000, "kill_at": "ALTER TABLE"}'

The hook wraps the sink's ``command`` (ClickHouse); no failpoint lives in production code.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from dbmazz_connectors.core import create_sink


def main(spec: dict) -> None:
    sink = create_sink(spec["sink"])
    sink.connect()
    driver_command = sink.command

    def command(sql, settings=None):
        result = driver_command(sql, settings)
        if sql.startswith(spec["kill_at"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    sink.command = command
    sink.prune_tombstones(None, spec["below"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
