"""Schema changes, truncates and unknown values in the duckdb sink (scenarios in ../_scenarios.py)."""

import pytest

from dbmazz_connectors.core import create_sink

from .. import _scenarios


@pytest.fixture
def sink(tmp_path):
    sink = create_sink({"url": f"duckdb:///{tmp_path}/s.duckdb", "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


@pytest.mark.parametrize("scenario", _scenarios.__all__)
def test_scenario(sink, scenario):
    getattr(_scenarios, scenario)(sink)
