"""Rules of the chains family: redirects in a row, loops, dead ends and unfollowed hops.

Observed chains come from the ``chains`` table (built by linking); loops and
chains no client followed come from the static redirect graph (``graph.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from auditor.analysis import graph
from auditor.analysis.rules._groups import (
    Group,
    collect,
    describe_agents,
    finding,
    group_columns,
    plural,
    source_sql,
)
from auditor.analysis.rules._hops import client_evidence, describe_evidence, places, redirect_hops
from auditor.analysis.rules._subset import FOLLOW_UPS, RESPONSES, ensure_responses
from auditor.analysis.rules.base import AuditContext, Finding, StaticGraph, rule
from auditor.analysis.sampled import weight_of, weight_sql
from auditor.redirects import FOLLOWED_SQL, client_family, next_hop, redirect_sql
from auditor.urls import short

FAMILY = "chains"
PERMANENT, TEMPORARY = (301, 308), (302, 303, 307)
# Default redirect limits: Chromium and httpx 20, requests 30, curl -L 50.
LIMITS = "Chromium and httpx give up after 20 redirects, requests after 30, curl -L after 50"


def observed_chains(
    ctx: AuditContext,
    where_sql: str,
    params: tuple[object, ...] = (),
    *,
    target_sql: str = "c.final_url",
) -> list[Group]:
    """Chains matching ``where_sql``, grouped by their first request (``r``, a redirect,
    read from the subset) and ``target_sql`` (by default the chain's final URL)."""
    ensure_responses(ctx)
    return collect(
        ctx.query(
            f"""select {source_sql("r")} as source, r.method as method, r.status as status,
                       {target_sql} as target, count(*) as hits, min(c.started_at) as first_seen,
                       max(c.started_at) as last_seen, min(r.id) as example_request_id,
                       min(c.id) as example_chain_id, r.user_agent as user_agent,
                       c.path_text as extra, max(r.route) as route
                from chains c join {RESPONSES} r on r.id = c.first_request_id
                where {where_sql}
                group by 1, 2, 3, 4, r.user_agent, c.path_text""",
            params,
        )
    )


@dataclass
class StaticPath:
    """A chain or loop of the static redirect graph, as a finding group."""

    urls: list[str]
    length: int
    group: Group


def _static(ctx: AuditContext, paths: list[tuple[graph.StaticPath, str]]) -> list[StaticPath]:
    """Finding groups for static paths (each with its target), their example requests
    read in one query."""
    wanted = sorted({i for path, _ in paths for i in path.example_request_ids})
    ensure_responses(ctx)
    requests = {
        row["id"]: row
        for row in ctx.query(
            f"""select id, {source_sql("r")} as source, route, user_agent, started_at
                from {RESPONSES} r where id in (select value from json_each(?))""",
            (json.dumps(wanted),),
        )
    }
    found = []
    for path, target in paths:
        ids = path.example_request_ids
        rows = [requests[i] for i in sorted(set(ids)) if i in requests]
        first = requests.get(ids[0], rows[0])
        group = Group(
            source=first["source"],
            method=path.methods[0],
            status=path.statuses[0],
            target=target,
            hits=path.hits,
            first_seen=min(row["started_at"] for row in rows),
            last_seen=max(row["started_at"] for row in rows),
            example_request_id=ids[0],
            route=first["route"],
        )
        for row in rows:
            group.agents[client_family(row["user_agent"])] += 1
        found.append(StaticPath(path.urls, path.length, group))
    return found


def static_graph(ctx: AuditContext) -> StaticGraph:
    """The static redirect graph, walked once per audit from the redirect subset (or by
    ``static_graph_task`` while linking scans)."""
    if ctx.graph is None:
        ensure_responses(ctx)
        ctx.graph = _walk(ctx, graph.redirect_edges(ctx.conn, table=RESPONSES))
    return ctx.graph


def _walk(ctx: AuditContext, edges: list[graph.RedirectEdge]) -> StaticGraph:
    # conn is not used when edges are given: this may run in another thread
    return StaticGraph(
        edges=edges,
        chains=graph.static_chains(ctx.conn, ctx.options.chain_threshold, edges=edges),
        loops=graph.static_loops(ctx.conn, edges=edges),
    )


def static_chains(ctx: AuditContext) -> list[StaticPath]:
    """Chains of at least ``chain_threshold`` redirects in the static graph (not loops)."""
    paths = static_graph(ctx).chains
    return _static(
        ctx, [(path, path.urls[-1]) for path in paths if path.urls[-1] not in path.urls[:-1]]
    )


def static_loops(ctx: AuditContext) -> list[StaticPath]:
    """Cycles of the static redirect graph, the target being the first hop's Location."""
    paths = static_graph(ctx).loops
    return _static(ctx, [(path, path.urls[1 % len(path.urls)]) for path in paths])


def static_graph_task(ctx: AuditContext) -> Callable[[list[tuple[Any, ...]]], None]:
    """The static graph from the redirect rows linking reads (see
    ``linking.link_and_build_chains``): pure Python, not using the connection, so
    ``audit`` runs it in another thread while linking scans; the rules reuse its result."""

    def walk(rows: list[tuple[Any, ...]]) -> None:
        ctx.graph = _walk(ctx, graph.edges_from_rows(rows))

    return walk


def example_path(group: Group) -> str:
    """The most common hop sequence of a group of chains."""
    return str(group.extra.most_common(1)[0][0]) if group.extra else "?"


def url_set(hops: list[str]) -> str:
    """The hops as paths, or as whole URLs when they change scheme or host."""
    origins = {u.partition("://")[2].split("/", 1)[0] + u.partition("://")[0] for u in hops}
    return " → ".join(hops if len(origins) > 1 else [short(u) for u in hops])


def per_place(paths: Iterable[StaticPath]) -> list[tuple[StaticPath, int]]:
    """One static chain or loop per place (source, method, status): the longest, most
    used one, with how many others share its place."""
    by_place: dict[tuple[str, str, int], list[StaticPath]] = {}
    for path in paths:
        g = path.group
        by_place.setdefault((g.source, g.method, g.status), []).append(path)
    return [
        (max(same, key=lambda p: (p.length, p.group.hits)), len(same) - 1)
        for same in by_place.values()
    ]


@rule(
    "redirect-chain",
    severity="warning",
    title="Redirect chain",
    spec="RFC 9110 §15.4 (redirection)",
    family=FAMILY,
)
def redirect_chain(ctx: AuditContext) -> Iterator[Finding]:
    """Two or more redirects in a row (``chain_threshold``), observed or in the static graph."""
    threshold = ctx.options.chain_threshold
    seen: set[str] = set()
    for g in observed_chains(ctx, "c.length >= ? and c.outcome != 'loop'", (threshold,)):
        seen.add(g.source)
        message = (
            f"{plural(g.hits, 'request')} to {g.method} {g.source} went through a chain of "
            f"redirects before reaching {short(g.target)}: {example_path(g)}. Each hop is a "
            f"round trip; sent by {describe_agents(g.agents)}. {LIMITS}."
        )
        recommendation = (
            f"Point {g.source} straight at {short(g.target)} with a single "
            f"{g.status} and update links to the final URL."
        )
        yield finding(ctx, "redirect-chain", g, message, recommendation)
    for chain, others in per_place(c for c in static_chains(ctx) if c.group.source not in seen):
        g = chain.group
        message = (
            f"The recorded redirects form a chain of {chain.length} hops that no client was "
            f"seen following to its end: {url_set(chain.urls)}"
            + (f" (and {plural(others, 'more chain')} from this place)" if others else "")
            + f". A client that follows it pays {chain.length} round trips."
        )
        recommendation = (
            f"Point {g.source} straight at {short(g.target)} with one redirect; update links "
            f"to the final URL."
        )
        yield finding(ctx, "redirect-chain", g, message, recommendation)


@rule(
    "redirect-loop",
    severity="error",
    title="Redirect loop",
    spec="RFC 9110 §15.4 (clients SHOULD detect cyclical redirections)",
    family=FAMILY,
)
def redirect_loop(ctx: AuditContext) -> Iterator[Finding]:
    """A chain, or the static redirect graph, revisits a URL (self-redirects excluded)."""
    distinct_urls = (
        "(select count(distinct json_extract(j.value, '$.url')) from json_each(c.hops) j) > 1"
    )
    reported: set[str] = set()  # the URLs of the loops reported
    places: set[tuple[str, str, int]] = set()  # and their places: one finding per place
    # A loop's final URL is one it already visited: the target shown is the first hop's.
    loops = f"c.outcome = 'loop' and {distinct_urls} and {SURE_CHAIN}"
    for g in observed_chains(ctx, loops, target_sql="r.location_url"):
        urls = _chain_urls(ctx, g.example_chain_id)
        if urls & reported:
            continue  # the same loop, entered at another URL
        reported |= urls
        places.add((g.source, g.method, g.status))
        message = (
            f"{plural(g.hits, 'request')} to {g.method} {g.source} ran into a redirect loop: "
            f"{example_path(g)}. {LIMITS} and show an error; sent by "
            f"{describe_agents(g.agents)}."
        )
        yield finding(ctx, "redirect-loop", g, message, loop_fix(g, [g.source]))
    fresh = [
        loop
        for loop in static_loops(ctx)
        if not set(loop.urls) & reported
        and len(set(loop.urls)) > 1
        and (loop.group.source, loop.group.method, loop.group.status) not in places
    ]
    for loop, others in per_place(fresh):
        g = loop.group
        message = (
            f"The recorded redirects form a loop: {url_set(loop.urls)}"
            + (f" (and {plural(others, 'more loop')} like it from this place)" if others else "")
            + f". Any client that follows it fails: {LIMITS}."
        )
        yield finding(ctx, "redirect-loop", g, message, loop_fix(g, loop.urls))


# Every hop of the chain is linked surely: an ambiguous link never alone makes an error.
SURE_CHAIN = f"""not exists(
    select 1 from json_each(c.hops) j join {FOLLOW_UPS} f
      on f.id = json_extract(j.value, '$.request_id')
    where f.link_confidence = 'ambiguous')"""


def _chain_urls(ctx: AuditContext, chain_id: int | None) -> set[str]:
    """The URLs a chain visited."""
    row = ctx.conn.execute("select hops from chains where id = ?", (chain_id,)).fetchone()
    return {hop["url"] for hop in json.loads(row[0])} if row else set()


def loop_fix(group: Group, urls: list[str]) -> str:
    schemes = {u.split("://")[0] for u in urls if "://" in u}
    if len(schemes) > 1:
        return (
            "The loop flips between http and https: the app does not see the scheme the TLS "
            "proxy terminated. Run uvicorn with `--proxy-headers --forwarded-allow-ips=<proxy>` "
            "(or `redirect-auditor run --proxy-headers`) so the app's https redirect stops."
        )
    return (
        f"Break the cycle: one URL of the loop must serve content instead of redirecting; "
        f"check the redirect rules for {group.source} and its target {short(group.target)}."
    )


@rule(
    "self-redirect",
    severity="error",
    title="Redirect to the same URL",
    spec="RFC 9110 §15.4 (clients SHOULD detect cyclical redirections)",
    family=FAMILY,
    needs_links=False,
)
def self_redirect(ctx: AuditContext) -> Iterator[Finding]:
    """The Location resolves to the request's own URL."""
    ensure_responses(ctx)
    groups = collect(
        ctx.query(
            f"""select {group_columns("r")}, r.user_agent as user_agent,
                       max(coalesce(r.x_forwarded_proto, r.forwarded)) as extra
                from {RESPONSES} r
                where {redirect_sql("r")} and r.location_url = r.url
                group by 1, 2, 3, 4, r.user_agent"""
        )
    )
    for g in groups:
        message = (
            f"{plural(g.hits, 'request')}: {g.method} {g.source} answered {g.status} with a "
            f"Location pointing at itself ({short(g.target)}); sent by "
            f"{describe_agents(g.agents)}. A following client asks again and again: {LIMITS}."
        )
        if g.extra:
            recommendation = (
                "The request came through a proxy (forwarded headers seen) and the app "
                "redirects to the URL the client already used, typically an http→https or "
                "host redirect that does not see the proxy's scheme/host. Run uvicorn with "
                "`--proxy-headers --forwarded-allow-ips=<proxy>` so the app sees the real "
                "scheme and host."
            )
        else:
            recommendation = (
                f"Make {g.source} serve its content, or redirect to a different URL; a redirect "
                f"to itself can never succeed."
            )
        yield finding(ctx, "self-redirect", g, message, recommendation)


@rule(
    "unfollowed-redirect",
    severity="info",
    title="Redirect clients mostly do not follow",
    spec="RFC 9110 §15.4 (redirection)",
    family=FAMILY,
)
def unfollowed_redirect(ctx: AuditContext) -> Iterator[Finding]:
    """Same-site redirects that a client family received ``unfollowed_min_hits`` times
    or more and (nearly: ``unfollowed_ratio``) never followed."""
    options = ctx.options
    same_site = "r.scheme || '://' || r.host || '/'"
    # Only places with enough unfollowed redirects to matter are read hop by hop.
    hops = redirect_hops(
        ctx,
        f"""r.status in {FOLLOWED_SQL} and r.location_url is not null
            and r.location_url != r.url
            and substr(r.location_url, 1, length({same_site})) = {same_site}
            and (r.source, r.method, r.status) in (
                select source, method, status from {RESPONSES}
                where followed = 0 and status in {FOLLOWED_SQL}
                group by 1, 2, 3
                having count(*) * {weight_sql(RESPONSES)} >= ?)""",
        (options.unfollowed_min_hits,),
    )
    for place in places(hops):
        clients = client_evidence(place.hops)
        weight = weight_of(ctx.conn, place.source, place.method, place.status)
        stuck = [
            c
            for c in clients
            if c["requests"] * weight >= options.unfollowed_min_hits
            and c["not_followed"] >= options.unfollowed_ratio * c["requests"]
            # urllib not following a 307 POST is its documented quirk, not this problem
            and next_hop(c["client"], place.method, place.status).method is not None
        ]
        if not stuck:
            continue
        names = {c["client"] for c in stuck}
        group = place.group()
        unfollowed = sum(c["not_followed"] for c in stuck)
        message = (
            f"{unfollowed} of {plural(group.hits, 'redirect')} from {place.method} "
            f"{place.source} ({place.status} → {short(group.target)}) were never followed by "
            f"{', '.join(sorted(names))}: {describe_evidence(stuck)}. httpx follows only with "
            f"`follow_redirects=True` and curl only with -L: API clients often do not follow."
        )
        recommendation = (
            f"If API clients call {place.source}, serve the resource there or publish the new "
            f"URL ({short(group.target)}) so they call it directly."
        )
        yield finding(
            ctx,
            "unfollowed-redirect",
            group,
            message,
            recommendation,
            evidence={"clients": clients},
        )


@rule(
    "mixed-permanence-chain",
    severity="warning",
    title="Chain mixes permanent and temporary redirects",
    spec="RFC 9110 §15.4.2 (301), §15.4.9 (308), §15.4.3 (302), §15.4.8 (307); RFC 9111 §4.2.2",
    family=FAMILY,
)
def mixed_permanence_chain(ctx: AuditContext) -> Iterator[Finding]:
    """A chain with both a permanent (301/308) and a temporary (302/303/307) hop."""
    hop_status = "json_extract(j.value, '$.status')"
    groups = observed_chains(
        ctx,
        f"""c.length >= 2  -- both kinds: at least two redirects
            and exists(select 1 from json_each(c.hops) j where {hop_status} in {PERMANENT})
            and exists(select 1 from json_each(c.hops) j where {hop_status} in {TEMPORARY})""",
    )
    for g in groups:
        message = (
            f"{plural(g.hits, 'chain')} from {g.method} {g.source} mix permanent and temporary "
            f"redirects: {example_path(g)}. Browsers cache 301/308 without being told to "
            f"(RFC 9111 heuristic freshness) but re-ask 302/307, so a permanent hop in front "
            f"of a temporary one pins clients to a URL that was only meant for now."
        )
        recommendation = (
            f"Decide whether {g.source} moved for good: if so, answer it with one 308 (or 301 "
            f"for GET) straight to {short(g.target)}; if not, use 307 (or 303 after a form "
            f"post) on every hop."
        )
        yield finding(ctx, "mixed-permanence-chain", g, message, recommendation)
