"""``dbmazz check`` run on a pipelines.yaml written for one source, its password in the environment."""

from __future__ import annotations

import yaml

from dbmazz_connectors.cli import main


def dbmazz_check(
    tmp_path,
    monkeypatch,
    capsys,
    url: str,
    password: str,
    tables: list[str],
    pipeline: str = "p1",
    sinks: dict | None = None,
    **source,
) -> tuple[int, str]:
    """(exit code, output) of ``dbmazz check`` for ``pipeline`` reading ``tables`` from ``url`` (no password);
    ``sinks`` default to one DuckDB file."""
    monkeypatch.setenv("DBMAZZ_TEST_SOURCE_PASSWORD", password)
    body = {
        "pipelines": {
            pipeline: {
                "source": {"url": url, "password_env": "DBMAZZ_TEST_SOURCE_PASSWORD", **source},
                "tables": tables,
                "sinks": sinks or {"duckdb": {"url": f"duckdb:///{tmp_path}/check.duckdb"}},
            }
        }
    }
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True))
    capsys.readouterr()
    code = main(["check", str(path)])
    out = capsys.readouterr().out
    assert password not in out
    return code, out
