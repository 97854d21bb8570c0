"""Reading the StarRocks sink back as a user does: the ``<table>_current`` view over the MySQL protocol."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dbmazz_connectors.core import create_sink


def _user_value(value):
    # DATETIME columns hold UTC (documented): a reader attaches the zone the sink wrote them in
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) else value


def current_rows(sink, schema, table: str = "orders") -> list[tuple]:
    cols = ", ".join(sink.q(c) for c in schema.column_names)
    rows = sink.query_rows(f"SELECT {cols} FROM {sink.q(table + '_current')} ORDER BY 1")
    return [tuple(_user_value(v) for v in row) for row in rows]


class ViewReader:
    """The sink, with ``fetchall`` reading ``public.items`` from the ``items_current`` view (for _scenarios)."""

    def __init__(self, sink) -> None:
        self.sink = sink

    def __getattr__(self, name):
        return getattr(self.sink, name)

    def fetchall(self, sql: str) -> list[tuple]:
        return [
            tuple(_user_value(v) for v in r)
            for r in self.sink.query_rows(sql.replace("public.items", "items_current"))
        ]


@pytest.fixture
def sink(sr_db):
    sink = create_sink({"url": sr_db.url, "pipeline": "p"})
    sink.connect()
    yield sink
    sink.disconnect()
