"""The fix statements `dbmazz check` prints run as printed, never name a table the check refuses, and then it works."""

from __future__ import annotations

from collections import Counter

from dbmazz_connectors.core.errors import Problem
from dbmazz_connectors.snapshots import plan_snapshot, run_snapshot

from ._pg import assert_folded_equals_source, capture

SCHEMA = 'sales-eu "west"'
GOOD = [f"{SCHEMA}.Order Items", f"{SCHEMA}.select", f'{SCHEMA}.quote\'d "x"']
NO_KEY, UNMAPPED = f"{SCHEMA}.no key", f"{SCHEMA}.geo-t"
Q = '"sales-eu ""west"""'  # the schema, quoted
DDL = f'''
CREATE SCHEMA {Q};
CREATE TABLE {Q}."Order Items" (id int PRIMARY KEY, v text);
CREATE TABLE {Q}."select" (id bigint PRIMARY KEY, "from" int);
CREATE TABLE {Q}."quote'd ""x""" (id text PRIMARY KEY, n numeric(10, 2));
CREATE TABLE {Q}."no key" (a int, b text);
CREATE TABLE {Q}."geo-t" (id int PRIMARY KEY, p point);
INSERT INTO {Q}."Order Items" VALUES (1, 'one'), (2, 'two');
INSERT INTO {Q}."select" VALUES (1, 10);
INSERT INTO {Q}."quote'd ""x""" VALUES ('a', 1.5);
INSERT INTO {Q}."no key" VALUES (1, 'x');
INSERT INTO {Q}."geo-t" VALUES (1, point(1, 2));
'''


def _statement(problem: Problem) -> str:
    """The statement of a fix as printed: "as <who>: <statement>"."""
    assert problem.fix is not None and problem.fix.startswith("as "), problem
    return problem.fix.split(": ", 1)[1]


def test_printed_fixes_run_as_printed_and_leave_refused_tables_alone(pg_db, capture_role, changelog):
    with pg_db.connect() as conn:
        conn.execute(DDL)
    source = capture_role.source([*GOOD, NO_KEY, UNMAPPED])
    problems = source.preflight()
    checks = Counter(p.check for p in problems)
    assert checks == {"privilege": 6, "primary_key": 1, "type": 1, "publication": 1}, (
        problems
    )  # USAGE once, SELECT x5
    (publication,) = [p for p in problems if p.check == "publication"]
    assert "no key" not in publication.fix and "geo-t" not in publication.fix
    with pg_db.connect() as conn:  # the owner (a superuser here) runs every printed statement as printed
        for problem in problems:
            if problem.check in ("privilege", "publication"):
                conn.execute(_statement(problem))
        conn.execute(f"UPDATE {Q}.\"no key\" SET b = 'y'")  # the application's UPDATEs still work
    left = source.preflight()
    assert sorted(p.check for p in left) == ["primary_key", "type"]
    assert all(NO_KEY in p.message or UNMAPPED in p.message for p in left)
    (unmapped,) = [p for p in left if p.check == "type"]
    assert '"exclude": ["p"]' in unmapped.fix and '"as_text": ["p"]' in unmapped.fix
    source.disconnect()

    # without the refused tables the check is ok, and setup, capture and the rows follow
    source = capture_role.source(GOOD)
    assert source.preflight() == []
    source.setup()
    plan = plan_snapshot(source, changelog, "p1", GOOD, reason="initial load")
    run_snapshot(source, changelog, plan)
    with pg_db.connect() as conn:
        conn.execute(f"""INSERT INTO {Q}."Order Items" VALUES (3, 'three'); UPDATE {Q}."select" SET "from" = 11;
                         INSERT INTO {Q}."quote'd ""x""\" VALUES ('b', 2)""")
    capture(source, changelog)
    for table in GOOD:
        quoted = Q + '."' + table.split(".", 1)[1].replace('"', '""') + '"'
        assert assert_folded_equals_source(pg_db, changelog, table, source_table=quoted) >= 1
