"""The orders workload for PostgreSQL benchmarks: insert N rows, update 25%, delete 10% (~1.35 N changes)."""

from __future__ import annotations

ORDERS_DDL = """
CREATE TABLE public.orders (
  id bigint PRIMARY KEY, customer_id int, amount numeric(12,2), status text, note text,
  created_at timestamptz, payload jsonb)
"""

_INSERT = """
INSERT INTO public.orders
SELECT g, (g %% 50000)::int, ((g %% 100000) / 100.0)::numeric(12,2), (ARRAY['new','paid','shipped'])[1 + g %% 3],
  'order note ' || md5(g::text), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
  jsonb_build_object('sku', 'SKU-' || (g %% 977), 'qty', g %% 7, 'gift', g %% 2 = 0)
FROM generate_series(%s::int8, %s::int8) g
"""

__all__ = ["ORDERS_DDL", "run_orders_workload", "insert_orders"]


def run_orders_workload(conn, rows: int, chunk: int = 100_000) -> int:
    """Insert ``rows`` orders (in transactions of ``chunk``), update 25%, delete 10%; returns the change count."""
    for low in range(1, rows + 1, chunk):
        conn.execute(_INSERT, (low, min(low + chunk - 1, rows)))
    for low in range(1, rows + 1, chunk):
        conn.execute(
            "UPDATE public.orders SET status = 'updated', amount = amount + 1 "
            "WHERE id BETWEEN %s AND %s AND id %% 4 = 0",
            (low, low + chunk - 1),
        )
    for low in range(1, rows + 1, chunk):
        conn.execute(
            "DELETE FROM public.orders WHERE id BETWEEN %s AND %s AND id %% 10 = 1", (low, low + chunk - 1)
        )
    return rows + rows // 4 + rows // 10


def insert_orders(conn, rows: int, chunk: int = 500_000) -> None:
    """Insert orders ``1..rows`` (in transactions of ``chunk``), then VACUUM ANALYZE: a settled table to snapshot."""
    for low in range(1, rows + 1, chunk):
        conn.execute(_INSERT, (low, min(low + chunk - 1, rows)))
    conn.execute("VACUUM ANALYZE public.orders")
