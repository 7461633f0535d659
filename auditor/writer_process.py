"""The writer process: ``python -m auditor.writer_process CONFIG_JSON``.

Started by ``ProcessWriter`` in a serving process, one per serving process and
database. Reads frames from stdin into an ordinary ``Writer`` (row building,
SQLite, drop counting, retention) and answers on stdout: acknowledgements of
flush/prune requests with the writer's figures, and warnings for the serving
process to log. Exits when stdin ends, after a final flush; if the serving
process died before handing over everything it had queued, the difference is
counted as dropped.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from auditor.frames import (
    COUNTERS_SIZE,
    QUEUE_FULL,
    QUEUED,
    encode,
    from_portable,
    read_frame,
    write_all,
)
from auditor.writer import RecorderOptions, Writer

# Below the app's priority: on a saturated machine the app keeps the CPU and the
# writer falls behind (then drops, counted) rather than slowing requests down.
NICENESS = 10
LINGER_SECONDS = 300.0  # after the serving process is gone, while counts are unsaved
RETRY_SECONDS = 1.0


class _Replies:
    """Frames to the serving process; the writer thread and the reader both send."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.open = True

    def send(self, message: Any) -> None:
        if not self.open:
            return
        with self._lock:
            try:
                write_all(self._fd, encode(message))
            except OSError:  # the serving process is gone; keep writing rows anyway
                self.open = False


class _ForwardWarnings(logging.Handler):
    def __init__(self, replies: _Replies) -> None:
        super().__init__(logging.WARNING)
        self._replies = replies

    def emit(self, record: logging.LogRecord) -> None:
        self._replies.send(("log", record.getMessage()))


def _stats(writer: Writer) -> dict[str, Any]:
    return {
        "rows_written": writer.rows_written,
        "rows_skipped": writer.rows_skipped,
        "dropped": dict(writer.dropped),
        "last_error": writer.last_error,
    }


def serve(config: dict[str, Any], stdin: BinaryIO, replies: _Replies) -> None:
    """Feed frames from ``stdin`` into a Writer until end of file."""
    counters = memoryview(mmap.mmap(config["counters_fd"], COUNTERS_SIZE)).cast("Q")
    options = RecorderOptions.build(**config["options"])
    writer = Writer(Path(config["db_path"]), options, worker_id=config["worker_id"])
    writer.queue_full_elsewhere = lambda: counters[QUEUE_FULL]
    received = 0
    while (message := read_frame(stdin)) is not None:
        kind = message[0]
        if kind == "rows":
            received += len(message[1])
            for item in message[1]:
                try:
                    writer.submit(from_portable(item))
                except Exception as exc:
                    writer.count_drop("other", 1, exc)
        elif kind == "drop":
            received += message[1]
            writer.count_drop("other", message[1], RuntimeError(message[2]))
        elif kind in ("flush", "prune"):
            writer.flush()
            result = writer.prune() if kind == "prune" else None
            replies.send(("ack", message[1], _stats(writer), result))
    lost = counters[QUEUED] - received
    if lost > 0:
        writer.count_drop(
            "other",
            lost,
            RuntimeError(f"the serving process ended before handing over {lost} request(s)"),
        )
    writer.close()
    # Nobody waits for us now: if the database cannot take our last counts yet (read-only,
    # full, locked), keep trying for a while rather than lose them with this process.
    deadline = time.monotonic() + LINGER_SECONDS
    while writer.unsaved and time.monotonic() < deadline:
        time.sleep(RETRY_SECONDS)
        writer.flush()


def main(argv: list[str]) -> int:
    # The serving process decides when we stop (end of stdin), not a terminal's Ctrl-C
    # or a signal meant for the server's process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = json.loads(argv[0])
    os.nice(NICENESS)
    replies = _Replies(sys.stdout.fileno())
    logger = logging.getLogger("redirect_auditor")
    logger.addHandler(_ForwardWarnings(replies))
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    with os.fdopen(sys.stdin.fileno(), "rb", buffering=1 << 16, closefd=False) as stdin:
        serve(config, stdin, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
