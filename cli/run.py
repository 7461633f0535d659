"""`redirect-auditor run`: serve any ASGI app under uvicorn with the recorder around it.

It must behave as plain ``uvicorn APP`` does. uvicorn's own options (proxy headers,
trusted proxies, lifespan) are handed to uvicorn only when given, so uvicorn's
defaults, whatever the installed version's are (its ``FORWARDED_ALLOW_IPS``
environment variable included), apply unchanged.
"""

from __future__ import annotations

import os
import sqlite3
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from uvicorn.config import LIFESPAN

from auditor.record.serve import AppImportError, import_app, settings_env
from auditor.redaction import RedactionRules
from auditor.store.schema import (
    SchemaError,
    check_sqlite_file,
    connect,
    create_private_file,
    ensure_schema,
)

from .common import console, fail, require_free_port


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
        bool | None,
        typer.Option(
            "--proxy-headers/--no-proxy-headers",
            help="uvicorn's option, passed through (default: uvicorn's, on): take the scheme "
            "and client from X-Forwarded-Proto/-For sent by --forwarded-allow-ips. The "
            "recorder records what uvicorn gave the app.",
            show_default=False,
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="uvicorn's option, passed through: comma-separated proxy addresses, "
            "networks or literals to trust, or '*' (default: uvicorn's: "
            "$FORWARDED_ALLOW_IPS, else its local addresses).",
            show_default=False,
        ),
    ] = None,
    lifespan: Annotated[
        str | None,
        typer.Option(
            help=f"uvicorn's option, passed through: {'|'.join(LIFESPAN)} (default: uvicorn's).",
            show_default=False,
        ),
    ] = None,
    store_client_ip: Annotated[
        bool,
        typer.Option(
            "--store-client-ip", help="Also store raw client IPs (off: only a keyed hash)."
        ),
    ] = False,
    writer: Annotated[
        WriterKind,
        typer.Option(
            help="Accepted for compatibility: rows are always built and written by a "
            "thread of each worker (the writer process was retired)."
        ),
    ] = WriterKind.thread,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    redact_param: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME", help="A query parameter whose values are secrets (repeatable)."
        ),
    ] = None,
    allow_param: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME", help="A query parameter whose values are kept as sent (repeatable)."
        ),
    ] = None,
    redact_pattern: Annotated[
        list[str] | None,
        typer.Option(
            metavar="REGEX", help="A regex: path segments and values matching it are secrets."
        ),
    ] = None,
    redact_route: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TEMPLATE",
            help="A route template, e.g. /share/{id}: its placeholders are secrets.",
        ),
    ] = None,
) -> None:
    """Serve an ASGI app under uvicorn with the recorder wrapped around it: no code change.

    Example: redirect-auditor run myproject.asgi:app --db traffic.db --workers 2
    """
    if lifespan is not None and lifespan not in LIFESPAN:
        fail(f"--lifespan must be one of {', '.join(LIFESPAN)}, not {lifespan!r}")
    try:
        # Import only: a factory is called once, by uvicorn, in the process that serves.
        import_app(app, app_dir=app_dir)
    except AppImportError as exc:
        fail(str(exc))
    except Exception as exc:  # the user's module failed while importing
        fail(f"importing {app!r} raised {type(exc).__name__}: {exc}")
    redaction = RedactionRules(
        params=tuple(redact_param or ()),
        allow_params=tuple(allow_param or ()),
        patterns=tuple(redact_pattern or ()),
        routes=tuple(redact_route or ()),
    )
    try:
        redaction.validate()
    except ValueError as exc:
        fail(str(exc))
    if db.exists() and db.is_dir():
        fail(f"{db}: is a directory; --db takes a SQLite file path")
    if not db.absolute().parent.is_dir():
        fail(f"{db}: directory {db.absolute().parent} does not exist")
    # Before the database is created or the banner printed: a busy port fails here,
    # with one line, instead of in uvicorn after both.
    require_free_port(host, port)
    prepare_db(db)
    os.environ.update(
        settings_env(
            app=app,
            factory=factory,
            app_dir=os.path.abspath(app_dir),
            db=str(db.absolute()),
            recorder={
                "record": record.value,
                "sample_rate": sample_rate,
                # uvicorn's ProxyHeadersMiddleware wraps the recorder and rewrites the
                # scope it records (scheme, client) for exactly the proxies it trusts;
                # trusting them again here would also take X-Forwarded-Host and
                # Forwarded, which the app, under uvicorn, never sees applied.
                "trusted_proxies": [],
                "store_client_ip": store_client_ip,
                "writer": writer.value,
                "redact_params": redaction.params,
                "allow_params": redaction.allow_params,
                "redact_patterns": redaction.patterns,
                "redact_routes": redaction.routes,
            },
        )
    )
    console.print(
        f"Recording [bold]{app}[/] into [bold]{db}[/] (record={record.value}) "
        f"at http://{host}:{port}  - stop with Ctrl-C",
        highlight=False,
    )
    passed_through: dict[str, Any] = {
        name: value
        for name, value in (
            ("proxy_headers", proxy_headers),
            ("forwarded_allow_ips", forwarded_allow_ips),
            ("lifespan", lifespan),
        )
        if value is not None
    }
    uvicorn.run(
        "auditor.record.serve:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        **passed_through,
    )


def prepare_db(db: Path) -> None:
    """Create (mode 0600) or check the database before any worker starts, so a file
    this release cannot record into fails here with one line instead of in every worker.

    An existing file is checked read-only first (SQLite header, quick_check): a damaged
    one would take the writers' rows and lose them all.
    """
    try:
        if db.exists() and db.stat().st_size > 0:
            check_sqlite_file(db)
        create_private_file(db)
        conn = connect(db)
        try:
            ensure_schema(conn)
        finally:
            conn.close()
    except SchemaError as exc:
        message = str(exc)
        fail(message if message.startswith(f"{db}:") else f"{db}: {message}")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):  # busy at start-up is fine: the writers wait and retry
            fail(f"{db}: cannot record into this file ({exc})")
    except sqlite3.DatabaseError as exc:
        fail(f"{db}: not a usable SQLite database ({exc})")
    except OSError as exc:
        fail(f"{db}: cannot create the database ({exc.strerror})")
