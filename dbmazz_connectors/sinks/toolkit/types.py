"""``TypeMapper``: a sink's type table as data — logical type -> native column type, and the values it cannot hold.

A sink's mapper is a subclass that fills in class attributes; the methods here read them:

* ``NATIVE``: ``Kind`` -> native type for every scalar kind the sink stores (a kind missing here is
  refused as unmappable, naming table and column, before anything is written);
* ``decimal(p, s)``, ``MAX_DECIMAL_PRECISION``, ``WIDE_DECIMAL``, ``UNBOUNDED_DECIMAL``: bounded decimals
  as ``decimal(p, s)``; beyond ``MAX_DECIMAL_PRECISION`` digits as ``WIDE_DECIMAL`` (exact text, say),
  unbounded ones (PostgreSQL ``numeric``) as ``UNBOUNDED_DECIMAL``;
* ``array(element_native)``: the native type of an array of an element's native type;
* ``RULES``: ``Kind`` -> ``ValueRule``, the values of that kind the sink cannot hold (a date outside its
  range, a text with NUL); the sink's ``out_of_range`` policy (``ValueGuard``) applies them;
* ``LOGICAL``: native type name -> logical type, for reading a sink table back (``logical()``);
* ``VERSION``: the native type of ``_dbmazz_version`` (a uint64).

``same_native(a, b)``: whether two logical types share a native type, so a change between them needs no
DDL (enum labels, enum -> string where both are text); ``reconcile_columns`` asks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ...core.errors import UnmappableTypeError
from ...core.types import Kind, LogicalType
from .._policy import ValueRule

__all__ = ["TypeMapper"]


class TypeMapper:
    """Base of every sink's type table (class-level: docs, DDL and tests read one source)."""

    SINK: ClassVar[str] = "sink"  # the sink's name, for messages
    NATIVE: ClassVar[Mapping[Kind, str]] = {}
    LOGICAL: ClassVar[Mapping[str, LogicalType]] = {}
    RULES: ClassVar[Mapping[Kind, ValueRule]] = {}
    MAX_DECIMAL_PRECISION: ClassVar[int | None] = None  # None: every precision as decimal(p, s)
    WIDE_DECIMAL: ClassVar[str] = "VARCHAR"  # decimals with more digits than MAX_DECIMAL_PRECISION
    UNBOUNDED_DECIMAL: ClassVar[str] = "VARCHAR"  # decimals without a precision
    VERSION: ClassVar[str] = "UBIGINT"

    @classmethod
    def decimal(cls, precision: int, scale: int) -> str:
        return f"DECIMAL({precision},{scale})"

    @classmethod
    def array(cls, element: str) -> str:
        return f"{element}[]"

    @classmethod
    def scalar(cls, logical: LogicalType) -> str:
        """The native type of a non-array logical type; KeyError where the table has none."""
        if logical.kind is Kind.DECIMAL:
            if logical.precision is None:
                return cls.UNBOUNDED_DECIMAL
            if cls.MAX_DECIMAL_PRECISION is not None and logical.precision > cls.MAX_DECIMAL_PRECISION:
                return cls.WIDE_DECIMAL
            return cls.decimal(logical.precision, logical.scale or 0)
        return cls.NATIVE[logical.kind]

    @classmethod
    def native(cls, logical: LogicalType) -> str:
        """The native column type of ``logical``; KeyError where the table has none (see ``check``)."""
        if logical.kind is Kind.ARRAY:
            assert logical.element is not None
            return cls.array(cls.native(logical.element))
        return cls.scalar(logical)

    @classmethod
    def check(cls, table: str, column: str, logical: LogicalType) -> str:
        """``native(logical)``, or UnmappableTypeError naming the table and column."""
        try:
            return cls.native(logical)
        except KeyError:
            raise UnmappableTypeError(table, column, str(logical), cls.SINK) from None

    @classmethod
    def same_native(cls, a: LogicalType, b: LogicalType) -> bool:
        return cls.native(a) == cls.native(b)

    @classmethod
    def value_rule(cls, logical: LogicalType) -> ValueRule | None:
        """The values of ``logical`` the sink cannot hold (None: it holds them all)."""
        return cls.RULES.get(logical.kind)

    @classmethod
    def logical(cls, native: str) -> LogicalType:
        """Back from a native type name to the logical type it holds (sinks add their syntax: arrays, decimals)."""
        return cls.LOGICAL[native]
