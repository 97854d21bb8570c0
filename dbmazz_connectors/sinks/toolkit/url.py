"""One parser for connection URLs: ``scheme://user:password@host:port/database?option=value``.

Every connector config accepts a ``url`` plus separate keys that override its parts; ``parse_url``
does the URL half the same way for all of them: percent-decoded user, password and database, a
numeric port (or a clear error), the query's options (the last value of a repeated one), and the
scheme checked against the ones the connector serves, with an example in the error.

Secrets: a password never appears in ``repr`` (it shows as ``'***'``) nor in any message raised
here. Configs never read the environment themselves: ``password_env: VAR`` and ``${VAR}`` inside a
URL are resolved before the connector sees its mapping (``dbmazz_connectors.config.resolve_secrets``),
so the url given here already holds the password, if any.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from ...core.errors import ConfigError

__all__ = ["ConnectionUrl", "parse_url", "TRUE_WORDS", "flag"]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


def flag(value: object) -> bool:
    """A config or query flag: ``True`` for true/yes/on/1 (any case), else False."""
    return value is True or str(value).strip().lower() in TRUE_WORDS


@dataclass(frozen=True)
class ConnectionUrl:
    """The parts of a connection URL, decoded; ``None`` where the URL has none."""

    scheme: str  # lower case
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None  # the path without its slashes, decoded ("" -> None)
    path: str = ""  # the raw path (file URLs: duckdb:///dir/file.duckdb -> /dir/file.duckdb)
    netloc: str = ""
    query: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        password = "None" if self.password is None else "'***'"
        return (
            f"ConnectionUrl(scheme={self.scheme!r}, user={self.user!r}, password={password}, host={self.host!r}, "
            f"port={self.port!r}, database={self.database!r}, query={dict(self.query)!r})"
        )

    __str__ = __repr__


def parse_url(
    url: str,
    *,
    who: str,
    schemes: Collection[str],
    example: str,
    default_port: int | None = None,
    options: Collection[str] | None = None,
) -> ConnectionUrl:
    """Parse ``url`` for the connector ``who`` (``"clickhouse sink"``), which serves ``schemes``.

    ``example`` is shown in the error for another scheme; ``default_port`` is used when the URL has
    none; ``options``, if given, are the only query options accepted (others raise ConfigError).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced [ in the host, say; the url may hold a password: not shown
        raise ConfigError(
            f"{who}: expected a url like {example}, got one that does not parse ({exc})"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in {s.lower() for s in schemes}:
        raise ConfigError(f"{who}: expected a url like {example}, got the scheme {scheme!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{who}: expected a numeric port in the url") from None
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    if options is not None:
        unknown = sorted(set(query) - set(options))
        if unknown:
            raise ConfigError(
                f"{who}: unknown url parameter(s) {', '.join(unknown)}; "
                f"expected {', '.join(sorted(options)) or 'none'}"
            )
    database = unquote(parts.path.strip("/"))
    return ConnectionUrl(
        scheme=scheme,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname,
        port=port if port is not None else default_port,
        database=database or None,
        path=parts.path,
        netloc=parts.netloc,
        query=query,
    )
