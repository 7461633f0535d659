"""The writer process: ``python -m auditor.record.writer_process CONFIG_JSON``.

Started by ``ProcessWriter`` in a serving process, one per serving process and
database. Reads frames from stdin into an ordinary ``Writer`` (row building,
SQLite, drop counting, retention) and answers on stdout: acknowledgements of
flush/prune requests with the writer's figures, and warnings for the serving
process to log. Exits when stdin ends, after a final flush; if the serving
process died before handing over everything it had queued, the difference is
counted as dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import marshal
import mmap
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

from auditor.record.frames import (
    COUNTERS_SIZE,
    QUEUE_FULL,
    QUEUED,
    SKIPPED,
    encode,
    read_frame,
    write_all,
)
from auditor.record.options import RecorderOptions
from auditor.record.writer import Writer

# Requests not yet written, as marshalled bytes (~120 per request): about half a
# million requests, or 20 s of a saturated 2-core machine, before drops (counted).
BACKLOG_BYTES = 64 << 20
# Below PACE_BELOW_RATE requests a second, rows are built and inserted in short
# bursts (PACE_ROWS, ~0.4 ms of CPU) with PACE_PAUSE between them. Long bursts in this
# process, at any priority and on either core, raised the server's p99 at one
# connection from ~1.8 to ~3.7 ms on the 2-vCPU benchmark machine (benchmarks/README.md).
# The pauses cost CPU, so a busier server, or a writer that is behind, goes without.
PACE_PAUSE = 0.0002
PACE_BELOW_RATE = 10_000.0
PACE_UNTIL_BYTES = 1 << 20
LINGER_SECONDS = 300.0  # after the serving process died, while counts are unsaved
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


class _Backlog:
    """Row frames received but not yet written, kept as the marshalled bytes they came
    in (~120 bytes a request, not a few objects each): a busy machine may give this
    process no CPU for a while, and the serving process must not wait for it."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.frames: deque[tuple[int, bytes]] = deque()
        self.size = 0
        self.busy = False  # a frame is being written right now
        self.received = 0  # requests put, ever
        self._rate_since = (time.monotonic(), 0)
        self.rate = 0.0  # requests put per second, over the last second or more
        self.ended = False
        self.cond = threading.Condition()

    def put(self, count: int, payload: bytes) -> bool:
        """Queue a frame; False if there is no room (the caller counts the drop)."""
        with self.cond:
            if self.size + len(payload) > self.limit_bytes:
                return False
            self.frames.append((count, payload))
            self.size += len(payload)
            self.received += count
            since, received = self._rate_since
            now = time.monotonic()
            if now - since >= 1.0:
                self.rate = (self.received - received) / (now - since)
                self._rate_since = (now, self.received)
            self.cond.notify_all()
            return True

    def quiet(self) -> bool:
        """Few requests arrive and little waits: pacing the writer costs nothing."""
        return self.rate < PACE_BELOW_RATE and self.size <= PACE_UNTIL_BYTES

    def take(self) -> tuple[int, bytes] | None:
        """The next frame, waiting for one; None once ended and empty."""
        with self.cond:
            self.cond.wait_for(lambda: self.frames or self.ended)
            if not self.frames:
                return None
            self.busy = True
            return self.frames.popleft()

    def done(self, payload: bytes) -> None:
        with self.cond:
            self.size -= len(payload)
            self.busy = False
            self.cond.notify_all()

    def wait_empty(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: not self.frames and not self.busy)

    def end(self) -> None:
        with self.cond:
            self.ended = True
            self.cond.notify_all()


def _write_backlog(backlog: _Backlog, writer: Writer) -> None:
    while (frame := backlog.take()) is not None:
        count, payload = frame
        try:
            items = marshal.loads(payload)
        except Exception as exc:  # a frame we cannot read: count it, keep going
            writer.count_drop("other", count, exc)
        else:
            writer.write_now(items, pause=PACE_PAUSE if backlog.quiet() else 0.0)
        finally:
            backlog.done(payload)


def serve(config: dict[str, Any], stdin: BinaryIO, replies: _Replies) -> None:
    """Feed frames from ``stdin`` into a Writer until end of file."""
    counters = memoryview(mmap.mmap(config["counters_fd"], COUNTERS_SIZE)).cast("Q")
    options = RecorderOptions.build(**config["options"])
    writer = Writer(Path(config["db_path"]), options, worker_id=config["worker_id"])
    writer.queue_full_elsewhere = lambda: counters[QUEUE_FULL]
    writer.skipped_elsewhere = lambda: counters[SKIPPED]
    backlog = _Backlog(BACKLOG_BYTES)
    materializer = threading.Thread(
        target=_write_backlog, args=(backlog, writer), name="redirect-auditor-rows", daemon=True
    )
    materializer.start()
    received = 0
    goodbye = False
    while (message := read_frame(stdin)) is not None:
        kind = message[0]
        if kind == "rows":
            _, count, payload = message
            received += count
            if not backlog.put(count, payload):
                writer.dropped_queue_full += count  # only this thread counts these
        elif kind == "drop":
            received += message[1]
            writer.count_drop("other", message[1], RuntimeError(message[2]))
        elif kind == "framework":
            writer.note_framework(message[1])  # frames come in order: before later rows
        elif kind in ("flush", "prune"):
            backlog.wait_empty()
            writer.flush()
            result = writer.prune() if kind == "prune" else None
            # A flush is what a stopping server asks for (lifespan shutdown); it may then
            # die by its signal without a goodbye. Leave the file at rest now, not after.
            writer.release()
            replies.send(("ack", message[1], writer.figures(), result))
        elif kind == "bye":
            goodbye = True
    backlog.end()
    materializer.join()
    lost = counters[QUEUED] - received
    if lost > 0:
        writer.count_drop(
            "other",
            lost,
            RuntimeError(f"the serving process ended before handing over {lost} request(s)"),
        )
    writer.close()
    if goodbye:
        return  # a normal shutdown: the serving process is waiting for us to exit
    # The serving process died: if the database cannot take our last counts yet
    # (read-only, full, locked), keep trying for a while rather than lose them with us.
    deadline = time.monotonic() + LINGER_SECONDS
    while writer.unsaved and time.monotonic() < deadline:
        time.sleep(RETRY_SECONDS)
        writer.flush()


def _lowest_priority() -> None:
    """Run only on CPU time nobody else wants (SCHED_IDLE; else nice 19). Threads
    started afterwards inherit it."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def main(argv: list[str]) -> int:
    # The serving process decides when we stop (end of stdin), not a terminal's Ctrl-C
    # or a signal meant for the server's process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = json.loads(argv[0])
    _lowest_priority()
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
