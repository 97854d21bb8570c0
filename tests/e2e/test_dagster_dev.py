"""End to end: ``dagster dev`` (webserver + daemon) loads a shop that holds data, then replicates its live
changes into DuckDB; the UI renders its lineage."""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import duckdb
import psycopg
import pytest

from infra._common import free_port
from infra.demo import prepare, start_dagster, stop_process_group
from infra.postgres import PostgresServer
from infra.shop import ShopWorkload

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def _sink_orders(path: Path) -> list[tuple] | None:
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            return conn.execute(
                "SELECT id, quantity, amount, status FROM public.orders ORDER BY id"
            ).fetchall()
    except (duckdb.IOException, duckdb.CatalogException):
        return None  # a batch is being applied (file locked) or the first batch has not landed yet


@pytest.fixture
def running_demo(tmp_path):
    with PostgresServer() as pg:
        env = prepare(
            pg, tmp_path / "demo", orders=500
        )  # rows before the pipeline: the initial load brings them
        port = free_port()
        log = tmp_path / "dagster.log"
        proc = start_dagster(env, port, log)
        try:
            _wait_http(f"http://127.0.0.1:{port}/server_info", 120)
            yield pg, port, tmp_path / "demo" / "shop.duckdb", log
        finally:
            stop_process_group(proc)
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copy(log, ARTIFACTS / "dagster-dev.log")


def test_sensor_keeps_sink_caught_up_and_ui_shows_lineage(running_demo):
    pg, port, duckdb_path, log = running_demo
    workload = ShopWorkload(pg.url("shop"), rate=40).start()
    time.sleep(20)
    workload.stop()
    assert workload.error is None and workload.changes > 0
    with psycopg.connect(pg.url("shop")) as conn:
        expected = conn.execute("SELECT id, quantity, amount, status FROM orders ORDER BY id").fetchall()
    deadline = time.monotonic() + 150  # the initial load's batches take turns with the workload's
    while time.monotonic() < deadline and _sink_orders(duckdb_path) != expected:
        time.sleep(1)
    assert _sink_orders(duckdb_path) == expected, f"sink did not catch up; see {log}"
    _check_lineage_page(port)


def _check_lineage_page(port: int) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed for the UI check: apt-get install chromium")
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/asset-groups/shop", wait_until="networkidle")
        page.get_by_text("changes").first.wait_for(timeout=30_000)
        skip = page.get_by_role("button", name="Skip")  # the first-visit community dialog
        if skip.count():
            skip.first.click()
        for name in ("public.orders", "public.customers", "DuckDB", "Postgres"):
            page.get_by_text(name).first.wait_for(timeout=10_000)
        page.wait_for_timeout(1000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "lineage.png"))
        _check_sink_table_page(page, port)
        browser.close()
    assert not errors, f"browser console errors: {errors}"


def _check_sink_table_page(page, port: int) -> None:
    """A sink table's page shows its column schema (``dagster/column_schema``): the sink's columns and types."""
    page.goto(f"http://127.0.0.1:{port}/assets/shop/duckdb/public.orders", wait_until="networkidle")
    columns = page.get_by_text("Columns").first
    columns.wait_for(timeout=30_000)
    for column in ("customer_id", "quantity", "amount", "status", "created_at"):
        page.get_by_text(column, exact=True).first.wait_for(timeout=10_000)
    columns.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "sink-table-columns.png"), full_page=True)
