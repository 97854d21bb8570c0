"""Preflight of the PostgreSQL source: every requirement checked without changing anything.

Each Problem carries the exact statement that fixes it (and who must run it).
"""

from __future__ import annotations

from psycopg import sql

from ...core.errors import (
    DbmazzError,
    MissingPrimaryKeyError,
    Problem,
    SlotInvalidatedError,
    UnmappableTypeError,
)
from ._catalog import Catalog, TableInfo, split_table
from .config import PostgresSourceConfig

__all__ = ["run_preflight", "omitted_columns", "partitions", "quote_table", "slot_state"]

# checks that refuse a table: a fix statement must never put such a table into the publication
_REFUSING = frozenset({"table", "primary_key", "type", "columns"})


def quote_table(conn, qualified: str) -> str:
    return sql.Identifier(*split_table(qualified)).as_string(conn)


def _ident(conn, name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def slot_state(conn, slot: str) -> tuple | None:
    """(plugin, database, wal_status, confirmed_flush_lsn text, slot_type) of the slot, or None."""
    return conn.execute(
        "SELECT plugin, database, wal_status, confirmed_flush_lsn::text, slot_type FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot,),
    ).fetchone()


def run_preflight(conn, config: PostgresSourceConfig, catalog: Catalog) -> list[Problem]:
    """All problems found; an empty list means setup() and capture can run."""
    problems = _server(conn, config)
    tables = {t: catalog.table(t) for t in config.tables}
    accepted = {}
    for qualified, info in tables.items():
        found = _table(conn, config, catalog, qualified, info)
        problems += found
        if info is not None and not any(p.check in _REFUSING for p in found):
            accepted[qualified] = info
    problems += _slot(conn, config)
    problems += _publication(conn, config, tables, accepted)
    unique = {(p.check, p.message, p.fix): p for p in problems}  # e.g. one schema's USAGE, found per table
    return list(unique.values())


def omitted_columns(config: PostgresSourceConfig, catalog: Catalog) -> list[str]:
    """Every column of the configured tables that does not reach the sinks, and why (one line each)."""
    lines = []
    for qualified in config.tables:
        info = catalog.table(qualified)
        if info is None:
            continue
        selection = config.selection(qualified)
        names = [c[0] for c in info.columns]
        lines += [
            f"{qualified}.{c}: excluded by the pipeline's 'columns'" for c in names if c in selection.exclude
        ]
        lines += [
            f"{qualified}.{c}: stored generated column (PostgreSQL 15 does not publish generated columns)"
            for c in info.generated
        ]
        lines += [f"{qualified}.{c}: carried as text ('as_text')" for c in names if c in selection.as_text]
    return lines


def _server(conn, config: PostgresSourceConfig) -> list[Problem]:
    wal_level, max_slots, used, replication, superuser, role, max_senders, senders = conn.execute(
        "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, "
        "(SELECT count(*) FROM pg_replication_slots), r.rolreplication, r.rolsuper, r.rolname, "
        "current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication) "
        "FROM pg_roles r WHERE r.rolname = current_user"
    ).fetchone()
    problems = []
    if wal_level != "logical":
        problems.append(
            Problem(
                "wal_level",
                f"expected wal_level = logical, found {wal_level}",
                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
            )
        )
    if not (replication or superuser):
        problems.append(
            Problem(
                "privilege",
                f"expected role {role} to have the REPLICATION attribute, it has not",
                f"as a superuser: ALTER ROLE {_ident(conn, role)} WITH REPLICATION;",
            )
        )
    # the pipeline's slot, and a temporary one while a snapshot (initial load, re-sync) is read
    needed = (0 if slot_state(conn, config.slot) is not None else 1) + 1
    if used + needed > max_slots:
        problems.append(
            Problem(
                "slots",
                f"expected {needed} free replication slot(s) (the pipeline's slot and a "
                f"temporary one while a snapshot is read), found {max(max_slots - used, 0)} "
                f"({used} of max_replication_slots = {max_slots} in use)",
                f"ALTER SYSTEM SET max_replication_slots = {used + needed}; then restart PostgreSQL "
                "(or drop an unused slot)",
            )
        )
    if senders + 1 > max_senders:  # a snapshot reads through a replication connection
        problems.append(
            Problem(
                "wal_senders",
                f"expected a free WAL sender for snapshots (initial loads, re-syncs), "
                f"found {senders} of max_wal_senders = {max_senders} in use",
                f"ALTER SYSTEM SET max_wal_senders = {senders + 1}; then restart PostgreSQL",
            )
        )
    return problems


def _table(conn, config, catalog: Catalog, qualified: str, info: TableInfo | None) -> list[Problem]:
    if info is None:
        return [
            Problem(
                "table",
                f"expected table {qualified} to exist, found none",
                f"create it, or remove {qualified} from the pipeline's tables",
            )
        ]
    quoted = quote_table(conn, qualified)
    role = _ident(conn, config.user)
    problems = []
    (can_select, owns, usage) = conn.execute(
        "SELECT has_table_privilege(%s::oid, 'SELECT'), pg_has_role(current_user, %s::regrole, 'USAGE'), "
        "has_schema_privilege(%s, 'USAGE')",
        (info.oid, _ident(conn, info.owner), split_table(qualified)[0]),
    ).fetchone()
    if not usage:
        schema = _ident(conn, split_table(qualified)[0])
        problems.append(
            Problem(
                "privilege",
                f"expected USAGE on schema {split_table(qualified)[0]} for role {config.user}, found none",
                f"as the schema owner: GRANT USAGE ON SCHEMA {schema} TO {role};",
            )
        )
    if not can_select:
        problems.append(
            Problem(
                "privilege",
                f"expected SELECT on {qualified} for role {config.user}, found none",
                f"as the table owner: GRANT SELECT ON {quoted} TO {role};",
            )
        )
    if info.replica_identity == "n":
        problems.append(
            Problem(
                "replica_identity",
                f"expected REPLICA IDENTITY DEFAULT or FULL on {qualified}, "
                "found NOTHING (updates and deletes would not be replicated)",
                f"as the table owner: ALTER TABLE {quoted} REPLICA IDENTITY DEFAULT;",
            )
        )
    if qualified in config.replica_identity_full and info.replica_identity != "f" and not owns:
        problems.append(
            Problem(
                "replica_identity",
                f"expected REPLICA IDENTITY FULL on {qualified} (configured), "
                f"found {_IDENTITY.get(info.replica_identity, '?')}; role {config.user} does not own it",
                f"as the table owner: ALTER TABLE {quoted} REPLICA IDENTITY FULL;",
            )
        )
    if info.kind == "p":
        problems += _partitions(conn, config, info)
    return problems + _columns(conn, config, catalog, info)


def partitions(conn, info: TableInfo) -> list[tuple[str, str, bool]]:
    """The leaf partitions of a partitioned table now: (schema.table, relreplident, owned by the role)."""
    return [
        (f"{r[0]}.{r[1]}", r[2], r[3])
        for r in conn.execute(
            "SELECT n.nspname, c.relname, c.relreplident::text, pg_has_role(current_user, c.relowner, 'USAGE') "
            "FROM pg_partition_tree(%s::oid) p JOIN pg_class c ON c.oid = p.relid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.isleaf ORDER BY 1, 2",
            (info.oid,),
        )
    ]


def _partitions(conn, config: PostgresSourceConfig, info: TableInfo) -> list[Problem]:
    """REPLICA IDENTITY is per partition: the old tuple of an update comes from the partition's own."""
    leaves = partitions(conn, info)
    problems = []
    nothing = [name for name, ident, _ in leaves if ident == "n"]
    if nothing:
        problems.append(
            Problem(
                "replica_identity",
                f"expected REPLICA IDENTITY DEFAULT or FULL on every partition of "
                f"{info.qualified_name}, found NOTHING on {', '.join(nothing)}",
                "as the owner: "
                + " ".join(f"ALTER TABLE {quote_table(conn, n)} REPLICA IDENTITY DEFAULT;" for n in nothing),
            )
        )
    if info.qualified_name in config.replica_identity_full:
        not_full = [name for name, ident, owned in leaves if ident != "f" and not owned]
        if not_full:
            problems.append(
                Problem(
                    "replica_identity",
                    f"expected REPLICA IDENTITY FULL on every partition of "
                    f"{info.qualified_name} (configured), found otherwise on {', '.join(not_full)}; "
                    f"role {config.user} does not own them",
                    "as the owner: "
                    + " ".join(
                        f"ALTER TABLE {quote_table(conn, n)} REPLICA IDENTITY FULL;" for n in not_full
                    ),
                )
            )
    return problems


def _primary_key_fix(conn, info: TableInfo) -> str:
    """``ALTER TABLE ... ADD PRIMARY KEY`` on the columns of the narrowest unique index on NOT NULL columns
    (no expression, no predicate), or the table's removal from the pipeline when there is none."""
    row = conn.execute(
        "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s::oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL "
        "GROUP BY i.indexrelid HAVING bool_and(a.attnotnull) ORDER BY count(*), i.indexrelid::regclass::text LIMIT 1",
        (info.oid,),
    ).fetchone()
    if row is None:
        return MissingPrimaryKeyError.remove_hint(info.qualified_name)
    columns = ", ".join(_ident(conn, c) for c in row[0])
    return f"as the table owner: ALTER TABLE {quote_table(conn, info.qualified_name)} ADD PRIMARY KEY ({columns});"


def _columns(conn, config: PostgresSourceConfig, catalog: Catalog, info: TableInfo) -> list[Problem]:
    qualified = info.qualified_name
    selection = config.selection(qualified)
    names = {c[0] for c in info.columns} | set(info.generated)
    unknown = sorted((selection.exclude | selection.as_text) - names)
    if unknown:
        return [
            Problem(
                "columns",
                f"expected columns {', '.join(unknown)} in {qualified} (named under 'columns'), found none",
                f"remove them from the source's 'columns' of {qualified}",
            )
        ]
    try:
        catalog.schema_of(info)
    except MissingPrimaryKeyError as exc:
        return [Problem("primary_key", exc.message, _primary_key_fix(conn, info))]
    except UnmappableTypeError as exc:
        fix = (
            f'exclude or map the column in the source config: columns: {{"{qualified}": {{"exclude": '
            f'["{exc.column}"]}}}} (or "as_text": ["{exc.column}"]); see docs/types.md'
        )
        return [Problem("type", exc.message, fix)]
    except DbmazzError as exc:
        return [Problem("columns", exc.message, exc.hint)]
    return []


_IDENTITY = {"d": "DEFAULT", "f": "FULL", "i": "USING INDEX", "n": "NOTHING"}


def _slot(conn, config: PostgresSourceConfig) -> list[Problem]:
    state = slot_state(conn, config.slot)
    if state is None:
        return []
    plugin, database, wal_status, _, slot_type = state
    drop = f"SELECT pg_drop_replication_slot('{config.slot}');"
    if slot_type != "logical" or plugin != "pgoutput":
        return [
            Problem(
                "slot",
                f"expected slot {config.slot} to be a logical pgoutput slot, found {slot_type} {plugin}",
                f"{drop} (or set another 'slot' name)",
            )
        ]
    if database != config.dbname:
        return [
            Problem(
                "slot",
                f"expected slot {config.slot} in database {config.dbname}, found it in {database}",
                "set another 'slot' name for this pipeline",
            )
        ]
    if wal_status == "lost":
        error = SlotInvalidatedError(config.slot, "wal_status = lost")
        return [Problem("slot", error.message, error.hint)]
    return []


def _publication(
    conn, config: PostgresSourceConfig, tables: dict[str, TableInfo | None], accepted: dict[str, TableInfo]
) -> list[Problem]:
    """The publication: fix statements list only ``accepted`` tables (a refused one would break its UPDATEs)."""
    pub = _ident(conn, config.publication)
    row = conn.execute(
        "SELECT pg_has_role(current_user, pubowner, 'USAGE'), pubinsert AND pubupdate AND pubdelete AND pubtruncate, "
        "pubviaroot FROM pg_publication WHERE pubname = %s",
        (config.publication,),
    ).fetchone()
    if row is None:
        return _no_publication(conn, config, tables, accepted)
    owner, all_ops, via_root = row
    problems = []
    if not all_ops:
        problems.append(
            Problem(
                "publication",
                f"expected publication {config.publication} to publish insert, "
                "update, delete and truncate, it does not",
                f"as the publication's owner: ALTER PUBLICATION {pub} SET (publish = 'insert, update, "
                "delete, truncate');",
            )
        )
    partitioned = [t for t, info in accepted.items() if info.kind == "p"]
    if partitioned and not via_root:
        problems.append(
            Problem(
                "publication",
                f"expected publication {config.publication} to publish partitioned "
                f"table(s) {', '.join(partitioned)} as their root (publish_via_partition_root), it "
                "publishes their partitions",
                f"as the publication's owner: ALTER PUBLICATION {pub} SET "
                "(publish_via_partition_root = true);",
            )
        )
    published = published_tables(conn, config.publication)
    missing = [t for t in accepted if t not in published]
    owns_tables = (
        conn.execute(
            "SELECT coalesce(bool_and(pg_has_role(current_user, c.relowner, 'USAGE')), true) FROM pg_class c "
            "WHERE c.oid = ANY(%s)",
            ([accepted[t].oid for t in missing],),
        ).fetchone()[0]
        if missing
        else True
    )
    if missing and not (owner and owns_tables):  # setup() adds them only as the owner of both
        names = ", ".join(quote_table(conn, t) for t in missing)
        problems.append(
            Problem(
                "publication",
                f"expected publication {config.publication} to contain "
                f"{', '.join(missing)}, it does not (a table dropped and re-created leaves it; role "
                f"{config.user} cannot add it: that needs ownership of the publication and the "
                "tables)",
                f"as a superuser: ALTER PUBLICATION {pub} ADD TABLE {names};",
            )
        )
    return problems


def _no_publication(
    conn, config: PostgresSourceConfig, tables: dict[str, TableInfo | None], accepted: dict[str, TableInfo]
) -> list[Problem]:
    owned = conn.execute(
        "SELECT coalesce(bool_and(pg_has_role(current_user, c.relowner, 'USAGE')), true) "
        "AND has_database_privilege(current_database(), 'CREATE') FROM pg_class c WHERE c.oid = ANY(%s)",
        ([t.oid for t in tables.values() if t is not None],),
    ).fetchone()[0]
    if owned or not accepted:
        return []  # setup() creates it (or the tables' own problems come first)
    pub = _ident(conn, config.publication)
    listed = ", ".join(quote_table(conn, t) for t in accepted)
    return [
        Problem(
            "publication",
            f"expected publication {config.publication} to exist (role {config.user} "
            "cannot create it: CREATE PUBLICATION needs ownership of the tables)",
            f"as the tables' owner: CREATE PUBLICATION {pub} FOR TABLE {listed} "
            f"WITH (publish_via_partition_root = true); "
            f"ALTER PUBLICATION {pub} OWNER TO {_ident(conn, config.user)};",
        )
    ]


def published_tables(conn, publication: str) -> set[str]:
    """The tables a publication publishes or lists, as schema.table (a partitioned table it lists included)."""
    return {
        r[0]
        for r in conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s "
            "UNION SELECT n.nspname || '.' || c.relname FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
            "JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = %s",
            (publication, publication),
        )
    }
