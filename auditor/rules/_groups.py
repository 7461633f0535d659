"""Shared plumbing for rule queries: grouping rows into findings, naming clients.

A rule's query returns one row per (source, method, status, target, user_agent)
with ``hits``, ``first_seen``, ``last_seen``, ``example_request_id`` and an
optional ``extra`` column; ``collect`` folds those rows into ``Group``s (one per
finding) that remember which clients did it. ``finding`` turns a group into a
``Finding`` with the rule's registered severity, title and spec.
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from auditor.rules.base import REGISTRY, AuditContext, Finding, Severity


def source_sql(alias: str) -> str:
    """``base.SOURCE_SQL`` for a table alias: the route template when known, else the path."""
    return f"coalesce({alias}.route, {alias}.path)"


def group_columns(alias: str) -> str:
    """The select list every grouped rule query starts with (see module docstring)."""
    return f"""{source_sql(alias)} as source, {alias}.method as method,
        {alias}.status as status, {alias}.location_url as target,
        count(*) as hits, min({alias}.started_at) as first_seen,
        max({alias}.started_at) as last_seen, min({alias}.id) as example_request_id"""


@dataclass
class Group:
    """The rows of one finding: where, how often, when, and which clients."""

    source: str
    method: str | None
    status: int | None
    target: str | None
    hits: int = 0
    first_seen: float = float("inf")
    last_seen: float = float("-inf")
    example_request_id: int | None = None
    agents: Counter[str] = field(default_factory=Counter)
    extra: Counter[Any] = field(default_factory=Counter)
    route: str | None = None  # route template of the source, when the framework gave one
    example_chain_id: int | None = None


def collect(rows: Iterable[sqlite3.Row]) -> list[Group]:
    """Fold (group key, user agent[, extra]) rows into groups, most hits first."""
    groups: dict[tuple[Any, ...], Group] = {}
    for row in rows:
        keys = row.keys()
        key = (row["source"], row["method"], row["status"], row["target"])
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(*key)
        hits = int(row["hits"])
        group.hits += hits
        group.first_seen = min(group.first_seen, row["first_seen"])
        group.last_seen = max(group.last_seen, row["last_seen"])
        example = row["example_request_id"]
        if group.example_request_id is None or example < group.example_request_id:
            group.example_request_id = example
        if "user_agent" in keys:
            group.agents[client_name(row["user_agent"])] += hits
        if "extra" in keys and row["extra"] is not None:
            group.extra[row["extra"]] += hits
        if "route" in keys and row["route"]:
            group.route = row["route"]
        if "example_chain_id" in keys and row["example_chain_id"] is not None:
            chain = row["example_chain_id"]
            if group.example_chain_id is None or chain < group.example_chain_id:
                group.example_chain_id = chain
    return sorted(groups.values(), key=lambda g: (-g.hits, g.source, g.method or ""))


_CLIENTS = (
    (re.compile(r"python-httpx/([\w.]+)", re.I), "httpx"),
    (re.compile(r"python-requests/([\w.]+)", re.I), "requests"),
    (re.compile(r"python-urllib/([\w.]+)", re.I), "urllib"),
    (re.compile(r"aiohttp/([\w.]+)", re.I), "aiohttp"),
    (re.compile(r"^curl/([\w.]+)", re.I), "curl"),
    (re.compile(r"^wget/([\w.]+)", re.I), "wget"),
    (re.compile(r"undici|node-fetch|^node\b", re.I), "Node fetch"),
    (re.compile(r"Edg/([\d.]+)"), "Edge"),
    (re.compile(r"(?:HeadlessChrome|Chrome|Chromium)/([\d.]+)"), "Chromium"),
    (re.compile(r"Firefox/([\d.]+)"), "Firefox"),
    (re.compile(r"Version/([\d.]+).*Safari"), "Safari"),
)


def client_name(user_agent: str | None) -> str:
    """A short client name from a User-Agent: ``httpx 0.28.1``, ``curl 7.88.1``, ``Chromium``."""
    if not user_agent:
        return "a client without User-Agent"
    for pattern, name in _CLIENTS:
        match = pattern.search(user_agent)
        if match:
            version = match.group(1) if match.groups() else None
            if version and name in ("Chromium", "Edge", "Firefox", "Safari"):
                version = version.split(".")[0]
            return f"{name} {version}" if version else name
    return user_agent if len(user_agent) <= 40 else user_agent[:39] + "…"


def describe_agents(agents: Counter[str], limit: int = 3) -> str:
    """``httpx 0.28.1 (12), curl 7.88.1 (3)``: the clients that did it, most first."""
    common = agents.most_common(limit)
    text = ", ".join(f"{name} ({count})" for name, count in common)
    rest = len(agents) - len(common)
    return text + (f" and {rest} more" if rest > 0 else "")


def plural(count: int, word: str, suffix: str = "s") -> str:
    """``1 request`` / ``3 requests``."""
    return f"{count} {word}{'' if count == 1 else suffix}"


def chain_of_request(ctx: AuditContext, request_id: int | None) -> int | None:
    """The id of the chain a request is a hop of (via a per-connection temp index)."""
    if request_id is None:
        return None
    conn = ctx.conn
    exists = conn.execute(
        "select 1 from temp.sqlite_master where type = 'table' and name = 'audit_hop_chain'"
    ).fetchone()
    if not exists:
        conn.execute(
            """create temp table audit_hop_chain as
               select cast(json_extract(j.value, '$.request_id') as integer) as request_id,
                      min(c.id) as chain_id
               from chains c, json_each(c.hops) j
               group by 1"""
        )
        conn.execute("create index temp.audit_hop_chain_request on audit_hop_chain(request_id)")
    row = conn.execute(
        "select chain_id from temp.audit_hop_chain where request_id = ?", (request_id,)
    ).fetchone()
    return int(row[0]) if row else None


def finding(
    ctx: AuditContext,
    rule_id: str,
    group: Group,
    message: str,
    recommendation: str,
    *,
    severity: Severity | None = None,
    spec: str | None = None,
    example_chain_id: int | None = None,
) -> Finding:
    """A ``Finding`` for one group, with the rule's registered title, severity and spec."""
    registered = REGISTRY[rule_id]
    if example_chain_id is None:
        example_chain_id = group.example_chain_id
    if example_chain_id is None:
        example_chain_id = chain_of_request(ctx, group.example_request_id)
    return Finding(
        rule=rule_id,
        severity=severity or registered.severity,
        title=registered.title,
        message=message,
        recommendation=recommendation,
        spec=spec or registered.spec,
        method=group.method,
        status=group.status,
        source=group.source,
        target=group.target,
        hits=group.hits,
        first_seen=group.first_seen,
        last_seen=group.last_seen,
        example_request_id=group.example_request_id,
        example_chain_id=example_chain_id,
    )
