"""Test configuration: every module in tests/fixtures/ is a pytest plugin (one per server kind)."""

import pkgutil
from pathlib import Path

pytest_plugins = [
    f"tests.fixtures.{module.name}"
    for module in pkgutil.iter_modules([str(Path(__file__).parent / "fixtures")])
]
