"""What a redirect is, and what each client sends next. Everything else asks here.

The facts are ``client-behaviour.md``'s, measured on loopback: which method and body a
client family sends when it follows a 301/302/303/307/308, or that it does not follow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# Statuses clients follow (300, 305 and 306 are 3xx but nobody follows them).
FOLLOWED_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT = frozenset({301, 308})
TEMPORARY = frozenset({302, 303, 307})
# Statuses that keep the method and body on every measured client (but urllib's quirks).
METHOD_PRESERVING = frozenset({307, 308})
# A recorded response is a redirect for the audit: 3xx but 304 Not Modified.
REDIRECT_SQL = "status between 300 and 399 and status != 304"


def redirect_sql(alias: str) -> str:
    """``REDIRECT_SQL`` for a table alias."""
    return f"{alias}.status between 300 and 399 and {alias}.status != 304"


# FOLLOWED_STATUSES as an SQL list: ``status in {FOLLOWED_SQL}``.
FOLLOWED_SQL = "(301, 302, 303, 307, 308)"
SAFE_METHODS = frozenset({"GET", "HEAD"})


def is_redirect(status: int | None) -> bool:
    """3xx but 304 (``REDIRECT_SQL`` in Python)."""
    return status is not None and 300 <= status < 400 and status != 304


def follow_up_method(method: str, status: int) -> str:
    """The method most clients (browsers, httpx, requests, curl -L) use to follow:
    GET after 303 (but HEAD), and after 301/302 to a POST; otherwise the same."""
    if method != "HEAD" and (status == 303 or (status in (301, 302) and method == "POST")):
        return "GET"
    return method


@dataclass(frozen=True)
class NextHop:
    """What one client family sends after a redirect: ``method`` None = not followed."""

    method: str | None
    body: bool  # the original body is sent again


NOT_FOLLOWED = NextHop(None, False)


def next_hop(client: str, method: str, status: int) -> NextHop:
    """What ``client`` (a family from ``client_family``) sends after ``method`` got
    ``status``, as measured; a family we did not measure behaves like a browser."""
    if status not in FOLLOWED_STATUSES:
        return NOT_FOLLOWED
    if client == "urllib":
        if status in METHOD_PRESERVING:
            return NextHop("GET", False) if method in SAFE_METHODS else NOT_FOLLOWED
        if method in SAFE_METHODS or method == "POST":
            return NextHop("GET", False)
        return NOT_FOLLOWED
    if method in SAFE_METHODS or status in METHOD_PRESERVING:
        return NextHop(method, method not in SAFE_METHODS)
    if client == "curl" and method != "POST":  # curl -L -X METHOD keeps it, not its body
        return NextHop(method, False)
    if status == 303 or method == "POST":
        return NextHop("GET", False)
    # PUT/PATCH/DELETE... on 301/302: the clients disagree.
    if client in ("requests", "httpx") and status == 302:
        return NextHop("GET", False)
    if client == "requests":
        return NextHop(method, False)
    return NextHop(method, True)


# User-Agent product -> client family (the version is not part of the family).
_FAMILIES = (
    (re.compile(r"python-httpx/", re.I), "httpx"),
    (re.compile(r"python-requests/", re.I), "requests"),
    (re.compile(r"python-urllib/", re.I), "urllib"),
    (re.compile(r"aiohttp/", re.I), "aiohttp"),
    (re.compile(r"^curl/", re.I), "curl"),
    (re.compile(r"^wget/", re.I), "wget"),
    (re.compile(r"undici|node-fetch|^node\b", re.I), "Node fetch"),
    (re.compile(r"Edg/"), "Edge"),
    (re.compile(r"HeadlessChrome|Chrome/|Chromium/"), "Chromium"),
    (re.compile(r"Firefox/"), "Firefox"),
    (re.compile(r"Version/[\d.]+.*Safari"), "Safari"),
    (re.compile(r"testclient", re.I), "TestClient"),
)


@lru_cache(maxsize=4096)
def client_family(user_agent: str | None) -> str:
    """``httpx``, ``requests``, ``curl``, ``urllib``, ``Chromium``… from a User-Agent;
    an unknown one by its first product name, a missing one as ``no User-Agent``."""
    if not user_agent:
        return "no User-Agent"
    for pattern, family in _FAMILIES:
        if pattern.search(user_agent):
            return family
    product = user_agent.split(None, 1)[0].split("/", 1)[0]  # "fixture-browser/1.0 (x)"
    return product if len(product) <= 40 else product[:39] + "…"


MEASURED_CLIENTS = ("Chromium", "Node fetch", "aiohttp", "httpx", "requests", "curl", "urllib")
