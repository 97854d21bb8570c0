"""A sample shop schema on PostgreSQL and a steady workload generator, for the demo, e2e tests and benchmarks."""

from __future__ import annotations

import json
import random
import threading
import time

import psycopg
from psycopg import sql

__all__ = [
    "SHOP_TABLES",
    "create_shop",
    "seed_customers",
    "seed_orders",
    "create_replication_role",
    "ShopWorkload",
]

SHOP_TABLES = ["public.customers", "public.orders"]

_DDL = """
CREATE TABLE IF NOT EXISTS customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    quantity int NOT NULL,
    amount numeric(12,2) NOT NULL,
    status text NOT NULL,
    note text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attributes jsonb
);
"""


def create_shop(admin_url: str) -> None:
    """Create the (empty) shop tables; idempotent."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(_DDL)


def seed_customers(admin_url: str) -> None:
    """A hundred customers, once (before or after the pipeline is set up: its initial load brings them in)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 0:
            conn.execute(
                "INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' "
                "FROM generate_series(1, 100) g"
            )


def seed_orders(admin_url: str, count: int = 1000) -> None:
    """``count`` orders of those customers, once (the shop's history before dbmazz arrives)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0:
            conn.execute(
                "INSERT INTO orders (customer_id, quantity, amount, status, note, attributes) "
                "SELECT g %% 100 + 1, g %% 9 + 1, round((g * 7.31) %% 500 + 1, 2), "
                "(ARRAY['new', 'paid', 'shipped'])[g %% 3 + 1], 'seeded ' || g, "
                "jsonb_build_object('channel', 'store', 'items', g %% 5 + 1) FROM generate_series(1, %s) g",
                (count,),
            )


def create_replication_role(
    admin_url: str, role: str, password: str, publication: str, tables: list[str]
) -> None:
    """A least-privilege capture role: LOGIN REPLICATION, SELECT on the tables, owner of the publication."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN REPLICATION PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(role), sql.Literal(password)
            )
        )
        idents = [sql.Identifier(*t.split(".")) for t in tables]
        conn.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(sql.SQL(", ").join(idents), sql.Identifier(role))
        )
        dbname = conn.info.dbname
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbname), sql.Identifier(role))
        )
        if not conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone():
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(publication), sql.SQL(", ").join(idents)
                )
            )
        conn.execute(
            sql.SQL("ALTER PUBLICATION {} OWNER TO {}").format(
                sql.Identifier(publication), sql.Identifier(role)
            )
        )


class ShopWorkload:
    """Writes orders at about ``rate`` changes/s (inserts, updates, some deletes) in a background thread.

    ``commits`` collects (order id, commit wall time) of inserted orders, for freshness measurements.
    """

    def __init__(self, url: str, rate: float = 50.0, seed: int = 7, per_transaction: int = 5) -> None:
        self.url = url
        self.rate = rate
        self.per_transaction = per_transaction
        self.random = random.Random(seed)
        self.commits: list[tuple[int, float]] = []
        self.changes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> ShopWorkload:
        self._thread = threading.Thread(target=self._run, name="shop-workload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                interval = self.per_transaction / self.rate
                next_at = time.monotonic()
                while not self._stop.is_set():
                    self._one_transaction(conn)
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # surfaced to the caller through .error
            self.error = exc

    def _one_transaction(self, conn: psycopg.Connection) -> None:
        r = self.random
        inserted = []
        with conn.transaction():
            for _ in range(self.per_transaction):
                roll = r.random()
                if roll < 0.6 or not self.commits:
                    row = conn.execute(
                        "INSERT INTO orders (customer_id, quantity, amount, status, note, attributes) "
                        "VALUES (%s, %s, %s, 'new', %s, %s) RETURNING id",
                        (
                            r.randint(1, 100),
                            r.randint(1, 9),
                            round(r.uniform(1, 500), 2),
                            f"note {r.random():.6f}",
                            json.dumps({"channel": "web", "items": r.randint(1, 5)}),
                        ),
                    ).fetchone()
                    inserted.append(row[0])
                elif roll < 0.9:
                    conn.execute(
                        "UPDATE orders SET status = %s, quantity = quantity + 1 WHERE id = %s",
                        (r.choice(["paid", "shipped", "returned"]), r.choice(self.commits)[0]),
                    )
                else:
                    conn.execute("DELETE FROM orders WHERE id = %s", (r.choice(self.commits)[0],))
        now = time.time()
        self.commits.extend((order_id, now) for order_id in inserted)
        self.changes += self.per_transaction
