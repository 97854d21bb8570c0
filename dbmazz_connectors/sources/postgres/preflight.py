"""Preflight of the PostgreSQL source: every requirement checked without changing anything.

Each Problem carries the exact statement that fixes it (and who must run it).
"""

from __future__ import annotations

from psycopg import sql

from ...core.errors import DbmazzError, Problem, SlotInvalidatedError
from ._catalog import Catalog, TableInfo, split_table
from .config import PostgresSourceConfig

__all__ = ["run_preflight", "quote_table", "slot_state"]


def quote_table(conn, qualified: str) -> str:
    return sql.Identifier(*split_table(qualified)).as_string(conn)


def _ident(conn, name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def slot_state(conn, slot: str) -> tuple | None:
    """(plugin, database, wal_status, confirmed_flush_lsn text, slot_type) of the slot, or None."""
    return conn.execute(
        "SELECT plugin, database, wal_status, confirmed_flush_lsn::text, slot_type FROM pg_replication_slots "
        "WHERE slot_name = %s", (slot,)).fetchone()


def run_preflight(conn, config: PostgresSourceConfig, catalog: Catalog) -> list[Problem]:
    """All problems found; an empty list means setup() and capture can run."""
    problems = _server(conn, config)
    tables = {t: catalog.table(t) for t in config.tables}
    for qualified, info in tables.items():
        problems += _table(conn, config, catalog, qualified, info)
    problems += _slot(conn, config)
    problems += _publication(conn, config, tables)
    return problems


def _server(conn, config: PostgresSourceConfig) -> list[Problem]:
    wal_level, max_slots, used, replication, superuser, role = conn.execute(
        "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int, "
        "(SELECT count(*) FROM pg_replication_slots), r.rolreplication, r.rolsuper, r.rolname "
        "FROM pg_roles r WHERE r.rolname = current_user").fetchone()
    problems = []
    if wal_level != "logical":
        problems.append(Problem("wal_level", f"expected wal_level = logical, found {wal_level}",
                                "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"))
    if not (replication or superuser):
        problems.append(Problem("privilege", f"expected role {role} to have the REPLICATION attribute, it has not",
                                f"as a superuser: ALTER ROLE {_ident(conn, role)} WITH REPLICATION;"))
    exists = slot_state(conn, config.slot) is not None
    if not exists and used >= max_slots:
        problems.append(Problem("slots", f"expected a free replication slot, found {used} of max_replication_slots = "
                                f"{max_slots} in use",
                                "ALTER SYSTEM SET max_replication_slots = <more>; then restart, or drop an unused slot"))
    return problems


def _table(conn, config, catalog: Catalog, qualified: str, info: TableInfo | None) -> list[Problem]:
    if info is None:
        return [Problem("table", f"expected table {qualified} to exist, found none",
                        f"create it, or remove {qualified} from the pipeline's tables")]
    quoted = quote_table(conn, qualified)
    role = _ident(conn, config.user)
    problems = []
    (can_select, owns) = conn.execute(
        "SELECT has_table_privilege(%s::oid, 'SELECT'), pg_has_role(current_user, %s::regrole, 'USAGE')",
        (info.oid, _ident(conn, info.owner))).fetchone()
    if not can_select:
        problems.append(Problem("privilege", f"expected SELECT on {qualified} for role {config.user}, found none",
                                f"as the table owner: GRANT SELECT ON {quoted} TO {role};"))
    if info.replica_identity == "n":
        problems.append(Problem("replica_identity", f"expected REPLICA IDENTITY DEFAULT or FULL on {qualified}, "
                                "found NOTHING (updates and deletes would not be replicated)",
                                f"ALTER TABLE {quoted} REPLICA IDENTITY DEFAULT;"))
    if qualified in config.replica_identity_full and info.replica_identity != "f" and not owns:
        problems.append(Problem("replica_identity", f"expected REPLICA IDENTITY FULL on {qualified} (configured), "
                                f"found {_IDENTITY.get(info.replica_identity, '?')}; role {config.user} does not own it",
                                f"as the table owner: ALTER TABLE {quoted} REPLICA IDENTITY FULL;"))
    try:
        catalog.schema_of(info)
    except DbmazzError as exc:
        problems.append(Problem("primary_key" if "primary key" in exc.message else "type", exc.message, exc.hint))
    return problems


_IDENTITY = {"d": "DEFAULT", "f": "FULL", "i": "USING INDEX", "n": "NOTHING"}


def _slot(conn, config: PostgresSourceConfig) -> list[Problem]:
    state = slot_state(conn, config.slot)
    if state is None:
        return []
    plugin, database, wal_status, _, slot_type = state
    drop = f"SELECT pg_drop_replication_slot('{config.slot}');"
    if slot_type != "logical" or plugin != "pgoutput":
        return [Problem("slot", f"expected slot {config.slot} to be a logical pgoutput slot, found {slot_type} "
                        f"{plugin}", f"{drop} (or set another 'slot' name)")]
    if database != config.dbname:
        return [Problem("slot", f"expected slot {config.slot} in database {config.dbname}, found it in {database}",
                        "set another 'slot' name for this pipeline")]
    if wal_status == "lost":
        error = SlotInvalidatedError(config.slot, "wal_status = lost")
        return [Problem("slot", error.message, error.hint)]
    return []


def _publication(conn, config: PostgresSourceConfig, tables: dict[str, TableInfo | None]) -> list[Problem]:
    pub = _ident(conn, config.publication)
    listed = ", ".join(quote_table(conn, t) for t in config.tables)
    row = conn.execute(
        "SELECT pg_has_role(current_user, pubowner, 'USAGE'), pubinsert AND pubupdate AND pubdelete AND pubtruncate "
        "FROM pg_publication WHERE pubname = %s", (config.publication,)).fetchone()
    if row is None:
        owned = conn.execute(
            "SELECT coalesce(bool_and(pg_has_role(current_user, c.relowner, 'USAGE')), true) "
            "AND has_database_privilege(current_database(), 'CREATE') FROM pg_class c WHERE c.oid = ANY(%s)",
            ([t.oid for t in tables.values() if t is not None],)).fetchone()[0]
        if owned:
            return []  # setup() creates it
        return [Problem("publication", f"expected publication {config.publication} to exist (role {config.user} "
                        "cannot create it: CREATE PUBLICATION needs ownership of the tables)",
                        f"as the tables' owner: CREATE PUBLICATION {pub} FOR TABLE {listed}; "
                        f"ALTER PUBLICATION {pub} OWNER TO {_ident(conn, config.user)};")]
    owner, all_ops = row
    problems = []
    if not all_ops:
        problems.append(Problem("publication", f"expected publication {config.publication} to publish insert, "
                                "update, delete and truncate, it does not",
                                f"ALTER PUBLICATION {pub} SET (publish = 'insert, update, delete, truncate');"))
    published = {r[0] for r in conn.execute(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s", (config.publication,))}
    missing = [t for t in config.tables if t not in published and tables.get(t) is not None]
    owns_tables = conn.execute(
        "SELECT coalesce(bool_and(pg_has_role(current_user, c.relowner, 'USAGE')), true) FROM pg_class c "
        "WHERE c.oid = ANY(%s)", ([tables[t].oid for t in missing],)).fetchone()[0] if missing else True
    if missing and not (owner and owns_tables):  # setup() adds them only as the owner of both
        names = ", ".join(quote_table(conn, t) for t in missing)
        problems.append(Problem("publication", f"expected publication {config.publication} to contain "
                                f"{', '.join(missing)}, it does not (a table dropped and re-created leaves it; role "
                                f"{config.user} cannot add it: that needs ownership of the publication and the "
                                "tables)", f"as a superuser: ALTER PUBLICATION {pub} ADD TABLE {names};"))
    return problems
