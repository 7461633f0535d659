"""Shared plumbing for rule queries: grouping rows into findings, naming clients.

A rule's query returns one row per (source, method, status, target[, more keys])
with ``hits``, ``first_seen``, ``last_seen``, ``example_request_id`` and optional
columns: ``user_agent`` (counted per client), ``extra`` (counted per value),
``route``, ``example_chain_id``, ``example_url`` and ``example_user_agent``.
``collect`` folds those rows into ``Group``s (one per finding); ``finding`` turns
a group into a ``Finding`` with the rule's registered severity, title and spec.

``grouped_requests`` is the common case: the recorded responses (the temp subset
``audit_responses``, see ``_subset``) matching a WHERE clause, one group per place
(source, method, status): a finding is one problem at one place.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any

from auditor.analysis.rules._subset import FOLLOW_UPS, RESPONSES, ensure_responses
from auditor.analysis.rules.base import REGISTRY, SOURCE_SQL, AuditContext, Finding, Severity
from auditor.analysis.templates import template_of_url
from auditor.redirects import client_family

# An empty Counter without running ``Counter.__init__`` (Python code: ~2 us a call, two
# per group, and rules build tens of thousands of groups). A Counter holds no state
# but its dict, which ``__new__`` makes.
_new_counter: Callable[[], Counter[Any]] = partial(Counter.__new__, Counter)


def source_sql(alias: str) -> str:
    """``base.SOURCE_SQL`` for a table alias: the route template, recorded or inferred."""
    return f"{alias}.source"


def group_columns(alias: str) -> str:
    """The select list every grouped rule query starts with (see module docstring)."""
    return f"""{source_sql(alias)} as source, {alias}.method as method,
        {alias}.status as status, {alias}.location_url as target,
        count(*) as hits, min({alias}.started_at) as first_seen,
        max({alias}.started_at) as last_seen, min({alias}.id) as example_request_id"""


def url_path_sql(column: str) -> str:
    """SQL for the path (no query) of a normalized absolute http(s) URL column."""
    path_query = f"substr({column}, instr(substr({column}, 9), '/') + 8)"
    return (
        f"(case when instr({path_query}, '?') "
        f"then substr({path_query}, 1, instr({path_query}, '?') - 1) else {path_query} end)"
    )


def slash_move_sql(alias: str = "") -> str:
    """SQL: the redirect only adds or removes a trailing slash (hosts may differ)."""
    prefix = f"{alias}." if alias else ""
    target, source = url_path_sql(f"{prefix}location_url"), url_path_sql(f"{prefix}url")
    return (
        f"({prefix}location_url is not null and {target} != {source} "
        f"and rtrim({target}, '/') = rtrim({source}, '/'))"
    )


# Not a redirect that only adds or removes a trailing slash (slash-redirect's, with the
# framework setting that sends it): hygiene rules leave those alone.
NOT_SLASH_MOVE = f"not {slash_move_sql()}"

# The aggregate columns a query over ``audit_responses`` selects after its group key.
GROUP_AGGREGATES = """count(*) as hits, min(started_at) as first_seen,
    max(started_at) as last_seen, min(id) as example_request_id, max(route) as route"""


@dataclass
class Group:
    """The requests of one finding: where, how often, when, and which clients."""

    source: str
    method: str
    status: int
    target: str | None
    hits: int = 0
    first_seen: float = float("inf")
    last_seen: float = float("-inf")
    example_request_id: int | None = None
    example_url: str | None = None  # URL of the example request
    user_agent: str | None = None  # User-Agent of the example request
    agents: Counter[str] = field(default_factory=_new_counter)  # client name -> hits
    extra: Counter[Any] = field(default_factory=_new_counter)  # the query's ``extra`` -> hits
    route: str | None = None  # route template of the source, when the framework gave one
    example_chain_id: int | None = None
    targets: int = 1  # distinct targets folded into this group
    keys: dict[str, Any] = field(default_factory=dict)  # extra group-by values (of the example)

    def seen(self) -> str:
        """'3 requests, e.g. GET http://host/x from curl/8.0'."""
        text = f"{plural(self.hits, 'request')}, e.g. {self.method} {self.example_url}"
        return f"{text} from {client_family(self.user_agent)}" if self.user_agent else text

    def add(self, other: Group) -> None:
        """Count ``other``'s requests in this group (the example stays the lowest id)."""
        if self.example_request_id is None or (
            other.example_request_id is not None
            and other.example_request_id < self.example_request_id
        ):
            self.example_request_id = other.example_request_id
            self.example_url, self.user_agent = other.example_url, other.user_agent
            self.keys = other.keys
        self.hits += other.hits
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        self.agents.update(other.agents)
        self.extra.update(other.extra)
        self.route = self.route or other.route
        if other.example_chain_id is not None and (
            self.example_chain_id is None or other.example_chain_id < self.example_chain_id
        ):
            self.example_chain_id = other.example_chain_id


