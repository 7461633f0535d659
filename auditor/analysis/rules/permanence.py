"""Rules of the permanence family: is the redirect's code (temporary or permanent)
and its cache lifetime what the traffic shows it to be?

Permanent redirects (301, 308) are cacheable by default: clients and shared caches
may reuse them without asking again, heuristically when no freshness is given
(RFC 9110 §15.1, RFC 9111 §4.2.2). Temporary ones (302, 307) are not, unless the
response says so. (mixed-permanence-chain lives with the chain rules.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from email.utils import parsedate_to_datetime

from auditor.analysis.fixes import slash_middleware
from auditor.analysis.rules._groups import (
    GROUP_AGGREGATES,
    NOT_SLASH_MOVE,
    Group,
    describe_agents,
    finding,
    framework_fix,
    grouped_requests,
    plural,
    query_groups,
    slash_move_sql,
)
from auditor.analysis.rules._hops import client_evidence, places, redirect_hops
from auditor.analysis.rules.base import SOURCE_SQL, AuditContext, Finding, rule
from auditor.analysis.sampled import weight_sql
from auditor.redirects import FOLLOWED_SQL
from auditor.urls import short

FAMILY = "permanence"
DAY = 86400.0
SUGGESTED_MAX_AGE = 86400  # a day: long enough to save round trips, short enough to fix


def _day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def _duration(seconds: float) -> str:
    if seconds >= 2 * DAY:
        return f"{seconds / DAY:.0f} days"
    if seconds >= 7200:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds:.0f} seconds"


def cache_directives(cache_control: str | None) -> dict[str, str]:
    """Cache-Control directives, lower-cased names to (unquoted) values."""
    directives = {}
    for item in (cache_control or "").split(","):
        name, _, value = item.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip().strip('"')
    return directives


def freshness_lifetime(cache_control: str | None, expires: str | None, at: float) -> float:
    """Seconds a cache may reuse the response without revalidating (RFC 9111 §4.2.1):
    s-maxage or max-age, else Expires minus the response time; 0 for no-store/no-cache
    and an unparsable Expires (§5.3)."""
    directives = cache_directives(cache_control)
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    ages = [directives[d] for d in ("s-maxage", "max-age") if directives.get(d, "").isdigit()]
    if ages:
        return float(max(int(age) for age in ages))
    if not expires:
        return 0.0
    try:
        return max(parsedate_to_datetime(expires).timestamp() - at, 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0


def caching_fix(ctx: AuditContext, status: int, header: str) -> str:
    return framework_fix(
        ctx,
        starlette=f"RedirectResponse(url, status_code={status}, headers="
        f"{{'Cache-Control': '{header}'}}).",
        django=f"response = redirect(url, permanent={status in (301, 308)}); "
        f"response['Cache-Control'] = '{header}' (or @cache_control on the view).",
        litestar=f"Redirect(path=url, status_code={status}, headers="
        f"{{'Cache-Control': '{header}'}}).",
    )


@rule(
    "temporary-looks-permanent",
    severity="info",
    title="Temporary redirect that never changes",
    spec="RFC 9110 §15.4.3 (302), §15.4.8 (307), §15.4.9 (308)",
    family=FAMILY,
    needs_links=False,
)
def temporary_looks_permanent(ctx: AuditContext) -> Iterator[Finding]:
    """302/307 from one source to one unchanging target over a long span and many hits."""
    options = ctx.options
    groups = query_groups(
        ctx,
        f"""select {SOURCE_SQL} as source, method, status, min(location_url) as target,
                   {GROUP_AGGREGATES}
            from audit_responses
            where status in (302, 307) and location_url is not null
            group by {SOURCE_SQL}, method, status
            having count(distinct location_url) = 1
               and count(*) * {weight_sql("audit_responses")} >= ?
               and max(started_at) - min(started_at) >= ?""",
        (options.temporary_min_hits, options.temporary_min_span_days * DAY),
    )
    for group in groups:
        permanent = 308 if group.status == 307 or group.method not in ("GET", "HEAD") else 301
        span = group.last_seen - group.first_seen
        yield finding(
            ctx,
            "temporary-looks-permanent",
            group,
            f"{group.method} {group.source} has answered {group.status} to the same target "
            f"{group.target} {plural(group.hits, 'time')} over {_duration(span)} "
            f"({_day(group.first_seen)} to {_day(group.last_seen)}; e.g. {group.example_url}). "
            f"A temporary redirect is never cached by default, so every client pays the extra "
            f"round trip on every visit, and search engines keep the old URL.",
            f"If the move is permanent, answer {permanent} (keeps the method like "
            f"{group.status} does{'' if permanent == 308 else ' for GET/HEAD'}) with a "
            f"Cache-Control max-age you can live with; if it really is temporary, ignore this. "
            + caching_fix(ctx, permanent, f"max-age={SUGGESTED_MAX_AGE}"),
        )


@rule(
    "permanent-target-changed",
    severity="warning",
    title="Permanent redirect whose target changed",
    spec="RFC 9110 §15.4.2 (301), §15.4.9 (308); RFC 9111 §4.2.2 (heuristic freshness)",
    family=FAMILY,
    needs_links=False,
)
def permanent_target_changed(ctx: AuditContext) -> Iterator[Finding]:
    """One URL answered 301/308 to different targets over time.

    Compared per URL (not per route template), so /old/{id} -> /new/{id} is fine.
    """
    groups = query_groups(
        ctx,
        f"""select {SOURCE_SQL} as source, r.method as method, r.status as status,
                   r.location_url as target, {GROUP_AGGREGATES}
            from audit_responses as r
            join (
              select url, method from audit_responses
              where status in (301, 308) and location_url is not null
              group by url, method
              having count(distinct location_url) > 1
            ) as changed on changed.url = r.url and changed.method = r.method
            where r.status in (301, 308) and r.location_url is not null
            group by {SOURCE_SQL}, r.method, r.status, r.location_url""",
        per_target=True,
    )
    per_source: dict[tuple[str, str], list[Group]] = {}
    for group in sorted(groups, key=lambda g: g.first_seen):
        per_source.setdefault((group.source, group.method), []).append(group)
    for history in per_source.values():
        newest = max(history, key=lambda g: g.last_seen)
        targets = "; then ".join(
            f"{g.status} to {g.target} ({plural(g.hits, 'hit')}, "
            f"{_day(g.first_seen)} to {_day(g.last_seen)})"
            for g in history[:5]
        )
        example = min(history, key=lambda g: g.example_request_id or 0)
        combined = replace(
            example,
            status=newest.status,
            target=newest.target,
            hits=sum(g.hits for g in history),
            first_seen=min(g.first_seen for g in history),
            last_seen=max(g.last_seen for g in history),
            route=next((g.route for g in history if g.route), None),
        )
        yield finding(
            ctx,
            "permanent-target-changed",
            combined,
            f"{combined.method} {combined.source} moved permanently to "
            f"{plural(len(history), 'different target')}: {targets} (e.g. "
            f"{combined.example_url}). Browsers and shared caches store 301/308 responses "
            f"(heuristically for as long as they like when no max-age is sent), so clients "
            f"that saw an earlier target keep going there without asking this server.",
            "Never re-point a permanent redirect: keep the old target redirecting onwards "
            "(one more hop) or serve the content there. While a move may still change, use "
            "307 (or 302), or a 308 with a short max-age. " + caching_fix(ctx, 308, "max-age=3600"),
        )


@rule(
    "legacy-302",
    severity="info",
    title="302 Found: say 303 or 307",
    spec="RFC 9110 §15.4.3 (302), §15.4.4 (303), §15.4.8 (307)",
    family=FAMILY,
    needs_links=False,
)
def legacy_302(ctx: AuditContext) -> Iterator[Finding]:
    """GET/HEAD answered 302 (a non-GET on 302 is the method family's)."""
    for group in grouped_requests(
        ctx, f"status = 302 and method in ('GET', 'HEAD') and {NOT_SLASH_MOVE}"
    ):
        yield finding(
            ctx,
            "legacy-302",
            group,
            f"{group.method} {group.source} answers 302 Found to {group.target or '(no Location)'} "
            f"({group.seen()}). For {group.method} every client follows it like a 307, but "
            f"the code does not say whether a form POST to the same URL should become a GET.",
            "Say what you mean: 307 Temporary Redirect (the same method and body), 308 if the "
            "move is permanent, 303 See Other for a result page after a form post. "
            + framework_fix(
                ctx,
                starlette="RedirectResponse(url, status_code=307) (its default).",
                django="redirect(to, preserve_request=True) gives 307 (Django 5.2+).",
                litestar="Redirect(path=url, status_code=307) (its default is 302).",
                quart="redirect(url, code=307) (its default is 302).",
            ),
        )


@rule(
    "permanent-without-cache-control",
    severity="info",
    title="Permanent redirect without explicit freshness",
    spec="RFC 9111 §4.2.2 (heuristic freshness), §5.2.2.1 (max-age); RFC 9110 §15.1",
    family=FAMILY,
    needs_links=False,
)
def permanent_without_cache_control(ctx: AuditContext) -> Iterator[Finding]:
    """301/308 answering GET/HEAD with neither Cache-Control max-age/s-maxage/no-store/
    no-cache nor Expires (a redirected POST is not cached: RFC 9111 §3)."""
    for group in grouped_requests(
        ctx,
        f"""status in (301, 308) and method in ('GET', 'HEAD') and {NOT_SLASH_MOVE}
           and expires is null
           and (cache_control is null
                or (cache_control not like '%max-age%'
                    and cache_control not like '%s-maxage%'
                    and cache_control not like '%no-store%'
                    and cache_control not like '%no-cache%'))""",
    ):
        yield finding(
            ctx,
            "permanent-without-cache-control",
            group,
            f"{group.method} {group.source} answers {group.status} to {group.target or 'it'} "
            f"with no Cache-Control max-age and no Expires ({group.seen()}). {group.status} is "
            f"cacheable by default, so browsers and shared caches pick their own (heuristic) "
            f"lifetime and may keep the redirect indefinitely: if the target ever changes, "
            f"those clients never see it.",
            "State how long clients may reuse it: Cache-Control: max-age=<seconds> "
            f"(e.g. {SUGGESTED_MAX_AGE} while the move is new, a year once it is final). "
            + caching_fix(ctx, group.status, f"max-age={SUGGESTED_MAX_AGE}"),
        )


@rule(
    "temporary-with-long-cache",
    severity="warning",
    title="Temporary redirect cached for a long time",
    spec="RFC 9111 §4.2.1, §5.2.2.1 (max-age), §5.3 (Expires); RFC 9110 §15.4.3, §15.4.8",
    family=FAMILY,
    needs_links=False,
)
def temporary_with_long_cache(ctx: AuditContext) -> Iterator[Finding]:
    """302/307 whose max-age, s-maxage or Expires exceeds options.long_cache_seconds."""
    limit = ctx.options.long_cache_seconds

    def cached_long(group: Group) -> bool:
        # first_seen is the group's earliest response: the longest Expires lifetime.
        k = group.keys
        k["lifetime"] = freshness_lifetime(k["cache_control"], k["expires"], group.first_seen)
        return bool(k["lifetime"] > limit)

    for group in grouped_requests(
        ctx,
        """status in (302, 307)
           and (cache_control like '%max-age%' or expires is not null)""",
        by={"cache_control": "cache_control", "expires": "expires"},
        keep=cached_long,
    ):
        k = group.keys
        header = "; ".join(
            f"{name}: {value}"
            for name, value in (("Cache-Control", k["cache_control"]), ("Expires", k["expires"]))
            if value
        )
        yield finding(
            ctx,
            "temporary-with-long-cache",
            group,
            f"{group.method} {group.source} answers {group.status} (temporary) to "
            f"{group.target or 'its target'} but lets caches reuse it for "
            f"{_duration(k['lifetime'])} ({header}; {group.seen()}). Browsers and shared "
            f"caches honour that, so when the temporary redirect ends, clients keep "
            f"following it until the cached copy expires.",
            f"Give a temporary redirect a short lifetime (at most "
            f"{_duration(limit)}) or none; if the move is permanent, say 308/301. "
            + caching_fix(ctx, group.status, "no-cache"),
        )


@rule(
    "deprecated-status",
    severity="error",
    title="Deprecated redirect status 305 or 306",
    spec="RFC 9110 §15.4.6 (305 Use Proxy), §15.4.7 (306 unused)",
    family=FAMILY,
    needs_links=False,
)
def deprecated_status(ctx: AuditContext) -> Iterator[Finding]:
    """305 Use Proxy (deprecated) or 306 (reserved, unused)."""
    for group in grouped_requests(ctx, "status in (305, 306)"):
        what = (
            "305 Use Proxy is deprecated (in-band proxy configuration was a security hole)"
            if group.status == 305
            else "306 is reserved and means nothing"
        )
        yield finding(
            ctx,
            "deprecated-status",
            group,
            f"{group.method} {group.source} answered {group.status} ({group.seen()}). {what}. "
            f"Chromium, httpx and requests follow only 301, 302, 303, 307 and 308, so they "
            f"stop here with a {group.status}; curl -L follows its Location like a 302. "
            f"Clients end up in different places.",
            "Use 307 (temporary, keeps the method) or 308 (permanent) with a Location. "
            + framework_fix(
                ctx,
                starlette="RedirectResponse(url, status_code=307).",
                django="HttpResponseRedirect(url, preserve_request=True) (307, Django 5.2+).",
                litestar="Redirect(path=url, status_code=307).",
            ),
        )


@rule(
    "slash-redirect",
    severity="info",
    title="Redirect only adds or removes a trailing slash",
    spec="RFC 9110 §15.4 (redirection); RFC 3986 §6.2.3",
    family=FAMILY,
)
def slash_redirect(ctx: AuditContext) -> Iterator[Finding]:
    """A redirect whose target differs from the request URL only by a trailing slash
    (the host may differ: behind a proxy the app builds it from its own Host header).
    A non-GET answered 301/302 this way is ``method-change-on-move``'s."""
    hops = redirect_hops(
        ctx,
        f"""r.status in {FOLLOWED_SQL} and {slash_move_sql("r")}
           and (r.method in ('GET', 'HEAD') or r.status in (307, 308))""",
    )
    for place in places(hops):
        group = place.group()
        adds = short(group.target).split("?")[0].endswith("/")
        middleware = slash_middleware(ctx.framework, place.status, adds)
        message = (
            f"{plural(group.hits, 'request')}: {place.method} {place.source} answered "
            f"{place.status} only to {'add' if adds else 'remove'} a trailing slash "
            f"({short(group.target)}); every one costs a round trip. Sent by "
            f"{describe_agents(group.agents)}."
        )
        if place.method not in ("GET", "HEAD"):
            message += f" {place.status} keeps the {place.method}, but its body is uploaded twice."
        how = middleware or "link and submit to the canonical URL so no redirect is needed"
        recommendation = f"Use {short(group.target)} in links, forms and API clients; {how}."
        yield finding(
            ctx,
            "slash-redirect",
            group,
            message,
            recommendation,
            evidence={
                "clients": client_evidence(place.hops),
                "sent_by": "framework" if middleware else "app",
                **({"framework": ctx.framework} if ctx.framework else {}),
            },
        )
