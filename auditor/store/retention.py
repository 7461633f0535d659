"""Retention: keep the newest traffic so a production disk never fills.

Deletes run in small batches, each its own short transaction, so recorders
writing to the same file concurrently wait at most one batch.
"""

from __future__ import annotations

import re
import sqlite3
import time

from auditor.store.journal import pending_rows
from auditor.store.schema import BATCHES_TABLE, has_table

BATCH_SIZE = 5000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"45m"``, ``"12h"``, ``"30d"`` or ``"2w"``; ValueError otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 3600, 45m, 12h, 30d or 2w")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def prune(
    conn: sqlite3.Connection,
    *,
    max_rows: int | None = None,
    max_age: float | None = None,
    now: float | None = None,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Delete requests older than ``max_age`` seconds and beyond the newest ``max_rows``,
    recorded batches not unpacked yet included.

    Returns how many rows were deleted. Findings and chains are left alone:
    the next ``audit`` recomputes them from what remains.
    """
    oldest_kept = None if max_age is None else (now if now is not None else time.time()) - max_age
    # Batches not unpacked yet are the newest traffic: they count first toward
    # max_rows, and go whole (a batch spans one flush interval).
    deleted = _prune_batches(conn, max_rows=max_rows, oldest_kept=oldest_kept)
    keep = None if max_rows is None else max(max_rows - pending_rows(conn), 0)
    cutoff_id = 0
    if keep is not None:
        row = conn.execute(
            "select id from requests order by id desc limit 1 offset ?", (keep,)
        ).fetchone()
        cutoff_id = row[0] if row else 0
    if oldest_kept is not None:
        row = conn.execute(
            "select max(id) from requests where started_at < ?", (oldest_kept,)
        ).fetchone()
        cutoff_id = max(cutoff_id, row[0] or 0)
    while cutoff_id:
        with conn:
            cursor = conn.execute(
                """delete from requests where id in
                   (select id from requests where id <= ? order by id limit ?)""",
                (cutoff_id, batch_size),
            )
        deleted += cursor.rowcount
        if cursor.rowcount < batch_size:
            break
    return deleted


def _prune_batches(
    conn: sqlite3.Connection, *, max_rows: int | None, oldest_kept: float | None
) -> int:
    """Delete whole journal batches that are too old, or older than the newest
    ``max_rows`` recorded rows; returns the rows they held."""
    if not has_table(conn, BATCHES_TABLE):  # a database from before the journal
        return 0
    doomed: list[tuple[int, int]] = []
    kept_rows = 0
    for batch_id, rows, last_started in conn.execute(
        f"select id, rows, last_started_at from {BATCHES_TABLE} order by id desc"
    ).fetchall():
        if (max_rows is not None and kept_rows >= max_rows) or (
            oldest_kept is not None and last_started < oldest_kept
        ):
            doomed.append((batch_id, rows))
        else:
            kept_rows += rows
    if doomed:
        with conn:
            conn.executemany(f"delete from {BATCHES_TABLE} where id = ?", [(i,) for i, _ in doomed])
    return sum(rows for _, rows in doomed)
