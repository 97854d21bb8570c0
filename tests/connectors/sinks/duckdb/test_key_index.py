"""The DuckDB sink's key: no PRIMARY KEY index by default (one row per key kept by the apply), one with
``primary_key: true``; a second writer of the same table at the same time waits, then fails transiently."""

import pytest

from dbmazz_connectors.core import (
    OP_INSERT,
    BatchRef,
    ChangeBatch,
    ConfigError,
    Rows,
    TransientError,
    create_sink,
)

from .. import _scenarios
from .._scenarios import BASE
from .._workload import rows_table


def _sink(path, **options):
    sink = create_sink({"url": f"duckdb:///{path}", "pipeline": "p", **options})
    sink.connect()
    return sink


def _constraints(sink) -> list[str]:
    return [
        r[0]
        for r in sink.fetchall(
            "SELECT constraint_type FROM duckdb_constraints() "
            "WHERE schema_name = 'public' AND table_name = 'items'"
        )
    ]


def _insert(sink, batch_id: str, *ids: int):
    rows = rows_table(BASE, [(OP_INSERT, 10 + i, {"id": i, "qty": i}, None) for i in ids])
    return sink.write_batch(
        ChangeBatch(BASE.qualified_name, BASE, [Rows(BASE, rows)]), BatchRef("p", batch_id)
    )


def test_default_table_has_no_key_index_and_one_row_per_key(tmp_path):
    sink = _sink(tmp_path / "s.duckdb")
    try:
        _scenarios.inserts_over_existing_keys(sink)
        assert "PRIMARY KEY" not in _constraints(sink)
        assert sink.fetchall("SELECT count(*), count(DISTINCT id) FROM public.items") == [(3, 3)]
    finally:
        sink.disconnect()


@pytest.mark.parametrize("scenario", _scenarios.__all__)
def test_scenarios_hold_with_the_key_index(tmp_path, scenario):
    sink = _sink(tmp_path / "s.duckdb", primary_key=True)
    try:
        getattr(_scenarios, scenario)(sink)
        assert "PRIMARY KEY" in _constraints(sink)
    finally:
        sink.disconnect()


def test_second_writer_of_a_table_at_the_same_time_waits_then_fails_transiently(tmp_path):
    first = _sink(tmp_path / "s.duckdb", lock_wait_seconds=0.2)
    second = _sink(tmp_path / "s.duckdb")  # the same process: the same database, a second connection
    try:
        _insert(first, "b0", 1)
        second.begin()
        second.lock_table_state("public.items")  # a writer in the middle of its batch
        second.execute(
            "INSERT INTO public.items (id, qty, _dbmazz_version, _dbmazz_commit_ts) VALUES (2, 2, 12, now())"
        )
        with pytest.raises(TransientError, match="kept writing public.items"):
            _insert(first, "b1", 2)
        second.commit()
        assert not first.is_applied(BatchRef("p", "b1"), "public.items")
        _insert(first, "b1", 2)  # the retry replaces the key the other writer inserted, it does not double it
        assert first.fetchall("SELECT id, qty FROM public.items ORDER BY id") == [(1, 1), (2, 2)]
    finally:
        second.disconnect()
        first.disconnect()


def test_primary_key_option_takes_true_or_false_only(tmp_path):
    url = f"duckdb:///{tmp_path}/s.duckdb"
    with pytest.raises(ConfigError, match="expected primary_key to be true or false, got 'yes'"):
        create_sink({"url": url, "primary_key": "yes"})
    assert create_sink({"url": url, "primary_key": "true"}).config.primary_key is True
    assert create_sink({"url": url}).config.primary_key is False
