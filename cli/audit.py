"""`redirect-auditor audit`: find redirect problems in recorded traffic and store them."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from auditor.analysis.audit import AuditResult
from auditor.analysis.audit import audit as run_audit
from auditor.analysis.config import ConfigError, build_options
from auditor.analysis.report import failed, to_json, to_markdown, to_rich
from auditor.analysis.rules.base import Severity, all_rules
from auditor.merge import merge
from auditor.schema import SchemaError
from cli.common import console, err_console, fail, require_traffic_db

FORMATS = ("table", "json", "markdown")
FAIL_ON: tuple[Severity, ...] = ("error", "warning")
PROGRESS_AFTER_S = 0.5  # show a progress bar only for scans that take longer


class DelayedProgress:
    """The audit's progress callback: a rich bar on a terminal once a scan is slow."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, step: str, done: int, total: int) -> None:
        if self.progress is None:
            if not err_console.is_terminal or time.monotonic() - self.started < PROGRESS_AFTER_S:
                return
            self.progress = Progress(
                TextColumn("[bold]{task.fields[label]}"),
                BarColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(step, total=total, label=self.label)
        assert self.task is not None
        self.progress.update(self.task, completed=done, description=step)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def audit(
    dbs: Annotated[
        list[Path],
        typer.Argument(help="Traffic database(s) recorded by RedirectRecorder; audited in turn."),
    ],
    format: Annotated[
        str, typer.Option("--format", "-f", help="Output: table, json or markdown.")
    ] = "table",
    fail_on: Annotated[
        str | None,
        typer.Option(help="Exit 1 when a finding is at or above: error or warning."),
    ] = None,
    chain_threshold: Annotated[
        int | None, typer.Option(help="Redirects in a row that make a chain (default 2).")
    ] = None,
    link_window: Annotated[
        float | None,
        typer.Option(help="Seconds within which a follow-up request must arrive (default 30)."),
    ] = None,
    ignore_path: Annotated[
        list[str] | None,
        typer.Option(help="Glob on the route or path whose findings are dropped; repeatable."),
    ] = None,
    ignore_rule: Annotated[
        list[str] | None, typer.Option(help="Rule id to skip; repeatable.")
    ] = None,
    no_config: Annotated[
        bool,
        typer.Option("--no-config", help="Ignore \\[tool.redirect-auditor] in pyproject.toml."),
    ] = False,
    combined: Annotated[
        Path | None,
        typer.Option(
            help="Merge the databases (one per host) into this file and audit them together, "
            "so hops that crossed hosts link; the input files are left as they are."
        ),
    ] = None,
) -> None:
    """Audit recorded traffic: link follow-up hops, build chains, run every rule, and store
    the findings in the database (replacing the previous run's).

    Options also come from \\[tool.redirect-auditor] in the nearest pyproject.toml
    (chain-threshold, link-window, ignore-paths, ignore-rules, unfollowed-ratio, ...);
    the command line wins. Exit codes: 0 ok, 1 findings at or above --fail-on,
    2 bad input.

    Example: redirect-auditor audit traffic.db --fail-on error --format markdown

    Example: redirect-auditor audit web1.db web2.db --combined all.db
    """
    if format not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if fail_on is not None and fail_on not in FAIL_ON:
        fail(f"--fail-on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    threshold: Severity | None = next((s for s in FAIL_ON if s == fail_on), None)
    overrides: dict[str, Any] = {
        "chain_threshold": chain_threshold,
        "link_window": link_window,
        "ignore_paths": ignore_path or None,
        "ignore_rules": ignore_rule or None,
    }
    try:
        options = build_options(overrides, use_pyproject=not no_config)
    except ConfigError as exc:
        fail(str(exc))
    for db in dbs:  # check every file before writing to any
        require_traffic_db(db)
    if combined is not None:
        try:
            merge(combined, list(dbs))
        except (SchemaError, ValueError) as exc:
            fail(str(exc))
        dbs = [combined]

    results: list[AuditResult] = []
    for db in dbs:
        progress = DelayedProgress(db.name)
        try:
            results.append(run_audit(db, options=options, progress=progress))
        except (SchemaError, ConfigError) as exc:
            fail(str(exc))
        except sqlite3.Error as exc:  # checked intact above; this is the disk or a lock
            fail(f"{db}: cannot audit ({exc})")
        finally:
            progress.close()
        if format == "table":
            console.print(to_rich(results[-1]))
        for rule_id, error in results[-1].rule_errors.items():
            err_console.print(
                f"[yellow]Warning:[/] rule {rule_id} failed and was skipped: {error}",
                highlight=False,
                soft_wrap=True,
            )

    if format == "json":
        typer.echo(json.dumps(to_json(results, threshold), indent=2, ensure_ascii=False))
    elif format == "markdown":
        typer.echo(to_markdown(results, threshold), nl=False)
    if failed(results, threshold):
        raise typer.Exit(code=1)


def rule_ids() -> list[str]:
    """Every rule id, for help texts and validation."""
    return sorted(all_rules())
