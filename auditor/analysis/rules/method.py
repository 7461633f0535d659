"""The method family: what happens to a non-GET request and its body on a redirect.

Three problems, told apart by intent (docs/problems.md):
- ``method-change-on-move``: 301/302 on a resource that moved, so the target takes
  the original method; clients that turn it into GET or drop the body lose data.
- ``post-redirect-get-302``: 301/302 to a different page after a form post: the
  pattern is right, only the code should be 303.
- ``form-reposted-by-307``: 307/308 after a form post to a different page: every
  client re-sends the form (and its credentials) there.
What each client did is the evidence, never a finding of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from auditor.analysis.fixes import (
    default_remark,
    redirect_call,
    slash_middleware,
)
from auditor.analysis.rules._groups import finding, plural
from auditor.analysis.rules._hops import (
    Hop,
    Place,
    client_evidence,
    describe_evidence,
    move_kind,
    places,
    redirect_hops,
)
from auditor.analysis.rules.base import AuditContext, Finding, Severity, rule
from auditor.redirects import MEASURED_CLIENTS, next_hop
from auditor.urls import short

FAMILY = "method"

STATUS_SPEC = {
    301: "RFC 9110 §15.4.2",
    302: "RFC 9110 §15.4.3",
    303: "RFC 9110 §15.4.4",
    307: "RFC 9110 §15.4.8",
    308: "RFC 9110 §15.4.9",
}

# A request whose body is a credential or a login: a re-post of it elsewhere leaks it.
CREDENTIAL_ROUTE = re.compile(
    r"log-?in|sign-?in|signon|auth|passw|token|session|oauth|sso|account/(?:new|create)",
    re.I,
)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
NON_GET = "r.method not in ('GET', 'HEAD')"


def spec_for(status: int | None, *more: int) -> str:
    codes = [c for c in (status, *more) if c in STATUS_SPEC]
    return ", ".join(dict.fromkeys(f"{STATUS_SPEC[c]} ({c})" for c in codes))


def what_others_do(method: str, status: int, seen: set[str]) -> str:
    """What the measured clients not seen here would send after ``method`` + ``status``."""
    by_outcome: dict[str, list[str]] = {}
    for client in MEASURED_CLIENTS:
        if client in seen:
            continue
        hop = next_hop(client, method, status)
        if hop.method is None:
            text = "not followed"
        elif hop.method != method:
            text = f"{hop.method} without the body"
        elif method not in ("GET", "HEAD") and not hop.body:
            text = f"{method} without the body"
        else:
            text = f"{method} with the body" if method not in ("GET", "HEAD") else method
        by_outcome.setdefault(text, []).append(client)
    if not by_outcome:
        return ""
    parts = [f"{', '.join(clients)}: {text}" for text, clients in by_outcome.items()]
    return "Other clients would send (measured): " + "; ".join(parts) + "."


def _takes_method(place: Place) -> str | None:
    """Why the target is known to take the original method, or None."""
    for hop in place.hops:
        if hop.sure and hop.f_method == hop.method and hop.f_status and hop.f_status < 400:
            return f"{hop.client} re-sent the {hop.method} there and got {hop.f_status}"
    for hop in place.hops:
        if hop.sure and hop.method_changed and hop.f_status == 405:
            return f"it answered 405 to the {hop.f_method} {hop.client} sent instead"
    kinds = {move_kind(h.url, h.target) for h in place.hops}
    kinds.discard(None)
    if kinds:
        kind = sorted(k for k in kinds if k)[0]
        return {
            "slash": "only a trailing slash changes: it is the same resource",
            "host": "the same path on another origin: the resource moved",
            "version": "the same path under another version or prefix: the resource moved",
        }[kind]
    return None


def _harmed(hop: Hop) -> bool:
    return hop.sure and (hop.method_changed or hop.body_lost)


def _evidence(ctx: AuditContext, place: Place, **more: object) -> dict[str, object]:
    evidence: dict[str, object] = {"clients": client_evidence(place.hops)}
    if ctx.framework:
        evidence["framework"] = ctx.framework
    evidence.update({k: v for k, v in more.items() if v is not None})
    return evidence


def _intro(place: Place, target: str | None) -> str:
    return (
        f"{plural(len(place.hops), f'{place.method} request')} to {place.source} answered "
        f"{place.status} → {short(target)}."
    )


@rule(
    "method-change-on-move",
    severity="error",
    title="Moved resource redirected with 301/302: clients change the method or drop the body",
    spec="RFC 9110 §15.4.2 (301), §15.4.3 (302), §15.4.9 (308), §15.4.8 (307)",
    family=FAMILY,
)
def method_change_on_move(ctx: AuditContext) -> Iterator[Finding]:
    """A non-GET answered 301/302 where the target takes the original method."""
    for place in places(redirect_hops(ctx, f"r.status in (301, 302) and {NON_GET}")):
        why = _takes_method(place)
        if why is None:
            continue  # a different page: post-redirect-get-302
        group = place.group()
        harmed = [h for h in place.hops if _harmed(h)]
        severity: Severity = "error" if harmed else "warning"
        clients = client_evidence(place.hops)
        seen = {c["client"] for c in clients}
        message = f"{_intro(place, group.target)} The target takes {place.method}: {why}. "
        if harmed:
            message += (
                f"{plural(len(harmed), 'follow-up')} arrived with another method or without "
                f"the body, so what was sent was lost. "
            )
        else:
            message += "No follow-up has lost data yet, but most clients will. "
        message += f"What clients did: {describe_evidence(clients)}. "
        message += what_others_do(place.method, place.status, seen)
        keep = 308 if place.status == 301 else 307
        kind = move_kind(group.example_url, group.target)
        middleware = (
            slash_middleware(ctx.framework, place.status, short(group.target).endswith("/"))
            if kind == "slash"
            else None
        )
        if middleware:
            recommendation = (
                f"Send {place.method} to {short(group.target)} directly: {middleware}. "
                f"No status change of yours reaches this redirect."
            )
        else:
            recommendation = (
                f"Answer {place.method} {place.source} with {keep} so every client re-sends "
                f"the {place.method} and its body to the new URL: "
                f"{redirect_call(ctx.framework, keep)}. Better still, have clients call "
                f"{short(group.target)} directly."
            )
        yield finding(
            ctx,
            "method-change-on-move",
            group,
            message.strip(),
            recommendation,
            severity=severity,
            spec=spec_for(place.status, keep),
            evidence=_evidence(ctx, place, sent_by="framework" if middleware else "app"),
        )


@rule(
    "post-redirect-get-302",
    severity="info",
    title="Post/redirect/get with 301/302: say 303 See Other",
    spec="RFC 9110 §15.4.4 (303), §15.4.3 (302)",
    family=FAMILY,
)
def post_redirect_get_302(ctx: AuditContext) -> Iterator[Finding]:
    """A non-GET answered 301/302 to a different page: post/redirect/get with the old code."""
    for place in places(redirect_hops(ctx, f"r.status in (301, 302) and {NON_GET}")):
        if _takes_method(place) is not None:
            continue  # a moved resource: method-change-on-move
        group = place.group()
        clients = client_evidence(place.hops)
        message = (
            f"{_intro(place, group.target)} This is post/redirect/get: the client should "
            f"fetch {short(group.target)} with GET. Most clients switch to GET on "
            f"{place.status} only by an old convention (RFC 9110 allows it for POST); "
            f"303 See Other says so for every method and client. What clients did: "
            f"{describe_evidence(clients)}."
        )
        recommendation = (
            f"Answer {place.method} {place.source} with 303: "
            f"{redirect_call(ctx.framework, 303)}{default_remark(ctx.framework, 302)}. "
            f"Not 307/308: those would re-send the form to the next page."
        )
        yield finding(
            ctx,
            "post-redirect-get-302",
            group,
            message,
            recommendation,
            evidence=_evidence(ctx, place, sent_by="app"),
        )


@rule(
    "form-reposted-by-307",
    severity="warning",
    title="Form POST answered 307/308: clients re-send the form to another page",
    spec="RFC 9110 §15.4.8 (307), §15.4.9 (308), §15.4.4 (303)",
    family=FAMILY,
)
def form_reposted_by_307(ctx: AuditContext) -> Iterator[Finding]:
    """A form-encoded or multipart POST answered 307/308 to a different page."""
    form = " or ".join(f"r.request_content_type like '{t}%'" for t in FORM_TYPES)
    hops = redirect_hops(ctx, f"r.status in (307, 308) and r.method = 'POST' and ({form})")
    for place in places(h for h in hops if move_kind(h.url, h.target) is None):
        group = place.group()
        clients = client_evidence(place.hops)
        reposted = [h for h in place.hops if h.sure and h.f_method == "POST"]
        failed = sorted({h.f_status for h in reposted if h.f_status and h.f_status >= 400})
        credentials = bool(CREDENTIAL_ROUTE.search(place.source)) or any(
            h.has_authorization for h in place.hops
        )
        severity: Severity = "error" if credentials or failed else "warning"
        message = (
            f"{_intro(place, group.target)} {place.status} tells every client to re-send the "
            f"form there"
            + (", login data included" if credentials else "")
            + (f", and it failed there ({', '.join(map(str, failed))})" if failed else "")
            + f". What clients did: {describe_evidence(clients)}. "
            + what_others_do("POST", place.status, {c["client"] for c in clients})
        )
        recommendation = (
            f"Answer POST {place.source} with 303 See Other so clients GET "
            f"{short(group.target)} instead of re-posting: "
            f"{redirect_call(ctx.framework, 303)}{default_remark(ctx.framework, 307)}."
        )
        yield finding(
            ctx,
            "form-reposted-by-307",
            group,
            message.strip(),
            recommendation,
            severity=severity,
            evidence=_evidence(ctx, place, sent_by="app"),
        )


@rule(
    "redirect-target-fails",
    severity="error",
    title="Redirect sends clients to a page that fails",
    spec="RFC 9110 §15.4 (redirection), §15.5.5 (404), §15.5.6 (405), §15.5.11 (410)",
    family=FAMILY,
)
def redirect_target_fails(ctx: AuditContext) -> Iterator[Finding]:
    """Follow-ups that did what the redirect asked and failed for the redirect's reason:
    404/410 (a missing target), or 405 to the GET a 303 asked for."""
    hops = redirect_hops(
        ctx,
        "f.status in (404, 405, 410) and f.link_confidence is not 'ambiguous'",
    )
    for place in places(h for h in hops if _fails_for_redirect(h)):
        group = place.group()
        clients = client_evidence(place.hops)
        statuses = sorted({h.f_status for h in place.hops if h.f_status})
        gone = all(s in (404, 410) for s in statuses)
        message = (
            f"{_intro(place, group.target)} Clients that followed it failed there "
            f"({', '.join(map(str, statuses))}): {describe_evidence(clients)}."
        )
        if gone:
            recommendation = (
                f"Point {place.source} at a URL that exists, or answer it with 404/410 itself "
                f"if the resource is gone for good."
            )
        else:
            recommendation = (
                f"303 tells clients to GET {short(group.target)}: make that URL answer GET "
                f"(the result page), or redirect to a page that does."
            )
        yield finding(
            ctx,
            "redirect-target-fails",
            group,
            message,
            recommendation,
            evidence=_evidence(ctx, place),
        )


def _fails_for_redirect(hop: Hop) -> bool:
    """The follow-up used the method the redirect asked for and failed for its reason;
    failures the method problems explain are their evidence, not this one's."""
    if hop.method not in ("GET", "HEAD") and hop.status in (301, 302):
        # A 405 says the target takes the original method (method-change-on-move); a
        # post/redirect/get to a missing page is this problem.
        return hop.f_status in (404, 410) and move_kind(hop.url, hop.target) is None
    if hop.method == "POST" and hop.status in (307, 308) and hop.f_method == "POST":
        content = (hop.content_type or "").lower()
        if content.startswith(FORM_TYPES) and move_kind(hop.url, hop.target) is None:
            return False  # form-reposted-by-307
    if hop.f_status in (404, 410):
        return hop.f_method == hop.method or hop.status == 303
    return hop.status == 303 and hop.f_method == "GET" and hop.f_status == 405
