"""Schema changes, truncates and unknown values in the postgres sink (scenarios in ../_scenarios.py)."""

import pytest

from dbmazz_connectors.core import create_sink

from .. import _scenarios


@pytest.fixture
def sink(pg_db):
    sink = create_sink({"url": pg_db.sink_url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()


@pytest.mark.parametrize("scenario", _scenarios.__all__)
def test_scenario(sink, scenario):
    getattr(_scenarios, scenario)(sink)
