"""The out-of-tree SQLite sink reaches dbmazz only through its ``dbmazz.sinks`` entry point (core is unchanged)."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import pytest

from dbmazz_connectors.core import SINKS, ConfigError, Sink, UnknownConnectorError, create_sink
from dbmazz_connectors.core.registry import SCHEMES

from .oot_sink import SqliteSink


def test_the_entry_point_is_what_makes_the_name_known(sqlite_entry_point, tmp_path, monkeypatch):
    assert "sqlite" not in SINKS and "sqlite" not in SCHEMES
    (found,) = [ep for ep in entry_points(group="dbmazz.sinks") if ep.name == "sqlite"]
    assert found.dist is not None and found.dist.name == "dbmazz-sqlite-example"
    sink = create_sink({"type": "sqlite", "url": f"sqlite:///{tmp_path}/s.db", "pipeline": "p"})
    assert isinstance(sink, SqliteSink) and isinstance(sink, Sink)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != sqlite_entry_point])
    with pytest.raises(UnknownConnectorError, match="sqlite"):
        create_sink({"type": "sqlite", "url": f"sqlite:///{tmp_path}/s.db"})


def test_a_url_alone_finds_an_out_of_tree_sink_by_its_entry_point_name(
    sqlite_entry_point, tmp_path, monkeypatch
):
    """An entry point's name is also its URL scheme: ``sqlite:///...`` finds the sink without a ``type``."""
    sink = create_sink({"url": f"sqlite:///{tmp_path}/s.db", "pipeline": "p"})
    assert isinstance(sink, SqliteSink)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != sqlite_entry_point])
    with pytest.raises(ConfigError, match="expected a sink 'type' or a 'url' with a known scheme"):
        create_sink(f"sqlite:///{tmp_path}/s.db")
