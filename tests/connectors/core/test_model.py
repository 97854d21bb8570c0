"""Positions, logical types and schemas keep their meaning through serialisation."""

import pytest

from dbmazz_connectors.core import (
    ConfigError,
    LogicalType,
    MissingPrimaryKeyError,
    TableSchema,
    UnknownConnectorError,
    create_sink,
    position_from_dict,
    redact,
)
from dbmazz_connectors.core.registry import SINKS, SOURCES
from dbmazz_connectors.sources.mysql.position import BinlogPosition
from dbmazz_connectors.sources.postgres.position import Lsn

from ._rows import ORDERS


def test_lsn_text_round_trip_and_order():
    lsn = Lsn.parse("16/B374D848")
    assert str(lsn) == "16/B374D848"
    assert lsn.version == (0x16 << 32) | 0xB374D848
    assert Lsn.parse("0/1") < Lsn.parse("0/10") < Lsn.parse("1/0")
    assert position_from_dict(lsn.to_dict()) == lsn


def test_binlog_position_orders_by_file_sequence_then_offset():
    a = BinlogPosition("mysql-bin.000009", 4_000_000)
    b = BinlogPosition("mysql-bin.000010", 4)
    assert a < b and a.version < b.version
    assert b.version == (10 << 32) | 4
    assert position_from_dict(b.to_dict()) == b
    with pytest.raises(ValueError, match="ending in a number"):
        BinlogPosition("mysql-bin", 4)


@pytest.mark.parametrize(
    "text",
    [
        "bool",
        "int64",
        "uint64",
        "decimal(12,2)",
        "decimal(60,10)",
        "decimal",
        "array<array<int32>>",
        "enum('a','it''s')".replace("''", "\\'"),
        "timestamptz",
        "interval",
        "json",
        "uuid",
    ],
)
def test_logical_type_text_round_trip(text):
    assert str(LogicalType.parse(text)) == text


def test_arrow_types_keep_precision():
    assert str(LogicalType.decimal(12, 2).to_arrow()) == "decimal128(12, 2)"
    assert str(LogicalType.decimal(60, 10).to_arrow()) == "decimal256(60, 10)"
    assert str(LogicalType.decimal().to_arrow()) == "string"  # unbounded: exact text


def test_schema_round_trip_and_primary_key_check():
    assert TableSchema.from_dict(ORDERS.to_dict()) == ORDERS
    keyless = TableSchema("public", "logs", ORDERS.columns, ())
    with pytest.raises(MissingPrimaryKeyError, match="expected a primary key on public.logs, found none"):
        keyless.require_primary_key()


def test_redact_hides_passwords_in_urls_and_pairs():
    text = "could not connect to postgresql://app:s3cret@db:5432/x (password=s3cret)"
    assert "s3cret" not in redact(text)
    assert "postgresql://app:***@db:5432/x" in redact(text)


def test_registry_names_every_connector_and_rejects_unknown():
    assert set(SOURCES) == {"postgres", "mysql"}
    assert set(SINKS) >= {"duckdb", "clickhouse", "postgres"}
    with pytest.raises(UnknownConnectorError, match="unknown sink 'oracle'"):
        create_sink({"type": "oracle"})
    with pytest.raises(ConfigError, match="expected a sink 'type' or a 'url'"):
        create_sink({})
