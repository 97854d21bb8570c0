"""Source positions as plugins: the contract every source's position type fulfils, and their registry.

Core never knows a concrete position type. Each source package defines its own ``SourcePosition``
subclass (PostgreSQL's WAL location, MySQL's binlog coordinate, ...) and registers it under a
``kind`` tag; the change log, the engine and the Dagster layer store and compare positions only
through this contract, and rebuild them with ``position_from_dict``.

A position type is found, by kind, in this order: ``register_position`` calls already made, then
the in-tree sources (``BUILTIN_POSITIONS``, imported on first use), then the ``dbmazz.positions``
entry-point group (``kind = "package.module:Class"``) of out-of-tree sources.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, ClassVar, Self

from .errors import ChangeLogError, ConfigError

__all__ = [
    "SourcePosition",
    "register_position",
    "position_from_dict",
    "position_class",
    "registered_positions",
    "BUILTIN_POSITIONS",
    "ENTRY_POINT_GROUP",
    "UINT64_MAX",
]

UINT64_MAX = 2**64 - 1
ENTRY_POINT_GROUP = "dbmazz.positions"

# kind -> the in-tree module that defines and registers it (imported lazily, like the connector registry)
BUILTIN_POSITIONS: dict[str, str] = {
    "lsn": "dbmazz_connectors.sources.postgres.position",
    "binlog": "dbmazz_connectors.sources.mysql.position",
}

_REGISTRY: dict[str, type[SourcePosition]] = {}


class SourcePosition(ABC):
    """A point in one source's log. Positions of one kind are totally ordered.

    A subclass sets ``kind`` (the tag its ``to_dict`` carries), implements ``version``, ``to_dict``,
    ``from_dict`` and ``__str__``, and is registered with ``register_position``. Subclasses are
    expected to be immutable and hashable (a frozen dataclass is the usual shape).

    ``version`` is the uint64 written to ``_dbmazz_version`` for rows whose transaction commits at
    this position: it grows strictly with the position (``a < b`` implies ``a.version < b.version``
    for the positions a source reports as transaction boundaries). The order defaults to ``version``'s;
    comparing positions of two different kinds raises ``TypeError``.
    """

    kind: ClassVar[str]

    @property
    @abstractmethod
    def version(self) -> int:
        """The uint64 version of the changes committed at this position."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, with ``"kind": self.kind``; ``from_dict`` rebuilds the position."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild a position from ``to_dict``'s output (``data["kind"]`` is this class's kind)."""

    @abstractmethod
    def __str__(self) -> str:
        """The source's own notation, for logs and the UI (e.g. ``16/B374D848``)."""

    def sort_key(self) -> Any:
        """What the total order compares; ``version`` unless the type knows better."""
        return self.version

    def bytes_since(self, earlier: SourcePosition) -> int | None:
        """Bytes of source log between ``earlier`` and this position, where the source can tell (capture lag)."""
        return None

    def capped(self, limit: SourcePosition, max_bytes: int) -> SourcePosition:
        """A position at most ``max_bytes`` of source log after this one, and not past ``limit``: where a batch
        starting here ends when its size is capped (docs/architecture.md, "Bounded batches").

        The source extends a range to the next transaction boundary, so the result may be any position of the
        log, even inside a transaction. The default, for a type whose log has no byte arithmetic, is ``limit``
        (no cap). An override returns a position ``p`` with ``self < p <= limit`` (``limit`` itself when it is
        within the cap), of this type.
        """
        return limit

    def _comparable(self, other: object) -> bool:
        return isinstance(other, SourcePosition) and other.kind == self.kind

    def _order_error(self, other: object) -> TypeError:
        other_kind = other.kind if isinstance(other, SourcePosition) else type(other).__name__
        return TypeError(f"cannot compare a {self.kind!r} position with a {other_kind!r} one")

    def __lt__(self, other: object) -> bool:
        if not self._comparable(other):
            raise self._order_error(other)
        assert isinstance(other, SourcePosition)
        return bool(self.sort_key() < other.sort_key())

    def __le__(self, other: object) -> bool:
        if not self._comparable(other):
            raise self._order_error(other)
        assert isinstance(other, SourcePosition)
        return bool(self.sort_key() <= other.sort_key())

    def __gt__(self, other: object) -> bool:
        if not self._comparable(other):
            raise self._order_error(other)
        assert isinstance(other, SourcePosition)
        return bool(self.sort_key() > other.sort_key())

    def __ge__(self, other: object) -> bool:
        if not self._comparable(other):
            raise self._order_error(other)
        assert isinstance(other, SourcePosition)
        return bool(self.sort_key() >= other.sort_key())


