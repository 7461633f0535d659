"""`redirect-auditor unpack`: move the recorder's batches into the requests table."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from auditor.store.journal import unpack_file

from .common import console, fail, require_traffic_db


def unpack_command(
    db: Annotated[Path, typer.Argument(help="Traffic database a recorder writes to.")],
) -> None:
    """Move recorded requests from their batches into the requests table, to query it
    with other tools (sqlite3, plain Datasette). audit, explore and export do this
    themselves; it is safe while recorders are writing.

    Example: redirect-auditor unpack traffic.db && sqlite3 traffic.db 'select * from requests'
    """
    require_traffic_db(db)
    try:
        moved = unpack_file(db)
    except sqlite3.Error as exc:
        fail(f"{db}: {exc}")
    console.print(
        f"Moved {moved} recorded request(s) into requests in {db}.",
        highlight=False,
        soft_wrap=True,
    )
