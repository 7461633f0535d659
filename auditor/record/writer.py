"""The writer: bounded queue -> rows -> journal batches -> SQLite transactions.

The event loop appends each capture to the writer's deque. Each time ``WAKE_AT``
captures wait, the request that queued the last of them builds their rows and pickles
them into one journal batch (``_encode``), after its response has gone out. Every
``flush_interval`` seconds (sooner once ``STORE_AT`` rows wait) the writer thread
stores the batches waiting, in one transaction with the worker's ``recorder_stats``
row, and encodes and stores whatever fewer captures wait (while the loop's batches
wait, those are left to its next batch). Rows it cannot write are counted per reason
and a warning is logged once per reason; nothing here ever raises into the app or
makes the event loop wait. What a SIGKILL takes with it (the queue) is counted by the
next writer on the database from the page of counters in ``ledger.py``.

Why the loop builds: measured in a uvicorn server on one vCPU, the same rows cost
about 1.5 us a request less built on the loop in batches than in the thread (the
thread's work costs 2-4 times its in-process time there); built one request at a
time on the loop they cost far more (+10 us), as the work then falls between
responses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from auditor.record import native
from auditor.record.ledger import Ledger
from auditor.record.options import RecorderOptions
from auditor.record.rows import CapturedExchange, RowBuilder, to_portable
from auditor.store import journal
from auditor.store.retention import prune
from auditor.store.schema import (
    DROP_REASONS,
    SchemaError,
    connect,
    create_private_file,
    ensure_schema,
    restore_sidecar_modes,
)
from auditor.urls import TrustedProxies

logger = logging.getLogger("redirect_auditor")

SECRET_ENV = "REDIRECT_AUDITOR_SECRET"
MAX_BATCH = 5000
RECKON_EVERY = 1.0  # seconds between looks for killed workers' lost requests
PRUNE_EVERY = 60.0  # seconds between retention passes when max_rows/max_age is set
# Seconds between the thread's saves of counts alone (no rows to write: record="redirects"
# skipping everything); ``flush`` and ``close`` save them at once.
COUNTS_EVERY = 1.0
# Captures queued that are encoded into a batch at once (on the loop) and wake the writer
# before flush_interval is up. A queued capture holds gc-tracked objects (the request's
# header list and tuples), and the cyclic collector runs once 700 more such objects are
# alive than when it last ran, each run promoting the requests in flight: encoded in
# smaller batches, the captures are freed before they add up to a collection.
WAKE_AT = 256
# Rows encoded by the loop that wake the thread to store them before flush_interval is
# up; fewer wait for the interval's end. (Each wake costs the loop a switch to the
# thread: stored every batch, the same rows cost about 1 us a request more.)
STORE_AT = 4096


def classify_error(exc: BaseException) -> str:
    """Map a write failure to a drop reason in ``recorder_stats``."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "locked"
    if "full" in text or (isinstance(exc, OSError) and exc.errno == 28):
        return "disk_full"
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return "read_only"
    return "other"


def load_secret(db_path: Path) -> bytes:
    """The client-hash key: REDIRECT_AUDITOR_SECRET, else a 0600 key file beside the database.

    Kept out of the database so a shared traffic file does not reveal how to
    reverse client hashes; every worker on one database reads the same file.
    """
    env = os.environ.get(SECRET_ENV)
    if env:
        return env.encode()
    key_path = db_path.with_name(db_path.name + ".key")
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker may be writing it right now
            data = key_path.read_bytes().strip()
            if data:
                return data
            time.sleep(0.01)
        raise
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    return key_path.read_bytes().strip()


