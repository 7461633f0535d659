"""Render audit results: one line per finding (CI logs, pipes), the grouped rich view
for a terminal, Markdown for a pull-request comment, and the JSON document
(docs/audit-json-schema.json). Every renderer puts the worst findings first and
scales to tens of thousands of them: the lines are plain string formatting, the rich
view details the worst ``limit`` only, and Markdown stops within one comment.

Everything recorded is attacker-controlled: control characters are escaped in lines,
Markdown punctuation in comments, and rich text is never parsed as markup.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Group as RichGroup
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from auditor.analysis.audit import AuditResult, tool_version
from auditor.analysis.rules.base import SEVERITIES, AuditOptions, Finding, Severity
from auditor.urls import short

JSON_SCHEMA_VERSION = 2
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
SEVERITY_PLURAL = {"error": "errors", "warning": "warnings", "info": "info"}
FINDING_FIELDS = [f.name for f in dataclasses.fields(Finding)]
MARKDOWN_LIMIT = 65_536  # characters GitHub accepts in one comment body
MARKDOWN_CELL = 400  # characters of one table cell at most (a URL can be any length)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~#!])")


def totals(results: Sequence[AuditResult]) -> dict[Severity, int]:
    return {s: sum(r.counts.get(s, 0) for r in results) for s in SEVERITIES}


def failed(results: Sequence[AuditResult], fail_on: Severity | None) -> bool:
    """True when some finding is at or above ``fail_on``."""
    if fail_on is None:
        return False
    levels = SEVERITIES[: SEVERITIES.index(fail_on) + 1]
    return any(r.counts.get(s, 0) for r in results for s in levels)


def at_or_above(results: Sequence[AuditResult], fail_on: Severity) -> dict[Severity, int]:
    """Findings per severity at or above ``fail_on`` (the ones that fail the check)."""
    counts = totals(results)
    return {s: counts[s] for s in SEVERITIES[: SEVERITIES.index(fail_on) + 1] if counts[s]}


def failed_reason(results: Sequence[AuditResult], fail_on: Severity) -> str:
    """Why the check failed: "3 errors at or above --fail-on error"."""
    counts = at_or_above(results, fail_on)
    total = sum(counts.values())
    if len(counts) == 1:
        [(severity, count)] = counts.items()
        what = f"{count:,} {severity if count == 1 else SEVERITY_PLURAL[severity]}"
    else:
        what = f"{plural(total, 'finding')} ({counts_text(counts, only_found=True)})"
    return f"{what} at or above --fail-on {fail_on}"


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun if count == 1 else noun + 's'}"


def counts_text(counts: dict[Severity, int], *, only_found: bool = False) -> str:
    return ", ".join(
        f"{counts.get(s, 0):,} {s if counts.get(s, 0) == 1 else SEVERITY_PLURAL[s]}"
        for s in SEVERITIES
        if counts.get(s, 0) or not only_found
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


# --- lines (pipes, CI logs) ------------------------------------------------------------


def plain(text: object) -> str:
    """``text`` on one line with its control characters escaped (no terminal escapes)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def clients(finding: Finding) -> int | None:
    """How many client families the finding's evidence names (None: it names none)."""
    named = finding.evidence.get("clients") if isinstance(finding.evidence, dict) else None
    return len(named) if isinstance(named, list) else None


def where(finding: Finding) -> str:
    parts = [finding.method or "", finding.source]
    if finding.status is not None:
        parts.append(f"→ {finding.status}")
    return " ".join(p for p in parts if p)


# Problems about where a redirect points off this site: the host is the point.
OFF_SITE_PROBLEMS = frozenset(
    {"open-redirect", "credentials-to-other-origin", "internal-host-leak", "scheme-downgrade"}
)


def target_text(finding: Finding) -> str:
    """The target as a reader wants it: path and query, or the whole URL when the
    problem is that it points elsewhere (an attacker's host, another origin)."""
    if finding.rule in OFF_SITE_PROBLEMS and finding.target:
        return finding.target
    return short(finding.target)


def finding_line(finding: Finding) -> str:
    """``SEVERITY problem-id METHOD place STATUS → target (hits, clients)``, like a linter."""
    parts = [finding.severity, finding.rule, finding.method or "-", finding.source]
    if finding.status is not None:
        parts.append(str(finding.status))
    if finding.target:
        parts.append(f"→ {target_text(finding)}")
    seen = plural(finding.hits, "hit")
    families = clients(finding)
    if families is not None:
        seen += f", {plural(families, 'client')}"
    return plain(f"{' '.join(parts)} ({seen})")


