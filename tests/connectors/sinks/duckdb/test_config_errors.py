"""Bad DuckDB sink settings fail with a message that says what to fix."""

import pytest

from dbmazz_connectors.core import ConfigError, create_sink


def test_missing_folder_says_which_and_how_to_create_it(tmp_path):
    sink = create_sink(f"duckdb:///{tmp_path}/nope/sink.duckdb")
    with pytest.raises(ConfigError, match=rf"expected the folder {tmp_path}/nope to exist.*fix: mkdir -p"):
        sink.connect()
    assert "expected the folder" in sink.preflight()[0].message


def test_a_file_that_is_not_a_duckdb_database_is_refused(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("this is not a database\n" * 1000)
    with pytest.raises(ConfigError, match=rf"duckdb sink: cannot open {path}"):
        create_sink({"type": "duckdb", "path": str(path)}).connect()


@pytest.mark.parametrize(
    "config,message",
    [
        ({"url": "postgresql://x/y", "type": "duckdb"}, "expected a url like duckdb:///path"),
        ({"type": "duckdb"}, "expected 'url'"),
        ({"url": "duckdb:///x.duckdb", "schemaa": "s"}, "unknown option"),
    ],
)
def test_bad_options_are_refused_before_opening_anything(config, message):
    with pytest.raises(ConfigError, match=message):
        create_sink(config)
