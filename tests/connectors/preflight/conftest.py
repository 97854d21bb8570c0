"""Fixtures of the preflight tests: the least-privilege PostgreSQL role and MariaDB user of the source tests."""

from tests.connectors.sources.mysql.conftest import full_row_metadata, make_source  # noqa: F401 - fixtures
from tests.connectors.sources.postgres.conftest import capture_role  # noqa: F401 - the least-privilege role
