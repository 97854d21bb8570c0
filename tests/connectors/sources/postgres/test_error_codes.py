"""Errors of the PostgreSQL source are classified by SQLSTATE and the server's state, never by message text."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core import SlotInvalidatedError, SourceError


def test_a_prerequisite_error_on_a_healthy_slot_is_not_called_an_invalidated_slot(pg_db, capture_role):
    """SQLSTATE 55000 is also what logical decoding of a physical slot raises: with the pipeline's slot healthy,
    the error stays the server's own (a SourceError), and the pipeline's slot is not reported lost."""
    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    capture_role.grant(["public.t"])
    source = capture_role.source(["public.t"])
    physical = f"phys_{pg_db.name}"
    try:
        source.setup()
        source.conn.execute("SELECT pg_create_physical_replication_slot(%s)", (physical,))
        with pytest.raises(SourceError) as caught:
            with source._errors():
                source.conn.execute(
                    "SELECT count(*) FROM pg_logical_slot_peek_changes(%s, NULL, NULL)", (physical,)
                )
        assert not isinstance(caught.value, SlotInvalidatedError), caught.value
        assert "physical replication slot" in str(caught.value)
        assert source.checkpoint_position() is not None  # the pipeline's own slot is fine
    finally:
        source.disconnect()
        with pg_db.connect() as conn:  # a physical slot belongs to no database: the fixture would not drop it
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (physical,),
            )
