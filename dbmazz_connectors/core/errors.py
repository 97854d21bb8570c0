"""One error hierarchy for dbmazz; every error keeps its inputs as attributes and never carries a password."""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "DbmazzError",
    "ConfigError",
    "PreflightError",
    "Problem",
    "SourceError",
    "SlotInvalidatedError",
    "LogPurgedError",
    "MissingPrimaryKeyError",
    "UnmappableTypeError",
    "UnrepresentableValueError",
    "SchemaChangeError",
    "SinkError",
    "ChangeLogError",
    "UnknownConnectorError",
    "TransientError",
    "redact",
    "caused_by",
]

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)@", re.I)
_KV_PASSWORD = re.compile(r"(?P<key>\bpassword\s*[=:]\s*)(?P<secret>'[^']*'|\"[^\"]*\"|\S+)", re.I)


# the server's own words, not a secret: MySQL's "Access denied for user 'u'@'h' (using password: YES)"
_SERVER_PHRASE = re.compile(r"using password: (?:YES|NO)\)", re.I)


def _redact_pair(match: re.Match[str]) -> str:
    if _SERVER_PHRASE.match(match.string, match.start() - len("using "), match.end() + 1):
        return str(match.group(0))
    return f"{match.group('key')}***"


def caused_by(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` or an error it wraps is a ``kind``: classify by type, not by the words of a message.

    Drivers wrap the error that happened (``__cause__``, ``__context__``, urllib3's ``reason``, PyMySQL's
    ``original_exception``); a TLS verification failure, say, stays an ``ssl.SSLCertVerificationError`` inside.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        for attr in ("__cause__", "__context__", "reason", "original_exception"):
            inner = getattr(current, attr, None)
            if isinstance(inner, BaseException):
                pending.append(inner)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return False


def redact(text: str) -> str:
    """Return ``text`` with passwords in URLs and ``password=...`` pairs replaced by ``***``
    (MySQL's ``(using password: YES)``, which says whether one was sent, is kept)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _KV_PASSWORD.sub(_redact_pair, text)


class DbmazzError(Exception):
    """Root of every error dbmazz raises on purpose.

    ``transient`` tells an orchestrator whether retrying the same step may succeed
    (a lost connection) or not (a missing primary key): only transient errors are retried.
    """

    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = redact(message)
        self.hint = redact(hint) if hint else None
        super().__init__(self.message if not self.hint else f"{self.message}; fix: {self.hint}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments than their ``args``: rebuild from the attributes
        # (notes included) without calling ``__init__``, so an error survives a trip to another process.
        return _restore_error, (type(self), self.args, dict(self.__dict__))


def _restore_error(cls: type[DbmazzError], args: tuple[Any, ...], state: dict[str, Any]) -> DbmazzError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class TransientError(DbmazzError):
    """A failure a retry of the same step may cure (connection lost, server restarting)."""

    transient = True


class ConfigError(DbmazzError):
    """The configuration is invalid; nothing was changed."""


class Problem:
    """One failed preflight check: what is wrong and the statement that fixes it."""

    __slots__ = ("check", "message", "fix")

    def __init__(self, check: str, message: str, fix: str | None = None) -> None:
        self.check = check
        self.message = redact(message)
        self.fix = redact(fix) if fix else None

    def __repr__(self) -> str:
        return f"Problem({self.check!r}, {self.message!r}, fix={self.fix!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and (self.check, self.message, self.fix) == (
            other.check,
            other.message,
            other.fix,
        )

    def __hash__(self) -> int:
        return hash((self.check, self.message, self.fix))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Problem, (self.check, self.message, self.fix))

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}" + (f"\n    fix: {self.fix}" if self.fix else "")


class PreflightError(DbmazzError):
    """One or more preflight checks failed; ``problems`` lists each with its fix."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(str(p) for p in self.problems)
        super().__init__(f"preflight found {len(self.problems)} problem(s):\n{lines}")


class SourceError(DbmazzError):
    """The source failed in a way that is not a user error."""


class SlotInvalidatedError(SourceError):
    """PostgreSQL invalidated the replication slot; changes since the checkpoint are gone."""

    def __init__(self, slot: str, reason: str) -> None:
        self.slot = slot
        self.reason = reason
        super().__init__(
            f"replication slot {slot!r} was invalidated by the server ({reason}); "
            "changes since the last checkpoint can no longer be read",
            hint=f"drop the slot (SELECT pg_drop_replication_slot('{slot}')), run setup again "
            "and re-snapshot the pipeline's tables; raise max_slot_wal_keep_size to prevent it",
        )


class LogPurgedError(SourceError):
    """The source's log no longer holds the checkpoint (a purged binlog file)."""

    def __init__(self, position: str, oldest: str) -> None:
        self.position = position
        self.oldest = oldest
        super().__init__(
            f"the checkpoint {position} is no longer in the server's log (oldest available: {oldest})",
            hint="re-snapshot the pipeline's tables; raise binlog_expire_logs_seconds to prevent it",
        )


class MissingPrimaryKeyError(DbmazzError):
    """A replicated table has no primary key."""

    def __init__(self, table: str, fix: str | None = None) -> None:
        """``fix``: the statement that gives the table a key, where the source knows one (``dbmazz check``
        prints it when a unique index on NOT NULL columns exists); otherwise the table is to be removed."""
        self.table = table
        super().__init__(
            f"expected a primary key on {table}, found none",
            hint=fix
            or f"remove {table} from the pipeline's tables, or give it a primary key (`dbmazz check` "
            "prints the statement where a unique index on NOT NULL columns can become one)",
        )

    @classmethod
    def remove_hint(cls, table: str) -> str:
        """The fix where no unique index on NOT NULL columns exists: the table leaves the pipeline."""
        return (
            f"remove {table} from the pipeline's tables (no unique index on NOT NULL columns could become its "
            "primary key; REPLICA IDENTITY FULL is not enough: rows need a key in the sinks)"
        )


class UnmappableTypeError(DbmazzError):
    """A column's type has no logical type (source side) or no native type (sink side)."""

    def __init__(self, table: str, column: str, type_name: str, connector: str) -> None:
        self.table = table
        self.column = column
        self.type_name = type_name
        self.connector = connector
        super().__init__(
            f"{connector}: cannot map column {table}.{column} of type {type_name}",
            hint="cast the column to a supported type or exclude the table; see docs/types.md",
        )


class UnrepresentableValueError(DbmazzError):
    """A value cannot be held by the target type (out of range, too precise)."""

    def __init__(self, table: str, column: str, detail: str, hint: str | None = None) -> None:
        self.table = table
        self.column = column
        self.detail = detail
        super().__init__(f"a value of {table}.{column} cannot be written: {detail}", hint=hint)


class SchemaChangeError(DbmazzError):
    """A schema change the target cannot follow; raised before any data of the batch is written."""


class SinkError(DbmazzError):
    """The sink rejected a write or is unreachable."""


class ChangeLogError(DbmazzError):
    """The change log is missing or inconsistent."""


class UnknownConnectorError(ConfigError):
    """No source or sink is registered under the requested name."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        super().__init__(f"unknown {kind} {name!r}; expected one of {', '.join(sorted(known))}")


class TableChangedError(SourceError):
    """A replicated table was dropped, re-created, renamed or left the capture (publication); its changes
    can no longer be followed, and capturing on would read it as silent zero rows."""

    def __init__(self, table: str, detail: str, fix: str) -> None:
        self.table = table
        self.detail = detail
        self.fix = fix
        super().__init__(f"table {table} {detail}; its changes are no longer captured", hint=fix)
