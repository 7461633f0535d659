"""What crosses the pipe between a serving process and its writer process.

A frame is a 4-byte little-endian length and a ``marshal`` payload: marshal is
the cheapest serializer CPython has for tuples of str/bytes/numbers, and the
serving process pays for every byte of it. Captured exchanges travel as the flat
tuples ``rows.to_portable`` makes, which ``RowBuilder.build_portable`` reads as
they arrive: no object per request on either side.
"""

from __future__ import annotations

import marshal
import os
import struct
from typing import Any

_LENGTH = struct.Struct("<I")
MAX_FRAME = 1 << 30

# Shared counters (a page of unsigned 64-bit slots) that survive a SIGKILL of the
# serving process, whose event loop alone writes them: exchanges queued for the
# writer process, exchanges its full queue turned away, and requests record="redirects"
# skipped.
QUEUED, QUEUE_FULL, SKIPPED = range(3)
COUNTERS_SIZE = 4096


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