def _positions(row: Any) -> dict[str, Any]:
    """Column name -> what indexes it in ``row``: its position in a ``sqlite3.Row`` (a
    lookup by name compares it with every column name in turn), the first column of
    that name as ``sqlite3.Row`` does (case-insensitive); the name itself otherwise."""
    if not isinstance(row, sqlite3.Row):
        return _Names()
    positions: dict[str, Any] = {}
    for i, name in enumerate(row.keys()):
        positions.setdefault(name.lower(), i)
    return _Lower(positions)


class _Names(dict[str, Any]):
    def __missing__(self, name: str) -> str:
        return name


class _Lower(dict[str, Any]):
    def __missing__(self, name: str) -> Any:
        return self[name.lower()] if name != name.lower() else name


def _row_group(
    row: sqlite3.Row, columns: set[str], keys: Iterable[str], at: dict[str, Any]
) -> Group:
    hits = int(row[at["hits"]])
    group = Group(
        row[at["source"]],
        row[at["method"]],
        row[at["status"]],
        row[at["target"]],
        hits=hits,
        first_seen=row[at["first_seen"]],
        last_seen=row[at["last_seen"]],
        example_request_id=row[at["example_request_id"]],
        keys={name: row[at[name]] for name in keys},
    )
    if "user_agent" in columns:
        group.agents[client_family(row[at["user_agent"]])] += hits
    if "extra" in columns and row[at["extra"]] is not None:
        group.extra[row[at["extra"]]] += hits
    if "route" in columns and row[at["route"]]:
        group.route = row[at["route"]]
    if "example_chain_id" in columns:
        group.example_chain_id = row[at["example_chain_id"]]
    if "example_url" in columns:
        group.example_url = row[at["example_url"]]
    if "example_user_agent" in columns:
        group.user_agent = row[at["example_user_agent"]]
    return group


def _add_row(
    group: Group, row: sqlite3.Row, columns: set[str], keys: tuple[str, ...], at: dict[str, Any]
) -> None:
    """``Group.add`` for one more row of the same group, without building a Group for it."""
    hits = int(row[at["hits"]])
    group.hits += hits
    group.first_seen = min(group.first_seen, row[at["first_seen"]])
    group.last_seen = max(group.last_seen, row[at["last_seen"]])
    example = row[at["example_request_id"]]
    if group.example_request_id is None or example < group.example_request_id:
        group.example_request_id = example
        group.keys = {name: row[at[name]] for name in keys}
        if "example_url" in columns:
            group.example_url = row[at["example_url"]]
        if "example_user_agent" in columns:
            group.user_agent = row[at["example_user_agent"]]
    if "user_agent" in columns:
        group.agents[client_family(row[at["user_agent"]])] += hits
    if "extra" in columns and row[at["extra"]] is not None:
        group.extra[row[at["extra"]]] += hits
    if "route" in columns and row[at["route"]] and not group.route:
        group.route = row[at["route"]]
    if "example_chain_id" in columns:
        chain = row[at["example_chain_id"]]
        if chain is not None and (group.example_chain_id is None or chain < group.example_chain_id):
            group.example_chain_id = chain


