"""URL normalization, Location resolution and query redaction.

One place answers "are these two URLs the same request target?" for the
writer (which stores normalized URLs) and for hop linking (which joins on them).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
REDACTED = "REDACTED"

# Parameter names whose values are credentials or one-time secrets.
_SECRET_NAME = re.compile(
    r"pass|secret|token|auth|sig|session|credential|jwt|otp|apikey|api[_-]key|private"
    r"|^(key|code|sid|ticket|hash|salt|nonce)$|[_-](key|code|sid)$",
    re.IGNORECASE,
)
# Cheap pre-check: a query with none of these substrings needs no parsing.
_SECRET_HINT = re.compile(
    r"pass|secret|token|auth|sig|session|credential|jwt|otp|key|code|sid|ticket|hash|salt"
    r"|nonce|private",
    re.IGNORECASE,
)
# Characters RFC 3986 calls unreserved are equivalent percent-encoded or not.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def is_secret_name(name: str) -> bool:
    """True when a query parameter name looks like it carries a secret."""
    return bool(_SECRET_NAME.search(unquote(name)))


def redact_query(query: str) -> str:
    """Replace the values of secret-looking parameters with ``REDACTED``.

    Keeps parameter order and the raw encoding of everything else, so a
    redacted Location still equals the redacted URL its follow-up requests.
    """
    if not query or not _SECRET_HINT.search(query):
        return query
    parts = []
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        if sep and value and is_secret_name(name):
            pair = f"{name}={REDACTED}"
        parts.append(pair)
    return "&".join(parts)


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


def resolve_location(request_url: str, location: str) -> str | None:
    """Resolve a Location against the request URL (RFC 9110 §10.2.2), normalized.

    Returns None when the value cannot be parsed as a URI reference.
    """
    if location.startswith("/") and not location.startswith("//"):
        # Path-absolute reference (the common case): only the origin is borrowed.
        scheme, sep, rest = request_url.partition("://")
        host = rest.split("/", 1)[0]
        path, _, query = location.partition("#")[0].partition("?")
        canonical = _CANONICAL_PATH.fullmatch(path) and "/." not in path  # urljoin drops ./..
        if sep and canonical and _canonical_origin(scheme, host):
            query = redact_query(query)
            if not query:
                return f"{scheme}://{host}{path}"
            if _CANONICAL_QUERY.fullmatch(query):
                return f"{scheme}://{host}{path}?{query}"
    try:
        resolved = urljoin(request_url, location.strip())
        parts = urlsplit(resolved)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme in ("http", "https"):
        query = redact_query(parts.query)
        resolved = urlunsplit(parts._replace(query=query))
        return normalize_url(resolved)
    return resolved


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
