"""Fixtures for the PostgreSQL source tests."""

from __future__ import annotations

import secrets
import uuid

import psycopg
import pytest

from tests.fixtures.servers import PgDatabase

from ._pg import CaptureRole


@pytest.fixture
def capture_role(pg_db: PgDatabase):
    name = f"cap_{uuid.uuid4().hex[:10]}"
    password = secrets.token_hex(8)
    with pg_db.connect() as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN REPLICATION PASSWORD '{password}'")
    yield CaptureRole(pg_db, name, password)
    with pg_db.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        conn.execute(f"DROP OWNED BY {name}")
    with psycopg.connect(pg_db.server.url(), autocommit=True) as conn:
        conn.execute(f"DROP ROLE {name}")
