"""`redirect-auditor import-har`: browser or proxy traffic (HAR 1.2) as recorded requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auditor.sources.har import HarError
from auditor.sources.har import import_har as import_har_file
from auditor.store.schema import SchemaError

from .common import console, err_console, fail


def import_har(
    har: Annotated[
        Path, typer.Argument(help="HAR 1.2 file exported by browser DevTools or a proxy.")
    ],
    db: Annotated[
        Path, typer.Option(help="Traffic database to add the requests to (created if missing).")
    ] = Path("traffic.db"),
    window: Annotated[
        float,
        typer.Option(help="Linking window in seconds, for the ambiguity check.", min=0),
    ] = 30.0,
    force: Annotated[
        bool, typer.Option("--force", help="Import a file that is already in the database.")
    ] = False,
) -> None:
    """Import a HAR file so the audit rules run on traffic captured in a browser.

    All entries of one file are one client, so the browser's redirect hops are
    linked by the audit like recorded traffic. A malformed file imports nothing.

    Example: redirect-auditor import-har checkout.har --db traffic.db
    """
    if db.exists() and db.is_dir():
        fail(f"{db}: is a directory; --db takes a SQLite file path")
    try:
        result = import_har_file(har, db, window=window, allow_reimport=force)
    except (HarError, SchemaError) as exc:
        fail(f"{har}: {exc}" if isinstance(exc, HarError) else str(exc))
    client = f" as one client ({result.client_key})" if result.rows else ""
    console.print(
        f"Imported {result.rows} request(s) from {har.name} into {db}{client} "
        f"(worker_id {result.worker_id}).",
        highlight=False,
    )
    for line in result.skipped:
        err_console.print(f"skipped {line}", highlight=False, soft_wrap=True)
    for line in result.ambiguous:
        err_console.print(f"[yellow]ambiguous linking:[/] {line}", highlight=False, soft_wrap=True)
    console.print(f"Next: redirect-auditor audit {db}", highlight=False)
