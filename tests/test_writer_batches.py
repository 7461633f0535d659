"""The Writer's batches: many statements per transaction, one bad string."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from auditor.record.options import RecorderOptions
from auditor.record.rows import Capture
from auditor.record.writer import Writer
from auditor.store import journal
from auditor.store.requests import ROW_COLUMNS, full_row
from auditor.store.schema import BATCHES_TABLE

BAD_AT = 550  # after the first 512-row statement of a 600-row batch


def _options(**changes: Any) -> RecorderOptions:
    arguments: dict[str, Any] = {
        "record": "all",
        "sample_rate": 0.0,
        "trusted_proxies": (),
        "store_client_ip": False,
        "queue_size": 10_000,
        "flush_interval": 3600,
        "follow_up_delay": 2.0,
        "follow_up_window": 30.0,
    }
    return RecorderOptions.build(**{**arguments, **changes})


def _capture(path: str) -> Capture:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "path": path,
        # A server that decoded the path leniently: a lone surrogate SQLite cannot store.
        # No raw_path: the row's path is then scope["path"], where a lenient server's
        # lone surrogate can sit (raw bytes are decoded as latin-1 and always encode).
        "query_string": b"",
        "headers": [(b"host", b"shop.test")],
        "http_version": "1.1",
    }
    return Capture(scope, 1.0, 1.1, 200, [], 2, True)


def _paths(count: int, bad_at: int = BAD_AT) -> list[str]:
    return ["/bad-\ud800" if i == bad_at else f"/p{i}" for i in range(count)]


def _batches(db: Path) -> list[tuple[int, list[tuple[Any, ...]]]]:
    """(rows, the rows themselves) of each journal batch the writer stored, oldest first."""
    with closing(sqlite3.connect(db)) as conn:
        found = conn.execute(f"select rows, data from {BATCHES_TABLE} order by id").fetchall()
    return [(count, journal.batch_rows(data)) for count, data in found]


def _stored(db: Path) -> list[Any]:
    """The paths in ``requests``, once the writer's batches are unpacked into it."""
    journal.unpack_file(db)
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("select path from requests order by id").fetchall()


def test_an_unencodable_string_late_in_a_batch_is_escaped_not_duplicated(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "t.db", _options(), worker_id="test:1")
    try:
        for path in _paths(600):
            writer.submit(_capture(path))
        writer.flush()
        # The writer stores the rows as they were built, the lone surrogate included ...
        batches = _batches(tmp_path / "t.db")
        assert all(count == len(rows) for count, rows in batches)
        batch = [row for _, rows in batches for row in rows]
        assert len(batch) == 600
        paths = [full_row(row)[ROW_COLUMNS.index("path")] for row in batch]
        assert paths == _paths(600)
        # ... and unpacking inserts it escaped, each row once.
        stored = _stored(tmp_path / "t.db")
        # Before: the retry re-inserted the first 512 rows as well (1,112 rows).
        assert len(stored) == 600 == writer.rows_written
        assert stored[BAD_AT] == ("/bad-\\ud800",)
        assert stored[0] == ("/p0",) and stored[-1] == ("/p599",)
    finally:
        writer.close()


def test_short_and_full_rows_store_every_column_in_batch_order(tmp_path: Path) -> None:
    """Ordinary rows are inserted naming only the columns they set, redirects and
    proxied rows with all of them: every value is the built row's, ids in batch order."""
    from auditor.record.rows import RowBuilder, to_portable
    from auditor.store.requests import SHORT_COLUMNS, insert_rows
    from auditor.store.schema import connect, ensure_schema
    from auditor.urls import TrustedProxies

    assert len(SHORT_COLUMNS) < len(ROW_COLUMNS)
    builder = RowBuilder(b"k" * 32, "test:1", TrustedProxies(()), False)
    captures = []
    for i in range(700):  # short runs of both shapes, then 550 ordinary rows
        capture = _capture(f"/p{i}")
        if i < 150 and (i % 7 == 3 or 100 <= i < 110):
            capture.status, capture.headers = 302, [(b"location", b"/next")]
        elif i < 150 and i % 11 == 5:
            capture.scope = {**capture.scope, "headers": [(b"x-request-id", b"r1")]}
        elif i == 50:
            capture.scope = {**capture.scope, "path": "/bad-\ud800"}
        captures.append(capture)
    rows = [builder.build(c) for c in captures]
    # As the writer builds them: short rows of SHORT_COLUMNS values, and full ones.
    built = [builder.build_row(to_portable(c)) for c in captures]
    assert sum(len(r) == len(SHORT_COLUMNS) for r in built) > 550
    cols = ", ".join(ROW_COLUMNS)
    stored = []
    for name, batch in (("built.db", built), ("full.db", rows)):
        conn = connect(tmp_path / name)
        try:
            ensure_schema(conn)
            with conn:
                insert_rows(conn, batch)
            stored.append(conn.execute(f"select id, {cols} from requests order by id").fetchall())
        finally:
            conn.close()
    assert stored[0] == stored[1]
    stored = stored[0]
    assert [r[0] for r in stored] == list(range(1, 701))
    expected = [
        tuple(v.replace("\ud800", "\\ud800") if isinstance(v, str) else v for v in row)
        for row in rows
    ]
    assert [tuple(r[1:]) for r in stored] == expected
    assert rows[143][ROW_COLUMNS.index("location")] is not None  # a redirect before the run


