"""`redirect-auditor prune`: delete old traffic, keeping the newest."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from auditor.store.journal import recorded_rows
from auditor.store.retention import parse_duration, prune
from auditor.store.schema import connect

from .common import console, fail, require_traffic_db


def prune_command(
    db: Annotated[Path, typer.Argument(help="Traffic database to prune.")],
    max_rows: Annotated[
        int | None, typer.Option(help="Keep at most this many of the newest requests.", min=0)
    ] = None,
    max_age: Annotated[
        str | None, typer.Option(help="Delete requests older than this: 3600, 45m, 12h, 30d, 2w.")
    ] = None,
) -> None:
    """Delete old requests so the file stays small; safe while recorders are writing.

    Example: redirect-auditor prune traffic.db --max-age 30d --max-rows 5000000
    """
    if max_rows is None and max_age is None:
        fail("say what to keep: --max-rows N and/or --max-age 30d")
    try:
        age = parse_duration(max_age) if max_age is not None else None
    except ValueError as exc:
        fail(f"--max-age: {exc}")
    require_traffic_db(db)
    conn = connect(db)
    try:
        deleted = prune(conn, max_rows=max_rows, max_age=age)
        remaining = recorded_rows(conn)
    except sqlite3.Error as exc:
        fail(f"{db}: {exc}")
    finally:
        conn.close()
    console.print(f"Deleted {deleted} request(s) from {db}; {remaining} remain.", highlight=False)
