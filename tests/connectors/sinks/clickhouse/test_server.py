"""The throw-away ClickHouse (infra/clickhouse.py): real users, deduplication tokens, no orphan servers."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from infra._common import port_open

_SCRIPT = """
import json, sys, time
from infra.clickhouse import ClickHouseServer
server = ClickHouseServer().start()
print(json.dumps({"port": server.port, "child": server._proc.pid, "base": server.base}), flush=True)
time.sleep(600)
"""


def test_a_wrong_password_is_refused(clickhouse_server):
    import clickhouse_connect

    with pytest.raises(Exception, match="Authentication failed"):
        clickhouse_connect.get_client(
            host="127.0.0.1", port=clickhouse_server.port, username="dbmazz", password="wrong"
        )
    client = clickhouse_server.client()
    assert client.query("SELECT currentUser()").result_rows == [("dbmazz",)]


def test_a_repeated_insert_with_the_same_token_adds_nothing(ch_db):
    client = ch_db.client()
    client.command(
        "CREATE TABLE t (k Int64) ENGINE = MergeTree ORDER BY k "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    rows = pa.table({"k": pa.array(range(1000), pa.int64())})
    for _ in range(2):
        client.insert_arrow("t", rows, settings={"insert_deduplication_token": "batch-1"})
    client.insert_arrow("t", rows, settings={"insert_deduplication_token": "batch-2"})
    assert client.query("SELECT count() FROM t").result_rows == [(2000,)]


def test_the_server_dies_with_the_process_that_started_it():
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        ),
    )
    info = json.loads(proc.stdout.readline())
    assert port_open(info["port"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (port_open(info["port"]) or _alive(info["child"])):
        time.sleep(0.1)
    assert not _alive(info["child"]) and not port_open(info["port"])
    import shutil

    shutil.rmtree(info["base"], ignore_errors=True)  # the killed parent could not clean up


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
