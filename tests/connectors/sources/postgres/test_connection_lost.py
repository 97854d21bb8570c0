"""The server ends the capture role's session (a fast shutdown or restart, ``pg_terminate_backend``: SQLSTATE 57P01)
while a capture run uses the source: every call the capture makes says so with a TransientError (the run is
retried), not with the driver's own exception."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core import TransientError
from dbmazz_connectors.engine import set_up_source

TABLE = "public.lost_conn"

CALLS = {
    "table_schemas": lambda s: s.table_schemas(),
    "current_position": lambda s: s.current_position(),
    "checkpoint_position": lambda s: s.checkpoint_position(),
    "read_changes": lambda s: list(s.read_changes(s.checkpoint_position(), s.current_position())),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_terminated_session_is_a_transient_error(pg_db, capture_role, call):
    with pg_db.connect() as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v text)")
    capture_role.grant([TABLE], publication="dbmazz_lost")
    source = capture_role.source([TABLE], pipeline="lost", publication="dbmazz_lost", slot="dbmazz_lost")
    try:
        set_up_source(source)
        source.table_schemas()  # the catalog is warm: only the calls' own queries run below
        with pg_db.connect() as conn:
            conn.execute(f"INSERT INTO {TABLE} VALUES (1, 'a')")
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s "
                "AND backend_type = 'client backend'",
                (capture_role.name,),
            )
        with pytest.raises(TransientError) as caught:
            CALLS[call](source)
        assert caught.value.message.startswith("postgres connection failed while capturing: "), (
            caught.value.message
        )
        assert capture_role.password not in str(caught.value)
    finally:
        source.disconnect()
