"""The serving process's side of the writer process.

The event loop appends each captured exchange to a bounded deque, exactly as
with the in-process ``Writer``. Every ``flush_interval`` a shipping thread turns
the pending exchanges into flat tuples and writes them, marshalled, into a pipe
read by ``python -m auditor.record.writer_process``. Row building and SQLite run in
that process, so they no longer compete with the event loop for the GIL (they
did: with a writer thread the app served about half its requests/s).

If the writer process dies, or cannot be started, recording goes on in an
in-process ``Writer`` thread and a warning says why. A shared page of
counters outlives either process: when the serving process is killed, the writer
process still counts the requests it never received as dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import marshal
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

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
from auditor.record.rows import CapturedExchange, to_portable
from auditor.record.writer import Writer
from auditor.schema import DROP_REASONS

logger = logging.getLogger("redirect_auditor")

SHIP_BATCH = 256  # exchanges per frame; the event loop waits at most one frame's work (~1 ms)
PIPE_BYTES = 1 << 20  # ask the kernel for a 1 MiB pipe (the unprivileged maximum)
# ``python -m auditor.record.writer_process`` with this process's sys.path (see config).
_BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1])['sys_path']; "
    "from auditor.record.writer_process import main; sys.exit(main(sys.argv[1:]))"
)
_F_SETPIPE_SZ = 1031  # Linux fcntl; absent from the fcntl module before Python 3.10


def _shared_counters() -> tuple[int, mmap.mmap]:
    """A page of counters in a file only the two processes can reach."""
    try:
        fd = os.memfd_create("redirect-auditor-counters")  # close-on-exec: pass_fds hands it on
    except (AttributeError, OSError):
        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    # Real bytes, not a sparse hole: touching a hole on a full disk raises SIGBUS.
    write_all(fd, bytes(COUNTERS_SIZE))
    return fd, mmap.mmap(fd, COUNTERS_SIZE)


class ProcessWriter:
    """Hands captured exchanges to a writer process; the in-process ``Writer``'s interface."""

    def __init__(self, db_path: Path, options: RecorderOptions) -> None:
        self.db_path = db_path
        self.options = options
        self._framework: str | None = None  # the app's, as the recorder noted it
        self._start()

    def _start(self) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.closed = False
        self._framework_shipped: str | None = None
        self._queue: deque[CapturedExchange] = deque()
        self._limit = self.options.queue_size
        self._counters_fd, self._counters_map = _shared_counters()
        self._counts = memoryview(self._counters_map).cast("Q")
        self._process: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._fallback: Writer | None = None
        self._spawn_failed = False
        self._closing = False
        self._seq = 0
        self._acks: dict[int, Any] = {}
        self._stats: dict[str, Any] = {
            "rows_written": 0,
            "rows_skipped": 0,
            "dropped": dict.fromkeys(DROP_REASONS, 0),
            "last_error": None,
        }
        self._ship_lock = threading.Lock()
        self._state = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="redirect-auditor-shipper", daemon=True
        )
        self._thread.start()

    # -- the hot path -------------------------------------------------------

    def submit(self, exchange: CapturedExchange) -> None:
        """Hot path: enqueue or count the drop. Never blocks, never raises."""
        if len(self._queue) < self._limit:
            self._counts[QUEUED] += 1  # before the append: a kill in between over-counts
            self._queue.append(exchange)
        else:
            self._counts[QUEUE_FULL] += 1

    def skip(self) -> None:
        """Hot path, record="redirects": a request that can never be needed, counted only."""
        self._counts[SKIPPED] += 1

    # -- what the in-process Writer offers -----------------------------------

    @property
    def rows_written(self) -> int:
        """Rows the writer process had committed at the last flush."""
        return self._current_stats()["rows_written"]

    @property
    def rows_skipped(self) -> int:
        return self._current_stats()["rows_skipped"]

    @property
    def dropped(self) -> dict[str, int]:
        """Drops per reason, as of the last flush."""
        return self._current_stats()["dropped"]

    @property
    def last_error(self) -> str | None:
        return self._current_stats()["last_error"]

    @property
    def dropped_queue_full(self) -> int:
        """Exchanges this process's own queue had no room for."""
        return self._counts[QUEUE_FULL]

    def note_framework(self, framework: str) -> None:
        """The app's framework, for this worker's ``recorder_stats`` row: a plain
        assignment here (the event loop may call it); the shipping thread sends it
        ahead of the rows captured after it."""
        self._framework = framework

    def flush(self) -> None:
        """Write everything pending now, and wait until the writer process has."""
        self._ship()
        if self._fallback is None:
            self._ask("flush")
        if self._fallback is not None:  # also when the writer process died meanwhile
            self._fallback.flush()

    async def flush_async(self) -> None:
        """``flush`` in a worker thread, without blocking the event loop, on whichever
        async library runs the app: asyncio, uvloop or trio (anyio's threads work on all)."""
        from anyio import to_thread

        await to_thread.run_sync(self.flush)

    def prune(self) -> int:
        """Apply ``max_rows`` / ``max_age`` now (in the writer process)."""
        self._ship()
        if self._fallback is not None:
            return self._fallback.prune()
        return int(self._ask("prune") or 0)

    def close(self) -> None:
        """Hand over everything, let the writer process finish, and stop."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        self._ship()
        with self._state:
            self._closing = True
        if self._fallback is not None:
            self._fallback.close()
        process = self._process
        if process is not None:
            with contextlib.suppress(OSError):
                write_all(self._to_child, encode(("bye",)))  # a goodbye, not a crash
            with contextlib.suppress(OSError):
                os.close(self._to_child)  # end of file: the writer process flushes and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self._patience())

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's pipe and writer process, start afresh."""
        for fd in (self._to_child, self._counters_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._start()

    # -- shipping --------------------------------------------------------------

    def _run(self) -> None:
        # Start the writer process now, not on the first batch: it must be there to
        # count the queue if this process is killed before it ever ships.
        with self._ship_lock:
            try:
                self._ensure_process()
            except Exception as exc:  # never into the app; record in a thread instead
                self._fail_over(f"could not start the writer process ({exc})", lost=0)
        while not self._stop.wait(self.options.flush_interval):
            self._ship()

    def _ship(self) -> None:
        with self._ship_lock:
            try:
                self._ship_framework()
                while self._queue:
                    count = min(len(self._queue), SHIP_BATCH)
                    batch = [self._queue.popleft() for _ in range(count)]
                    # Read after taking the batch: a framework noted before a request was
                    # queued travels ahead of that request's row.
                    self._ship_framework()
                    if self._fallback is not None:
                        for exchange in batch:
                            self._fallback.submit(exchange)
                    else:
                        self._send_rows(batch)
            except Exception as exc:  # a bug here must never reach the app
                self._lost(0, exc)

    def _ship_framework(self) -> None:
        framework = self._framework
        if framework is None or framework == self._framework_shipped:
            return
        self._framework_shipped = framework
        if self._fallback is not None:
            self._fallback.note_framework(framework)
        else:
            self._send(encode(("framework", framework)), 0)

    def _send_rows(self, batch: list[CapturedExchange]) -> None:
        items = []
        for exchange in batch:
            try:
                items.append(to_portable(exchange))
            except Exception as exc:
                self._send_drop(1, exc)
        try:
            payload = marshal.dumps(items)
        except ValueError:  # an object marshal cannot carry, from an unusual server
            items = self._marshallable(items)
            payload = marshal.dumps(items)
        # The writer process keeps the rows as these bytes until it has time for them.
        self._send(encode(("rows", len(items), payload)), len(items))

    def _marshallable(self, items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        good = []
        for item in items:
            try:
                marshal.dumps(item)
            except ValueError as exc:
                self._send_drop(1, exc)
            else:
                good.append(item)
        return good

    def _send_drop(self, count: int, exc: BaseException) -> None:
        self._send(encode(("drop", count, f"{type(exc).__name__}: {exc}"[:400])), count)

    def _send(self, frame: bytes, rows: int) -> None:
        if not self._ensure_process():
            if self._fallback is not None and rows:
                self._lost(rows, RuntimeError("no writer process"))
            return
        try:
            write_all(self._to_child, frame)
        except OSError as exc:
            self._fail_over(f"the writer process stopped reading ({exc})", lost=rows)

    def _ensure_process(self) -> bool:
        if self._process is not None:
            return self._fallback is None
        if self._spawn_failed or self._closing:
            return False
        if getattr(sys, "frozen", False) or not sys.executable:
            # A frozen app's executable is the app itself, not a Python to run us with.
            self._spawn_failed = True
            self._fail_over("no Python interpreter to start the writer process with", lost=0)
            return False
        config = {
            "db_path": str(self.db_path),
            "options": dataclasses.asdict(self.options),
            "worker_id": self.worker_id,
            "counters_fd": self._counters_fd,
            # This process's import path (uvicorn --app-dir, pytest's rootdir, a source
            # checkout): the writer process imports the very same auditor package.
            "sys_path": sys.path,
        }
        read_end, self._to_child = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._to_child, _F_SETPIPE_SZ, PIPE_BYTES)
        os.set_inheritable(self._to_child, False)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, json.dumps(config)],
                stdin=read_end,
                stdout=subprocess.PIPE,
                pass_fds=(self._counters_fd,),
                start_new_session=True,  # Ctrl-C in a terminal must not kill it mid-flush
            )
        except (OSError, ValueError) as exc:
            os.close(self._to_child)
            self._spawn_failed = True
            self._fail_over(f"could not start the writer process ({exc})", lost=0)
            return False
        finally:
            os.close(read_end)
        threading.Thread(
            target=self._read_replies,
            args=(self._process,),
            name="redirect-auditor-replies",
            daemon=True,
        ).start()
        return True

    # -- replies ----------------------------------------------------------------

    def _read_replies(self, process: subprocess.Popen[bytes]) -> None:
        stream = process.stdout
        assert stream is not None
        try:
            while (message := read_frame(stream)) is not None:
                if message[0] == "log":
                    logger.warning("%s", message[1])
                elif message[0] == "ack":
                    _, seq, stats, result = message
                    with self._state:
                        self._stats = stats
                        self._acks[seq] = result
                        self._state.notify_all()
        except (OSError, ValueError, EOFError, TypeError) as exc:
            logger.debug("redirect-auditor: unreadable reply from the writer process: %s", exc)
        finally:
            stream.close()
        with self._state:
            closing = self._closing
            self._state.notify_all()
        if not closing:
            process.wait()
            self._fail_over(f"the writer process exited with code {process.returncode}", lost=0)

    def _ask(self, kind: str) -> Any:
        """Send a request frame and wait (bounded) for its acknowledgement."""
        with self._ship_lock:
            if not self._ensure_process():
                return None
            self._seq += 1
            seq = self._seq
            try:
                write_all(self._to_child, encode((kind, seq)))
            except OSError:
                return None
        with self._state:
            self._state.wait_for(
                lambda: seq in self._acks or self._fallback is not None or self._closing,
                timeout=self._patience(),
            )
            return self._acks.pop(seq, None)

    def _patience(self) -> float:
        # A flush may wait for a lock (busy_timeout) on every batch of a backlog.
        return max(30.0, 4 * self.options.busy_timeout + 10)

    def _current_stats(self) -> dict[str, Any]:
        if self._fallback is not None:
            return self._fallback.figures()
        return self._stats

    # -- when the writer process is gone -------------------------------------------

    def _fail_over(self, why: str, lost: int) -> None:
        with self._state:
            if self._fallback is None:
                logger.warning(
                    "redirect-auditor: %s; recording into %s continues in a thread of this process",
                    why,
                    self.db_path,
                )
                fallback = Writer(self.db_path, self.options, worker_id=self.worker_id)
                # The writer process folded this process's queue-full count; go on from there.
                counts, base = self._counts, self._counts[QUEUE_FULL]
                fallback.queue_full_elsewhere = lambda: counts[QUEUE_FULL] - base
                skipped = counts[SKIPPED]
                fallback.skipped_elsewhere = lambda: counts[SKIPPED] - skipped
                if self._framework is not None:
                    fallback.note_framework(self._framework)
                self._fallback = fallback
            self._state.notify_all()
        if lost:
            self._lost(lost, RuntimeError(why))

    def _lost(self, count: int, exc: BaseException) -> None:
        fallback = self._fallback
        if fallback is not None:
            fallback.count_drop("other", count, exc)
        else:
            logger.warning("redirect-auditor: %s", exc)
