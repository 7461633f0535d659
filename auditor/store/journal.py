"""The request journal: recorded rows, one batch to a row, until a reader unpacks them.

The recorder's writer builds each request's row as before (redacted, hashed: nothing the
disk may not hold) and stores a whole batch of them as one pickled ``request_batches``
row: one value bound per batch instead of 25 per request, which was the largest part of
what recording cost the serving process. Everything that reads requests (audit,
explore, export, merge, retention, the pytest plugin) first calls ``unpack``, which moves
the batches into ``requests`` in the order they were written.

Batches are read with an unpickler that refuses every class: a damaged or hostile blob
can fail to load, never run code. A batch that fails is left where it is and logged.
"""

from __future__ import annotations

import io
import logging
import pickle
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from auditor.store.requests import ROW_COLUMNS, SHORT_COLUMNS, bind_none_directly, insert_rows
from auditor.store.schema import BATCHES_TABLE, connect, has_table

logger = logging.getLogger("redirect_auditor")

_INSERT = (
    f"insert into {BATCHES_TABLE} (worker_id, first_started_at, last_started_at, rows, data) "
    "values (?, ?, ?, ?, ?)"
)
_ROW_LENGTHS = (len(SHORT_COLUMNS), len(ROW_COLUMNS))
_STARTED = 0  # started_at is the first value of both row shapes
BATCHES_PER_TRANSACTION = 8  # a reader holds the write lock for about this many batches


class JournalError(Exception):
    """A batch that cannot be read back."""


class _ValuesOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a journal batch names {module}.{name}")


class Batch(NamedTuple):
    """Rows pickled for one ``request_batches`` row (``encode``), waiting to be stored."""

    first_started_at: float
    last_started_at: float
    rows: int
    data: bytes


def encode(rows: list[tuple[Any, ...]]) -> Batch:
    """``rows`` (``RowBuilder.build_row``'s, at least one) as one batch."""
    return Batch(rows[0][_STARTED], rows[-1][_STARTED], len(rows), pickle.dumps(rows, protocol=5))


def append(conn: sqlite3.Connection, worker_id: str, batches: list[Batch]) -> None:
    """Store ``batches`` in the caller's transaction, one row each, in order."""
    conn.executemany(_INSERT, [(worker_id, *batch) for batch in batches])


def batch_rows(data: bytes) -> list[tuple[Any, ...]]:
    """The rows of one batch; JournalError for anything that is not a list of rows."""
    try:
        rows = _ValuesOnly(io.BytesIO(data)).load()
    except Exception as exc:  # unpickling damaged bytes raises many kinds
        raise JournalError(f"damaged batch ({type(exc).__name__}: {exc})") from None
    if type(rows) is not list or not all(
        type(row) is tuple and len(row) in _ROW_LENGTHS for row in rows
    ):
        raise JournalError("a batch that is not a list of request rows")
    return rows


def pending_rows(conn: sqlite3.Connection, *, schema: str = "main") -> int:
    """Rows recorded into batches and not unpacked yet (0 without a journal table)."""
    if not has_table(conn, BATCHES_TABLE, schema=schema):
        return 0
    sql = f"select coalesce(sum(rows), 0) from {schema}.{BATCHES_TABLE}"
    return int(conn.execute(sql).fetchone()[0])


def recorded_rows(conn: sqlite3.Connection) -> int:
    """Requests recorded: those in ``requests`` and those still in batches."""
    return int(conn.execute("select count(*) from requests").fetchone()[0]) + pending_rows(conn)


def _page(
    conn: sqlite3.Connection, after: int, schema: str = "main"
) -> list[tuple[int, list[tuple[Any, ...]] | None]]:
    """The next few batches after id ``after``, oldest first: (id, rows), rows None for a
    batch that cannot be read (logged)."""
    found = conn.execute(
        f"select id, data from {schema}.{BATCHES_TABLE} where id > ? order by id limit ?",
        (after, BATCHES_PER_TRANSACTION),
    ).fetchall()
    page: list[tuple[int, list[tuple[Any, ...]] | None]] = []
    for batch_id, data in found:
        try:
            page.append((batch_id, batch_rows(data)))
        except JournalError as exc:
            logger.warning("redirect-auditor: batch %d left unread: %s", batch_id, exc)
            page.append((batch_id, None))
    return page


def stored_batches(
    conn: sqlite3.Connection, *, schema: str = "main"
) -> Iterator[tuple[int, list[tuple[Any, ...]]]]:
    """(id, rows) of every readable batch, oldest first, without changing anything
    (``merge`` reads a shard's this way). Damaged batches are logged and skipped."""
    after = 0
    while page := _page(conn, after, schema):
        after = page[-1][0]
        for batch_id, rows in page:
            if rows is not None:
                yield batch_id, rows


def unpack(conn: sqlite3.Connection) -> int:
    """Move every batch into ``requests``, oldest first; returns the rows moved.

    Each few batches are one ``begin immediate`` transaction, so recorders writing to
    the file meanwhile wait one short move at most, and an interrupted unpack loses
    nothing. A damaged batch stays in the table (logged), never half moved.
    """
    if pending_rows(conn) == 0:
        return 0
    bind_none_directly()  # the inserts below bind a NULL for many columns of each row
    moved = 0
    after = 0
    while True:
        conn.execute("begin immediate")
        try:
            page = _page(conn, after)
            done: list[tuple[int]] = []
            for batch_id, rows in page:
                if rows is not None:
                    insert_rows(conn, rows)
                    moved += len(rows)
                    done.append((batch_id,))
            conn.executemany(f"delete from {BATCHES_TABLE} where id = ?", done)
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise
        if len(page) < BATCHES_PER_TRANSACTION:
            return moved
        after = page[-1][0]


def unpack_file(db_path: str | Path) -> int:
    """``unpack`` on a traffic database file; 0 when it has no journal (an older
    schema, a merged or fleet database). The file must be one ``check_traffic_db``
    accepted: this writes to it."""
    conn = connect(db_path)
    try:
        return unpack(conn)
    finally:
        conn.close()


def follow(db_paths: list[Path], *, every: float = 2.0) -> threading.Event:
    """Unpack ``db_paths`` every ``every`` seconds from a daemon thread, so a live
    recording shows up while it is explored; set the returned event to stop."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            for path in db_paths:
                try:
                    unpack_file(path)
                except (sqlite3.Error, OSError) as exc:  # locked for long, gone: try again
                    logger.debug("redirect-auditor: unpacking %s: %s", path, exc)

    threading.Thread(target=run, name="redirect-auditor-unpack", daemon=True).start()
    return stop
