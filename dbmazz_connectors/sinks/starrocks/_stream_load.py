"""Stream Load over HTTP: one PUT per load, the FE's 307 redirect to a BE followed by hand.

``requests`` drops the Authorization header when a redirect changes the host, and a BE is
usually another host than the FE, so the redirect is followed here with the same headers. The
request announces ``Expect: 100-continue`` and sends its body only once the server says so (or
stays silent for a moment): the FE answers the headers alone with its redirect, so the body
travels once, to the BE. The response is StarRocks' JSON (``Status``, ``Message``, ``ErrorURL``...).
"""

from __future__ import annotations

import base64
import json
import select
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ...core.errors import ConfigError, DbmazzError, SinkError, TransientError

__all__ = ["LoadResponse", "StreamLoadError", "StreamLoadUnavailableError", "put_stream_load"]

_MAX_REDIRECTS = 3
_CONTINUE_WAIT = 1.0  # seconds to wait for "100 Continue" before sending the body anyway (RFC 9110 allows it)


class StreamLoadError(SinkError):
    """StarRocks refused a Stream Load (``Status: Fail``); retrying the same rows fails the same way."""

    def __init__(self, table: str, label: str, status: str, detail: str, error_url: str) -> None:
        self.table = table
        self.label = label
        self.status = status
        self.detail = detail
        self.error_url = error_url
        where = f" (rejected rows: {error_url})" if error_url else ""
        super().__init__(
            f"starrocks sink: the Stream Load {label} into {table} failed: {status}: {detail}{where}",
            hint="read the rejected rows at the ErrorURL; a value that does not fit its column "
            "usually means the sink table's type differs from the source (see docs/types.md)",
        )


class StreamLoadUnavailableError(TransientError):
    """The FE or BE could not take the load now (connection lost, HTTP 5xx, a label still running)."""

    def __init__(self, table: str, label: str, detail: str) -> None:
        self.table = table
        self.label = label
        self.detail = detail
        super().__init__(
            f"starrocks sink: the Stream Load {label} into {table} did not complete: {detail}",
            hint="re-run the batch; a load already committed is recognised by its label",
        )


@dataclass(frozen=True)
class LoadResponse:
    status: str  # "Success", "Publish Timeout" or "Label Already Exists"
    loaded_rows: int
    filtered_rows: int
    body: dict[str, Any]

    @property
    def already_loaded(self) -> bool:
        return self.status == "Label Already Exists"


@dataclass(frozen=True)
class _Http:
    status: int
    headers: dict[str, str]
    body: bytes


def put_stream_load(
    host: str,
    port: int,
    database: str,
    table: str,
    headers: dict[str, str],
    body: bytes,
    *,
    user: str,
    password: str,
    timeout: float,
    source_table: str,
) -> LoadResponse:
    """PUT ``body`` to ``/api/{database}/{table}/_stream_load``; raise a dbmazz error unless it loaded
    (or its label had loaded before)."""
    label = headers.get("label", "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    sent = {
        **headers,
        "Authorization": f"Basic {token}",
        "Expect": "100-continue",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    target, path = (host, port), f"/api/{database}/{table}/_stream_load"
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            answer = _put(target, path, sent, body, timeout)
        except OSError as exc:
            raise StreamLoadUnavailableError(
                source_table, label, f"{host}:{port}: {type(exc).__name__}: {exc}"
            ) from None
        if answer.status in (301, 302, 303, 307, 308):
            location = urlsplit(answer.headers.get("location", ""))
            if not location.hostname:
                raise StreamLoadUnavailableError(
                    source_table, label, f"a redirect without a location ({answer.status})"
                )
            target, path = (
                (location.hostname, location.port or 80),
                location.path + (f"?{location.query}" if location.query else ""),
            )
            continue
        return _outcome(answer, source_table, label, user)
    raise StreamLoadUnavailableError(source_table, label, f"more than {_MAX_REDIRECTS} redirects")


def _outcome(answer: _Http, table: str, label: str, user: str) -> LoadResponse:
    if answer.status in (401, 403):
        raise ConfigError(
            f"starrocks sink: Stream Load refused user {user} (HTTP {answer.status}: wrong password, "
            "unknown user or no INSERT privilege)",
            hint="check the user and password of the sink (the 'password' key) and GRANT INSERT",
        )
    if answer.status >= 500 or answer.status == 408:
        raise StreamLoadUnavailableError(table, label, f"HTTP {answer.status}")
    try:
        result = json.loads(answer.body or b"{}")
    except ValueError:
        result = None
    if answer.status != 200 or not isinstance(result, dict):
        raise StreamLoadError(
            table, label, f"HTTP {answer.status}", answer.body[:300].decode(errors="replace"), ""
        )
    return _classified(result, table, label)


def _classified(result: dict[str, Any], table: str, label: str) -> LoadResponse:
    status = str(result.get("Status", ""))
    if status in ("Success", "Publish Timeout"):  # Publish Timeout: committed, visible shortly
        return LoadResponse(
            status, int(result.get("NumberLoadedRows", 0)), int(result.get("NumberFilteredRows", 0)), result
        )
    if status == "Label Already Exists":
        existing = str(result.get("ExistingJobStatus", ""))
        if existing in ("FINISHED", "VISIBLE", "COMMITTED"):
            return LoadResponse(status, 0, 0, result)
        raise StreamLoadUnavailableError(
            table, label, f"an earlier load with this label is {existing or 'unknown'}"
        )
    error: DbmazzError = StreamLoadError(
        table,
        label,
        status or "no Status",
        str(result.get("Message", ""))[:500],
        str(result.get("ErrorURL", "") or ""),
    )
    raise error


def _put(target: tuple[str, int], path: str, headers: dict[str, str], body: bytes, timeout: float) -> _Http:
    with socket.create_connection(target, timeout=timeout) as sock:
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {target[0]}:{target[1]}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        )
        sock.sendall(head.encode())  # UTF-8: column names in the columns header may be non-ASCII
        reader = sock.makefile("rb")
        readable, _, _ = select.select([sock], [], [], _CONTINUE_WAIT)
        if readable:
            answer = _read_response(reader)
            if answer.status != 100:
                return answer  # the FE's redirect, or a refusal before the body
        sock.sendall(body)
        answer = _read_response(reader)
        while answer.status == 100:  # a late "100 Continue" after the body was already on its way
            answer = _read_response(reader)
        return answer


def _read_response(reader: Any) -> _Http:
    line = reader.readline(65537)
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ConnectionError(f"not an HTTP response: {line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        raw = reader.readline(65537)
        if raw in (b"\r\n", b"\n", b""):
            break
        key, _, value = raw.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    status = int(parts[1])
    if status == 100:
        return _Http(status, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return _Http(status, headers, _read_chunked(reader))
    if "content-length" in headers:
        return _Http(status, headers, reader.read(int(headers["content-length"])))
    return _Http(status, headers, reader.read())


def _read_chunked(reader: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int(reader.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            reader.readline()
            return b"".join(chunks)
        chunks.append(reader.read(size))
        reader.readline()