def register_position(kind: str, cls: type[SourcePosition]) -> type[SourcePosition]:
    """Register ``cls`` as the position type of ``kind`` (idempotent for the same class).

    Raises:
        ConfigError: ``cls`` is not a ``SourcePosition``, its ``kind`` differs, or ``kind`` is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, SourcePosition)):
        raise ConfigError(
            f"expected a SourcePosition subclass for position kind {kind!r}, got {cls!r}",
            hint="subclass dbmazz_connectors.core.SourcePosition",
        )
    if getattr(cls, "kind", None) != kind:
        raise ConfigError(
            f"position class {cls.__qualname__} has kind {getattr(cls, 'kind', None)!r}, "
            f"registered as {kind!r}",
            hint=f"set kind = {kind!r} on the class",
        )
    known = _REGISTRY.get(kind)
    # the same class again (its module imported twice) is fine
    same = known is not None and (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__)
    if known is not None and known is not cls and not same:
        raise ConfigError(
            f"position kind {kind!r} is already registered by {known.__module__}.{known.__qualname__}",
            hint="give the new position type a kind of its own",
        )
    _REGISTRY[kind] = cls
    return cls


def _load(kind: str) -> type[SourcePosition] | None:
    """Import the module that defines ``kind`` (in-tree or entry point); None if no one declares it."""
    target = BUILTIN_POSITIONS.get(kind)
    if target is None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == kind:
                target = ep.value
                break
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ChangeLogError(
            f"the source position kind {kind!r} needs a module that cannot be imported "
            f"({module_name}: {exc})",
            hint="install the source package (and its driver extra) that wrote this change log",
        ) from exc
    if attr:
        cls = getattr(module, attr)
        if _REGISTRY.get(kind) is not cls:
            register_position(kind, cls)
    return _REGISTRY.get(kind)


def position_class(kind: str) -> type[SourcePosition]:
    """The position type registered for ``kind``.

    Raises:
        ChangeLogError: no source registers ``kind`` (naming the kinds known).
    """
    cls = _REGISTRY.get(kind) or _load(kind)
    if cls is None:
        known = ", ".join(sorted(set(_REGISTRY) | set(BUILTIN_POSITIONS))) or "none"
        raise ChangeLogError(
            f"unknown source position kind {kind!r} (known kinds: {known})",
            hint="import or install the source package that defines it, which registers it "
            "with dbmazz_connectors.core.register_position or the 'dbmazz.positions' entry point",
        )
    return cls


def registered_positions() -> dict[str, type[SourcePosition]]:
    """The position types registered so far, by kind."""
    return dict(_REGISTRY)


def position_from_dict(data: Mapping[str, Any]) -> SourcePosition:
    """Rebuild a position written by ``to_dict``, by its ``kind`` tag.

    Raises:
        ChangeLogError: the record has no kind, an unknown kind, or fields the kind cannot read.
    """
    if not isinstance(data, Mapping) or "kind" not in data:
        raise ChangeLogError(
            f"expected a source position record with a 'kind', got {data!r}",
            hint="the change log record was not written by dbmazz; restore it from a backup",
        )
    cls = position_class(str(data["kind"]))
    try:
        return cls.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ChangeLogError(
            f"cannot read the {data['kind']!r} position {dict(data)!r}: {exc}",
            hint="the change log record is damaged; restore it from a backup",
        ) from exc
