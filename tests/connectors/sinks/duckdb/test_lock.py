"""DuckDB allows one process per file: the sink waits briefly for another holder, then says so."""

import subprocess
import sys

import pytest

from dbmazz_connectors.core import TransientError, create_sink


def _hold(path, seconds: float) -> subprocess.Popen:
    code = (
        f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('locked', flush=True); "
        f"time.sleep({seconds}); c.close()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_reader_holding_the_file_briefly_is_waited_for(tmp_path):
    path = tmp_path / "sink.duckdb"
    holder = _hold(path, 1.0)
    sink = create_sink({"url": f"duckdb:///{path}", "lock_wait_seconds": 10})
    try:
        sink.connect()
        assert sink.row_count("public.orders") == 0
    finally:
        sink.disconnect()
        holder.wait()


def test_a_file_locked_past_the_wait_is_a_transient_error(tmp_path):
    path = tmp_path / "sink.duckdb"
    holder = _hold(path, 30)
    try:
        with pytest.raises(TransientError, match=r"stayed locked by another process for 0.5s") as error:
            create_sink({"url": f"duckdb:///{path}", "lock_wait_seconds": 0.5}).connect()
        assert error.value.transient
    finally:
        holder.kill()
        holder.wait()
