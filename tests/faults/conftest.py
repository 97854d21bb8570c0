"""One pipeline per source kind, run by a real Dagster daemon, shared by the fault tests of a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults._harness import FaultRig, wait_initial_load


def _rig(source: str, **options) -> Iterator[FaultRig]:
    with FaultRig(source, seed=20261129, **options) as rig:
        wait_initial_load(rig)
        yield rig


@pytest.fixture(scope="module")
def pg_rig() -> Iterator[FaultRig]:
    """PostgreSQL (pgbench scale 1) -> DuckDB, ClickHouse, PostgreSQL, initial load done."""
    yield from _rig("postgres")


@pytest.fixture(scope="module")
def mariadb_rig() -> Iterator[FaultRig]:
    """MariaDB (sysbench, 2 tables of 10,000 rows) -> DuckDB, ClickHouse, PostgreSQL, initial load done."""
    yield from _rig("mariadb")
