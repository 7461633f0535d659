"""One writer per process and database file."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from auditor.record.options import RecorderOptions
from auditor.record.rows import CapturedExchange
from auditor.record.writer import Writer

logger = logging.getLogger("redirect_auditor")


class TrafficWriter(Protocol):
    """What the middleware, the pytest plugin and tests use of a writer."""

    db_path: Path
    options: RecorderOptions
    worker_id: str
    rows_skipped: int  # record="redirects": the middleware adds one per skipped request

    @property
    def closed(self) -> bool: ...
    @property
    def rows_written(self) -> int: ...
    @property
    def dropped(self) -> dict[str, int]: ...

    def submit(self, exchange: CapturedExchange) -> None: ...
    def note_framework(self, framework: str) -> None: ...
    def flush(self) -> None: ...
    async def flush_async(self) -> None: ...
    def prune(self) -> int: ...
    def close(self) -> None: ...
    def after_fork(self) -> None: ...


_WRITERS: dict[Path, TrafficWriter] = {}
_WRITERS_LOCK = threading.Lock()


def writer_for(db_path: str | Path, options: RecorderOptions) -> TrafficWriter:
    """The process's writer for this database file, created on first use."""
    path = Path(db_path).expanduser().absolute()
    with _WRITERS_LOCK:
        writer = _WRITERS.get(path)
        if writer is None or writer.closed:
            writer = _WRITERS[path] = Writer(path, options)
        elif writer.options != options:
            logger.warning(
                "redirect-auditor: a recorder for %s already exists in this process; "
                "keeping its options",
                path,
            )
        return writer


def flush_all() -> None:
    """Flush and close every writer of this process (interpreter exit, tests)."""
    for writer in list(_WRITERS.values()):
        writer.close()
    with _WRITERS_LOCK:
        for path, writer in list(_WRITERS.items()):
            if writer.closed:
                del _WRITERS[path]


def _restart_writers_after_fork() -> None:
    # A forked child (gunicorn --preload) inherits writers without their threads
    # and with the parent's pending rows: start each afresh as a new worker.
    global _WRITERS_LOCK
    _WRITERS_LOCK = threading.Lock()
    for writer in _WRITERS.values():
        if not writer.closed:
            writer.after_fork()


atexit.register(flush_all)
os.register_at_fork(after_in_child=_restart_writers_after_fork)
