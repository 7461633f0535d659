"""`redirect-auditor probe`: follow a redirect chain hop by hop as a chosen client would."""

from __future__ import annotations

import asyncio
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from auditor.record.middleware import RedirectRecorder
from auditor.record.serve import AppImportError, import_app
from auditor.sources.probe import HopRecorder, ProbeResult, sweep_targets
from auditor.sources.probe import probe as run_probe
from auditor.store.schema import SchemaError, check_traffic_db

from .common import console, fail


class Client(StrEnum):
    """The clients whose redirect behaviour ``probe --as`` replays (sources.probe.CLIENTS)."""

    browser = "browser"
    curl = "curl"
    requests = "requests"
    httpx = "httpx"
    urllib = "urllib"
    node = "node"
    aiohttp = "aiohttp"


APP_BASE = "http://testserver"
BODY_METHODS = ("POST", "PUT", "PATCH")


def probe(
    url: Annotated[
        str | None,
        typer.Argument(help="URL to request; with --app a path such as /v1/orders is enough."),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option("--method", "-X", help="Request method (default GET, POST with --data)."),
    ] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Request body.")] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            metavar="'NAME: VALUE'",
            help="Extra request header (repeatable).",
        ),
    ] = None,
    max_hops: Annotated[int, typer.Option(help="Redirects to follow at most.", min=0)] = 10,
    as_client: Annotated[
        Client, typer.Option("--as", help="Follow redirects the way this client does.")
    ] = Client.browser,
    db: Annotated[
        Path | None, typer.Option(help="Record every hop into this traffic database.")
    ] = None,
    app: Annotated[
        str | None,
        typer.Option(
            help="Call this ASGI app (module:attribute) in-process instead of the network."
        ),
    ] = None,
    app_dir: Annotated[str, typer.Option(help="Directory to import --app from.")] = ".",
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep",
            help="With --app: request every route and method of a Starlette/FastAPI app, then "
            "audit the result.",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each response (more than 0).")
    ] = 10.0,
) -> None:
    """Follow redirects hop by hop and show what each client really sends next.

    Example: redirect-auditor probe http://127.0.0.1:8000/v1/orders -d '{}' --as browser
    """
    if not timeout > 0:
        fail(f"--timeout must be more than 0 seconds, not {timeout:g}")
    client = as_client.value
    headers = [_header(h) for h in header or []]
    if data is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
    body = data.encode() if data is not None else None
    method = (method or ("POST" if data is not None else "GET")).upper()
    if db is not None:
        _check_db(db)
    if sweep:
        if app is None:
            fail("--sweep needs --app module:attribute (a Starlette or FastAPI app)")
        if url is not None:
            fail("--sweep visits every route; give no URL with it")
        _sweep(app, app_dir, db, client, max_hops, headers, timeout)
        return
    if url is None:
        fail("give a URL to probe, or --app module:attribute --sweep")

    if app is not None:
        asgi_app = _import(app, app_dir)
        recorder = RedirectRecorder(asgi_app, db_path=db) if db is not None else None
        transport = httpx.ASGITransport(app=recorder or asgi_app, raise_app_exceptions=False)
        target = url if url.startswith(("http://", "https://")) else APP_BASE + _path(url)
        try:
            result = _run(target, method, body, headers, client, max_hops, transport, None, timeout)
        finally:
            if recorder is not None:
                recorder.writer.close()
    else:
        if not url.startswith(("http://", "https://")):
            fail(f"{url!r} is not an http(s) URL (use --app to call an app in-process)")
        hop_recorder = HopRecorder(db) if db is not None else None
        result = _run(url, method, body, headers, client, max_hops, None, hop_recorder, timeout)
        if len(result.hops) == 1 and result.hops[0].status is None:
            # Nothing answered at all (refused, unresolvable, timed out): the
            # environment, not a redirect, so one line and exit 2, and nothing recorded.
            fail(f"{url}: no response ({result.hops[0].error})")
        if hop_recorder is not None:
            hop_recorder.save()
    console.print(hop_table(result, client))
    for line in outcome_lines(result):
        console.print(line, highlight=False)
    if db is not None:
        console.print(f"Recorded into {db}; next: redirect-auditor audit {db}", highlight=False)
    if result.outcome == "error":
        raise typer.Exit(code=1)


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        fail(f"--header {text!r} is not of the form 'Name: value'")
    return name.strip(), value.strip()


