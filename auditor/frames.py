"""What crosses the pipe between a serving process and its writer process.

A frame is a 4-byte little-endian length and a ``marshal`` payload: marshal is
the cheapest serializer CPython has for tuples of str/bytes/numbers, and the
serving process pays for every byte of it. Captured exchanges travel as flat
tuples (``to_portable``) and become ``ShippedCapture`` objects again on the
other side (``from_portable``), so ``RowBuilder`` treats both alike.
"""

from __future__ import annotations

import marshal
import os
import struct
from typing import Any

from auditor.rows import CapturedExchange, ShippedCapture, route_template

_LENGTH = struct.Struct("<I")
MAX_FRAME = 1 << 30

# Shared counters (a page of unsigned 64-bit slots) that survive a SIGKILL of the
# serving process, whose event loop alone writes them: exchanges queued for the
# writer process, and exchanges its full queue turned away.
QUEUED, QUEUE_FULL = range(2)
COUNTERS_SIZE = 4096

# The scope keys a row needs, in portable order (``to_portable`` spells them out).
_SCOPE_KEYS = (
    "method",
    "scheme",
    "server",
    "client",
    "root_path",
    "path",
    "raw_path",
    "query_string",
    "headers",
    "http_version",
)


def to_portable(exchange: CapturedExchange) -> tuple[Any, ...]:
    """The exchange as a marshal-able tuple; runs in the serving process, off the loop."""
    scope = exchange.scope
    get = scope.get
    error = exchange.error
    headers = exchange.headers
    return (
        (  # spelled out: a generator here costs the shipping thread ~1 us a request
            get("method"),
            get("scheme"),
            get("server"),
            get("client"),
            get("root_path"),
            get("path"),
            get("raw_path"),
            get("query_string"),
            get("headers"),
            get("http_version"),
        ),
        route_template(scope),
        exchange.started_at,
        exchange.ended_at,
        exchange.status,
        headers if headers is None or type(headers) is list else list(headers),
        exchange.body_size,
        exchange.complete,
        type(error).__name__ if error is not None else None,
    )


class _ShippedError(Exception):
    """Stands for the app's exception in the writer process; only its name is kept."""


_ERROR_TYPES: dict[str, type[_ShippedError]] = {}


def _error_named(name: str) -> _ShippedError:
    kind = _ERROR_TYPES.get(name)
    if kind is None:
        kind = _ERROR_TYPES[name] = type(name, (_ShippedError,), {})
    return kind()


def from_portable(item: tuple[Any, ...]) -> ShippedCapture:
    """Rebuild a capture from ``to_portable``'s tuple (in the writer process)."""
    scope_values, route, started, ended, status, headers, body_size, complete, error = item
    return ShippedCapture(
        dict(zip(_SCOPE_KEYS, scope_values, strict=True)),  # absent keys arrive as None
        route,
        started,
        ended,
        status,
        headers,
        body_size,
        complete,
        _error_named(error) if error else None,
    )


def encode(message: Any) -> bytes:
    """One frame; raises ValueError if something in ``message`` cannot be marshalled."""
    payload = marshal.dumps(message)
    return _LENGTH.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a blocking file descriptor (pipes may take less at once)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(stream: Any) -> Any | None:
    """The next message from a binary stream, or None at end of file."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return marshal.loads(payload)
