"""Child process of the SIGKILL test: capture one range into the change log (arguments as JSON on stdin)."""

import json
import sys

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core.positions import position_from_dict
from dbmazz_connectors.engine import capture_range
from dbmazz_connectors.sources.mysql import MySqlSource

if __name__ == "__main__":
    args = json.loads(sys.stdin.read())
    source = MySqlSource.from_config(args["source"])
    source.connect()
    changelog = ChangeLog(args["changelog"], part_rows=args["part_rows"])
    start, end = position_from_dict(args["start"]), position_from_dict(args["end"])
    capture_range(source, changelog, "p1", start, end)
