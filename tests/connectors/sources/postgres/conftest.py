"""Fixtures for the PostgreSQL source tests.

A test that asks for ``capture_mode`` (``@pytest.mark.usefixtures("capture_mode")``) runs once per capture mode
(``peek``, ``stream``): the sources ``capture_role.source(...)`` makes use it. Other tests use
``DBMAZZ_TEST_PG_CAPTURE_MODE`` (default ``peek``), so the whole directory can be run in either mode.
"""

from __future__ import annotations

import os
import secrets
import uuid

import psycopg
import pytest

from tests.fixtures.servers import PgDatabase

from ._pg import CaptureRole


@pytest.fixture(params=["peek", "stream"])
def capture_mode(request) -> str:
    return request.param


@pytest.fixture
def capture_role(request, pg_db: PgDatabase):
    if "capture_mode" in request.fixturenames:
        mode = request.getfixturevalue("capture_mode")
    else:
        mode = os.environ.get("DBMAZZ_TEST_PG_CAPTURE_MODE", "peek")
    name = f"cap_{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(8)
    with pg_db.connect() as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN REPLICATION PASSWORD '{password}'")
    yield CaptureRole(pg_db, name, password, mode)
    with pg_db.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        conn.execute(f"DROP OWNED BY {name}")
    with psycopg.connect(pg_db.server.url(), autocommit=True) as conn:
        conn.execute(f"DROP ROLE {name}")
