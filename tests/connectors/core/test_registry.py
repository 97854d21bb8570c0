"""Every registered connector satisfies its protocol and builds from its registry entry."""

import inspect

import pytest

from dbmazz_connectors.core import Sink, Source
from dbmazz_connectors.core.registry import SINKS, SOURCES, sink_class, source_class


def _protocol_methods(protocol) -> set[str]:
    return {
        name
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_satisfies_the_source_protocol(name):
    cls = source_class(name)
    missing = sorted(m for m in _protocol_methods(Source) if not callable(getattr(cls, m, None)))
    assert not missing, f"source {name} lacks {missing}"
    assert callable(getattr(cls, "from_config", None)), f"source {name} lacks from_config"
    assert isinstance(getattr(cls, "name", None), str)


@pytest.mark.parametrize("name", sorted(SINKS))
def test_every_sink_satisfies_the_sink_protocol(name):
    cls = sink_class(name)
    missing = sorted(
        m for m in _protocol_methods(Sink) | {"row_count"} if not callable(getattr(cls, m, None))
    )
    assert not missing, f"sink {name} lacks {missing}"
    assert callable(getattr(cls, "from_config", None)), f"sink {name} lacks from_config"