def _path(url: str) -> str:
    return url if url.startswith("/") else "/" + url


def _check_db(db: Path) -> None:
    if db.exists():
        try:
            check_traffic_db(db)
        except SchemaError as exc:
            fail(str(exc))
    elif not db.absolute().parent.is_dir():
        fail(f"{db}: directory {db.absolute().parent} does not exist")


def _import(app: str, app_dir: str) -> Any:
    try:
        return import_app(app, app_dir=app_dir)
    except AppImportError as exc:
        fail(str(exc))
    except Exception as exc:  # the user's module failed while importing
        fail(f"importing {app!r} raised {type(exc).__name__}: {exc}")


def _run(
    url: str,
    method: str,
    body: bytes | None,
    headers: list[tuple[str, str]],
    client: str,
    max_hops: int,
    transport: httpx.AsyncBaseTransport | None,
    hop_recorder: HopRecorder | None,
    timeout: float,
) -> ProbeResult:
    try:
        return asyncio.run(
            run_probe(
                url,
                method=method,
                body=body,
                headers=headers,
                client=client,
                max_hops=max_hops,
                transport=transport,
                same_host_only=transport is not None,
                timeout=timeout,
                on_hop=hop_recorder,
            )
        )
    except httpx.InvalidURL as exc:
        fail(f"{url!r}: {exc}")


def hop_table(result: ProbeResult, client: str) -> Table:
    """The hops as a small table: method, URL, status, Location, what the client did."""
    table = Table(title=f"as {client}", title_justify="left", show_edge=False)
    for name in ("#", "method", "URL", "status", "Location"):
        table.add_column(name, overflow="fold")
    for number, hop in enumerate(result.hops, start=1):
        status = str(hop.status) if hop.status is not None else f"[red]{hop.error}[/]"
        table.add_row(str(number), hop.method, hop.url, status, hop.location or "")
    return table


def outcome_lines(result: ProbeResult) -> list[str]:
    """What the client did at each redirect, then how the chain ended."""
    lines = [f"after #{n}: {hop.note}" for n, hop in enumerate(result.hops, 1) if hop.note]
    first, last = result.hops[0], result.hops[-1]
    redirects = len(result.hops) - 1
    line = f"{result.outcome}: {redirects} redirect(s) followed"
    if last.status is not None:
        line += f", final status {last.status}"
    if redirects and first.method != last.method:
        line += f"; {first.method} {first.url} arrived as {last.method} {last.url}"
    return [*lines, line]


def _sweep(
    app: str,
    app_dir: str,
    db: Path | None,
    client: str,
    max_hops: int,
    headers: list[tuple[str, str]],
    timeout: float,
) -> None:
    from auditor.analysis.audit import audit
    from auditor.analysis.report import to_rich

    asgi_app = _import(app, app_dir)
    try:
        targets = sweep_targets(asgi_app)
    except ValueError as exc:
        fail(str(exc))
    with tempfile.TemporaryDirectory(prefix="redirect-auditor-sweep-") as tmp:
        db_path = db if db is not None else Path(tmp) / "sweep.db"
        recorder = RedirectRecorder(asgi_app, db_path=db_path)
        transport = httpx.ASGITransport(app=recorder, raise_app_exceptions=False)
        table = Table(title=f"swept {len(targets)} route(s) as {client}", show_edge=False)
        for name in ("method", "path", "hops"):
            table.add_column(name, overflow="fold")
        try:
            for method, path in targets:
                body = b"{}" if method in BODY_METHODS else None
                extra = [("Content-Type", "application/json")] if body is not None else []
                result = _run(
                    APP_BASE + path,
                    method,
                    body,
                    headers + extra,
                    client,
                    max_hops,
                    transport,
                    None,
                    timeout,
                )
                table.add_row(method, path, _chain_text(result))
        finally:
            recorder.writer.close()
        console.print(table)
        try:
            audited = audit(db_path)
        except SchemaError as exc:
            fail(str(exc))
        console.print(to_rich(audited))
        if db is not None:
            console.print(f"Traffic and findings are in {db}", highlight=False)


def _chain_text(result: ProbeResult) -> str:
    parts = []
    for hop in result.hops:
        path = httpx.URL(hop.url).raw_path.decode("ascii", "replace")
        status = hop.status if hop.status is not None else hop.error
        parts.append(f"{hop.method} {path} {status}")
    text = " -> ".join(parts)
    return text if result.outcome == "completed" else f"{text} ({result.outcome})"
