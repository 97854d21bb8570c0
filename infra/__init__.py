"""Throw-away servers for tests, benchmarks and the demo (PostgreSQL, MariaDB, ClickHouse)."""
