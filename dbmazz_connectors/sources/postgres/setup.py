"""Idempotent setup of the PostgreSQL source: REPLICA IDENTITY FULL where configured, publication, slot."""

from __future__ import annotations

from psycopg import sql

from ...core.errors import PreflightError
from ._catalog import Catalog, split_table
from .config import PostgresSourceConfig
from .preflight import partitions, published_tables, run_preflight, slot_state

__all__ = ["run_setup"]


def run_setup(conn, config: PostgresSourceConfig, catalog: Catalog) -> None:
    """Create what capture needs; safe to run any number of times.

    The publication is created before the slot: decoding looks the publication up as of each
    change, so changes older than the publication could not be decoded.

    Raises:
        PreflightError: a requirement is not met; nothing was changed.
    """
    problems = run_preflight(conn, config, catalog)
    if problems:
        raise PreflightError(problems)
    for qualified in config.replica_identity_full:
        info = catalog.table(qualified)
        if info is None:
            continue
        # a partition's own identity gives its old tuples; partitions the role does not own passed preflight as FULL
        todo = [qualified] if info.replica_identity != "f" else []
        if info.kind == "p":
            todo += [name for name, ident, owned in partitions(conn, info) if ident != "f" and owned]
        for name in todo:
            conn.execute(
                sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(*split_table(name)))
            )
    _publication(conn, config)
    if slot_state(conn, config.slot) is None:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (config.slot,))


def _publication(conn, config: PostgresSourceConfig) -> None:
    pub = sql.Identifier(config.publication)
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (config.publication,)).fetchone()
    if exists is None:
        tables = sql.SQL(", ").join(sql.Identifier(*split_table(t)) for t in config.tables)
        # publish_via_partition_root: a partitioned table's changes arrive as its root's, partitions attached
        # later included (without it the publication lists the partitions, which the role need not own)
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)").format(
                pub, tables
            )
        )
        return
    published = published_tables(conn, config.publication)
    missing = [t for t in config.tables if t not in published]
    if missing:
        tables = sql.SQL(", ").join(sql.Identifier(*split_table(t)) for t in missing)
        conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(pub, tables))
