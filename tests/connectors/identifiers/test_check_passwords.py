"""``dbmazz check`` refuses a password written in pipelines.yaml, as loading the Dagster definitions does."""

import yaml

from dbmazz_connectors.cli import main


def _write(path, source_url: str, sink_dir) -> str:
    body = {
        "pipelines": {
            "shop": {
                "source": {"url": source_url},
                "tables": ["public.t"],
                "sinks": {"duckdb": {"url": f"duckdb:///{sink_dir}/s.duckdb"}},
            }
        }
    }
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_check_refuses_a_literal_password_and_accepts_a_reference(
    pg_db, pg_capture_login, tmp_path, capsys, monkeypatch
):
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_capture_login.grant(["public.t"])
    url = pg_db.url_as(
        pg_capture_login.name, pg_capture_login.password
    )  # the capture role's, password included
    password = pg_capture_login.password
    assert main(["check", _write(tmp_path / "leaky.yaml", url, tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "[config] expected the source's password from the environment, found it written in the file" in out
    assert "password_env: VAR" in out and password not in out
    monkeypatch.setenv("SHOP_PW", password)
    main(["check", _write(tmp_path / "safe.yaml", url.replace(f":{password}@", ":${SHOP_PW}@"), tmp_path)])
    assert "[config]" not in capsys.readouterr().out
