"""URL normalization, Location resolution and query redaction.

One place answers "are these two URLs the same request target?" for the
writer (which stores normalized URLs) and for hop linking (which joins on them).
The redaction rules live in ``auditor.redaction``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import SplitResult, quote, urljoin, urlsplit, urlunsplit

from auditor.redaction import DEFAULT as _DEFAULT_REDACTOR
from auditor.redaction import REDACTED as REDACTED
from auditor.redaction import is_secret_name as is_secret_name

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# Characters RFC 3986 calls unreserved are equivalent percent-encoded or not.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def redact_query(query: str) -> str:
    """Replace the values of secret-looking parameters with ``REDACTED``, also inside
    URLs and query strings held (percent-encoded or not) in other values.

    Keeps parameter order and the raw encoding of everything else, so a
    redacted Location still equals the redacted URL its follow-up requests.
    Names only: the recorder's ``redaction.Redactor`` also redacts by shape and route.
    """
    return _DEFAULT_REDACTOR.query(query)


def _normalize_percent(text: str) -> str:
    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT.sub(fix, text) if "%" in text else text


def _requote(text: str, safe: str) -> str:
    # Quote only characters that must never appear raw; keep existing %XX escapes.
    return quote(text, safe=safe + "%")


def normalize_url(url: str) -> str:
    """Normalize an absolute URL for comparison (RFC 3986 §6.2.2-6.2.3).

    Lower-cases scheme and host, drops default ports and the fragment, uses
    "/" for an empty path, and makes percent-encoding canonical.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    path = _normalize_percent(_requote(parts.path or "/", "/:@!$&'()*+,;=-._~"))
    query = _normalize_percent(_requote(parts.query, "/?:@!$&'()*+,;=-._~"))
    return urlunsplit(SplitResult(scheme, host, path, query, ""))


def is_absolute_location(location: str) -> bool:
    """True when a Location names its own scheme or host (not a path-relative reference)."""
    stripped = location.strip()
    return stripped.startswith("//") or bool(re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", stripped))


def resolve_location(request_url: str, location: str, *, redact: bool = True) -> str | None:
    """Resolve a Location against the request URL (RFC 9110 §10.2.2), normalized.

    Returns None when the value cannot be parsed as a URI reference. With
    ``redact=False`` the query is left for the caller's ``redaction.Redactor``.
    """
    if location.startswith("/") and not location.startswith("//"):
        # Path-absolute reference (the common case): only the origin is borrowed.
        scheme, sep, rest = request_url.partition("://")
        host = rest.split("/", 1)[0]
        path, _, query = location.partition("#")[0].partition("?")
        canonical = _CANONICAL_PATH.fullmatch(path) and "/." not in path  # urljoin drops ./..
        if sep and canonical and _canonical_origin(scheme, host):
            query = redact_query(query) if redact else query
            if not query:
                return f"{scheme}://{host}{path}"
            if _CANONICAL_QUERY.fullmatch(query):
                return f"{scheme}://{host}{path}?{query}"
    try:
        resolved = _join(request_url, location.strip())
        parts = urlsplit(resolved)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme in ("http", "https"):
        query = redact_query(parts.query) if redact else parts.query
        resolved = urlunsplit(parts._replace(query=query))
        return normalize_url(resolved)
    return resolved


def _join(request_url: str, location: str) -> str:
    """``urljoin``, except that an absolute Location needs no base: a request URL that
    cannot be parsed (a hostile Host header) must not make a valid Location unusable."""
    try:
        return urljoin(request_url, location)
    except ValueError:
        if urlsplit(location).scheme:  # absolute: RFC 3986 §5.2.2 ignores the base
            return location
        raise


# Parts already in the form normalize_url produces: no escapes to fix, nothing to quote,
# a lower-case host without a default port. Most traffic is like this, and the writer
# thread (which competes with the event loop for the GIL) then skips urllib entirely.
_CANONICAL_PATH = re.compile(r"/[A-Za-z0-9/:@!$&'()*+,;=._~-]*")
_CANONICAL_QUERY = re.compile(r"[A-Za-z0-9/?:@!$&'()*+,;=._~-]*")
_CANONICAL_HOST = re.compile(r"[a-z0-9.-]+(:[1-9][0-9]{0,4})?")
_DEFAULT_PORT_SUFFIX = {"http": ":80", "https": ":443"}


def _canonical_origin(scheme: str, host: str) -> bool:
    suffix = _DEFAULT_PORT_SUFFIX.get(scheme)
    return (
        suffix is not None
        and _CANONICAL_HOST.fullmatch(host) is not None
        and not host.endswith(suffix)
    )


def build_url(scheme: str, host: str, raw_path: str, query: str) -> str:
    """Assemble and normalize an absolute URL from request parts."""
    if (
        _canonical_origin(scheme, host)
        and _CANONICAL_PATH.fullmatch(raw_path)
        and (not query or _CANONICAL_QUERY.fullmatch(query))
    ):
        return f"{scheme}://{host}{raw_path}?{query}" if query else f"{scheme}://{host}{raw_path}"
    url = f"{scheme}://{host}{raw_path or '/'}"
    if query:
        url = f"{url}?{query}"
    return normalize_url(url)


def path_and_query(url: str) -> str:
    """The origin-form part of an absolute URL: ``/path?query``."""
    parts = urlsplit(url)
    return f"{parts.path or '/'}?{parts.query}" if parts.query else (parts.path or "/")


def first_value(value: str) -> str:
    """The first element of a comma-separated header value."""
    return value.split(",", 1)[0].strip()


def parse_forwarded(value: str) -> dict[str, str]:
    """The first element of an RFC 7239 ``Forwarded`` header as a dict."""
    result: dict[str, str] = {}
    for pair in first_value(value).split(";"):
        name, _, val = pair.partition("=")
        if val:
            result[name.strip().lower()] = val.strip().strip('"')
    return result


class TrustedProxies:
    """Which peers may set the request's effective scheme, host and client."""

    def __init__(self, proxies: str | Iterable[str]) -> None:
        items = [proxies] if isinstance(proxies, str) else list(proxies)
        self.any = "*" in items
        self.networks = [ipaddress.ip_network(p, strict=False) for p in items if p != "*"]

    def __contains__(self, address: str | None) -> bool:
        if self.any:
            return True
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


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