def to_lines(
    results: Sequence[AuditResult], limit: int = 0, *, with_path: bool | None = None
) -> Iterator[str]:
    """One line per finding, worst first (``limit`` per database, 0: all), then each
    database's summary line. Several databases (or ``with_path``): every finding's line
    starts with its file."""
    several = len(results) > 1 if with_path is None else with_path
    for result in results:
        prefix = f"{plain(result.db_path)}: " if several else ""
        shown = result.findings if limit <= 0 else result.findings[:limit]
        for finding in shown:
            yield prefix + finding_line(finding)
        rest = len(result.findings) - len(shown)
        if rest:
            yield prefix + more_line(result.findings[len(shown) :])
        for rule_id, error in result.rule_errors.items():
            yield prefix + plain(f"rule {rule_id} failed and was skipped: {error}")
        drops = drops_line(result)
        if drops:
            yield plain(drops)
        yield plain(summary_line(result))


def more_line(rest: Sequence[Finding]) -> str:
    """ "…and 19,980 more (12,000 warnings, 7,980 info)"."""
    counts: dict[Severity, int] = {s: 0 for s in SEVERITIES}
    for finding in rest:
        counts[finding.severity] += 1
    return f"…and {len(rest):,} more ({counts_text(counts, only_found=True)})"


# --- Markdown ------------------------------------------------------------------------


def _cell(text: object, *, code: bool = False) -> str:
    """A table cell: one line, at most MARKDOWN_CELL characters, no markup of its own."""
    value = " ".join(str(text).split())
    if len(value) > MARKDOWN_CELL:
        value = value[: MARKDOWN_CELL - 1] + "…"
    if code:  # inside `...` only the backtick and the cell bar would break out
        return value.replace("`", "'").replace("|", "\\|")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", value)


def _markdown_row(finding: Finding) -> str:
    return (
        f"| `{finding.rule}` | `{_cell(where(finding), code=True)}` | {finding.hits:,} | "
        f"{_cell(finding.message)} | {_cell(finding.recommendation)} | {_cell(finding.spec)} |"
    )


def to_markdown(
    results: Sequence[AuditResult],
    fail_on: Severity | None,
    *,
    limit: int = 0,
    max_chars: int = MARKDOWN_LIMIT,
) -> str:
    """A pull-request comment of at most ``max_chars`` characters: a summary line, then
    one table per severity, worst first, and "…and N more" for what does not fit
    (or is past ``limit`` findings per database, when given)."""
    verdict = ""
    if fail_on is not None and failed(results, fail_on):
        reason = failed_reason(results, fail_on)
        verdict = "_Check failed: " + reason.replace("--fail-on", "`--fail-on") + "`._"
    elif fail_on is not None:
        verdict = f"_Check passed (`--fail-on {fail_on}`)._"
    lines = [f"## redirect-auditor: {counts_text(totals(results))}", ""]
    size = sum(len(line) + 1 for line in lines)
    # Room kept for the last database's "…and N more" line and the verdict.
    reserve = len(verdict) + 200

    def add(*new: str) -> bool:
        nonlocal size
        grow = sum(len(line) + 1 for line in new)
        if size + grow > max_chars - reserve:
            return False
        lines.extend(new)
        size += grow
        return True

    full = False
    for result in results:
        if len(results) > 1:
            add(f"### `{_cell(result.db_path, code=True)}`", "")
        add(_cell(summary_line(result)) + ".", "")
        drops = drops_line(result)
        if drops:
            add(f"> **Note:** {_cell(drops)}", "")
        for rule_id, error in result.rule_errors.items():
            add(f"> **Rule `{rule_id}` failed:** {_cell(error)}", "")
        shown = 0
        wanted = result.findings if limit <= 0 else result.findings[:limit]
        severity: Severity | None = None
        for finding in wanted:
            if full:
                break
            if finding.severity != severity:
                count = result.counts.get(finding.severity, 0)
                header = [
                    f"#### {SEVERITY_PLURAL[finding.severity].capitalize()} ({count:,})",
                    "",
                    "| Problem | Where | Hits | What happened | Fix | Spec |",
                    "|---|---|---:|---|---|---|",
                ]
                if severity is not None:
                    header.insert(0, "")
                if not add(*header, _markdown_row(finding)):
                    full = True
                    break
                severity = finding.severity
            elif not add(_markdown_row(finding)):
                full = True
                break
            shown += 1
        if shown:
            lines.append("")
        if shown < len(result.findings):
            more = more_line(result.findings[shown:])
            lines += [f"_{more}: see `redirect-auditor audit --format json`._", ""]
            size += len(lines[-2]) + 2
        if not result.findings:
            add("No redirect problems found.", "")
    if verdict:
        lines.append(verdict)
    text = "\n".join(lines).rstrip() + "\n"
    return text if len(text) <= max_chars else text[: max_chars - 2] + "…\n"


