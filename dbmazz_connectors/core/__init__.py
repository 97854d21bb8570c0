"""Core model: positions, logical types, schemas, change events, protocols, errors, registry."""

from .batch import ChangeBatch, ChangeEvent, Heartbeat, Rows, SchemaChange, TableEvent, Truncate, op_counts
from .compaction import compact, conform, fold
from .errors import (
    ChangeLogError,
    ConfigError,
    DbmazzError,
    LogPurgedError,
    MissingPrimaryKeyError,
    PreflightError,
    Problem,
    SchemaChangeError,
    SinkError,
    SlotInvalidatedError,
    SourceError,
    TableChangedError,
    TransientError,
    UnknownConnectorError,
    UnmappableTypeError,
    UnrepresentableValueError,
    redact,
)
from .positions import (
    SourcePosition,
    position_class,
    position_from_dict,
    register_position,
    registered_positions,
)
from .protocols import BatchRef, LoadingModel, Sink, SinkCapabilities, Source, WriteResult
from .registry import SINKS, SOURCES, create_sink, create_source
from .schema import (
    COMMIT_TS_COLUMN,
    META_FIELDS,
    OP_COLUMN,
    OP_DELETE,
    OP_INSERT,
    OP_UPDATE,
    UNKNOWN_COLUMN,
    VERSION_COLUMN,
    Column,
    TableSchema,
)
from .types import Kind, LogicalType

__all__ = [
    "BatchRef", "COMMIT_TS_COLUMN", "ChangeBatch", "ChangeEvent", "ChangeLogError",
    "Column", "ConfigError", "DbmazzError", "Heartbeat", "Kind", "LoadingModel", "LogPurgedError",
    "LogicalType", "META_FIELDS", "MissingPrimaryKeyError", "OP_COLUMN", "OP_DELETE", "OP_INSERT",
    "OP_UPDATE", "PreflightError", "Problem", "Rows", "SINKS", "SOURCES", "SchemaChange", "SchemaChangeError",
    "Sink", "SinkCapabilities", "SinkError", "SlotInvalidatedError", "Source", "SourceError", "SourcePosition",
    "TableChangedError", "TableEvent", "TableSchema", "TransientError", "Truncate", "UNKNOWN_COLUMN", "UnknownConnectorError",
    "UnmappableTypeError", "UnrepresentableValueError", "VERSION_COLUMN", "WriteResult", "compact", "conform",
    "create_sink", "create_source", "fold", "op_counts", "position_class", "position_from_dict", "redact",
    "register_position", "registered_positions",
]