def collect(
    rows: Iterable[sqlite3.Row],
    *,
    keys: Iterable[str] = (),
    keep: Callable[[Group], bool] | None = None,
    per_target: bool = False,
) -> list[Group]:
    """Fold rows into one group per place (source, method, status), most hits first; its
    target is the example's, ``targets`` counts the distinct ones. ``per_target`` keeps
    one group per target (for a rule that compares a place's targets).

    ``keys`` are further columns a ``keep`` filter may inspect (each group keeps those
    of its example request's row).
    """
    keys = tuple(keys)
    groups: dict[tuple[Any, ...], Group] = {}
    targets: dict[tuple[Any, ...], set[Any]] = {}
    columns: set[str] = set()
    at: dict[str, Any] = {}
    for row in rows:
        if not columns:
            columns = set(row.keys())
            at = _positions(row)
        key: tuple[Any, ...] = (row[at["source"]], row[at["method"]], row[at["status"]])
        if per_target:
            key += (row[at["target"]],)
        existing = groups.get(key)
        if keep is None and existing is not None:
            _add_row(existing, row, columns, keys, at)
            targets[key].add(template_of_url(row[at["target"]]))
            continue
        group = _row_group(row, columns, keys, at)
        if keep is not None and not keep(group):
            continue
        if existing is not None:
            existing.add(group)
            targets[key].add(template_of_url(group.target))
        else:
            groups[key] = group
            targets[key] = {template_of_url(group.target)}
    for key, group in groups.items():
        group.targets = len(targets[key])
        if group.targets == 1:  # /old/7 -> /new/7 for every id: show the target's shape
            group.target = next(iter(targets[key]))
    return sorted(groups.values(), key=lambda g: (-g.hits, g.source, g.method or "", g.status or 0))


def query_groups(
    ctx: AuditContext,
    grouped_sql: str,
    params: Iterable[Any] = (),
    *,
    keys: Iterable[str] = (),
    keep: Callable[[Group], bool] | None = None,
    per_target: bool = False,
) -> list[Group]:
    """Run a rule's grouped query over ``audit_responses`` (source, method, status,
    target, ``keys``..., GROUP_AGGREGATES) and ``collect`` it, each group with its
    example request's URL and client."""
    ensure_responses(ctx)
    rows = ctx.query(
        f"""select g.*, r.url as example_url, r.user_agent as example_user_agent
            from ({grouped_sql}) as g
            join {RESPONSES} as r on r.id = g.example_request_id
            order by g.example_request_id""",
        params,
    )
    return collect(rows, keys=keys, keep=keep, per_target=per_target)


def grouped_requests(
    ctx: AuditContext,
    where: str,
    params: Iterable[Any] = (),
    *,
    target: str = "location_url",
    by: dict[str, str] | None = None,
    keep: Callable[[Group], bool] | None = None,
) -> list[Group]:
    """Responses (``audit_responses``) matching ``where``, one group per place (source,
    method, status), ``target`` the example's.

    ``by`` adds group-by expressions whose values a ``keep`` filter can inspect
    (Python over the matching subset only); kept groups are then merged back to one
    per place. (``audit`` applies ``ignore_paths``.)
    """
    by = by or {}
    extra = "".join(f", {expr} as {name}" for name, expr in by.items())
    extra_by = "".join(f", {expr}" for expr in by.values())
    return query_groups(
        ctx,
        f"""select {SOURCE_SQL} as source, method, status, {target} as target{extra},
                   {GROUP_AGGREGATES}
            from {RESPONSES}
            where {where}
            group by {SOURCE_SQL}, method, status, {target}{extra_by}""",
        params,
        keys=by,
        keep=keep,
    )


