"""What a killed worker leaves unsaid: a page of per-process counters beside the database.

``traffic.db.ledger`` (mode 0600, 4 KiB) holds one slot per recording process on this
machine: its pid, a hash of its host name, how many requests it queued (the event loop
adds one per request) and how many of those the database accounts for (the writer sets
it after each commit: rows written plus rows counted as dropped). A process killed with
SIGKILL leaves ``queued > settled``; the next writer on the database to find that pid
gone counts the difference as dropped (reason ``other``) and frees the slot. A process
that exits normally frees its slot after its last flush.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from zlib import crc32

SLOTS = 64
WORDS = 8  # per slot: pid, host, queued, settled, 4 spare
SIZE = SLOTS * WORDS * 8
PID, HOST, QUEUED, SETTLED = range(4)


def ledger_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".ledger")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """This process's slot in the page, and the reckoning of dead processes' slots."""

    def __init__(self, db_path: Path) -> None:
        self._path = ledger_path(db_path)
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        with self._locked():
            size = os.fstat(self._fd).st_size
            if size < SIZE:  # real zero bytes: a sparse hole on a full disk raises SIGBUS
                os.pwrite(self._fd, bytes(SIZE - size), size)
        self._map = mmap.mmap(self._fd, SIZE)
        self._words = memoryview(self._map).cast("Q")
        self._host = crc32(socket.gethostname().encode())
        self.slot = self._claim()
        # The event loop's counter: ``queued[0] += 1`` per request (the slot's QUEUED word).
        start = self.slot * WORDS
        self.queued = self._words[start + QUEUED : start + QUEUED + 1]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _claim(self) -> int:
        words = self._words
        with self._locked():
            for slot in range(SLOTS):
                base = slot * WORDS
                if words[base + PID] == 0:
                    words[base + HOST] = self._host
                    words[base + QUEUED] = words[base + SETTLED] = 0
                    words[base + PID] = os.getpid()
                    return slot
        raise OSError(f"{self._path}: all {SLOTS} slots are taken")

    def settled(self, count: int) -> None:
        """The database now accounts for ``count`` of this process's queued requests."""
        self._words[self.slot * WORDS + SETTLED] = count

    def reckon(self) -> list[tuple[int, int]]:
        """(pid, requests lost) of every process on this host that died with requests
        the database does not account for; their slots are freed. The caller counts them."""
        words, found = self._words, []
        with self._locked():
            for slot in range(SLOTS):
                base = slot * WORDS
                pid = words[base + PID]
                if pid == 0 or slot == self.slot or words[base + HOST] != self._host:
                    continue
                if not _alive(pid):
                    lost = words[base + QUEUED] - words[base + SETTLED]
                    if lost > 0:
                        found.append((pid, lost))
                    words[base + PID] = 0
        return found

    def close(self, clean: bool) -> None:
        """Free the slot when everything queued is accounted for (``clean``); else
        leave it for the next writer to reckon once this process is gone."""
        if clean:
            self._words[self.slot * WORDS + PID] = 0
        self.queued.release()
        self._words.release()
        with contextlib.suppress(BufferError):
            self._map.close()
        os.close(self._fd)
