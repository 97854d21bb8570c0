"""Partitioned tables replicate as their root: check ok, setup, snapshot and capture agree, sink == source."""

from __future__ import annotations

import pytest

from dbmazz_connectors.core import create_sink
from dbmazz_connectors.core.errors import SourceError
from dbmazz_connectors.engine import apply_batch
from dbmazz_connectors.snapshots import SnapshotSettings, plan_snapshot, run_snapshot

from ._pg import assert_folded_equals_source, capture, folded_rows, source_rows

TABLE = "public.events"
DDL = """
CREATE TABLE events (id int, at date, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events SELECT g, date '2024-01-01' + (g * 3) % 700, 'row ' || g FROM generate_series(1, 600) g;
"""
# After setup: rows moving across partitions, a partition created and one attached, rows landing in both.
CHANGES = """
UPDATE events SET at = at + 366 WHERE id % 7 = 0 AND at < '2024-12-01';
DELETE FROM events WHERE id % 11 = 0;
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_2027 (LIKE events INCLUDING ALL);
ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO events SELECT g, date '2026-01-01' + (g - 1000), 'late ' || g FROM generate_series(1000, 1400) g;
UPDATE events SET at = at + 365, note = note || ' moved' WHERE id BETWEEN 1000 AND 1100;
UPDATE events SET note = 'edited' WHERE id % 5 = 0;
"""


def _sink_rows(sink, table: str) -> list[dict]:
    names = ["id", "at", "note"]
    cols = ", ".join(sink.q(c) for c in names)
    rows = sink.con.execute(
        f"SELECT {cols} FROM {sink.target(sink.table_state(table))} ORDER BY 1, 2"
    ).fetchall()
    return [dict(zip(names, row, strict=True)) for row in rows]


def _replicate(pg_db, source, changelog, tmp_path) -> None:
    settings = SnapshotSettings(chunk_rows=150, chunks_per_batch=2, parallelism=2)
    plan = plan_snapshot(source, changelog, "p1", [TABLE], settings, reason="initial load")
    with pg_db.connect() as conn:
        conn.execute(CHANGES)
    capture(source, changelog)
    run_snapshot(source, changelog, plan, settings)
    with pg_db.connect() as conn:
        conn.execute(
            "UPDATE events SET at = at - 366, note = 'back' WHERE id % 13 = 0 AND at >= '2025-01-01' "
            "AND at < '2026-01-01'; INSERT INTO events_2027 VALUES (5000, '2027-06-01', 'via leaf')"
        )
    capture(source, changelog)
    assert_folded_equals_source(pg_db, changelog, TABLE, key="id, at")
    sink = create_sink({"url": f"duckdb:///{tmp_path}/sink.duckdb", "pipeline": "p1"})
    sink.connect()
    try:
        for manifest in changelog.batches("p1"):
            apply_batch(changelog, sink, "p1", manifest.batch_id)
        expected = source_rows(pg_db, TABLE, key="id, at")
        assert _sink_rows(sink, TABLE) == expected
        assert len(expected) > 900 and any(r["id"] == 5000 for r in expected)
    finally:
        sink.disconnect()


def test_publication_listing_partitions_is_refused_with_a_fix_then_replicates(
    pg_db, capture_role, changelog, tmp_path
):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant(
        [TABLE]
    )  # as a superuser would without the option: the publication lists the partitions
    source = capture_role.source([TABLE])
    problems = source.preflight()
    assert [p.check for p in problems] == ["publication"]
    assert "publish_via_partition_root" in problems[0].message and TABLE in problems[0].message
    fix = problems[0].fix.split(": ", 1)[1]
    assert fix == 'ALTER PUBLICATION "dbmazz_p1" SET (publish_via_partition_root = true);'
    with pg_db.connect() as conn:  # as printed, by the owner (a superuser here)
        conn.execute(fix)
    assert source.preflight() == []
    source.setup()
    _replicate(pg_db, source, changelog, tmp_path)


