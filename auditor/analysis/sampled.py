"""The whole traffic's counts, for a database that holds only the rows an audit reads.

A fleet report (``sources/fleet.py``) keeps the rows linking and the rules read, and
past a size those of a sample of hops at every place. Beside them it keeps what the
whole traffic counted: ``auditor_meta`` rows ``traffic_rows`` / ``traffic_redirects``,
and per place (source, method, status) the responses seen (``sampled_places``). The
audit turns them into a weight per place (seen / audited, ``temp.audit_weights``):
thresholds on counts compare weighted counts, and a finding at a sampled place
reports its hits scaled to the whole traffic, and says so in its evidence.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from auditor.store.schema import META_TABLE, has_table

if TYPE_CHECKING:
    from auditor.analysis.rules.base import Finding

SAMPLED_PLACES = "sampled_places"
WEIGHTS = "audit_weights"
TRAFFIC_ROWS, TRAFFIC_REDIRECTS = "traffic_rows", "traffic_redirects"


def weight_sql(table: str) -> str:
    """SQL for the weight (1 unless sampled) of the place of a row of ``table``, which
    has ``source``, ``method`` and ``status`` columns (named with the table: inside the
    subquery a bare name would be the weights' own)."""
    return (
        f"coalesce((select w.weight from temp.{WEIGHTS} w where w.source = {table}.source "
        f"and w.method = {table}.method and w.status = {table}.status), 1.0)"
    )


def weight_of(conn: sqlite3.Connection, source: str, method: str, status: int) -> float:
    """The weight of one place (1 unless sampled)."""
    row = conn.execute(
        f"select weight from temp.{WEIGHTS} where source = ? and method = ? and status = ?",
        (source, method, status),
    ).fetchone()
    return float(row[0]) if row else 1.0


def traffic_totals(conn: sqlite3.Connection) -> tuple[int, int] | None:
    """(requests, redirects) of the whole traffic when this file holds only part of it."""
    rows = {
        row[0]: row[1]
        for row in conn.execute(
            f"select key, value from {META_TABLE} where key in (?, ?)",
            (TRAFFIC_ROWS, TRAFFIC_REDIRECTS),
        )
    }
    if TRAFFIC_ROWS not in rows:
        return None
    return int(rows[TRAFFIC_ROWS]), int(rows.get(TRAFFIC_REDIRECTS) or 0)


def fill_weights(conn: sqlite3.Connection, responses: str) -> None:
    """(Re)build ``temp.audit_weights`` from ``sampled_places`` and the responses table
    (its ``source`` filled); empty when the file holds the whole traffic."""
    conn.execute(f"drop table if exists temp.{WEIGHTS}")
    conn.execute(
        f"create temp table {WEIGHTS} (source text, method text, status integer, "
        "requests integer, audited integer, weight real, "
        "primary key (source, method, status))"
    )
    if has_table(conn, SAMPLED_PLACES):
        conn.execute(
            f"""insert into temp.{WEIGHTS}
                select p.source, p.method, p.status, p.requests, a.audited,
                       1.0 * p.requests / a.audited
                from main.{SAMPLED_PLACES} p
                join (select source, method, status, count(*) as audited from {responses}
                      group by source, method, status) a
                  on a.source = p.source and a.method = p.method and a.status = p.status
                where p.requests > a.audited"""
        )


def scale_sampled_hits(conn: sqlite3.Connection, findings: list[Finding]) -> None:
    """Scale the hits of findings at sampled places by the place's weight."""
    places = {
        (row[0], row[1], row[2]): (int(row[3]), int(row[4]))
        for row in conn.execute(
            f"select source, method, status, requests, audited from temp.{WEIGHTS}"
        )
    }
    for finding in findings:
        counts = places.get((finding.source, finding.method, finding.status))
        if counts is None:
            continue
        seen, audited = counts
        finding.hits = max(finding.hits, round(finding.hits * seen / audited))
        finding.evidence["sampled"] = {"requests": seen, "audited": audited}
