"""ClickHouse-only schema changes (the scenarios every sink shares run in ../conformance/).

``fetchall`` reads ``public.items`` as the ``items_current`` view.
"""

import pytest

from dbmazz_connectors.core import create_sink

from .. import _scenarios


class _ViewReader:
    """The sink, with ``fetchall`` reading what a ClickHouse user queries (the ``_current`` view)."""

    def __init__(self, sink) -> None:
        self.sink = sink

    def __getattr__(self, name):
        return getattr(self.sink, name)

    def fetchall(self, sql: str) -> list[tuple]:
        sql = sql.replace("public.items", "items_current")
        return [tuple(r.values()) for r in self.sink.client.query_arrow(sql).to_pylist()]


@pytest.fixture
def sink(ch_db):
    sink = create_sink({"url": ch_db.url, "pipeline": "p"})
    sink.connect()
    yield _ViewReader(sink)
    sink.disconnect()


def test_a_widened_sorting_key_rebuilds_the_table(sink):
    from dbmazz_connectors.core import OP_INSERT, SchemaChange

    from .._workload import rows_table

    base = _scenarios.BASE
    wide_key = _scenarios._with(base, id="int64")
    narrow = _scenarios._with(base, id="int32")
    _scenarios._apply(
        sink, "b1", narrow, _scenarios.Rows(narrow, rows_table(narrow, [(OP_INSERT, 10, {"id": 1}, None)]))
    )
    _scenarios._apply(
        sink,
        "b2",
        narrow,
        SchemaChange(wide_key, 20),
        _scenarios.Rows(wide_key, rows_table(wide_key, [(OP_INSERT, 20, {"id": 2**40}, None)])),
    )
    assert sink.fetchall("SELECT id FROM public.items ORDER BY id") == [(1,), (2**40,)]
    assert sink.fetchall("SELECT toTypeName(id) FROM items LIMIT 1") == [("Int64",)]
