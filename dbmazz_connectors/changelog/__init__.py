"""The staged change log: Parquet parts + a manifest per batch, on any pyarrow filesystem."""

from .manifest import BatchManifest, TableEntry
from .store import BatchWriter, ChangeLog

__all__ = ["BatchManifest", "BatchWriter", "ChangeLog", "TableEntry"]
