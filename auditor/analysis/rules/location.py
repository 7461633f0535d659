"""Rules of the location family: is the ``Location`` header there, well-formed and safe?

Each rule is one grouped SQL query over the recorded responses (the WHERE clause
reads as the rule), plus, for the rules that must parse URLs, a little Python
over the redirect subset only (``_groups.grouped_requests``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from auditor.analysis.rules._groups import Group, finding, framework_fix, grouped_requests, plural
from auditor.analysis.rules._hops import client_evidence, places, redirect_hops
from auditor.analysis.rules._subset import RESPONSES
from auditor.analysis.rules.base import AuditContext, Finding, rule
from auditor.redirects import FOLLOWED_SQL
from auditor.urls import parse_forwarded, short

# Statuses on which a Location means something (RFC 9110 §10.2.2): 201 names the
# created resource, every 3xx the redirect target (300: the preferred choice), and
# 202 by wide convention the status monitor that §15.3.3 asks the response to name.
LOCATION_STATUSES_OUTSIDE_3XX = (201, 202)

# Host names that only resolve inside a private network.
INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".localdomain")


# ---------------------------------------------------------------------------
# URL helpers
# ---------------------------------------------------------------------------


def _hostport(netloc: str | None) -> str:
    """'Host:443' -> 'host', 'host:8000' -> 'host:8000' (lower case, userinfo dropped)."""
    if not netloc:
        return ""
    netloc = netloc.rpartition("@")[2].strip().lower()
    host, colon, port = netloc.rpartition(":")
    if colon and port.isdigit() and not host.endswith(":"):  # not a bare IPv6 literal
        number = int(port)  # "000080" is port 80
        return host if number in (80, 443) else f"{host}:{number}"
    return netloc


def _hostname(hostport: str) -> str:
    if hostport.startswith("["):
        return hostport[1 : hostport.find("]")]
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def _first(value: str | None) -> str:
    return (value or "").split(",", 1)[0].strip()


def asked_host(keys: dict[str, Any]) -> str:
    """The host the client asked for: X-Forwarded-Host or Forwarded host=, else Host."""
    forwarded = parse_forwarded(keys["forwarded"]) if keys.get("forwarded") else {}
    return _hostport(
        _first(keys.get("x_forwarded_host")) or forwarded.get("host") or keys.get("server_host")
    )


@lru_cache(maxsize=65536)  # rules ask again for each group with the same Location
def browser_location_host(location: str) -> str | None:
    """The host:port a browser goes to for an absolute or scheme-relative Location.

    Browsers (WHATWG URL) drop tabs and newlines and read '\\' as '/' in http(s)
    URLs, so '/\\evil.example' is scheme-relative to them. None for a path.
    """
    text = re.sub(r"[\t\n\r]", "", location).strip().replace("\\", "/")
    if re.match(r"^https?:", text, re.IGNORECASE):
        text = re.sub(r"^https?:/*", "//", text, flags=re.IGNORECASE)
    if not text.startswith("//"):
        return None
    try:
        return _hostport(urlsplit("http:" + text).netloc) or None
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def is_internal_hostname(hostname: str) -> bool:
    """Loopback, private, link-local or unspecified IPs; localhost, single-label
    names and private-network suffixes such as .internal or .local."""
    try:
        ip = ipaddress.ip_address(hostname)
    except ValueError:
        return hostname in ("localhost", "localhost.localdomain") or (
            "." not in hostname or hostname.endswith(INTERNAL_SUFFIXES)
        )
    return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------

REDIRECT_FIX_DJANGO = "return redirect(url) or HttpResponseRedirect(url)."
REDIRECT_FIX_LITESTAR = "return Redirect(path=url, status_code=...)."


@rule(
    "missing-location",
    severity="error",
    title="Redirect without a Location header",
    spec="RFC 9110 §10.2.2, §15.4",
    family="location",
    needs_links=False,
)
def missing_location(ctx: AuditContext) -> Iterator[Finding]:
    """A 301/302/303/307/308 that does not say where to go."""
    for group in grouped_requests(
        ctx,
        f"status in {FOLLOWED_SQL} and (location is null or trim(location) = '')",
        target="null",
    ):
        yield finding(
            ctx,
            "missing-location",
            group,
            f"{group.method} {group.source} answered {group.status} without a Location header "
            f"({group.seen()}). No client can follow it: httpx, requests and curl -L return "
            f"the {group.status} itself as the final response, and browsers show its body.",
            "Send the target with the redirect, or answer with a non-redirect status "
            "(200, 204, 404) if nothing should redirect here. "
            + framework_fix(
                ctx,
                starlette=f"return RedirectResponse(url, status_code={group.status}).",
                django=REDIRECT_FIX_DJANGO,
                litestar=REDIRECT_FIX_LITESTAR,
            ),
        )


def location_problem(location: str, location_url: str | None, locations: str | None) -> str | None:
    """What is wrong with a raw Location value, in words; None when nothing is."""
    if locations:
        values = json.loads(locations)
        return f"was sent {len(values)} times ({', '.join(map(repr, values))})"
    value = location.strip(" \t")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return "contains a control character"
    if " " in value:
        return "contains a space"
    if "\\" in value:
        return "contains a backslash"
    if location_url is None:
        return "cannot be parsed as a URI reference (bad port or IPv6 literal)"
    parts = urlsplit(location_url)
    if parts.scheme not in ("http", "https"):
        return f"uses the non-HTTP scheme {parts.scheme or '(none)'}:"
    if not parts.hostname:
        return "names no host"
    if "@" in urlsplit(value).netloc:
        return "carries userinfo (user:password@)"
    return None


CLIENTS_ON_PROBLEM = {
    "was sent": "Clients disagree about which one wins: httpx joins the values into one URL "
    "('/a, /b') and follows that, curl -L follows the first, and Chromium rejects differing "
    "Location headers (ERR_RESPONSE_HEADERS_MULTIPLE_LOCATION).",
    "contains a control character": "uvicorn with httptools (its default when installed) "
    "refuses to send it (the client gets no response at all); with --http h11 it goes out "
    "and httpx raises RemoteProtocolError while curl -L fails with exit code 3.",
    "contains a space": "httpx, curl and browsers repair it by percent-encoding the space; "
    "stricter clients and proxies reject the URL.",
    "contains a backslash": "Browsers read '\\' as '/' (WHATWG URL), so '/\\host' leaves the "
    "site for another host, while httpx and curl keep it as a path on this site.",
    "cannot be parsed": "httpx raises on it and curl -L fails with exit code 3.",
    "uses the non-HTTP scheme": "httpx raises UnsupportedProtocol or InvalidURL, curl -L "
    "fails on javascript: but follows ftp:, and browsers block unsafe schemes.",
    "names no host": "curl -L reads the path as a host ('http:///a' goes to http://a/) and "
    "httpx fails to connect.",
    "carries userinfo": "RFC 9110 §4.2.4 forbids generating userinfo in http(s) URIs; the "
    "credentials end up in logs, browser history and Referer-free links.",
}


@rule(
    "invalid-location",
    severity="error",
    title="Location header clients cannot use reliably",
    spec="RFC 9110 §10.2.2, §4.2.4, §5.5; RFC 3986 §3-4",
    family="location",
    needs_links=False,
)
def invalid_location(ctx: AuditContext) -> Iterator[Finding]:
    """Unparsable, control characters or spaces, non-http(s) scheme, userinfo, or sent twice."""
    for group in grouped_requests(
        ctx,
        """location is not null and (
             location_url is null                 -- unparsable
             or locations is not null             -- sent more than once
             or location glob '*[^!-~]*'          -- space, control or non-ASCII character
             or instr(location, '\\') > 0         -- backslash
             or instr(location, '@') > 0          -- maybe userinfo
             or (location_url not like 'http://%' and location_url not like 'https://%')
             or location_url like 'http%:///%'    -- no host
           )""",
        target="location",
        by={"location_url": "location_url", "locations": "locations"},
        keep=lambda g: location_problem(g.target or "", **g.keys) is not None,
    ):
        problem = location_problem(group.target or "", **group.keys) or ""
        clients = next(text for start, text in CLIENTS_ON_PROBLEM.items() if start in problem)
        yield finding(
            ctx,
            "invalid-location",
            group,
            f"{group.method} {group.source} answered {group.status} with Location "
            f"{group.target!r}, which {problem} ({group.seen()}). {clients}",
            "Send exactly one Location holding an absolute http(s) URL or a path, "
            "percent-encoded (urllib.parse.quote), without credentials. "
            + framework_fix(
                ctx,
                starlette="RedirectResponse(url) percent-encodes the URL it is given; build "
                "it with request.url_for(...) or quote() rather than raw headers.",
                django="redirect() / iri_to_uri() encode the URL; never set Location twice.",
                litestar="Redirect(path=...) with an encoded path.",
            ),
            severity="warning" if problem == "contains a space" else None,
        )


@rule(
    "location-on-non-redirect",
    severity="warning",
    title="Location header on a status that ignores it",
    spec="RFC 9110 §10.2.2, §15.3.2",
    family="location",
    needs_links=False,
)
def location_on_non_redirect(ctx: AuditContext) -> Iterator[Finding]:
    """Location on anything but 3xx, 201 Created or 202 Accepted (a status monitor)."""
    meaningful = ", ".join(str(s) for s in LOCATION_STATUSES_OUTSIDE_3XX)
    for group in grouped_requests(
        ctx,
        f"location is not null and status not between 300 and 399 and status not in ({meaningful})",
        target="coalesce(location_url, location)",
    ):
        yield finding(
            ctx,
            "location-on-non-redirect",
            group,
            f"{group.method} {group.source} answered {group.status} with Location "
            f"{group.target} ({group.seen()}). Location only means something on a 3xx "
            f"(where to go) and on 201 Created (the new resource); browsers, curl -L, httpx "
            f"and requests ignore it on a {group.status}, so no redirect happens.",
            "If a redirect was meant, use 303 (go and GET it), 307 or 308 (repeat the "
            "request there); otherwise drop the header. "
            + framework_fix(
                ctx,
                starlette="return RedirectResponse(url, status_code=303) instead of "
                "Response(headers={'Location': ...}).",
                django=REDIRECT_FIX_DJANGO,
                litestar=REDIRECT_FIX_LITESTAR,
            ),
        )


@rule(
    "scheme-downgrade",
    severity="error",
    title="HTTPS request redirected to http://",
    spec="RFC 9110 §4.2.2, §15.4; RFC 6797 (HSTS)",
    family="location",
    needs_links=False,
)
def scheme_downgrade(ctx: AuditContext) -> Iterator[Finding]:
    """An https request (directly, or per the forwarded headers as sent) told to go to http://.

    The forwarded headers count even when the recorder did not trust them: they say
    what the client used. Only an absolute ``http:`` Location downgrades; a path is
    resolved by the client against its own https URL.
    """
    for group in grouped_requests(
        ctx,
        """status between 300 and 399
           and ltrim(location) like 'http://%'
           and (scheme = 'https'
                or server_scheme = 'https'
                or ltrim(lower(x_forwarded_proto)) like 'https%'
                or lower(forwarded) like '%proto=https%'
                or lower(forwarded) like '%proto="https"%')""",
        by={"app_saw_https": "server_scheme = 'https'"},
    ):
        behind_proxy = not group.keys["app_saw_https"]
        cause = (
            "The app saw plain http because the TLS proxy's X-Forwarded-Proto/Forwarded "
            "header was not trusted, so it built an http:// URL for an https client."
            if behind_proxy
            else "The app itself received https and still redirected to http://."
        )
        yield finding(
            ctx,
            "scheme-downgrade",
            group,
            f"{group.method} {group.source} came in over https but answered {group.status} "
            f"to {group.target} ({group.seen()}). {cause} curl -L, httpx, requests and "
            f"browsers follow it in cleartext (browsers upgrade it back only for hosts on "
            f"their HSTS list), exposing cookies without the Secure flag and the request.",
            "Generate https URLs, or relative Locations. Behind a TLS proxy run uvicorn with "
            "--proxy-headers --forwarded-allow-ips=<proxy address>: it trusts X-Forwarded-Proto "
            "only from those addresses (default 127.0.0.1), and then the app sees https. "
            + framework_fix(
                ctx,
                starlette="Starlette's HTTPSRedirectMiddleware only sees the scheme uvicorn "
                "reports: without trusted proxy headers it redirects https clients forever; "
                "request.url_for() builds http:// URLs for the same reason.",
                django="set SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https') "
                "(only behind a proxy that sets it) and SECURE_SSL_REDIRECT = True.",
                litestar="run under uvicorn with trusted proxy headers so request.url is https.",
            ),
        )


def leaked_host(location: str, keys: dict[str, Any]) -> str | None:
    """Why an absolute Location names an internal host instead of the one asked for."""
    target = browser_location_host(location)
    asked = asked_host(keys)
    if target is None or target == asked:
        return None
    backend = {_hostport(keys.get("server_host")), _hostport(keys.get("server_addr"))}
    if target in backend - {asked}:
        return f"the backend's own address {target}"
    if _hostname(target) != _hostname(asked) and is_internal_hostname(_hostname(target)):
        return f"the internal host {target}"
    return None


@rule(
    "internal-host-leak",
    severity="warning",
    title="Location names an internal host",
    spec="RFC 9110 §7.2, §10.2.2; CWE-200",
    family="location",
    needs_links=False,
)
def internal_host_leak(ctx: AuditContext) -> Iterator[Finding]:
    """An absolute Location naming loopback, a private address, the server's own
    address, or the backend Host header when the client asked (X-Forwarded-Host)
    for another host."""
    keys = {
        "location": "location",
        "x_forwarded_host": "x_forwarded_host",
        "forwarded": "forwarded",
        "server_host": "server_host",
        "server_addr": "server_addr",
    }
    leaks: dict[tuple[Any, ...], str | None] = {}  # many groups share the same keys

    def leak(group: Group) -> str | None:
        """The internal host named, unless the client chose it (an open redirect's)."""
        k = group.keys
        key = tuple(k.values())
        if key not in leaks:
            found = leaked_host(k["location"], k)
            leaks[key] = None if found and chosen_by_client(ctx, group) else found
        return leaks[key]

    for group in grouped_requests(
        ctx,
        "status between 300 and 399 and (location like '%//%' or location like '%\\%')",
        by=keys,
        keep=lambda g: leak(g) is not None,
    ):
        asked = asked_host(group.keys) or "(no Host)"
        yield finding(
            ctx,
            "internal-host-leak",
            group,
            f"{group.method} {group.source} answered {group.status} to {group.target}, "
            f"which names {leak(group)} although the "
            f"client asked for {asked} ({group.seen()}). Clients outside the network cannot "
            f"reach it, and every client treats it as another host: Chromium, curl -L, httpx "
            f"and requests drop Authorization on the way there.",
            "Build Locations from the host the client asked for, or send relative Locations. "
            "Have the proxy pass the original Host (nginx: proxy_set_header Host $host). "
            + framework_fix(
                ctx,
                starlette="uvicorn --proxy-headers does not apply X-Forwarded-Host; return "
                "RedirectResponse('/path') (relative) instead of str(request.url_for(...)).",
                django="set USE_X_FORWARDED_HOST = True behind a proxy you control, with "
                "ALLOWED_HOSTS listing the public names.",
                litestar="return Redirect(path='/path') (relative).",
            ),
        )


def _decoded(text: str) -> str:
    return unquote(unquote(text)).lower().replace("\\", "/")


def chosen_by_client(ctx: AuditContext, group: Group) -> bool:
    """Every request of this (rare) leaking group named the Location's host itself: an
    open redirect's target, not a leak of ours."""
    rows = ctx.query(
        f"""select location, path, query, host, x_forwarded_host, forwarded, server_host
            from {RESPONSES} where source = ? and method = ? and status = ? and location = ?
            limit 50""",
        (group.source, group.method, group.status, group.keys["location"]),
    )
    return bool(rows) and all(
        target_from_request(r["location"], r["path"], r["query"], dict(r)) for r in rows
    )


def carrying_parameter(host: str, query: str | None) -> str | None:
    """The query parameter whose (decoded) value names ``host``, if one does."""
    for name, value in parse_qsl(query or "", keep_blank_values=True):
        if host and host in _decoded(value).lower():
            return name
    return None


def target_from_request(location: str, path: str, query: str | None, keys: dict[str, Any]) -> bool:
    """True when an off-site Location's host appears in the request's query or path."""
    target = browser_location_host(location)
    if target is None:
        return False
    host = _hostname(target)
    if host in {_hostname(asked_host(keys)), _hostname(_hostport(keys.get("host")))}:
        return False
    pattern = re.compile(r"(^|[=/@&:])" + re.escape(host) + r"($|[/:?#&])")
    return bool(pattern.search(_decoded(query or "")) or pattern.search(_decoded(path)))


@rule(
    "open-redirect",
    severity="error",
    title="Open redirect: off-site target taken from the request",
    spec="CWE-601; RFC 9110 §17.11",
    family="location",
    needs_links=False,
)
def open_redirect(ctx: AuditContext) -> Iterator[Finding]:
    """An off-site Location whose host the client supplied in the query or path."""
    keys = {
        "location": "location",
        "req_path": "path",
        "req_query": "query",
        "host": "host",
        "x_forwarded_host": "x_forwarded_host",
        "forwarded": "forwarded",
        "server_host": "server_host",
    }

    by_parameter: dict[tuple[str, str, int, str], tuple[Group, list[str]]] = {}

    def sort_by_parameter(g: Group) -> bool:
        """Gather each (place, parameter)'s groups here; ``grouped_requests`` keeps none
        (it would merge a place's parameters into one group)."""
        k = g.keys
        if not target_from_request(k["location"], k["req_path"], k["req_query"], k):
            return False
        site = browser_location_host(k["location"]) or ""
        parameter = carrying_parameter(_hostname(site), k["req_query"]) or "path"
        key = (g.source, g.method, g.status, parameter)
        if key in by_parameter:
            merged, targets = by_parameter[key]
            merged.add(g)
            targets.append(g.target or "")
        else:
            by_parameter[key] = (g, [g.target or ""])
        return False

    grouped_requests(
        ctx,
        """status between 300 and 399
           and (location like '%//%' or location like '%\\%')
           and (query != '' or path like '%.%' or path like '%//%')""",
        target="coalesce(location_url, location)",
        by=keys,
        keep=sort_by_parameter,
    )
    for (_, _, _, parameter), (group, targets) in by_parameter.items():
        examples = sorted(set(targets))[:5]
        where = f"the `{parameter}` parameter" if parameter != "path" else "the path"
        yield finding(
            ctx,
            "open-redirect",
            group,
            f"{group.method} {group.source} redirects ({group.status}) to whatever host "
            f"{where} names: {plural(len(set(targets)), 'off-site target')}, e.g. "
            f"{', '.join(examples[:3])} ({group.seen()}). Anyone can craft a link on this site "
            f"that lands on theirs (phishing, OAuth token theft). Every client follows it; "
            f"urllib and curl --location-trusted even forward Authorization and Cookie to the "
            f"other host.",
            f"Redirect only to paths on this site or to hosts on an allow-list: accept "
            f"{where} only if it starts with a single '/' (not '//' or '/\\'), or its "
            f"parsed host is allowed. "
            + framework_fix(
                ctx,
                starlette="check urlsplit(next).netloc against an allow-list before "
                "RedirectResponse(next); fall back to a fixed path.",
                django="use url_has_allowed_host_and_scheme(next, allowed_hosts="
                "{request.get_host()}, require_https=request.is_secure()).",
                litestar="validate the target against an allow-list before Redirect(path=...).",
                quart="check urlsplit(next).netloc against an allow-list before "
                "redirect(next); fall back to url_for(...).",
            ),
            evidence={"parameter": parameter, "targets": examples},
        )


# Measured (client-behaviour.md): who forwards credentials to another host on a redirect.
FORWARDS_CREDENTIALS = "urllib and `curl --location-trusted` forward both Authorization and Cookie"
DROPS_CREDENTIALS = (
    "Chromium, curl -L, requests, httpx and aiohttp drop Authorization (curl and aiohttp "
    "drop Cookie too)"
)


def _host_port(url: str | None) -> str:
    """host[:port] of an absolute URL, the default port dropped ('' if relative)."""
    if not url:
        return ""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").lower()
    return host if port in (None, default) else f"{host}:{port}"


def _other_origin(url: str, target: str | None) -> bool:
    """``target`` is on another host (an http→https upgrade of the same host is not)."""
    there = _host_port(target)
    return bool(there) and there != _host_port(url)


@rule(
    "credentials-to-other-origin",
    severity="warning",
    title="Request with credentials redirected to another origin",
    spec="RFC 9110 §15.4 (redirection), §11.6.2 (Authorization); CWE-522",
    family="location",
)
def credentials_to_other_origin(ctx: AuditContext) -> Iterator[Finding]:
    """A request carrying Authorization or Cookie redirected to another host: some
    clients send the credentials there too."""
    hops = redirect_hops(
        ctx,
        "(r.has_authorization = 1 or r.has_cookie = 1) and r.location_url is not null",
    )
    for place in places(h for h in hops if _other_origin(h.url, h.target)):
        group = place.group()
        carried = [
            h
            for h in place.hops
            if h.sure
            and (
                (h.has_authorization and h.f_has_authorization)
                or (h.has_cookie and h.f_has_cookie and h.client in ("urllib", "curl"))
            )
        ]
        what = " and ".join(
            name
            for name, present in (
                ("Authorization", any(h.has_authorization for h in place.hops)),
                ("Cookie", any(h.has_cookie for h in place.hops)),
            )
            if present
        )
        message = (
            f"{plural(group.hits, 'request')} to {place.method} {place.source} carried "
            f"{what} and were redirected ({place.status}) to another host: "
            f"{short(group.target)} on {_host_port(group.target)}. {FORWARDS_CREDENTIALS} "
            f"there; {DROPS_CREDENTIALS}."
        )
        if carried:
            clients = sorted({h.client for h in carried})
            message += (
                f" {plural(len(carried), 'follow-up')} on the other host did carry them "
                f"({', '.join(clients)})."
            )
        recommendation = (
            "Redirect authenticated requests only within the same origin; if the other host "
            "is yours, have clients call it directly with its own credentials, and never send "
            "a token-bearing client across hosts (use a relative Location)."
        )
        yield finding(
            ctx,
            "credentials-to-other-origin",
            group,
            message,
            recommendation,
            severity="error" if carried else "warning",
            evidence={"clients": client_evidence(place.hops)},
        )
