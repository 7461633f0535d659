"""`redirect-auditor demo`: the whole product on a built-in example app, in one command."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from auditor import explore as exploring
from auditor.analysis.audit import AuditResult
from auditor.analysis.report import SEVERITY_STYLE, drops_line, summary_line, where
from auditor.demo import run as demoing
from auditor.demo.app import PLANTED
from auditor.demo.traffic import CLIENTS

from .common import console, err_console, fail


def print_findings(result: AuditResult, origin: str) -> None:
    """One line per finding, coloured by severity; the demo server's origin is left out."""
    legend = ", ".join(f"[{style}]{severity}[/]" for severity, style in SEVERITY_STYLE.items())
    table = Table(title=f"{len(result.findings)} findings ({legend})", title_justify="left")
    table.add_column("Rule", no_wrap=True)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Where", overflow="fold")
    table.add_column("Hits", justify="right")
    for f in result.findings:
        target = f" → {f.target.removeprefix(origin)}" if f.target else ""
        style = SEVERITY_STYLE[f.severity]
        table.add_row(
            f"[{style}]{f.rule}[/]", f"[{style}]{f.severity}[/]", where(f) + target, str(f.hits)
        )
    console.print(table)
    console.print(summary_line(result), style="bold", highlight=False)
    if drops_line(result):
        console.print(drops_line(result), style="yellow", highlight=False)
    for rule_id, error in result.rule_errors.items():
        err_console.print(f"Warning: rule {rule_id} failed and was skipped: {error}")


def _record(db: Path) -> demoing.TrafficSummary:
    columns = (
        TextColumn("{task.description}", style="bold"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting the demo app", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        return demoing.record_traffic(db, progress)


def _report(db: Path, result: AuditResult, origin: str, expectations: demoing.Expectations) -> None:
    print_findings(result, origin)
    console.print(
        f"Why each one matters and how to fix it: redirect-auditor audit {db}",
        highlight=False,
    )
    for line in expectation_lines(expectations):
        console.print(line, highlight=False)


def expectation_lines(expectations: demoing.Expectations) -> list[str]:
    """What the findings say about the problems the app plants and the routes it gets right."""
    lines = []
    if not (expectations.missing or expectations.repeated or expectations.wrong_severity):
        lines.append(
            f"Each of the {len(PLANTED)} problems the demo app plants on purpose was found "
            "once, at its severity" + (", and nothing else." if expectations.met else ".")
        )
    for p in expectations.missing:
        lines.append(f"[yellow]Planted but not found:[/] {p.rule} at {p.method} {p.source}")
    for p, times in expectations.repeated:
        lines.append(
            f"[yellow]Planted once, reported {times} times:[/] {p.rule} at {p.method} {p.source}"
        )
    for p, severities in expectations.wrong_severity:
        lines.append(
            f"[yellow]Planted as {p.severity}, reported as {', '.join(sorted(set(severities)))}:[/]"
            f" {p.rule} at {p.method} {p.source}"
        )
    for rule, method, source in expectations.unplanted:
        where = " ".join(part for part in (method, source) if part)
        lines.append(f"[yellow]Reported but not planted:[/] {rule} at {where}")
    if expectations.on_correct_routes:
        wrong = ", ".join(f"{rule} on {route}" for rule, route in expectations.on_correct_routes)
        lines.append(f"[yellow]Findings on routes that are right on purpose:[/] {wrong}")
    else:
        lines.append(
            "No finding on the routes that are right on purpose "
            "(303 after a POST, 308 for the moved API, 307 keeping a PUT)."
        )
    return lines


def _listen(port: int) -> socket.socket:
    try:
        return exploring.bind("127.0.0.1", port)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc})")


def _serve(db: Path, sock: socket.socket) -> None:
    ds = exploring.build_datasette([db])
    name = exploring.database_names([db])[0]
    console.print(
        f"Datasette is showing the findings at "
        f"http://127.0.0.1:{sock.getsockname()[1]}/{name}/findings  - stop with Ctrl-C",
        highlight=False,
        soft_wrap=True,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops cleanly, then re-raises it
        exploring.serve(ds, sock)
    console.print(f"Stopped. The demo database stays in {db}.", highlight=False)


def demo(
    db: Annotated[
        Path, typer.Option(help="Demo database; replaced on each run (only if it is a demo's).")
    ] = Path("demo.db"),
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Open Datasette on the findings afterwards.")
    ] = True,
    port: Annotated[
        int, typer.Option(help="Port for Datasette (0: any free port).", min=0, max=65535)
    ] = 0,
) -> None:
    """Run a built-in example app under the recorder, send it real traffic, audit it,
    and open the findings in Datasette.

    The app makes each family of redirect mistake once and does the right thing in
    a few places; five clients (browser-like, httpx, requests-like, curl, a browser
    behind a TLS proxy) follow its redirects as those clients really do.

    Example: redirect-auditor demo --db demo.db --no-serve
    """
    # The port first: a busy one fails in a moment, not after the demo's whole run.
    sock = _listen(port) if serve else None
    try:
        origin, result = _record_and_audit(db)
    except demoing.DemoError as exc:
        if sock is not None:
            sock.close()
        fail(str(exc))
    except KeyboardInterrupt:
        err_console.print(f"Interrupted: the demo app is stopped; partial traffic is in {db}.")
        raise typer.Exit(code=130) from None
    _report(db, result, origin, demoing.check_findings(db))
    if sock is not None:
        _serve(db, sock)
    else:
        console.print(f"Explore them with: redirect-auditor explore {db}", highlight=False)


def _record_and_audit(db: Path) -> tuple[str, AuditResult]:
    demoing.prepare_database(db)
    console.print(
        f"Serving the example app [bold]auditor.demo.app[/] under uvicorn on 127.0.0.1, "
        f"recording into [bold]{db}[/]; {len(CLIENTS)} clients: "
        + ", ".join(profile.name for profile in CLIENTS),
        highlight=False,
    )
    traffic = _record(db)
    console.print(
        f"Recorded {traffic.rows_recorded} requests ({traffic.requests_sent} sent) "
        f"in {traffic.seconds:.1f} s from {traffic.base_url}.",
        highlight=False,
    )
    console.print(
        f"Auditing with the default options of redirect-auditor audit {db}, which reports "
        "the same findings.",
        highlight=False,
    )
    return traffic.base_url, demoing.audit_demo(db)
