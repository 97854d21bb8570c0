"""MySQL 8 binary JSON (the JSON column's binlog form) to JSON text. MariaDB stores JSON as text."""

from __future__ import annotations

import json
import struct

__all__ = ["mysql_json_to_text", "decode_binary_json"]

_INLINE_SMALL = {0x04, 0x05, 0x06}
_INLINE_LARGE = {0x04, 0x05, 0x06, 0x07, 0x08}


def mysql_json_to_text(data: bytes) -> str:
    """The JSON text of one binary JSON document (keys keep their stored order)."""
    if not data:
        return "null"
    return json.dumps(decode_binary_json(data[0], data, 1), ensure_ascii=False, separators=(", ", ": "))


def _varlen(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _scalar(kind: int, data: bytes, pos: int):
    if kind == 0x04:
        return {0: None, 1: True, 2: False}[data[pos]]
    fmt = {0x05: "<h", 0x06: "<H", 0x07: "<i", 0x08: "<I", 0x09: "<q", 0x0A: "<Q", 0x0B: "<d"}.get(kind)
    if fmt:
        return struct.unpack_from(fmt, data, pos)[0]
    if kind == 0x0C:
        length, pos = _varlen(data, pos)
        return data[pos : pos + length].decode()
    if kind == 0x0F:  # opaque (decimal, temporal, ...): carried as the hex of its payload
        length, pos = _varlen(data, pos + 1)
        return "base16:" + data[pos : pos + length].hex()
    raise ValueError(f"expected a MySQL binary JSON type, got {kind:#x}")


def decode_binary_json(kind: int, data: bytes, pos: int):
    """Decode the value of type ``kind`` whose payload starts at ``pos``."""
    if kind in (0x00, 0x01, 0x02, 0x03):
        return _container(kind, data, pos)
    return _scalar(kind, data, pos)


def _container(kind: int, data: bytes, base: int):
    large = kind in (0x01, 0x03)
    width, fmt = (4, "<I") if large else (2, "<H")
    count = struct.unpack_from(fmt, data, base)[0]
    pos = base + 2 * width
    keys = []
    if kind in (0x00, 0x01):
        for _ in range(count):
            key_offset = struct.unpack_from(fmt, data, pos)[0]
            key_length = struct.unpack_from("<H", data, pos + width)[0]
            keys.append(data[base + key_offset : base + key_offset + key_length].decode())
            pos += width + 2
    inline = _INLINE_LARGE if large else _INLINE_SMALL
    values = []
    for _ in range(count):
        value_kind = data[pos]
        if value_kind in inline:
            values.append(_scalar(value_kind, data, pos + 1))
        else:
            offset = struct.unpack_from(fmt, data, pos + 1)[0]
            values.append(decode_binary_json(value_kind, data, base + offset))
        pos += 1 + width
    return dict(zip(keys, values, strict=True)) if keys or kind in (0x00, 0x01) else values