def test_setup_creates_a_publication_via_the_root(pg_db, capture_role, changelog, tmp_path):
    with pg_db.connect() as conn:
        conn.execute(DDL)
        conn.execute(f"ALTER TABLE events OWNER TO {capture_role.name}")  # the root only, not its partitions
        conn.execute(f'GRANT CREATE ON DATABASE "{pg_db.name}" TO {capture_role.name}')
    source = capture_role.source([TABLE])
    assert source.preflight() == []
    source.setup()
    with pg_db.connect() as conn:
        assert conn.execute(
            "SELECT pubviaroot FROM pg_publication WHERE pubname = 'dbmazz_p1'"
        ).fetchone() == (True,)
        published = conn.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'dbmazz_p1'"
        ).fetchall()
    assert published == [("events",)]
    _replicate(pg_db, source, changelog, tmp_path)


def test_capture_refuses_a_publication_switched_back_to_partitions(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    capture_role.grant([TABLE])
    with pg_db.connect() as conn:
        conn.execute("ALTER PUBLICATION dbmazz_p1 SET (publish_via_partition_root = true)")
    source = capture_role.source([TABLE])
    source.setup()
    with pg_db.connect() as conn:
        conn.execute(
            "ALTER PUBLICATION dbmazz_p1 SET (publish_via_partition_root = false); "
            "UPDATE events SET note = 'lost?' WHERE id < 10"
        )
    with pytest.raises(
        SourceError
    ) as caught:  # not silently nothing: the changes would come as the partitions'
        capture(source, changelog)
    assert "publish partitioned table public.events via its root" in caught.value.message
    fix, then = caught.value.hint.split(": ", 1)[1].split("; ")
    assert then.startswith("then re-sync the table")
    with pg_db.connect() as conn:
        conn.execute(fix)
    capture(source, changelog)
    run_snapshot(source, changelog, plan_snapshot(source, changelog, "p1", [TABLE], reason="re-sync"))
    assert assert_folded_equals_source(pg_db, changelog, TABLE, key="id, at") == 600
    assert [r["note"] for r in folded_rows(changelog, TABLE, key="id, at")[:9]] == ["lost?"] * 9


def test_replica_identity_full_is_checked_and_set_per_partition(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute(
            "CREATE TABLE docs (id int, at date, body text, n int, PRIMARY KEY (id, at)) "
            "PARTITION BY RANGE (at);"
            "CREATE TABLE docs_a PARTITION OF docs FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
            "CREATE TABLE docs_b PARTITION OF docs FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"
            "ALTER TABLE docs_b REPLICA IDENTITY NOTHING"
        )
    capture_role.grant(["public.docs"])
    with pg_db.connect() as conn:
        conn.execute("ALTER PUBLICATION dbmazz_p1 SET (publish_via_partition_root = true)")
    source = capture_role.source(["public.docs"], replica_identity_full=True)
    problems = source.preflight()
    assert sorted(p.message for p in problems) == [
        "expected REPLICA IDENTITY DEFAULT or FULL on every partition of public.docs, found NOTHING on public.docs_b",
        f"expected REPLICA IDENTITY FULL on every partition of public.docs (configured), found otherwise on "
        f"public.docs_a, public.docs_b; role {capture_role.name} does not own them",
        f"expected REPLICA IDENTITY FULL on public.docs (configured), found DEFAULT; role {capture_role.name} does "
        "not own it",
    ]
    with pg_db.connect() as conn:  # the owner runs what is printed, in the printed order
        for problem in sorted(problems, key=lambda p: "NOTHING" not in p.message):
            conn.execute(problem.fix.split(": ", 1)[1])
    assert source.preflight() == []
    source.setup()
    with pg_db.connect() as conn:  # TOASTed bodies left unchanged by updates, some moving partitions
        conn.execute(
            "INSERT INTO docs SELECT g, date '2024-01-01' + g, repeat(md5(g::text), 400), g "
            "FROM generate_series(1, 200) g"
        )
    capture(source, changelog)
    with pg_db.connect() as conn:
        conn.execute(
            "UPDATE docs SET n = n + 1 WHERE id % 2 = 0; UPDATE docs SET at = at + 200 WHERE id % 5 = 0"
        )
    capture(source, changelog)
    assert assert_folded_equals_source(pg_db, changelog, "public.docs", key="id, at") == 200
