"""record="redirects": which requests may follow a redirect, decided in the serving process.

Every process recording into one database shares a small table in a file beside it
(``traffic.db.targets``, mode 0600, 576 KiB): for each redirect it answers, the
process notes (client, target path) there before the response reaches the client.
A request whose (client, path) is in the table, noted within ``follow_up_window``
seconds, may be that redirect's follow-up and is recorded; every other non-3xx
request (but the ``sample_rate`` fraction) is only counted as skipped. So a
redirect answered by worker A and its follow-up served by worker B are both kept,
and the 9 in 10 requests that can never be needed cost a hash and a byte's read.

A slot is one 64-bit word, ``crc32 << 32 | seconds``, written and read whole; a
bucket is two slots (the older one is replaced). One more word after the slots holds
the second of the newest redirect any process noted: while it is older than the
window, no request can be a follow-up and none is looked up (the serving process
then pays one read for it). After it, one byte per path bucket (65,536) marks when a
redirect to a path of that bucket was last noted, in 16-second steps: a request whose
path was not a target within the window (most, while redirects are being answered) is
told apart by its path's hash and that byte, without the client's key or the slots
(which cost about 6 us a request more in a uvicorn server).
Keys are crc32s of the client address and the percent-decoded path, seeded from the
database's key: no path, secret or address is written. A collision keeps a request
that was not needed (linking at audit time decides); only more than two live targets
per bucket (32,768 buckets) can forget one.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from zlib import crc32

from auditor.record import native
from auditor.urls import TrustedProxies, first_value, parse_forwarded

BUCKETS = 1 << 15
SLOTS = 2 * BUCKETS
NEWEST = SLOTS  # the word after the slots: the second of the newest redirect noted
PATHS = 8 * (SLOTS + 1)  # byte offset of the path buckets, after that word
PATH_BUCKETS = 1 << 16
SIZE = PATHS + PATH_BUCKETS
_MASK = BUCKETS - 1
_PATH_MASK = PATH_BUCKETS - 1
_SECONDS = 0xFFFFFFFF
_PERCENT = ord("%")
_MARK_SHIFT = 4  # path marks count 16-second steps, modulo 255 (0: never noted)


def path_mark(at: float) -> int:
    """The mark (1-255) a path bucket gets for a redirect noted at ``at``."""
    return (int(at) >> _MARK_SHIFT) % 255 + 1


def targets_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".targets")


def _open_table(path: Path) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size < SIZE:
                # Real bytes, not a sparse hole: touching a hole on a full disk raises
                # SIGBUS in the serving process.
                pad = bytearray(SIZE - size)
                if size:  # an older release's table: its targets have no path marks,
                    # so every path bucket is marked now (looked up for one window)
                    start = max(PATHS, size)
                    pad[start - size :] = bytes([path_mark(time.time())]) * (SIZE - start)
                os.pwrite(fd, pad, size)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return mmap.mmap(fd, SIZE)
    finally:
        os.close(fd)


class RecentTargets:
    """The shared table of recent (client, redirect target path) pairs."""

    def __init__(self, db_path: Path, secret: bytes, window: float) -> None:
        self._map = _open_table(targets_path(db_path))
        self._slots = memoryview(self._map)[:PATHS].cast("Q")
        self._paths = memoryview(self._map)[PATHS:]  # a byte per path bucket: its mark
        self._seed = crc32(secret)
        self._clients: dict[str, int] = {}  # client -> its crc32 seeded with the key
        self.window = int(window) + 1  # whole seconds; one more for the truncation
        # The newest redirect's second, and how long it keeps requests worth a lookup:
        # one second more, as two processes noting at once may leave the older second.
        self.newest = self._slots[NEWEST : NEWEST + 1]
        self.span = self.window + 1
        # How many 16-second steps old a path mark may be and still be in the window
        # (with a step more for a note a moment late); at 255 and more, never too old.
        self._mark_steps = (self.span >> _MARK_SHIFT) + 2
        targets_c = native.targets_c()
        if targets_c is not None:  # skips and note in C, over the same map
            table = targets_c.TargetTable(self._map, self._seed, self.span, self._mark_steps)
            self.skips = table.skip  # type: ignore[method-assign]
            self.note = table.note  # type: ignore[method-assign]

    def close(self) -> None:
        self.newest.release()
        self._slots.release()
        self._paths.release()
        with contextlib.suppress(BufferError):
            self._map.close()

    def _client_seed(self, client: str) -> int:
        seed = self._clients.get(client)
        if seed is None:
            if len(self._clients) >= 4096:
                self._clients.clear()
            seed = crc32(client.encode("utf-8", "surrogatepass"), self._seed)
            self._clients[client] = seed
        return seed

    def _key(self, client: str, path: bytes) -> int:
        return crc32(path, self._client_seed(client))

    def note(self, client: str, path: bytes, now: float) -> None:
        """A redirect to ``path`` (``request_path_key``'s form) answered ``client`` at ``now``."""
        key = self._key(client, path)
        slots = self._slots
        i = (key & _MASK) << 1
        entry = key << 32 | (int(now) & _SECONDS)
        first, second = slots[i], slots[i + 1]
        older_first = (first & _SECONDS) <= (second & _SECONDS)
        if first >> 32 == key or (second >> 32 != key and older_first):
            slots[i] = entry
        else:
            slots[i + 1] = entry
        second_now = int(now) & _SECONDS
        if slots[NEWEST] < second_now:
            slots[NEWEST] = second_now
        self._paths[crc32(path, self._seed) & _PATH_MASK] = path_mark(now)

    def active(self, at: float) -> bool:
        """Whether any process noted a redirect within the window before ``at``: if
        not, no request at ``at`` can be expected (``skips``' first check)."""
        return self.newest[0] >= at - self.span

    def skips(self, scope: Any, at: float) -> bool:
        """Whether the request in ``scope`` cannot be a follow-up, by the cheap checks:
        no redirect noted within the window before ``at``, or none to a path of its
        path's bucket. False leaves it to ``follows`` (a path that needs decoding
        included). The serving process asks it of every request."""
        if not self.active(at):
            return True
        raw = scope.get("raw_path")
        if not (raw and type(raw) is bytes and _PERCENT not in raw and raw.isascii()):
            return False
        return not self._path_marked(raw, at)

    def follows(self, scope: Any, trusted: TrustedProxies | None, at: float) -> bool:
        """``expected`` for the request in ``scope`` (its ``effective_client`` and
        ``request_path_key``), in one call: the serving process asks it of the requests
        ``skips`` leaves (a path marked lately, or one that needs decoding)."""
        path = request_path_key(scope)
        if not self._path_marked(path, at):
            return False  # not a redirect target lately: the client's key is not needed
        address = effective_client(scope, trusted)
        return self._holds(crc32(path, self._client_seed(address)), at)

    def expected(self, client: str, path: bytes, at: float) -> bool:
        """Whether a redirect sent ``client`` to ``path`` within the window before ``at``."""
        return self._path_marked(path, at) and self._holds(self._key(client, path), at)

    def _path_marked(self, path: bytes, at: float) -> bool:
        """Whether a redirect to a path of ``path``'s bucket was noted within the window
        before ``at`` (one byte's read: what most requests cost)."""
        mark = self._paths[crc32(path, self._seed) & _PATH_MASK]
        return mark != 0 and (path_mark(at) - mark) % 255 <= self._mark_steps

    def _holds(self, key: int, at: float) -> bool:
        """Whether the bucket of ``key`` holds it, noted within the window before ``at``."""
        slots = self._slots
        i = (key & _MASK) << 1
        first, second = slots[i], slots[i + 1]
        now = int(at) - self.window
        return (first >> 32 == key and (first & _SECONDS) >= now) or (
            second >> 32 == key and (second & _SECONDS) >= now
        )


def request_path_key(scope: Any) -> bytes:
    """The request's path as the table keys it: the bytes sent when they need no
    decoding (most requests), else the percent-decoded path in UTF-8."""
    raw = scope.get("raw_path")
    # ``_PERCENT not in``: an int needle; a bytes one (b"%") costs ~10x as much.
    if raw and _PERCENT not in raw and raw.isascii():
        return bytes(raw)
    path: str = scope.get("path") or "/"
    return path.encode("utf-8", "surrogatepass")


def location_path(location: bytes, request_path: str) -> str | None:
    """The percent-decoded path a client follows ``location`` to (None for no path):
    what the server will hand the follow-up as ``scope["path"]``."""
    try:
        text = location.decode("latin-1").strip()
        parts = urlsplit(text)
    except ValueError:
        return None
    path = parts.path
    if not path:
        return request_path if not parts.netloc else "/"
    if not path.startswith("/"):
        if parts.netloc or parts.scheme:
            return "/" + path
        base = request_path.rsplit("/", 1)[0]
        path = f"{base}/{path}"
    if "/." in path:
        path = _remove_dot_segments(path)
    return unquote(path) if "%" in path else path


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    trailing = path.endswith(("/.", "/.."))
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def effective_client(scope: Any, trusted: TrustedProxies | None) -> str:
    """The client address the row's ``client_key`` hashes: the scope's, or the first
    forwarded hop when the peer is a trusted proxy (as ``rows.RowBuilder`` reads it)."""
    client = scope.get("client")
    address: str = client[0] if client else ""
    if trusted is None or address not in trusted:
        return address
    forwarded = None
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name == b"x-forwarded-for":
            return first_value(value.decode("latin-1")) or address
        if name == b"forwarded" and forwarded is None:
            forwarded = value
    if forwarded is not None:
        return parse_forwarded(forwarded.decode("latin-1")).get("for") or address
    return address
