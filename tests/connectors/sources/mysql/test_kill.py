"""A capture SIGKILLed in the middle of a range, then run again: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.engine import capture_range

from ._my import assert_folded_equals_source

ROOT = Path(__file__).resolve().parents[4]


def test_capture_killed_mid_range_then_rerun(mysql_db, make_source, tmp_path):
    conn = mysql_db.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), n INT)")
    source = make_source(["t"], chunk_rows=2_000)
    start = source.current_position()
    with conn.cursor() as cur:
        for lo in range(1, 120_001, 10_000):  # 12 transactions
            cur.execute(f"INSERT INTO t SELECT seq, MD5(seq), 0 FROM seq_{lo}_to_{lo + 9_999}")
            cur.execute(f"UPDATE t SET n = n + 1 WHERE id BETWEEN {lo} AND {lo + 4_999}")
        cur.execute("DELETE FROM t WHERE id % 10 = 0")
    end = source.current_position()
    root = str(tmp_path / "changelog")
    args = {
        "source": {"url": source_url(source), "tables": list(source.config.tables), "chunk_rows": 2_000},
        "changelog": root,
        "part_rows": 2_000,
        "start": start.to_dict(),
        "end": end.to_dict(),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.connectors.sources.mysql._capture_child"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        text=True,
    )
    child.stdin.write(json.dumps(args))
    child.stdin.close()
    table_dir = tmp_path / "changelog" / "p1" / f"{mysql_db.name}.t"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(table_dir.glob("*/part-*.parquet"))) < 3:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    changelog = ChangeLog(root, part_rows=2_000)
    assert list(table_dir.glob("*/part-*.parquet")), "the child was killed after writing parts"
    assert changelog.batches("p1") == [], "killed before its manifest: the batch does not exist"

    manifest = capture_range(source, changelog, "p1", start, end)  # the re-run reads the same range again
    assert manifest.tables[f"{mysql_db.name}.t"].ops == {
        "insert": 120_000,
        "update": 60_000,
        "delete": 12_000,
    }
    assert_folded_equals_source(mysql_db, changelog, "t")


def source_url(source) -> str:
    c = source.config
    return f"mysql://{c.user}:{c.password}@{c.host}:{c.port}/{c.database}"
