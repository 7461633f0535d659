"""Retention: keep the newest traffic so a production disk never fills.

Deletes run in small batches, each its own short transaction, so recorders
writing to the same file concurrently wait at most one batch.
"""

from __future__ import annotations

import re
import sqlite3
import time

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
    """Delete requests older than ``max_age`` seconds and beyond the newest ``max_rows``.

    Returns how many rows were deleted. Findings and chains are left alone:
    the next ``audit`` recomputes them from what remains.
    """
    cutoff_id = 0
    if max_rows is not None:
        row = conn.execute(
            "select id from requests order by id desc limit 1 offset ?", (max(max_rows, 0),)
        ).fetchone()
        cutoff_id = row[0] if row else 0
    if max_age is not None:
        oldest_kept = (now if now is not None else time.time()) - max_age
        row = conn.execute(
            "select max(id) from requests where started_at < ?", (oldest_kept,)
        ).fetchone()
        cutoff_id = max(cutoff_id, row[0] or 0)
    deleted = 0
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
