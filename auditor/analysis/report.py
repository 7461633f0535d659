"""Render audit results: the JSON document (docs/audit-json-schema.json), Markdown for a
pull-request comment, and a rich table for the terminal."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from rich.console import Group as RichGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from auditor.analysis.audit import AuditResult, tool_version
from auditor.analysis.rules.base import SEVERITIES, Finding, Severity
from auditor.analysis.rules.method import short

JSON_SCHEMA_VERSION = 2
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
SEVERITY_PLURAL = {"error": "errors", "warning": "warnings", "info": "info"}
FINDING_FIELDS = [f.name for f in dataclasses.fields(Finding)]


def totals(results: Sequence[AuditResult]) -> dict[Severity, int]:
    return {s: sum(r.counts.get(s, 0) for r in results) for s in SEVERITIES}


def failed(results: Sequence[AuditResult], fail_on: Severity | None) -> bool:
    """True when some finding is at or above ``fail_on``."""
    if fail_on is None:
        return False
    levels = SEVERITIES[: SEVERITIES.index(fail_on) + 1]
    return any(r.counts.get(s, 0) for r in results for s in levels)


def counts_text(counts: dict[Severity, int]) -> str:
    return ", ".join(
        f"{counts.get(s, 0)} {s if counts.get(s, 0) == 1 else SEVERITY_PLURAL[s]}"
        for s in SEVERITIES
    )


def summary_line(result: AuditResult) -> str:
    return (
        f"{result.db_path}: {counts_text(result.counts)} from {result.rows_scanned} requests "
        f"({result.redirects_scanned} redirects, {result.chains} chains) in "
        f"{result.duration_s:.2f} s"
    )


def drops_line(result: AuditResult) -> str | None:
    if not result.rows_dropped:
        return None
    return (
        f"The recorder could not write {result.rows_dropped} request(s) into "
        f"{result.db_path} (see the recorder_stats table): hit counts may be low."
    )


# --- JSON ----------------------------------------------------------------------------


def to_json(results: Sequence[AuditResult], fail_on: Severity | None) -> dict[str, Any]:
    """The stable JSON document described by docs/audit-json-schema.json."""
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "tool": {"name": "redirect-auditor", "version": tool_version()},
        "fail_on": fail_on,
        "failed": failed(results, fail_on),
        "counts": totals(results),
        "databases": [database_json(r) for r in results],
    }


def database_json(result: AuditResult) -> dict[str, Any]:
    return {
        "path": result.db_path,
        "run_id": result.run_id,
        "started_at": result.started_at,
        "duration_s": result.duration_s,
        "rows_scanned": result.rows_scanned,
        "redirects_scanned": result.redirects_scanned,
        "chains": result.chains,
        "rows_dropped": result.rows_dropped,
        "options": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(result.options).items()
        },
        "counts": {s: result.counts.get(s, 0) for s in SEVERITIES},
        "rule_errors": result.rule_errors,
        "findings": [{k: getattr(f, k) for k in FINDING_FIELDS} for f in result.findings],
    }


# --- Markdown ------------------------------------------------------------------------


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def where(finding: Finding) -> str:
    parts = [finding.method or "", finding.source]
    if finding.status is not None:
        parts.append(f"→ {finding.status}")
    return " ".join(p for p in parts if p)


def to_markdown(results: Sequence[AuditResult], fail_on: Severity | None) -> str:
    """A pull-request comment: a summary line, then one table per severity."""
    lines = [f"## redirect-auditor: {counts_text(totals(results))}", ""]
    for result in results:
        if len(results) > 1:
            lines += [f"### `{result.db_path}`", ""]
        lines += [summary_line(result) + ".", ""]
        if drops_line(result):
            lines += [f"> **Note:** {drops_line(result)}", ""]
        for rule_id, error in result.rule_errors.items():
            lines += [f"> **Rule `{rule_id}` failed:** {_cell(error)}", ""]
        for severity in SEVERITIES:
            found = [f for f in result.findings if f.severity == severity]
            if not found:
                continue
            lines += [
                f"#### {SEVERITY_PLURAL[severity].capitalize()} ({len(found)})",
                "",
                "| Rule | Where | Hits | What happened | Fix | Spec |",
                "|---|---|---:|---|---|---|",
            ]
            lines += [
                f"| `{f.rule}` | `{_cell(where(f))}` | {f.hits} | {_cell(f.message)} | "
                f"{_cell(f.recommendation)} | {_cell(f.spec)} |"
                for f in found
            ]
            lines.append("")
        if not result.findings:
            lines += ["No redirect problems found.", ""]
    if fail_on is not None:
        verdict = "failed" if failed(results, fail_on) else "passed"
        lines.append(f"_Check {verdict} (`--fail-on {fail_on}`)._")
    return "\n".join(lines).rstrip() + "\n"


# --- terminal ------------------------------------------------------------------------


def to_rich(result: AuditResult) -> RenderableType:
    """Findings grouped by severity, then the one-line summary (and drops, if any)."""
    parts: list[RenderableType] = []
    for severity in SEVERITIES:
        found = [f for f in result.findings if f.severity == severity]
        if not found:
            continue
        style = SEVERITY_STYLE[severity]
        table = Table(
            title=Text(f"{SEVERITY_PLURAL[severity].capitalize()} ({len(found)})", style=style),
            title_justify="left",
            show_lines=True,
            expand=True,
        )
        table.add_column("Rule", style=style, no_wrap=True)
        table.add_column("Where", overflow="fold", ratio=1)
        table.add_column("Hits", justify="right")
        table.add_column("What happened / fix", ratio=3)
        for f in found:
            text = Text(f.message)
            text.append(f"\nFix: {f.recommendation}", style="green")
            text.append(f"\n{f.spec}", style="dim")
            if f.example_request_id is not None:
                text.append(f"  (example request {f.example_request_id}", style="dim")
                chain = f", chain {f.example_chain_id})" if f.example_chain_id else ")"
                text.append(chain, style="dim")
            target = f"\n→ {short(f.target)}" if f.target else ""
            table.add_row(f.rule, f"{where(f)}{target}", str(f.hits), text)
        parts.append(table)
    parts.append(Text(summary_line(result), style="bold"))
    drops = drops_line(result)
    if drops:
        parts.append(Text(drops, style="yellow"))
    for rule_id, error in result.rule_errors.items():
        parts.append(Text(f"Rule {rule_id} failed and was skipped: {error}", style="red"))
    return RichGroup(*parts)