def describe_agents(agents: Counter[str], limit: int = 3) -> str:
    """``httpx (12), curl (3)``: the client families that did it, most first."""
    if len(agents) > limit:
        common = agents.most_common(limit)
    else:  # what most_common returns then, without heapq
        common = sorted(agents.items(), key=itemgetter(1), reverse=True)
    text = ", ".join(f"{name} ({count})" for name, count in common)
    rest = len(agents) - len(common)
    return text + (f" and {rest} more" if rest > 0 else "")


def plural(count: int, word: str, suffix: str = "s") -> str:
    """``1 request`` / ``3 requests``."""
    return f"{count} {word}{'' if count == 1 else suffix}"


def chain_of_request(ctx: AuditContext, request_id: int | None) -> int | None:
    """The id of the chain a request is a hop of.

    Links form disjoint paths (a request follows at most one redirect and a redirect
    has at most one follow-up), and a chain is the path from its first request: so
    walk ``follow_up_of`` back to a first request and look up its chain.
    """
    if request_id is None:
        return None
    if ctx.chain_of_first is None:
        ensure_responses(ctx)
        cursor = ctx.conn.cursor()
        cursor.row_factory = None  # plain tuples: a dict of 100k pairs
        ctx.chain_of_first = dict(
            cursor.execute("select first_request_id, min(id) from chains group by 1")
        )
        if ctx.followed is None:  # audit passes the links it just made
            ctx.followed = dict(cursor.execute(f"select id, follow_up_of from {FOLLOW_UPS}"))
    chain_of_first = ctx.chain_of_first
    followed = ctx.followed or {}
    if request_id not in followed:  # the common case: a first request
        return chain_of_first.get(request_id)
    seen = set()
    while request_id in followed:
        if request_id in seen:
            return None  # a cycle of links: no chain starts anywhere on it
        seen.add(request_id)
        request_id = followed[request_id]
    return chain_of_first.get(request_id)


def finding(
    ctx: AuditContext,
    rule_id: str,
    group: Group,
    message: str,
    recommendation: str,
    *,
    severity: Severity | None = None,
    spec: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> Finding:
    """A ``Finding`` for one group, with the rule's registered title, severity and spec;
    the example chain is the group's, else the chain its example request is a hop of."""
    registered = REGISTRY[rule_id]
    if group.targets > 1:
        message += f" ({plural(group.targets, 'distinct target')} from this place.)"
    if ctx.framework and evidence is not None and "framework" not in evidence:
        evidence = {**evidence, "framework": ctx.framework}
    example_chain_id = group.example_chain_id
    pending = ctx.pending_chains
    if example_chain_id is None and pending is None:
        example_chain_id = chain_of_request(ctx, group.example_request_id)
    found = Finding(
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
        evidence=evidence if evidence is not None else _framework_only(ctx),
    )
    if example_chain_id is None and pending is not None:
        pending.append(found)
    return found


def _framework_only(ctx: AuditContext) -> dict[str, Any]:
    return {"framework": ctx.framework} if ctx.framework else {}


def resolve_pending_chains(ctx: AuditContext) -> None:
    """Once the chains are built: the example chain of the findings made before."""
    pending, ctx.pending_chains = ctx.pending_chains or [], None
    for found in pending:
        found.example_chain_id = chain_of_request(ctx, found.example_request_id)


def framework_fix(
    ctx: AuditContext, *, starlette: str, django: str, litestar: str, quart: str | None = None
) -> str:
    """The fix in the app's framework's terms (``ctx.framework``); all of them when the
    framework is unknown."""
    framework = ctx.framework
    if framework in ("fastapi", "starlette"):
        return f"{'FastAPI' if framework == 'fastapi' else 'Starlette'}: {starlette}"
    if framework == "django":
        return f"Django: {django}"
    if framework == "litestar":
        return f"Litestar: {litestar}"
    if framework == "quart" and quart:
        return f"Quart: {quart}"
    text = f"Starlette/FastAPI: {starlette} Django: {django} Litestar: {litestar}"
    return text + (f" Quart/Flask: {quart}" if quart else "")
