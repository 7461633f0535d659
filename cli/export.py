"""`redirect-auditor export`: a traffic database's closed hours as Parquet shards."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from auditor.sources.export import DEFAULT_WINDOW_S, FleetMissing, export, require_fleet
from auditor.store.schema import SchemaError

from .common import console, err_console, fail


def export_command(
    db: Annotated[
        Path, typer.Argument(metavar="DB", help="Traffic database recorded by RedirectRecorder.")
    ],
    to: Annotated[
        Path,
        typer.Option(
            "--to", metavar="DIR", help="Directory of Parquet shards (created when missing)."
        ),
    ],
    host: Annotated[
        str | None,
        typer.Option(
            help="Partition name of this host (default: this machine's name).",
            show_default=False,
        ),
    ] = None,
    window: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0,
            help="Link window: an hour is exported once its end is this much in the past.",
        ),
    ] = DEFAULT_WINDOW_S,
    until: Annotated[
        float | None,
        typer.Option(
            metavar="EPOCH",
            help="Take this Unix time as now (default: the clock).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the recorded requests of closed hours as Parquet, for `audit DIR` across hosts.

    Files go under DIR/server=<host>/date=<YYYY-MM-DD>/, one per database and hour, named
    by the database's export id and the id range they hold. Running it again (from cron,
    say) writes only rows not exported yet: never a duplicate. Needs the fleet extra.

    Example: redirect-auditor export /var/lib/app/traffic.db --to /srv/traffic
    """
    try:
        require_fleet()
    except FleetMissing as exc:
        fail(f"export needs DuckDB and pyarrow: {exc}")
    progress: Progress | None = None
    task = None
    if err_console.is_terminal:
        progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.completed:,} rows"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        progress.start()
        task = progress.add_task(f"exporting {db.name}", total=None)

    def report(rows: int) -> None:
        if progress is not None and task is not None:
            progress.update(task, completed=rows)

    try:
        result = export(db, to, host=host, window=window, until=until, progress=report)
    except SchemaError as exc:
        fail(str(exc))
    except (sqlite3.Error, OSError) as exc:
        fail(f"exporting {db} to {to} failed ({exc})")
    finally:
        if progress is not None:
            progress.stop()
    console.print(
        f"{db}: {result.rows} new request(s) in {len(result.files)} file(s) under {to}",
        highlight=False,
        soft_wrap=True,
    )
