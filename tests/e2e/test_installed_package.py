"""The installed package on its own: a fresh virtualenv outside the repository, ``pip install <repo>[dagster,...]``,
a dg project whose pipeline is a scaffolded ``defs.yaml``; ``dg check defs`` passes and ``dg dev`` replicates the
shop into DuckDB. Nothing from the repository's tree (infra/, tests/) is importable in that virtualenv."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import psycopg
import pytest
import yaml

from infra._common import free_port
from infra.shop import SHOP_TABLES, create_replication_role, create_shop, seed_customers, seed_orders

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def _fresh_venv(where: Path) -> tuple[Path, dict[str, str]]:
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DBMAZZ_PIPELINES")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", NO_COLOR="1")
    _run([str(venv / "bin" / "pip"), "install", "-q", f"{ROOT}[dagster,postgres,duckdb]"], where, env)
    return venv, env


def _project(root: Path) -> Path:
    """What ``create-dagster project`` makes, reduced to what dg needs."""
    (root / "myproj" / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [project]
        name = "myproj"
        version = "0.1.0"

        [tool.dg]
        directory_type = "project"

        [tool.dg.project]
        root_module = "myproj"
        """)
    )
    (root / "myproj" / "__init__.py").write_text("")
    (root / "myproj" / "defs" / "__init__.py").write_text("")
    (root / "myproj" / "definitions.py").write_text(
        textwrap.dedent("""\
        from pathlib import Path

        import dagster as dg


        @dg.definitions
        def defs():
            return dg.load_from_defs_folder(project_root=Path(__file__).parent.parent)
        """)
    )
    return root


def _sink_orders(path: Path) -> list[tuple] | None:
    try:
        with duckdb.connect(str(path), read_only=True) as conn:
            return conn.execute(
                "SELECT id, customer_id, quantity, amount, status FROM public.orders ORDER BY id"
            ).fetchall()
    except (duckdb.IOException, duckdb.CatalogException):
        return None


def test_a_fresh_virtualenv_with_the_package_and_a_defs_yaml_replicates(pg_db, tmp_path):
    create_shop(pg_db.url)
    seed_customers(pg_db.url)
    seed_orders(pg_db.url, 200)  # rows before the pipeline: its initial load brings them
    password = "Fresh-venv-1"
    role = f"cap_{pg_db.name}"
    create_replication_role(pg_db.url, role, password, "dbmazz_shop", SHOP_TABLES)  # the default publication
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    venv, env = _fresh_venv(outside)
    probe = "import importlib.util as u; print(u.find_spec('infra'), u.find_spec('tests'))"
    assert _run([str(venv / "bin" / "python"), "-c", probe], outside, env).split() == ["None", "None"]

    project = _project(outside / "project")
    sink = project / "shop.duckdb"
    env.update(SHOP_PG_PASSWORD=password, DAGSTER_HOME=str(project / ".dagster_home"))
    (project / ".dagster_home").mkdir()
    (project / ".dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dg_cli = str(venv / "bin" / "dg")
    _run(
        [
            dg_cli,
            "scaffold",
            "defs",
            "dbmazz_pipelines.DbmazzPipelineComponent",
            "shop",
            "--source-url",
            f"postgresql://{role}@127.0.0.1:{pg_db.server.port}/{pg_db.name}",
            "--password-env",
            "SHOP_PG_PASSWORD",
            "--tables",
            ",".join(SHOP_TABLES),
            "--sink-url",
            f"duckdb:///{sink}",
        ],
        project,
        env,
    )
    defs_yaml = project / "myproj" / "defs" / "shop" / "defs.yaml"
    text = defs_yaml.read_text()
    assert "{{ env.SHOP_PG_PASSWORD }}" in text and password not in text
    document = yaml.safe_load(text)  # what a user fills in after scaffolding: a slot, a change log folder
    document["attributes"]["source"]["slot"] = f"dbmazz_{pg_db.name}"
    document["attributes"]["changelog"] = str(project / "changelog")
    defs_yaml.write_text(yaml.safe_dump(document))
    _run([dg_cli, "check", "defs"], project, env)
    assert "shop/duckdb/public.orders" in _run([dg_cli, "list", "defs"], project, env)

    log = open(tmp_path / "dg-dev.log", "w")
    dev = subprocess.Popen(
        [dg_cli, "dev", "--port", str(free_port())],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with psycopg.connect(pg_db.url) as conn:
            expected = conn.execute(
                "SELECT id, customer_id, quantity, amount, status FROM orders ORDER BY id"
            ).fetchall()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and _sink_orders(sink) != expected:
            assert dev.poll() is None, f"dg dev exited ({dev.returncode}); see {tmp_path / 'dg-dev.log'}"
            time.sleep(2)
        assert _sink_orders(sink) == expected, f"the sink did not catch up; see {tmp_path / 'dg-dev.log'}"
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
        log.close()
    assert dev.returncode is not None
