"""`redirect-auditor audit`: find redirect problems in recorded traffic and store them."""

from __future__ import annotations

import json
import sqlite3
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from auditor.analysis.audit import AuditResult
from auditor.analysis.audit import audit as run_audit
from auditor.analysis.config import ConfigError, build_options
from auditor.analysis.report import (
    failed,
    failed_reason,
    stored_result,
    to_json,
    to_lines,
    to_markdown,
    to_rich,
)
from auditor.analysis.rules.base import Severity, all_rules
from auditor.sources.export import FleetMissing
from auditor.sources.fleet import (
    compact_report,
    default_report,
    is_fleet_report,
    is_fleet_source,
    load_shards,
)
from auditor.sources.fleet_select import DEFAULT_MAX_ROWS
from auditor.store.merge import merge
from auditor.store.schema import SchemaError

from .common import console, err_console, fail, require_traffic_db

PROGRESS_AFTER_S = 0.5  # show a progress bar only for scans that take longer
DETAILED = 3  # findings shown in detail in the terminal by default; then a line each
DETAIL_LINES = 12  # about what one detailed finding takes there


class OutputFormat(StrEnum):
    text = "text"  # a terminal: the grouped view; a pipe or CI log: one line per finding
    table = "table"  # the grouped view, piped or not
    json = "json"
    markdown = "markdown"


