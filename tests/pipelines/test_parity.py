"""Row-count parity under a live writer: silent while the sink is only behind, fails on rows deleted in the sink."""

import json
import random
import subprocess
import sys
import threading
import time

import dagster as dg
import duckdb
import psycopg

from ._harness import churn, make_shop_pipeline, start_shop


class _Writer(threading.Thread):
    """Live load on orders: inserts, and updates and deletes of the orders it inserted (rows above ``floor``)."""

    def __init__(self, url: str, floor: int) -> None:
        super().__init__(daemon=True)
        self.url, self.floor, self.stop, self.writes = url, floor, threading.Event(), 0

    def run(self) -> None:
        r = random.Random(3)
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                roll = r.random()
                if roll < 0.6:
                    conn.execute(
                        "INSERT INTO orders (customer_id, quantity, amount, status) VALUES (%s, 1, 9.5, 'new')",
                        (r.randint(1, 100),),
                    )
                elif roll < 0.85:
                    conn.execute(
                        "UPDATE orders SET status = 'paid' WHERE id = (SELECT id FROM orders WHERE id > %s "
                        "ORDER BY random() LIMIT 1)",
                        (self.floor,),
                    )
                else:
                    conn.execute(
                        "DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE id > %s "
                        "ORDER BY random() LIMIT 1)",
                        (self.floor,),
                    )
                self.writes += 1
                time.sleep(0.01)


CHECKS_SCRIPT = """
import json, os, sys
import dagster as dg
from dagster._core.instance import InstanceRef
from dbmazz_connectors.config import PipelineConfig
from dbmazz_pipelines import checks
from dbmazz_pipelines.definitions import build_definitions

checks._parity_wait = lambda pipeline: 60.0
config = PipelineConfig.model_validate_json(open(sys.argv[1]).read())
defs = build_definitions({config.name: config})
with dg.DagsterInstance.from_ref(InstanceRef.from_dir(sys.argv[2])) as instance:
    result = defs.resolve_job_def(config.name + "_checks").execute_in_process(instance=instance)
    out = [{"table": e.asset_key.path[-1], "check": e.check_name, "passed": e.passed, "severity": e.severity.value,
            "description": e.description, "metadata": {k: v.value for k, v in e.metadata.items()}}
           for e in result.get_asset_check_evaluations()]
print("RESULT " + json.dumps(out, default=str))
"""


def _checks_while_the_pipeline_runs(shop, defs, instance, tmp_path) -> dict:
    """The checks job in its own process (as the schedule runs it) while the sensor's batches go on."""
    (tmp_path / "pipeline.json").write_text(shop.config.model_dump_json())
    (tmp_path / "run_checks.py").write_text(CHECKS_SCRIPT)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(tmp_path / "run_checks.py"),
            str(tmp_path / "pipeline.json"),
            instance.root_directory,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    while proc.poll() is None:
        for request in shop.tick(defs, instance).run_requests:
            shop.run_batch(defs, instance, request.partition_key)
        time.sleep(0.2)
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-2000:]
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return {e["table"]: e for e in json.loads(line[len("RESULT ") :]) if e["check"] == "row_count_parity"}


def _max_order_id(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM orders").fetchone()[0]


def test_parity_is_silent_on_lag_and_fails_on_rows_deleted_in_the_sink(pg_db, tmp_path, monkeypatch):
    shop = make_shop_pipeline(pg_db, tmp_path, monkeypatch)
    defs = shop.definitions()
    with dg.instance_for_test() as instance:
        start_shop(shop, defs, instance)
        churn(pg_db.url, 1, n=60)
        shop.drive(defs, instance)
        writer = _Writer(pg_db.url, _max_order_id(pg_db.url))
        writer.start()
        try:
            time.sleep(1)
            lagging = _checks_while_the_pipeline_runs(shop, defs, instance, tmp_path)
            for table, evaluation in lagging.items():
                assert evaluation["passed"] and evaluation["metadata"]["verdict"] == "equal", (
                    table,
                    evaluation["description"],
                    evaluation["metadata"],
                )
            orders = lagging["public.orders"]["metadata"]
            # the sink was behind the source when it was compared, and its count differed from the source's
            assert orders["sink_behind_by_changes"] > 0
            assert orders["source_rows"] != orders["sink_rows"]

            # damage: three old orders (the writer never touches them again) deleted in the sink by hand
            with duckdb.connect(str(shop.duckdb_path)) as sink:
                sink.execute(
                    "DELETE FROM public.orders WHERE id IN (SELECT id FROM public.orders ORDER BY id LIMIT 3)"
                )
            damaged = _checks_while_the_pipeline_runs(shop, defs, instance, tmp_path)
        finally:
            writer.stop.set()
            writer.join()
        assert writer.writes > 100
        orders = damaged["public.orders"]
        assert not orders["passed"] and orders["severity"] == "ERROR"
        # 3 rows deleted; a batch applied while the check counts can make one look explained (counted as one of
        # the captured changes between the reads): the check still fails, naming rows missing in the sink
        assert 1 <= orders["metadata"]["unexplained_rows"] <= 3, orders["metadata"]
        assert "rows missing in the sink" in orders["description"], orders["description"]
        assert damaged["public.customers"]["passed"]
