"""`redirect-auditor run`: serve any ASGI app under uvicorn with the recorder around it."""

from __future__ import annotations

import os
import sqlite3
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from auditor.schema import SchemaError, connect, create_private_file, ensure_schema
from auditor.serve import AppImportError, import_app, settings_env
from cli.common import console, fail


class RecordMode(StrEnum):
    all = "all"
    redirects = "redirects"


class WriterKind(StrEnum):
    process = "process"
    thread = "thread"


def run(
    app: Annotated[
        str, typer.Argument(help="The ASGI app as module:attribute, e.g. myproject.asgi:app.")
    ],
    db: Annotated[Path, typer.Option(help="SQLite file the traffic is recorded into.")] = Path(
        "traffic.db"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes (all record into one file).", min=1)
    ] = 1,
    record: Annotated[
        RecordMode, typer.Option(help="'all' requests, or only 'redirects' and their follow-ups.")
    ] = RecordMode.all,
    sample_rate: Annotated[
        float,
        typer.Option(
            help="With --record redirects: fraction of other requests kept too.", min=0, max=1
        ),
    ] = 0.0,
    factory: Annotated[bool, typer.Option("--factory", help="APP is a factory to call.")] = False,
    app_dir: Annotated[str, typer.Option(help="Directory to import APP from.")] = ".",
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers",
            help="Trust X-Forwarded-Proto/-For/-Host and Forwarded from --forwarded-allow-ips "
            "(uvicorn's option, and the recorder's effective scheme/host).",
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Comma-separated proxy addresses to trust, or '*'.")
    ] = "127.0.0.1",
    store_client_ip: Annotated[
        bool,
        typer.Option(
            "--store-client-ip", help="Also store raw client IPs (off: only a keyed hash)."
        ),
    ] = False,
    writer: Annotated[
        WriterKind,
        typer.Option(
            help="Where rows are built and written: a low-priority 'process' per worker, "
            "or a 'thread' in each worker (no extra process; competes for the GIL)."
        ),
    ] = WriterKind.process,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve an ASGI app under uvicorn with the recorder wrapped around it: no code change.

    Example: redirect-auditor run myproject.asgi:app --db traffic.db --workers 2
    """
    try:
        import_app(app, factory=factory, app_dir=app_dir)
    except AppImportError as exc:
        fail(str(exc))
    except Exception as exc:  # the user's module failed while importing
        fail(f"importing {app!r} raised {type(exc).__name__}: {exc}")
    if db.exists() and db.is_dir():
        fail(f"{db}: is a directory; --db takes a SQLite file path")
    if not db.absolute().parent.is_dir():
        fail(f"{db}: directory {db.absolute().parent} does not exist")
    prepare_db(db)
    trusted = (
        [p.strip() for p in forwarded_allow_ips.split(",") if p.strip()] if proxy_headers else []
    )
    os.environ.update(
        settings_env(
            app=app,
            factory=factory,
            app_dir=os.path.abspath(app_dir),
            db=str(db.absolute()),
            recorder={
                "record": record.value,
                "sample_rate": sample_rate,
                "trusted_proxies": trusted,
                "store_client_ip": store_client_ip,
                "writer": writer.value,
            },
        )
    )
    console.print(
        f"Recording [bold]{app}[/] into [bold]{db}[/] (record={record.value}) "
        f"at http://{host}:{port}  - stop with Ctrl-C",
        highlight=False,
    )
    uvicorn.run(
        "auditor.serve:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level=log_level,
    )


def prepare_db(db: Path) -> None:
    """Create (mode 0600) or check the database before any worker starts, so a file
    this release cannot record into fails here with one line instead of in every worker."""
    try:
        create_private_file(db)
        conn = connect(db)
        try:
            ensure_schema(conn)
        finally:
            conn.close()
    except SchemaError as exc:
        fail(f"{db}: {exc}")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):  # busy at start-up is fine: the writers wait and retry
            fail(f"{db}: cannot record into this file ({exc})")
    except sqlite3.DatabaseError as exc:
        fail(f"{db}: not a usable SQLite database ({exc})")
    except OSError as exc:
        fail(f"{db}: cannot create the database ({exc.strerror})")