class FailOn(StrEnum):
    error = "error"
    warning = "warning"


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
        typer.Argument(
            metavar="DB...",
            help="Traffic database(s) recorded by RedirectRecorder; audited in turn. Or one "
            "directory (or glob) of Parquet shards made by `export`, audited together.",
            show_default=False,
        ),
    ],
    format: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            "-f",
            help="text: grouped in a terminal, one line per finding when piped; "
            "table: grouped; json: docs/audit-json-schema.json; markdown: one PR comment.",
        ),
    ] = OutputFormat.text,
    fail_on: Annotated[
        FailOn | None,
        typer.Option(
            help="Exit 1 when a finding is at or above this severity.", show_default=False
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Findings shown per database, worst first (0: all). Default: what fits "
            "the screen in a terminal, all when piped; markdown stops within one comment.",
            show_default=False,
        ),
    ] = None,
    chain_threshold: Annotated[
        int | None,
        typer.Option(help="Redirects in a row that make a chain (default 2).", show_default=False),
    ] = None,
    link_window: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Seconds within which a follow-up request must arrive (default 30).",
            show_default=False,
        ),
    ] = None,
    ignore_path: Annotated[
        list[str] | None,
        typer.Option(
            metavar="GLOB",
            help="Glob on the route or path whose findings are dropped; repeatable.",
            show_default=False,
        ),
    ] = None,
    ignore_rule: Annotated[
        list[str] | None,
        typer.Option(metavar="PROBLEM", help="Problem id to skip; repeatable.", show_default=False),
    ] = None,
    no_config: Annotated[
        bool,
        typer.Option("--no-config", help="Ignore \\[tool.redirect-auditor] in pyproject.toml."),
    ] = False,
    combined: Annotated[
        Path | None,
        typer.Option(
            metavar="OUT.db",
            help="Merge the databases (one per host) into this file and audit them together, "
            "so hops that crossed hosts link; the input files are left as they are.",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="For a Parquet directory: the SQLite report to write (findings, chains, "
            "requests; `explore` opens it). Default: DIR/report.db.",
            show_default=False,
        ),
    ] = None,
    sample_above: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="ROWS",
            help="For a Parquet directory: when the audit would read more rows than this, "
            "audit a sample of clients instead (every place and client family kept, "
            "hits scaled).",
        ),
    ] = DEFAULT_MAX_ROWS,
    stored: Annotated[
        bool,
        typer.Option(
            "--stored",
            help="Show the findings the last audit stored in the database, without auditing "
            "again (fast; nothing is written).",
        ),
    ] = False,
) -> None:
    """Audit recorded traffic: link follow-up hops, build chains, run every rule, and store
    the findings in the database (replacing the previous run's).

    Options also come from \\[tool.redirect-auditor] in the nearest pyproject.toml
    (chain-threshold, link-window, ignore-paths, ignore-rules, unfollowed-ratio, ...);
    the command line wins. Exit codes: 0 ok, 1 findings at or above --fail-on,
    2 bad input.

    Example: redirect-auditor audit traffic.db --fail-on error --format markdown

    Example: redirect-auditor audit web1.db web2.db --combined all.db

    Example: redirect-auditor audit /srv/traffic --report fleet.db
    """
    threshold: Severity | None = None if fail_on is None else fail_on.value
    overrides: dict[str, Any] = {
        "chain_threshold": chain_threshold,
        "link_window": link_window,
        "ignore_paths": ignore_path or None,
        "ignore_rules": ignore_rule or None,
    }
    if stored and (combined is not None or any(v is not None for v in overrides.values())):
        fail("--stored shows the last audit as it was stored; audit options need a new audit")
    try:
        options = build_options(overrides, use_pyproject=not no_config and not stored)
    except ConfigError as exc:
        fail(str(exc))
    fleet = any(is_fleet_source(db) for db in dbs)
    if fleet:
        dbs = [_fleet_report(dbs, report, combined, stored, sample_above)]
    elif report is not None:
        fail("--report is for a directory or glob of Parquet shards")
    for db in dbs:  # check every file before writing to any
        require_traffic_db(db)
        if not fleet and not stored and is_fleet_report(db):
            fail(
                f"{db}: is the report of a fleet audit (only the requests its findings "
                "cite); audit the shards again (redirect-auditor audit DIR) or show it "
                "with --stored"
            )
    if combined is not None:
        try:
            merge(combined, list(dbs))
        except (SchemaError, ValueError) as exc:
            fail(str(exc))
        dbs = [combined]

    view = format.value
    if view == "text":
        view = "table" if console.is_terminal else "lines"
    details: int | None = None  # every finding shown is shown in detail
    if limit is None and view == "table":
        # A screenful: the worst few in detail, the next ones a line each.
        details = DETAILED
        limit = DETAILED + max(5, console.height - DETAILED * DETAIL_LINES - 6)
    elif limit is None:  # a pipe, a CI log, a comment (which stops at its own size)
        limit = 0
    results: list[AuditResult] = []
    for db in dbs:
        if stored:
            result = stored_result(db)
            if result is None:
                fail(f"{db}: no audit stored yet; run: redirect-auditor audit {db}")
        else:
            result = _audit_one(db, options)
            if fleet:
                try:
                    compact_report(db)
                except sqlite3.Error as exc:
                    fail(
                        f"{db}: the findings are stored; keeping only what they cite failed ({exc})"
                    )
        results.append(result)
        if view == "table":
            hint = f"--limit 0 shows them all, or browse them: redirect-auditor explore {db}"
            console.print(to_rich(result, limit, hint, details))
        elif view == "lines":
            typer.echo("\n".join(to_lines([result], limit, with_path=len(dbs) > 1)))
        else:
            for rule_id, error in result.rule_errors.items():
                err_console.print(
                    f"[yellow]Warning:[/] rule {rule_id} failed and was skipped: {error}",
                    highlight=False,
                    soft_wrap=True,
                )

    if view == "json":
        typer.echo(json.dumps(to_json(results, threshold), indent=2, ensure_ascii=False))
    elif view == "markdown":
        typer.echo(to_markdown(results, threshold, limit=limit), nl=False)
    if threshold is not None and failed(results, threshold):
        err_console.print(
            f"[bold red]Failed:[/] {failed_reason(results, threshold)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)


def _fleet_report(
    dbs: list[Path], report: Path | None, combined: Path | None, stored: bool, sample_above: int
) -> Path:
    """The SQLite report holding every shard's rows (built now unless ``--stored``)."""
    if len(dbs) != 1:
        fail("audit one Parquet directory or glob at a time, without other databases")
    if combined is not None:
        fail("--combined merges SQLite files; a Parquet directory is audited together already")
    source = dbs[0]
    out = report or default_report(source)
    if stored:
        return out
    started = time.monotonic()
    progress = DelayedProgress(f"reading {source}")
    try:
        loaded = load_shards(
            source,
            out,
            progress=lambda done: progress("loading rows", done, 0),
            max_rows=sample_above,
        )
    except FleetMissing as exc:
        fail(f"auditing Parquet shards needs DuckDB and pyarrow: {exc}")
    except SchemaError as exc:
        fail(str(exc))
    except (sqlite3.Error, OSError) as exc:
        fail(f"writing the report {out} failed ({exc})")
    finally:
        progress.close()
    chosen = loaded.selection
    sample = (
        f", a sample of {chosen.rows_kept:,} (every place, client family and target; hits scaled)"
        if chosen.sampled
        else ""
    )
    err_console.print(
        f"{source}: {chosen.rows_total:,} request(s) from {loaded.shards} shard(s), "
        f"{chosen.rows_read:,} of them read by the audit{sample}, in "
        f"{time.monotonic() - started:.1f} s; report: {loaded.report} "
        f"(open it with: redirect-auditor explore {loaded.report})",
        highlight=False,
        soft_wrap=True,
    )
    return loaded.report


def _audit_one(db: Path, options: Any) -> AuditResult:
    progress = DelayedProgress(db.name)
    try:
        return run_audit(db, options=options, progress=progress)
    except (SchemaError, ConfigError) as exc:
        fail(str(exc))
    except sqlite3.Error as exc:  # checked intact above; this is the disk or a lock
        fail(f"{db}: cannot audit ({exc})")
    finally:
        progress.close()


def rule_ids() -> list[str]:
    """Every rule id, for help texts and validation."""
    return sorted(all_rules())