def test_a_full_batch_wakes_the_writer_before_the_flush_interval(tmp_path: Path) -> None:
    """WAKE_AT captures are written without waiting for flush_interval (an hour here)
    while the thread has not opened the database; after that, the loop's batches wake
    it once STORE_AT rows wait."""
    import time

    from auditor.record.writer import STORE_AT, WAKE_AT

    writer = Writer(tmp_path / "t.db", _options(), worker_id="test:1")
    try:
        for path in _paths(WAKE_AT - 1, bad_at=-1):
            writer.submit(_capture(path))
        time.sleep(0.2)
        assert writer.rows_written == 0  # fewer than WAKE_AT wait for the interval
        writer.submit(_capture("/last"))
        deadline = time.monotonic() + 10
        while writer.rows_written < WAKE_AT and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.rows_written == WAKE_AT
        assert len(_stored(tmp_path / "t.db")) == WAKE_AT

        for path in _paths(STORE_AT - WAKE_AT, bad_at=-1):
            writer.submit(_capture(path))
        assert writer.rows_written == WAKE_AT  # encoded on the loop, waiting
        assert sum(batch.rows for batch in writer._batches) == STORE_AT - WAKE_AT
        for path in _paths(WAKE_AT, bad_at=-1):
            writer.submit(_capture(path))
        while writer.rows_written < STORE_AT + WAKE_AT and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.rows_written == STORE_AT + WAKE_AT
    finally:
        writer.close()


def _stats(db: Path) -> tuple[int, int, int, str | None]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "select rows_written, dropped_queue_full, dropped_other, last_error from recorder_stats"
        ).fetchone()


def _opened_writer(db: Path, **changes: Any) -> Writer:
    """A writer whose thread has opened the database (and made its row builder)."""
    writer = Writer(db, _options(**changes), worker_id="test:1")
    writer.submit(_capture("/first"))
    writer.flush()
    return writer


def test_the_request_that_fills_a_batch_encodes_it_while_the_thread_is_busy(
    tmp_path: Path,
) -> None:
    """The WAKE_AT-th capture is built and pickled by the submitting thread (the event
    loop), in order, while the writer thread is busy storing (holds its lock)."""
    from auditor.record.writer import WAKE_AT

    writer = _opened_writer(tmp_path / "t.db")
    try:
        with writer._lock:
            for path in _paths(WAKE_AT, bad_at=-1):
                writer.submit(_capture(path))
            assert not writer._queue
            assert [batch.rows for batch in writer._batches] == [WAKE_AT]
        writer.flush()
        assert writer.rows_written == WAKE_AT + 1
        assert _stored(tmp_path / "t.db") == [("/first",)] + [(p,) for p in _paths(WAKE_AT, -1)]
    finally:
        writer.close()


def test_submit_never_waits_for_the_thread_building(tmp_path: Path) -> None:
    """While the thread builds (holds the build lock), a full batch stays queued: submit
    returns at once (a wait here would hang the test) and the thread stores it later."""
    from auditor.record.writer import WAKE_AT

    writer = _opened_writer(tmp_path / "t.db")
    try:
        with writer._build_lock:
            for path in _paths(WAKE_AT * 2, bad_at=-1):
                writer.submit(_capture(path))
            assert len(writer._queue) == WAKE_AT * 2 and not writer._batches
        writer.flush()
        assert writer.rows_written == WAKE_AT * 2 + 1
        assert len(_stored(tmp_path / "t.db")) == WAKE_AT * 2 + 1
    finally:
        writer.close()


def test_a_capture_that_cannot_be_built_on_the_loop_is_counted_not_lost(tmp_path: Path) -> None:
    from auditor.record.writer import WAKE_AT

    writer = _opened_writer(tmp_path / "t.db")
    try:
        for i, path in enumerate(_paths(WAKE_AT, bad_at=-1)):
            capture = _capture(path)
            if i == 7:  # a server that put something other than header pairs there
                capture.scope = {**capture.scope, "headers": 5}
            writer.submit(capture)
        writer.flush()
        written, queue_full, other, last_error = _stats(tmp_path / "t.db")
        assert (written, queue_full, other) == (WAKE_AT, 0, 1)  # /first and WAKE_AT - 1
        assert last_error is not None and "other" in last_error
        assert len(_stored(tmp_path / "t.db")) == WAKE_AT
    finally:
        writer.close()


def test_batches_waiting_for_a_busy_database_are_bounded_then_drops_counted(
    tmp_path: Path,
) -> None:
    """While the thread cannot store (busy), batches stop at about queue_size rows, the
    captures behind them fill the queue, and what comes after is counted as queue_full:
    every request is written or counted once the database is free again."""
    from auditor.record.writer import WAKE_AT

    writer = _opened_writer(tmp_path / "t.db", queue_size=600)
    try:
        with writer._lock:
            for path in _paths(3000, bad_at=-1):
                writer.submit(_capture(path))
            assert writer._rows_batched() <= 600 + WAKE_AT
            assert len(writer._queue) <= 600
        writer.flush()
        assert writer.dropped_queue_full > 0
        assert writer.rows_written + writer.dropped_queue_full == 3001
        written, queue_full, other, _ = _stats(tmp_path / "t.db")
        assert (written, queue_full, other) == (writer.rows_written, writer.dropped_queue_full, 0)
    finally:
        writer.close()


def test_a_capture_that_cannot_be_read_is_counted_and_submit_after_close_is_harmless(
    tmp_path: Path,
) -> None:
    """submit never raises into the app: a capture to_portable cannot read is counted as
    "other", and a request still in flight when the writer closes is let go."""
    writer = _opened_writer(tmp_path / "t.db")
    try:
        broken = _capture("/broken")
        broken.scope = None  # not a scope at all
        writer.submit(broken)
        assert writer.dropped_unreadable == 1
        writer.flush()
        written, queue_full, other, last_error = _stats(tmp_path / "t.db")
        assert (written, queue_full, other) == (1, 0, 1)
        assert last_error is not None and "could not be read" in last_error
    finally:
        writer.close()
    writer.submit(_capture("/late"))  # the ledger's page is closed: nothing raises
