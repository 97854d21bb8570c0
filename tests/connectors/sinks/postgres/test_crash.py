"""A PostgreSQL apply SIGKILLed mid-batch leaves the sink before or after that batch; re-applying converges."""

import pytest

from .._crash import KILL_POINTS, kill_and_reapply


@pytest.mark.parametrize("kill_at,applied", KILL_POINTS)
def test_sigkill_mid_batch_leaves_it_all_or_nothing_and_reapply_converges(pg_db, tmp_path, changelog, kill_at,
                                                                          applied):
    kill_and_reapply({"url": pg_db.sink_url, "pipeline": "p"}, changelog, tmp_path, kill_at, applied)
