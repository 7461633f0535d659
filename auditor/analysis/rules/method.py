"""Rules of the method family: what happens to a request's method and body on a redirect.

Each rule reads the linked traffic: a follow-up request ``f`` points at the
redirect ``r`` it followed through ``f.follow_up_of``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

from auditor.analysis.rules._groups import (
    Group,
    collect,
    describe_agents,
    finding,
    group_columns,
    plural,
)
from auditor.analysis.rules._subset import FOLLOW_UPS, RESPONSES, ensure_responses
from auditor.analysis.rules.base import AuditContext, Finding, Severity, rule
from auditor.urls import path_and_query

FAMILY = "method"

# What clients do, from docs/client-behaviour (measured on loopback).
POST_ON_301_302 = (
    "Chromium, Node fetch, aiohttp, httpx and requests turn a POST answered 301 or 302 into a "
    "GET and drop its body; `curl -L -X POST` keeps the method but drops the body; only "
    "`curl --post301/--post302` resends it"
)
OTHER_ON_301 = (
    "on 301, Chromium, Node fetch, aiohttp and httpx keep PUT/PATCH/DELETE and the body, "
    "but requests keeps the method and drops the body"
)
OTHER_ON_302 = (
    "on 302, Chromium, Node fetch and aiohttp keep PUT/PATCH/DELETE and the body, "
    "but httpx and requests send a GET without it"
)
ON_307_308 = (
    "Chromium, Node fetch, aiohttp, httpx, requests and curl all keep the method and body on "
    "307/308 (urllib turns HEAD into GET and refuses to follow a POST)"
)

STATUS_SPEC = {
    301: "RFC 9110 §15.4.2",
    302: "RFC 9110 §15.4.3",
    303: "RFC 9110 §15.4.4",
    307: "RFC 9110 §15.4.8",
    308: "RFC 9110 §15.4.9",
}


@lru_cache(maxsize=65536)
def short(url: str | None) -> str:
    """A target as a reader wants it: path and query when it is a URL."""
    if not url:
        return "(no Location)"
    if "://" not in url:
        return url
    simple = _SIMPLE_URL.match(url)
    if simple:  # what path_and_query returns, without urlsplit
        path, _, query = simple.group(1).partition("?")
        return f"{path or '/'}?{query}" if query else (path or "/")
    return path_and_query(url)


# An http(s) URL that urlsplit would not alter: no fragment, white space, controls or brackets.
_SIMPLE_URL = re.compile(r"https?://[^/?#\[\]\x00-\x20\x7f]+([^#\x00-\x20\x7f]*)\Z")


def where(group: Group) -> str:
    return f"{group.method} {group.source} answered {group.status}"


def spec_for(status: int | None, *more: int) -> str:
    codes = [c for c in (status, *more) if c in STATUS_SPEC]
    return ", ".join(dict.fromkeys(f"{STATUS_SPEC[c]} ({c})" for c in codes))


def keep_method_fix(group: Group) -> str:
    """How to answer with 307/308 (keep method and body) or 303 (post/redirect/get)."""
    permanent = group.status in (301, 308)
    keep = 308 if permanent else 307
    if group.route:
        how = f"Starlette/FastAPI: `RedirectResponse(url, status_code={keep})` (or 303)"
    else:
        how = (
            f"Starlette/FastAPI `RedirectResponse(url, status_code={keep})`; Django "
            f"`{'HttpResponsePermanentRedirect' if permanent else 'HttpResponseRedirect'}"
            f"(url, preserve_request=True)` (5.2+) gives {keep}; Litestar "
            f"`Redirect(path, status_code={keep})`"
        )
    return (
        f"Answer {group.method} {group.source} with {keep} to keep the method and body, or with "
        f"303 when the client should fetch the result with GET (post/redirect/get). {how}."
    )


def follow_ups(ctx: AuditContext, where_sql: str, extra: str = "f.method") -> list[Group]:
    """Redirects ``r`` with a follow-up ``f`` matching ``where_sql``, grouped by ``r``."""
    ensure_responses(ctx)
    return collect(
        ctx.query(
            f"""select {group_columns("r")}, f.user_agent as user_agent, {extra} as extra,
                       max(r.route) as route
                from {FOLLOW_UPS} f join {RESPONSES} r on r.id = f.follow_up_of
                where {where_sql}
                group by 1, 2, 3, 4, f.user_agent, {extra}"""
        )
    )


@rule(
    "method-changed",
    severity="error",
    title="Redirect changed the request method",
    spec="RFC 9110 §15.4.2 (301), §15.4.3 (302)",
    family=FAMILY,
)
def method_changed(ctx: AuditContext) -> Iterator[Finding]:
    """The follow-up of a 301/302 used another method: the original body was lost."""
    for g in follow_ups(ctx, "r.status in (301, 302) and f.method != r.method"):
        methods = " / ".join(str(m) for m in g.extra)
        message = (
            f"{plural(g.hits, 'follow-up')} of {where(g)} arrived at {short(g.target)} as "
            f"{methods}, so the request body was lost; sent by {describe_agents(g.agents)}. "
            f"{POST_ON_301_302 if g.method == 'POST' else OTHER_ON_302}."
        )
        yield finding(
            ctx, "method-changed", g, message, keep_method_fix(g), spec=spec_for(g.status)
        )


@rule(
    "method-not-preserved",
    severity="error",
    title="Client changed the method on a 307/308 redirect",
    spec="RFC 9110 §15.4.8 (307), §15.4.9 (308)",
    family=FAMILY,
)
def method_not_preserved(ctx: AuditContext) -> Iterator[Finding]:
    """The follow-up of a 307/308 used another method: the client broke the spec."""
    for g in follow_ups(ctx, "r.status in (307, 308) and f.method != r.method"):
        methods = " / ".join(str(m) for m in g.extra)
        message = (
            f"{plural(g.hits, 'follow-up')} of {where(g)} arrived at {short(g.target)} as "
            f"{methods}, although {g.status} forbids changing the method; sent by "
            f"{describe_agents(g.agents)}. {ON_307_308}."
        )
        recommendation = (
            f"The server is right; the client is not. Upgrade or replace "
            f"{', '.join(g.agents)} (urllib changes HEAD to GET on every redirect), or have it "
            f"call {short(g.target)} directly so no redirect is needed."
        )
        yield finding(ctx, "method-not-preserved", g, message, recommendation)


@rule(
    "body-dropped",
    severity="error",
    title="Redirect follow-up kept the method but lost the body",
    spec="RFC 9110 §15.4 (redirection), §15.4.8 (307), §15.4.9 (308)",
    family=FAMILY,
)
def body_dropped(ctx: AuditContext) -> Iterator[Finding]:
    """A request with a body was redirected; the follow-up kept the method but had no body."""
    for g in follow_ups(
        ctx,
        """f.method = r.method and r.method not in ('GET', 'HEAD')
           and (r.request_body_size > 0 or r.request_body_chunked = 1)
           and coalesce(f.request_body_size, 0) = 0 and coalesce(f.request_body_chunked, 0) = 0""",
    ):
        message = (
            f"{plural(g.hits, 'follow-up')} of {where(g)} arrived at {short(g.target)} as "
            f"{g.method} without the body the first request carried; sent by "
            f"{describe_agents(g.agents)}. `curl -L -X {g.method} --data` drops the body on "
            f"301/302/303, requests drops it on a 301; every measured client keeps method and "
            f"body on 307/308."
        )
        if g.status in (307, 308):
            recommendation = (
                f"{g.status} already asks for the body to be resent; the client "
                f"({', '.join(g.agents)}) is at fault: upgrade it or call {short(g.target)} "
                f"directly."
            )
        else:
            recommendation = keep_method_fix(g)
        yield finding(ctx, "body-dropped", g, message, recommendation, spec=spec_for(g.status, 308))


@rule(
    "method-change-broke-request",
    severity="error",
    title="Request failed after a redirect changed its method",
    spec="RFC 9110 §15.4.3 (302), §15.4.4 (303), §15.5.6 (405)",
    family=FAMILY,
)
def method_change_broke_request(ctx: AuditContext) -> Iterator[Finding]:
    """The follow-up used another method than the redirected request and got a 4xx."""
    for g in follow_ups(
        ctx,
        "f.method != r.method and f.status between 400 and 499",
        extra="f.method || ' → ' || f.status",
    ):
        outcomes = ", ".join(str(o) for o in g.extra)
        message = (
            f"{plural(g.hits, 'follow-up')} of {where(g)} reached {short(g.target)} with "
            f"another method and failed ({outcomes}); sent by {describe_agents(g.agents)}. "
            f"{POST_ON_301_302 if g.method == 'POST' else OTHER_ON_302}."
        )
        if g.status == 303:
            recommendation = (
                f"303 tells every client to GET {short(g.target)}: make that URL answer GET "
                f"(the result page), or redirect with 307/308 if the {g.method} must reach it."
            )
        else:
            recommendation = keep_method_fix(g) + (
                f" Or make {short(g.target)} answer GET if it is meant as the result page."
            )
        yield finding(
            ctx,
            "method-change-broke-request",
            g,
            message,
            recommendation,
            spec=spec_for(g.status) + ", RFC 9110 §15.5 (4xx)",
        )


@rule(
    "ambiguous-method-redirect",
    severity="warning",
    title="Non-GET request answered with 301/302",
    spec="RFC 9110 §15.4.2 (301), §15.4.3 (302)",
    family=FAMILY,
    needs_links=False,
)
def ambiguous_method_redirect(ctx: AuditContext) -> Iterator[Finding]:
    """A non-GET/HEAD request got 301/302: clients disagree on what to send next."""
    ensure_responses(ctx)
    groups = collect(
        ctx.query(
            f"""select {group_columns("r")}, r.user_agent as user_agent, max(r.route) as route
                from {RESPONSES} r
                where r.status in (301, 302) and r.method not in ('GET', 'HEAD')
                group by 1, 2, 3, 4, r.user_agent"""
        )
    )
    for g in groups:
        if g.method == "POST":
            clients = POST_ON_301_302
        else:
            clients = OTHER_ON_301 if g.status == 301 else OTHER_ON_302
        message = (
            f"{plural(g.hits, 'request')}: {where(g)} → {short(g.target)}, sent by "
            f"{describe_agents(g.agents)}. Clients disagree on the follow-up: {clients}."
        )
        yield finding(
            ctx,
            "ambiguous-method-redirect",
            g,
            message,
            keep_method_fix(g),
            spec=spec_for(g.status),
        )


# url and location_url are normalized absolute URLs; split off the query to compare paths.
_BASE = "case when instr({0}, '?') then substr({0}, 1, instr({0}, '?') - 1) else {0} end"
_QUERY = "case when instr({0}, '?') then substr({0}, instr({0}, '?')) else '' end"


@rule(
    "slash-redirect",
    severity="info",
    title="Redirect only adds or removes a trailing slash",
    spec="RFC 9110 §15.4 (redirection); RFC 3986 §6.2.3",
    family=FAMILY,
)
def slash_redirect(ctx: AuditContext) -> Iterator[Finding]:
    """A redirect whose target differs from the request URL only by a trailing slash."""
    url_base, loc_base = _BASE.format("r.url"), _BASE.format("r.location_url")
    ensure_responses(ctx)
    groups = collect(
        ctx.query(
            f"""select {group_columns("r")}, r.user_agent as user_agent,
                       (select f.route from {FOLLOW_UPS} f where f.follow_up_of = r.id limit 1)
                         as route
                from {RESPONSES} r
                where r.status between 300 and 399 and r.location_url is not null
                  and abs(length(r.location_url) - length(r.url)) = 1  -- cheap first
                  and {_QUERY.format("r.url")} = {_QUERY.format("r.location_url")}
                  and ({loc_base} = {url_base} || '/' or {url_base} = {loc_base} || '/')
                group by 1, 2, 3, 4, r.user_agent"""
        )
    )
    for g in groups:
        adds = short(g.target).split("?")[0].endswith("/")
        change = "add" if adds else "remove"
        keeps_method = g.status in (307, 308)
        message = (
            f"{plural(g.hits, 'request')}: {where(g)} only to {change} a trailing slash "
            f"({short(g.target)}); every one costs a round trip. Sent by "
            f"{describe_agents(g.agents)}."
        )
        if g.method not in ("GET", "HEAD"):
            message += f" A {g.method} on {g.status}: " + (
                "every measured client resends it, but the body is uploaded twice."
                if keeps_method
                else f"{POST_ON_301_302 if g.method == 'POST' else OTHER_ON_302}."
            )
        if (g.status == 307 and adds) or g.route:
            framework = (
                "Starlette/FastAPI's router (`redirect_slashes=True`, answering 307) did this: "
                "link to the canonical URL, or register the route under both spellings / pass "
                "`redirect_slashes=False` to the app's router"
            )
        elif g.status == 301 and adds:
            framework = (
                "Django's CommonMiddleware (`APPEND_SLASH = True`, answering 301) likely did "
                "this: link to the URL with the slash, or set `APPEND_SLASH = False` and route "
                "both spellings"
            )
        else:
            framework = "link and submit to the canonical URL so no redirect is needed"
        recommendation = f"Use {short(g.target)} in links, forms and API clients; {framework}."
        severity: Severity = "info" if g.method in ("GET", "HEAD") else "warning"
        yield finding(ctx, "slash-redirect", g, message, recommendation, severity=severity)