# --- terminal ------------------------------------------------------------------------


def to_rich(
    result: AuditResult, limit: int = 0, hint: str = "", details: int | None = None
) -> RenderableType:
    """The worst ``limit`` findings (0: all), grouped by severity: the first ``details``
    of them (None: all) with what happened, the fix and the spec, the others one line
    each; then "…and N more" with ``hint`` (how to see them), the summary line, drops
    and rule errors."""
    shown = result.findings if limit <= 0 else result.findings[:limit]
    detailed = shown if details is None else shown[:details]
    parts: list[RenderableType] = []
    for severity in SEVERITIES:
        found = [f for f in detailed if f.severity == severity]
        if not found:
            continue
        style = SEVERITY_STYLE[severity]
        total = result.counts.get(severity, len(found))
        table = Table(
            title=Text(f"{SEVERITY_PLURAL[severity].capitalize()} ({total:,})", style=style),
            title_justify="left",
            show_lines=True,
            expand=True,
        )
        table.add_column("Problem", style=style, no_wrap=True)
        table.add_column("Where", overflow="fold", ratio=1)
        table.add_column("Hits", justify="right", no_wrap=True)
        table.add_column("What happened / fix", ratio=3)
        for f in found:
            text = Text(f.message)
            text.append(f"\nFix: {f.recommendation}", style="green")
            text.append(f"\n{f.spec}", style="dim")
            if f.example_request_id is not None:
                text.append(f"  (example request {f.example_request_id}", style="dim")
                chain = f", chain {f.example_chain_id})" if f.example_chain_id else ")"
                text.append(chain, style="dim")
            place = " ".join(p for p in (f.method, f.source) if p)
            if f.status is not None or f.target:
                status = "" if f.status is None else f"{f.status} "
                place += f"\n{status}→ {target_text(f)}" if f.target else f"\n{status}"
            families = clients(f)
            seen = f"{f.hits:,}" + (f"\n{plural(families, 'client')}" if families else "")
            table.add_row(f.rule, Text(place), seen, text)
        parts.append(table)
    for f in shown[len(detailed) :]:
        line = Text(finding_line(f), no_wrap=True, overflow="ellipsis")
        line.stylize(SEVERITY_STYLE[f.severity], 0, len(f.severity))
        parts.append(line)
    rest = len(result.findings) - len(shown)
    if rest:
        more = Text(more_line(result.findings[len(shown) :]), style="bold")
        if hint:
            more.append(f": {hint}", style="none")
        parts.append(more)
    parts.append(Text(summary_line(result), style="bold"))
    drops = drops_line(result)
    if drops:
        parts.append(Text(drops, style="yellow"))
    for rule_id, error in result.rule_errors.items():
        parts.append(Text(f"Rule {rule_id} failed and was skipped: {error}", style="red"))
    return RichGroup(*parts)


# --- findings stored by the last audit ------------------------------------------------


def stored_result(db_path: str | Path) -> AuditResult | None:
    """The last audit of ``db_path`` as stored in it (audit_runs + findings), without
    auditing again; None when it was never audited. Read-only."""
    from auditor.store.schema import connect_read_only

    conn = connect_read_only(db_path)
    conn.row_factory = sqlite3.Row
    try:
        run = conn.execute("select * from audit_runs order by id desc limit 1").fetchone()
        if run is None:
            return None
        rows = conn.execute(
            f"select {', '.join(FINDING_FIELDS)} from findings "
            "order by severity_rank, hits desc, rule, source"
        ).fetchall()
    finally:
        conn.close()
    findings = [
        Finding(**{**dict(row), "evidence": json.loads(row["evidence"] or "{}")}) for row in rows
    ]
    known = {f.name for f in dataclasses.fields(AuditOptions)}
    options = json.loads(run["options"] or "{}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k in known}
    counts: dict[Severity, int] = {s: 0 for s in SEVERITIES}
    for finding in findings:
        counts[finding.severity] += 1
    return AuditResult(
        db_path=str(db_path),
        run_id=run["id"],
        started_at=run["started_at"],
        duration_s=run["duration_s"] or 0.0,
        options=AuditOptions(**options),
        findings=findings,
        counts=counts,
        rows_scanned=run["rows_scanned"] or 0,
        redirects_scanned=run["redirects_scanned"] or 0,
        chains=run["chains"] or 0,
        rows_dropped=run["rows_dropped"] or 0,
    )
