"""`redirect-auditor explore`: Datasette on traffic databases, audited first when needed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from auditor import explore as exploring
from auditor.store import journal

from .common import console, err_console, fail, require_traffic_db


def _audit_if_needed(db: Path) -> None:
    if not exploring.needs_audit(db):
        try:
            journal.unpack_file(db)  # what was recorded since the last audit
        except (sqlite3.Error, OSError) as exc:  # shown as it stands; the follower retries
            err_console.print(f"Warning: {db}: {exc}", highlight=False)
        return
    try:
        from auditor.analysis.audit import audit
    except ImportError:
        err_console.print(f"Warning: {db} has no findings; audit unavailable", highlight=False)
        return
    console.print(f"Auditing [bold]{db}[/] (no findings yet)...", highlight=False)
    try:
        audit(db)
    except Exception as exc:  # show the traffic anyway; the audit's own command reports
        err_console.print(f"Warning: auditing {db} failed: {exc}", highlight=False)


def explore(
    dbs: Annotated[
        list[Path],
        typer.Argument(metavar="DB...", help="Traffic databases (several are shown side by side)."),
    ],
    port: Annotated[
        int, typer.Option(help="Port to listen on (0: any free port).", min=0, max=65535)
    ] = 8001,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Open traffic databases in Datasette: findings, redirect chains and requests.

    Runs the audit first on a database that has no findings yet; requests recorded
    meanwhile show up within seconds.

    Example: redirect-auditor explore traffic.db --port 8001
    """
    for db in dbs:  # every file intact before anything is audited or served
        require_traffic_db(db)
    try:  # a busy port fails before any database is audited (written)
        sock = exploring.bind(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port} ({exc.strerror or exc})")
    for db in dbs:
        _audit_if_needed(db)
    if not exploring.is_loopback(host):
        err_console.print(
            f"Warning: listening on {host}: anyone who can reach it can read the recorded traffic",
            highlight=False,
        )
    ds = exploring.build_datasette(dbs)
    journal.follow(dbs)  # a live recording keeps showing up
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    names = exploring.database_names(dbs)
    console.print(
        f"Exploring {', '.join(str(db) for db in dbs)} at "
        f"http://{url_host}:{bound_port}/{names[0] if len(names) == 1 else ''}"
        "  - stop with Ctrl-C",
        highlight=False,
        soft_wrap=True,
    )
    exploring.serve(ds, sock)
