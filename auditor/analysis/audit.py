"""Run an audit: link follow-up hops, build chains, run every rule, store the findings.

``audit(db_path, **options)`` is what ``redirect-auditor audit`` runs. It checks
the file first (a wrong file is never created, touched or migrated), then
moves the recorder's batches into ``requests`` (``store/journal.py``), then writes
only ``requests.follow_up_of`` (linking), ``chains``, ``findings`` and one
``audit_runs`` row. The previous findings are replaced in one transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import gc
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from auditor.analysis import linking, sampled
from auditor.analysis.config import build_options, validate
from auditor.analysis.rules import _subset as subset
from auditor.analysis.rules import chains as chain_rules
from auditor.analysis.rules._groups import resolve_pending_chains
from auditor.analysis.rules.base import (
    SEVERITIES,
    AuditContext,
    AuditOptions,
    Finding,
    Rule,
    Severity,
    all_rules,
)
from auditor.store import journal, schema

logger = logging.getLogger(__name__)

# progress(step description, steps done, steps in total)
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class AuditResult:
    """What one audit of one database found."""

    db_path: str
    run_id: int
    started_at: float
    duration_s: float
    options: AuditOptions
    findings: list[Finding] = field(default_factory=list)
    counts: dict[Severity, int] = field(default_factory=dict)  # error / warning / info
    rows_scanned: int = 0
    redirects_scanned: int = 0
    chains: int = 0
    rows_dropped: int = 0  # rows the recorder could not write (recorder_stats)
    rule_errors: dict[str, str] = field(default_factory=dict)  # rule id -> what it raised

    def worst(self) -> Severity | None:
        """The most severe level with at least one finding."""
        return next((s for s in SEVERITIES if self.counts.get(s)), None)


def tool_version() -> str:
    try:
        return version("redirect-auditor")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def audit(
    db_path: str | Path,
    *,
    options: AuditOptions | None = None,
    progress: ProgressCallback | None = None,
    **overrides: Any,
) -> AuditResult:
    """Audit one traffic database and store the findings in it.

    ``overrides`` are ``AuditOptions`` fields (``chain_threshold=3``,
    ``ignore_paths=["/health*"]``...), applied on top of ``options``. Raises
    ``schema.SchemaError`` for a file that is not a usable traffic database and
    ``config.ConfigError`` for a bad option, before anything is written.
    """
    if options is None:
        options = build_options(overrides, use_pyproject=False)
    elif overrides:
        base = {k: v for k, v in dataclasses.asdict(options).items()}
        options = build_options({**base, **overrides}, use_pyproject=False)
    else:
        options = validate(options)
    schema.check_traffic_db(db_path)

    rules = [r for r in all_rules().values() if r.id not in options.ignore_rules]
    total = len(rules) + 3
    report = progress or (lambda step, done, total: None)
    started_at, clock = time.time(), time.perf_counter()

    conn = schema.connect(db_path)
    background = ThreadPoolExecutor(max_workers=1)
    # The audit holds a few million rows as tuples and makes no reference cycles: the
    # cyclic collector would only rescan them, over and over (about 1 s at 1M rows).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        # The audit's temp tables (a copy of the redirects, linking's scratch) in memory.
        conn.execute("pragma temp_store = memory")
        # Linking rewrites pages all over the table: our commits do not copy them back
        # from the WAL; a thread does, on its own connection, while the rules run.
        conn.execute("pragma wal_autocheckpoint = 0")
        # No fsync at our commits (WAL stays consistent; a power cut may lose this audit's
        # last commit, never corrupt): the checkpoint that copies them back does sync.
        conn.execute("pragma synchronous = normal")
        schema.ensure_schema(conn)
        report("unpacking recorded batches", 0, total)
        journal.unpack(conn)
        # The hosts chains compare Locations with, read on another connection meanwhile.
        hosts = background.submit(_recorded_hosts, db_path)
        report("linking follow-up requests", 0, total)
        # One scan copies the rows linking, chains and the rules read (see rules._subset).
        newest = subset.copy_responses(conn)
        conn.row_factory = sqlite3.Row  # for the rules (linking reads plain tuples)
        ctx = AuditContext(conn, options, framework=recorded_framework(conn))
        found_by_rule: dict[str, list[Finding]] = {}
        errors_by_rule: dict[str, str] = {}
        steps = itertools.count(1)

        def run(batch: list[Rule]) -> None:
            for registered in batch:
                report(f"rule {registered.id}", next(steps), total)
                try:
                    found_by_rule[registered.id] = list(registered.check(ctx))
                except Exception as exc:  # one broken rule must not hide the others' findings
                    logger.exception("rule %s failed", registered.id)
                    errors_by_rule[registered.id] = f"{type(exc).__name__}: {exc}"

        def run_unlinked_rules() -> None:
            """The rules that read only the responses, on this connection while another
            scans for follow-ups; their findings get their example chain afterwards."""
            ctx.responses_only, ctx.pending_chains = True, []
            try:
                run([r for r in rules if not r.needs_links])
            finally:
                ctx.responses_only = False

        # Chains are built from what linking read while the links are written; the static
        # redirect graph is walked from the redirect rows linking read, in another thread
        # during the scan for follow-ups (SQLite scans on another connection, without
        # Python, while this thread runs the rules that need no links).
        graph_rules = {"redirect-chain", "redirect-loop"} & {r.id for r in rules}
        linking.link_and_build_chains(
            conn,
            window=options.link_window,
            redirects_from=subset.RESPONSES,
            meanwhile=chain_rules.static_graph_task(ctx) if graph_rules else None,
            known_hosts=hosts.result,
            alongside=run_unlinked_rules,
        )
        _commit(conn)
        # Copy the WAL back and count the totals on another connection while rules run.
        background_totals = background.submit(_checkpoint_and_count, db_path)
        report("building chains", next(steps), total)
        _refresh_link_statistics(conn)
        subset.copy_follow_ups(conn, newest)
        resolve_pending_chains(ctx)
        run([r for r in rules if r.needs_links])

        # In the registry's order, whichever ran first.
        findings = without_hygiene_at_errors(
            [
                f
                for r in rules
                for f in found_by_rule.get(r.id, ())
                if not _ignored(f.source, options.ignore_paths)
            ]
        )
        sampled.scale_sampled_hits(conn, findings)
        rule_errors = {r.id: errors_by_rule[r.id] for r in rules if r.id in errors_by_rule}
        findings.sort(key=lambda f: (SEVERITIES.index(f.severity), -f.hits, f.rule, f.source))
        _commit(conn)

        report("storing findings", total - 1, total)
        result = AuditResult(
            db_path=str(db_path),
            run_id=0,
            started_at=started_at,
            duration_s=0.0,
            options=options,
            findings=findings,
            rule_errors=rule_errors,
            counts={s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES},
            **(background_totals.result() or _totals(conn)),
        )
        result.duration_s = round(time.perf_counter() - clock, 3)
        result.run_id = _store(conn, result)
        report("done", total, total)
        return result
    finally:
        if gc_was_enabled:
            gc.enable()
        background.shutdown(wait=True)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("pragma wal_checkpoint(passive)")  # what our commits wrote since
        conn.close()


def without_hygiene_at_errors(findings: list[Finding]) -> list[Finding]:
    """Drop the info findings of a place (source, method, status) that has an error:
    the error's fix replaces that redirect, so its style does not matter (a loop's 302s
    are not also "say 307"). One mistake, one finding."""
    broken = {(f.source, f.method, f.status) for f in findings if f.severity == "error"}
    return [
        f for f in findings if f.severity != "info" or (f.source, f.method, f.status) not in broken
    ]


def recorded_framework(conn: sqlite3.Connection) -> str | None:
    """The app's framework as the recorder noted it (the one that wrote most rows); for
    traffic recorded before it was noted, Starlette when a route template was recorded."""
    row = conn.execute(
        "select framework from recorder_stats where framework is not null "
        "group by framework order by sum(coalesce(rows_written, 0)) desc, framework limit 1"
    ).fetchone()
    if row:
        return str(row[0])
    routed = conn.execute("select 1 from requests where route is not null limit 1").fetchone()
    return "starlette" if routed else None


def _checkpoint_and_count(db_path: str | Path) -> dict[str, int] | None:
    """Copy the WAL back into the database (passive: never blocks a writer), then
    ``_totals``; None when that failed (the caller counts itself)."""
    try:
        conn = schema.connect(db_path)
        try:
            conn.execute("pragma wal_checkpoint(passive)")
            return _totals(conn)
        finally:
            conn.close()
    except sqlite3.Error:  # pragma: no cover - a later checkpoint catches up
        logger.warning("background checkpoint failed", exc_info=True)
        return None


def _recorded_hosts(db_path: str | Path) -> set[str]:
    conn = schema.connect(db_path)
    try:
        return linking.recorded_hosts(conn)
    finally:
        conn.close()


def _refresh_link_statistics(conn: sqlite3.Connection) -> None:
    """Statistics gathered before linking say every follow_up_of is null, and the planner
    then scans instead of using the index: re-analyze that one index when stats exist."""
    has_stats = conn.execute("select 1 from sqlite_master where name = 'sqlite_stat1'").fetchone()
    index = conn.execute(
        "select name from sqlite_master where type = 'index' and tbl_name = 'requests' "
        "and sql like '%(\"follow_up_of\")%'"
    ).fetchone()
    if has_stats and index:
        conn.execute(f'analyze "{index[0]}"')


def _ignored(source: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(source, p) for p in patterns)


def _commit(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.commit()


def _totals(conn: sqlite3.Connection) -> dict[str, int]:
    """Requests, redirects, chains and drops; the whole traffic's requests and redirects
    when the file holds only the rows the audit reads (``sampled``)."""
    rows, redirects = (
        sampled.traffic_totals(conn)
        or conn.execute(
            "select count(*), coalesce(sum(status between 300 and 399), 0) from requests"
        ).fetchone()
    )
    chains = conn.execute("select count(*) from chains").fetchone()[0]
    drops = " + ".join(f"coalesce(dropped_{reason}, 0)" for reason in schema.DROP_REASONS)
    dropped = conn.execute(f"select coalesce(sum({drops}), 0) from recorder_stats").fetchone()[0]
    return {
        "rows_scanned": int(rows),
        "redirects_scanned": int(redirects),
        "chains": int(chains),
        "rows_dropped": int(dropped),
    }


def _store(conn: sqlite3.Connection, result: AuditResult) -> int:
    """Replace the findings and add the audit_runs row, all in one transaction."""
    run = {
        "started_at": result.started_at,
        "duration_s": result.duration_s,
        "options": json.dumps(dataclasses.asdict(result.options), sort_keys=True),
        "databases": json.dumps([result.db_path]),
        "rows_scanned": result.rows_scanned,
        "redirects_scanned": result.redirects_scanned,
        "chains": result.chains,
        "errors": result.counts["error"],
        "warnings": result.counts["warning"],
        "infos": result.counts["info"],
        "rows_dropped": result.rows_dropped,
        "version": tool_version(),
    }
    conn.execute("begin immediate")
    try:
        cursor = conn.execute(
            f"insert into audit_runs ({', '.join(run)}) values ({', '.join('?' for _ in run)})",
            tuple(run.values()),
        )
        run_id = int(cursor.lastrowid or 0)
        conn.execute("delete from findings")
        if result.findings:
            columns = [*result.findings[0].as_row(), "audit_run_id"]
            conn.executemany(
                f"insert into findings ({', '.join(columns)}) "
                f"values ({', '.join('?' for _ in columns)})",
                # every row has the same keys, in order
                [(*f.row_values(), run_id) for f in result.findings],
            )
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return run_id
