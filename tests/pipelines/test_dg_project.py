"""The ``dg`` command line with the component: scaffold a pipeline into a fresh dg project, check and list its
definitions; this repository is a dg project whose configured pipelines (pipelines.yaml) load beside components."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DG = Path(sys.executable).parent / "dg"


def _dg(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    venv = Path(sys.executable).parent.parent
    environ = {k: v for k, v in os.environ.items() if k not in ("DBMAZZ_PIPELINES", "SOURCE_URL")}
    environ.update(
        {
            "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "DAGSTER_HOME": str(cwd / ".dagster_home"),
            "NO_COLOR": "1",
            **(env or {}),
        }
    )
    (cwd / ".dagster_home").mkdir(exist_ok=True)
    (cwd / ".dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [str(DG), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"dg {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _new_project(root: Path) -> Path:
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


def _asset_keys(listed: str) -> set[str]:
    start = listed.index("{")
    return {a["asset_key"] for a in json.loads(listed[start:]).get("assets", [])}


def test_dg_scaffolds_checks_and_lists_a_pipeline(tmp_path):
    project = _new_project(tmp_path / "proj")
    _dg(
        project,
        "scaffold",
        "defs",
        "dbmazz_pipelines.DbmazzPipelineComponent",
        "shop",
        "--source-url",
        "postgresql://dbmazz@db.internal:5432/shop",
        "--password-env",
        "SHOP_PG_PASSWORD",
        "--tables",
        "public.orders,public.customers",
        "--sink-url",
        "duckdb:///shop.duckdb",
    )
    written = yaml.safe_load((project / "myproj" / "defs" / "shop" / "defs.yaml").read_text())
    assert written["type"] == "dbmazz_pipelines.DbmazzPipelineComponent"
    assert written["attributes"]["source"]["password"] == "{{ env.SHOP_PG_PASSWORD }}"
    assert written["attributes"]["tables"] == ["public.orders", "public.customers"]
    checked = _dg(project, "check", "defs")  # SHOP_PG_PASSWORD is not set: loading never reads a secret
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    keys = _asset_keys(_dg(project, "list", "defs", "--json").stdout)
    assert {
        "shop/source/public.orders",
        "shop/changes",
        "shop/duckdb/public.orders",
        "shop/duckdb/public.customers",
    } <= keys


def test_this_repository_is_a_dg_project_that_loads_configured_pipelines(tmp_path):
    pipelines = tmp_path / "pipelines.yaml"
    pipelines.write_text(
        yaml.safe_dump(
            {
                "pipelines": {
                    "legacy": {
                        "source": {
                            "url": "postgresql://dbmazz@db.internal/shop",
                            "password_env": "LEGACY_PW",
                        },
                        "tables": ["public.orders"],
                        "sinks": {"duckdb": {"url": f"duckdb:///{tmp_path}/l.duckdb"}},
                    }
                }
            }
        )
    )
    keys = _asset_keys(_dg(ROOT, "list", "defs", "--json", env={"DBMAZZ_PIPELINES": str(pipelines)}).stdout)
    assert {"legacy/changes", "legacy/duckdb/public.orders"} <= keys