class Writer:
    """Drains captured exchanges into SQLite from one daemon thread."""

    def __init__(
        self, db_path: Path, options: RecorderOptions, worker_id: str | None = None
    ) -> None:
        self.db_path = db_path
        self.options = options
        self._worker_id = worker_id
        self.framework: str | None = None  # the app's, as the recorder noted it
        self._start()

    @property
    def closed(self) -> bool:
        """True once ``close`` ran; the registry then makes a new writer for the file."""
        return self._stop.is_set()

    def after_fork(self) -> None:
        """In a forked child: the thread did not survive the fork; start as a new worker
        (with a ledger slot of its own: the parent's stays the parent's)."""
        self._worker_id = None
        self._start()

    def _start(self) -> None:
        options = self.options
        self.worker_id = self._worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = time.time()
        self.rows_written = 0
        self.rows_skipped = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._saved_totals: tuple[int, ...] = (0,) * (2 + len(DROP_REASONS))
        self._saved_framework: str | None = None
        self._counts_due = 0.0  # monotonic time the thread may next save counts alone
        # Written only by the event loop (submit, or the Submitter's own counts); the
        # writer folds in what is new since it last looked, so no increment is lost
        # between a read and a reset.
        self._queue_full = 0
        self._queue_full_folded = 0
        self._unreadable = 0  # captures to_portable could not read (a bug): "other"
        self._unreadable_folded = 0
        self.last_error: str | None = None
        self._queue: deque[tuple[Any, ...]] = deque()  # to_portable's tuples
        self._limit = options.queue_size
        self._conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        # Made by the thread when it opens the database; from then on whoever holds
        # _build_lock (the loop, never waiting for it, or the thread) builds rows with
        # it into _batches, which only the thread stores.
        self._builder: RowBuilder | None = None
        self._build_lock = threading.Lock()
        self._batches: list[journal.Batch] = []  # at most ~queue_size rows (then captures wait)
        self._unbuilt = 0  # captures build_row raised on since the thread last looked
        self._unbuilt_error: BaseException | None = None
        self._warned: set[str] = set()
        self._reckoned = 0  # drops counted for killed workers (not our own requests)
        try:
            self._ledger: Ledger | None = Ledger(self.db_path)
        except OSError as exc:  # no page: a SIGKILL's losses go uncounted, all else works
            logger.warning("redirect-auditor: no counter page beside %s (%s)", self.db_path, exc)
            self._ledger = None
        self._queued = self._ledger.queued if self._ledger is not None else None
        # submit in C, where it was built (native.py): the same steps on the same queue.
        capture_c = native.capture_c()
        self._submitter: Any = None
        if capture_c is not None:
            self._submitter = capture_c.Submitter(
                self._queue, self._limit, self._queued, WAKE_AT, self._encode_now
            )
            self.submit = self._submitter.submit  # type: ignore[method-assign]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by submit at WAKE_AT captures, and by close
        self._thread = threading.Thread(
            target=self._run, name="redirect-auditor-writer", daemon=True
        )
        self._thread.start()

    def submit(self, exchange: CapturedExchange) -> None:
        """Hot path: enqueue or count the drop. Never blocks, never raises.

        The capture is queued as ``to_portable``'s flat tuple of references, so the
        request's scope dict (and everything the framework hung on it) and the capture
        object are freed as soon as the request ends. Queued whole, they kept ~8 more
        gc-tracked objects alive per request for up to ``flush_interval``: the cyclic
        collector then ran every ~80 requests, each time promoting the requests in
        flight to older generations (~2.4 us a request in a uvicorn server).
        """
        waiting = len(self._queue)
        if waiting < self._limit:
            try:
                item = to_portable(exchange)
            except Exception:  # never into the app: counted (as "other") with the next batch
                self._unreadable += 1
                return
            queued = self._queued
            if queued is not None:
                queued[0] += 1  # before the append: a kill in between over-counts
            self._queue.append(item)
            if waiting % WAKE_AT == WAKE_AT - 1:
                self._encode_now()
        else:
            self._queue_full += 1

    @property
    def dropped_queue_full(self) -> int:
        """Captures turned away because ``queue_size`` of them waited."""
        submitter = self._submitter
        return self._queue_full + (submitter.dropped_queue_full if submitter else 0)

    @property
    def dropped_unreadable(self) -> int:
        """Captures ``to_portable`` could not read (a bug), counted as "other"."""
        submitter = self._submitter
        return self._unreadable + (submitter.dropped_unreadable if submitter else 0)

    def _encode_now(self) -> None:
        """``submit`` at WAKE_AT captures: encode them here, unless the thread is at it
        or has not opened the database yet (then wake it to), and wake the thread to
        store them once STORE_AT rows wait."""
        if self._builder is not None and self._build_lock.acquire(blocking=False):
            try:
                self._encode()
            except Exception as exc:  # never into the app (a bug): the thread records it
                self._unbuilt_error = exc
            finally:
                self._build_lock.release()
            if self._rows_batched() < STORE_AT:
                return  # stored at the flush interval's end, with the batches after it
        self._wake.set()

    def _encode(self) -> None:
        """Build and pickle the queued captures into batches (the caller holds
        ``_build_lock``); stops while queue_size rows wait to be stored."""
        builder = self._builder
        if builder is None:
            return
        build = builder.build_row
        queue = self._queue
        batched = self._rows_batched()
        while queue and batched < self._limit:
            rows = []
            for _ in range(min(len(queue), MAX_BATCH)):
                item = queue.popleft()
                try:
                    rows.append(build(item))
                except Exception as exc:  # counted ("other") by the thread
                    self._unbuilt += 1
                    self._unbuilt_error = exc
            if rows:
                try:
                    batch = journal.encode(rows)
                except Exception as exc:  # rows are plain values: not expected to fail
                    self._unbuilt += len(rows)
                    self._unbuilt_error = exc
                    continue
                self._batches.append(batch)
                batched += len(rows)

    def _rows_batched(self) -> int:
        """Rows encoded and waiting to be stored."""
        return sum(batch.rows for batch in self._batches)

    def flush(self) -> None:
        """Write everything pending now."""
        self._drain()

    def note_framework(self, framework: str) -> None:
        """The app's framework, for this worker's ``recorder_stats`` row. A plain
        assignment (the event loop may call it); saved with the next rows or counts,
        so a recorder that never sees a request leaves the database alone."""
        self.framework = framework

    def figures(self) -> dict[str, Any]:
        """Rows written and skipped, drops per reason and the last error, as of now."""
        return {
            "rows_written": self.rows_written,
            "rows_skipped": self.rows_skipped,
            "dropped": dict(self.dropped),
            "last_error": self.last_error,
        }

    @property
    def unsaved(self) -> bool:
        """Counts (or rows) not yet in the database, e.g. while it is read-only or full."""
        return bool(self._queue or self._batches) or self.unsaved_counts()

    def unsaved_counts(self) -> bool:
        """Rows written or dropped (queue-full drops included) that
        ``recorder_stats`` does not show yet; or a framework noted after one was saved."""
        return (
            self.dropped_queue_full != self._queue_full_folded
            or self.dropped_unreadable != self._unreadable_folded
            or self._stats_totals(0) != self._saved_totals
            or (self._saved_framework is not None and self.framework != self._saved_framework)
        )

    def release(self) -> None:
        """Close the database connection (the next write opens it again): once a
        flush has written everything, the file is left at rest."""
        with self._lock:
            self._reset()

    async def flush_async(self) -> None:
        """``flush`` in a worker thread, without blocking the event loop, on whichever
        async library runs the app: asyncio, uvloop or trio (anyio's threads work on all)."""
        from anyio import to_thread

        await to_thread.run_sync(self.flush)

    def close(self) -> None:
        """Stop the thread after a final flush and forget this writer (interpreter
        exit, tests); a recorder created later for the same file starts a new one."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        self.flush()
        self._reset()
        if self._ledger is not None:
            # A capture submitted from now on (a request still in flight) goes uncounted
            # in the page; the counter must not be written once its map is closed.
            self._queued = None
            if self._submitter is not None:
                self._submitter.release()
            self._ledger.close(clean=not self.unsaved)

    def _run(self) -> None:
        next_prune = time.monotonic() + PRUNE_EVERY
        next_reckon = 0.0
        while True:
            self._wake.wait(self.options.flush_interval)
            self._wake.clear()  # a wake missed here is harmless: the drain empties the queue
            if self._stop.is_set():
                break
            if time.monotonic() >= next_reckon:
                next_reckon = time.monotonic() + RECKON_EVERY
                self._reckon()
            self._drain(periodic=True)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY
                self.prune()

    def _reckon(self) -> None:
        """Count the requests that workers killed on this machine took with them."""
        if self._ledger is None:
            return
        with self._lock:
            try:
                for pid, lost in self._ledger.reckon():
                    why = RuntimeError(f"worker {pid} ended with {lost} request(s) not written")
                    self._count_drop("other", lost, why)
                    self._reckoned += lost
            except Exception as exc:  # a bug here must never stop the writer
                self._count_drop("other", 0, exc)

    def prune(self) -> int:
        """Apply ``max_rows`` / ``max_age`` now; in short batches, in this thread only."""
        if self.options.max_rows is None and self.options.max_age is None:
            return 0
        with self._lock:
            try:
                conn = self._open()
                return prune(conn, max_rows=self.options.max_rows, max_age=self.options.max_age)
            except (sqlite3.Error, OSError, SchemaError) as exc:
                self.last_error = f"prune: {exc}"[:500]
                return 0

    def _drain(self, periodic: bool = False) -> None:
        """Store the batches waiting, after encoding every queued capture. Periodically,
        while the loop's batches wait, the few captures queued since are left to its
        next batch (encoded here, they would make a small batch each interval): they
        wait one interval more at most."""
        with self._lock:
            try:
                while True:
                    idle = not (self._queue or self._batches)
                    if idle and periodic and time.monotonic() < self._counts_due:
                        break  # counts alone wait a little: not a transaction per interval
                    leftovers = not (periodic and self._batches)
                    self._write(encode=leftovers)
                    if not (leftovers and self._queue):
                        break
            except Exception as exc:  # a bug here must never reach the app
                self._count_drop("other", 0, exc)

    def _take_batches(self, encode: bool) -> list[journal.Batch]:
        """Take every batch waiting, after encoding the queued captures if ``encode``
        (this thread, holding ``_lock``). Captures build_row failed on are counted here."""
        with self._build_lock:
            if encode:
                self._encode()
            batches, self._batches = self._batches, []
            unbuilt, self._unbuilt = self._unbuilt, 0
            error, self._unbuilt_error = self._unbuilt_error, None
        if error is not None:
            self._count_drop("other", unbuilt, error)
        return batches

    def _drop_pending(self, reason: str, exc: BaseException) -> None:
        """Count every queued capture and waiting batch as dropped (the database cannot
        be opened), and let them go."""
        with self._build_lock:
            count = len(self._queue) + self._rows_batched()
            self._queue.clear()
            self._batches = []
        self._count_drop(reason, count, exc)

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None and self._file_id != _file_id(self.db_path):
            # The file was deleted or replaced: an open connection would keep writing
            # into an unlinked inode and lose every row without an error.
            self._reset()
        if self._conn is None:
            create_private_file(self.db_path)
            conn = connect(self.db_path, timeout_ms=int(self.options.busy_timeout * 1000))
            try:
                ensure_schema(conn)
                # WAL + NORMAL survives any app crash; only an OS crash or power loss can
                # lose the last commits, a fair trade for traffic telemetry (no fsync per batch).
                conn.execute("pragma synchronous = normal")
                builder = RowBuilder(
                    load_secret(self.db_path),
                    self.worker_id,
                    TrustedProxies(self.options.trusted_proxies),
                    self.options.store_client_ip,
                    self.options.redaction(),
                )
            except BaseException:
                conn.close()
                raise
            self._conn, self._builder = conn, builder
            self._file_id = _file_id(self.db_path)
        return self._conn

    def _write(self, encode: bool) -> None:
        if not (self._queue or self._batches or self.unsaved_counts()):
            return  # idle: leave the database alone (not even opened)
        try:
            conn = self._open()
        except (sqlite3.Error, OSError, SchemaError) as exc:
            reason = classify_error(exc)
            self._drop_pending(reason, exc)
            if reason == "read_only":
                restore_sidecar_modes(self.db_path)
            return
        batches = self._take_batches(encode)
        written = sum(batch.rows for batch in batches)
        seen = self.dropped_queue_full
        queue_full, self._queue_full_folded = seen - self._queue_full_folded, seen
        if queue_full:
            self._count_drop("queue_full", queue_full, OverflowError(f"{self._limit} rows queued"))
        seen = self.dropped_unreadable
        unreadable, self._unreadable_folded = seen - self._unreadable_folded, seen
        if unreadable:
            self._count_drop("other", unreadable, ValueError("a capture could not be read"))
        totals = self._stats_totals(written)
        framework = self.framework
        if not written and totals == self._saved_totals and framework == self._saved_framework:
            return  # idle: no empty transaction (and fsync) every flush interval
        try:
            with conn:
                journal.append(conn, self.worker_id, batches)
                self._save_stats(conn, totals, framework)
        except (sqlite3.Error, OSError) as exc:
            reason = classify_error(exc)
            self._count_drop(reason, written, exc)
            if reason in ("read_only", "disk_full", "other"):
                # SQLite keeps a connection read-only once it opened that way, and a full
                # disk can leave the WAL in a bad way: reopen on the next batch.
                self._reset()
                if reason == "read_only":
                    restore_sidecar_modes(self.db_path)
            return
        self.rows_written += written
        self._counts_due = time.monotonic() + COUNTS_EVERY
        self._saved_totals = totals
        self._saved_framework = framework
        if self._ledger is not None:
            # Queued requests the database now accounts for: written, or dropped after
            # they were queued (not queue_full or unreadable, never queued; not other
            # workers' losses).
            written, _skipped, _queue_full, *dropped = totals
            self._ledger.settled(written + sum(dropped) - self._reckoned - self._unreadable_folded)

    def _stats_totals(self, written_now: int) -> tuple[int, ...]:
        d = self.dropped
        return (
            self.rows_written + written_now,
            self.rows_skipped,
            *(d[reason] for reason in DROP_REASONS),
        )

    def _save_stats(
        self, conn: sqlite3.Connection, totals: tuple[int, ...], framework: str | None
    ) -> None:
        # Adds what changed since the last save rather than overwriting totals: a
        # restarted process can reuse the worker id (pid 1 in a container), and its
        # predecessor's counts, drops above all, must not vanish.
        deltas = [now - before for now, before in zip(totals, self._saved_totals, strict=True)]
        conn.execute(
            """insert into recorder_stats (worker_id, started_at, updated_at, rows_written,
                 rows_skipped, dropped_queue_full, dropped_locked, dropped_disk_full,
                 dropped_read_only, dropped_other, last_error, framework)
               values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               on conflict(worker_id) do update set updated_at = excluded.updated_at,
                 rows_written = rows_written + excluded.rows_written,
                 rows_skipped = rows_skipped + excluded.rows_skipped,
                 dropped_queue_full = dropped_queue_full + excluded.dropped_queue_full,
                 dropped_locked = dropped_locked + excluded.dropped_locked,
                 dropped_disk_full = dropped_disk_full + excluded.dropped_disk_full,
                 dropped_read_only = dropped_read_only + excluded.dropped_read_only,
                 dropped_other = dropped_other + excluded.dropped_other,
                 last_error = coalesce(excluded.last_error, last_error),
                 framework = coalesce(excluded.framework, framework)""",
            (self.worker_id, self.started_at, time.time(), *deltas, self.last_error, framework),
        )

    def count_drop(self, reason: str, count: int, exc: BaseException) -> None:
        """Count rows lost outside the writer thread; saved with the next batch."""
        with self._lock:
            self._count_drop(reason, count, exc)

    def _count_drop(self, reason: str, count: int, exc: BaseException) -> None:
        self.dropped[reason] += count
        self.last_error = f"{reason}: {exc}"[:500]
        if count and reason not in self._warned:  # an idle retry loses nothing: no warning
            self._warned.add(reason)
            logger.warning(
                "redirect-auditor could not record %d request(s) into %s (%s: %s); "
                "the app is unaffected, drops are counted in recorder_stats",
                count,
                self.db_path,
                reason,
                exc,
            )

    def _reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)
