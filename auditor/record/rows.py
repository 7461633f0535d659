"""Turn a captured exchange into a ``requests`` row, a batch of them at a time (``writer.py``).

Everything slow the hot path skipped happens here: header decoding, effective
scheme/host behind trusted proxies, Location resolution, redaction, keyed
client hashes and the route template.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Protocol
from urllib.parse import quote, unquote

from starlette.routing import Mount

from auditor.record import native
from auditor.redaction import DEFAULT as DEFAULT_REDACTOR
from auditor.redaction import MARKER_FORMAT, RedactionRules, Redactor, redacted_path
from auditor.store.requests import full_row
from auditor.urls import TrustedProxies, build_url, first_value, parse_forwarded, resolve_location

MAX_VALUE_CHARS = 8192  # longer header values are cut; the row is still written
MAX_CACHE_ENTRIES = 65536
MAX_LOCATION_ENTRIES = 16384

# Request headers the row needs, each to a slot; the first occurrence wins.
(
    _HOST,
    _USER_AGENT,
    _CONTENT_LENGTH,
    _TRANSFER_ENCODING,
    _CONTENT_TYPE,
    _X_PROTO,
    _X_HOST,
    _X_FOR,
    _FORWARDED,
    _REQUEST_ID,
    _AUTHORIZATION,
    _COOKIE,
) = range(12)
_N_REQUEST_FIELDS = 12
_REQUEST_HEADER_INDEX = {
    b"host": _HOST,
    b"user-agent": _USER_AGENT,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"content-type": _CONTENT_TYPE,
    b"x-forwarded-proto": _X_PROTO,
    b"x-forwarded-host": _X_HOST,
    b"x-forwarded-for": _X_FOR,
    b"forwarded": _FORWARDED,
    b"x-request-id": _REQUEST_ID,
    b"x-correlation-id": _REQUEST_ID,
    b"request-id": _REQUEST_ID,
    b"authorization": _AUTHORIZATION,
    b"cookie": _COOKIE,
}


class CapturedExchange(Protocol):
    """What the middleware hands to the writer (see ``middleware.Exchange``)."""

    scope: Any
    started_at: float
    ended_at: float
    status: int
    headers: list[tuple[bytes, bytes]] | None
    body_size: int
    complete: bool
    error: BaseException | None


@dataclass
class Capture:
    """A ``CapturedExchange`` made outside the middleware (probe hops, tests)."""

    scope: Any
    started_at: float
    ended_at: float
    status: int
    headers: list[tuple[bytes, bytes]] | None
    body_size: int
    complete: bool
    error: BaseException | None = None


def _text(value: bytes, limit: int = MAX_VALUE_CHARS) -> str:
    # latin-1 maps every byte, so hostile bytes never fail to decode.
    text = value.decode("latin-1")
    return text if len(text) <= limit else text[:limit] + f"…[{len(text) - limit} more]"


def route_template(scope: Any) -> str | None:
    """The matched route's path template (Starlette/FastAPI, Litestar), with any Mount prefix.

    Mount prefixes are turned back into templates (``/users/{uid}``, not ``/users/42``)
    so one route groups all its requests; a Mount over a plain ASGI app (static files)
    reads ``/static/{path:path}``. Litestar's ``scope["path_template"]`` is taken as
    Litestar gives it: the full path with parameters named, types dropped
    (``/users/{user_id}/profile-old`` for ``/users/{user_id:int}/profile-old``).
    """
    found = route_reference(scope)
    return mounted_template(*found) if isinstance(found, tuple) else found


def route_reference(scope: Any) -> str | tuple[Any, ...] | None:
    """``route_template``'s answer where it is cheap (the request is not under a
    Mount), else the references ``mounted_template`` needs to work it out: the event
    loop calls this, the writer finishes it (``RowBuilder.build_row``)."""
    route = scope.get("route")
    template = getattr(route, "path", None) if route is not None else None
    if not isinstance(template, str):
        litestar = scope.get("path_template")
        return litestar if isinstance(litestar, str) and litestar else None
    root_path = scope.get("root_path", "")
    if not root_path:
        return template  # not under a Mount (most requests): nothing to join
    return (route, template, root_path, scope.get("app_root_path", root_path), scope.get("router"))


def mounted_template(route: Any, template: str, root_path: str, app_root: str, router: Any) -> str:
    """The template of a route reached through Mounts (``route_template``)."""
    prefix = root_path[len(app_root) :] if root_path.startswith(app_root) else ""
    is_mount = isinstance(route, Mount)
    if prefix:
        mounts = _mount_templates(router, prefix)
        if mounts is not None:
            return mounts + ("/{path:path}" if is_mount else template)
        # Unknown router layout: the concrete prefix, without repeating the mount's path.
        return prefix + "/{path:path}" if is_mount else prefix + template
    return template


def _mount_templates(router: Any, prefix: str) -> str | None:
    """Walk the Mounts a request went through (concrete ``prefix``) and join their paths."""
    routes = getattr(router, "routes", None)
    remaining = prefix + "/"
    templates: list[str] = []
    for _ in range(16):  # mounts nest a few levels at most
        if remaining in ("", "/"):
            return "".join(templates)
        for candidate in routes or ():
            if isinstance(candidate, Mount):
                match = candidate.path_regex.match(remaining)
                if match:
                    templates.append(candidate.path)
                    remaining = "/" + match.group("path")
                    routes = candidate.routes
                    break
        else:
            return None
    return None


SCOPE_KEYS = (
    "method",
    "scheme",
    "server",
    "client",
    "path",
    "raw_path",
    "query_string",
    "headers",
    "http_version",
)
_NO_SCOPE_VALUES = dict.fromkeys(SCOPE_KEYS)


def to_portable_python(exchange: CapturedExchange) -> tuple[Any, ...]:
    """The capture as the flat tuple rows are built from (``Writer.submit`` queues it);
    ``to_portable`` is this, or its C fast path (``_capture_c.c``) in front of it.

    Every capture goes through it, so ``RowBuilder`` has one input (probe hops, HAR
    import and tests build from it too). The route template is read here, where the
    scope's route is; under a Mount, its references travel and the writer finishes it
    (``route_reference``): joining mount templates is no work for the event loop.
    """
    scope = exchange.scope
    error = exchange.error
    headers = exchange.headers
    # One tuple, the only object the queue adds per request: written out, it is one
    # allocation (a server's allocations cost several times their in-process time).
    try:
        return (
            scope["method"],
            scope["scheme"],
            scope["server"],
            scope["client"],
            scope["path"],
            scope["raw_path"],
            scope["query_string"],
            scope["headers"],
            scope["http_version"],
            route_reference(scope),
            exchange.started_at,
            exchange.ended_at,
            exchange.status,
            headers if headers is None or type(headers) is list else list(headers),
            exchange.body_size,
            exchange.complete,
            type(error).__name__ if error is not None else None,
        )
    except KeyError:  # a server that leaves optional keys out: they read as None
        filled = {**_NO_SCOPE_VALUES, **scope}
        return to_portable_python(
            Capture(
                filled,
                exchange.started_at,
                exchange.ended_at,
                exchange.status,
                headers,
                exchange.body_size,
                exchange.complete,
                error,
            )
        )


_capture_c = native.capture_c()
if _capture_c is not None:
    _capture_c.configure(to_portable_python, route_reference)
to_portable: Callable[[CapturedExchange], tuple[Any, ...]] = (
    to_portable_python if _capture_c is None else _capture_c.to_portable
)


class RowBuilder:
    """Builds ``requests`` rows for one writer: its secret, worker id and options."""

    def __init__(
        self,
        secret: bytes,
        worker_id: str,
        trusted: TrustedProxies,
        store_client_ip: bool,
        redaction: RedactionRules | None = None,
    ) -> None:
        self.secret = secret
        self.worker_id = worker_id
        self.trusted = trusted
        self.store_client_ip = store_client_ip
        self._keys: dict[str, str] = {}
        # Per (address, port) tuple: the connection's keyed hash; per server tuple: its
        # "host:port" (no string formatting per row for what repeats).
        self._connections: dict[tuple[str, int], str] = {}
        self._servers: dict[tuple[Any, ...], str | None] = {}
        self._urls: dict[tuple[Any, ...], tuple[str, str, str, str]] = {}
        # Per (request URL, Location): the redacted Location and its redacted resolution.
        # Redirect targets repeat (/old -> /new) and resolving one costs ~4 us.
        self._locations: dict[tuple[str, str], tuple[str, str | None]] = {}
        # Secrets in URLs become markers keyed like the client hash (auditor.redaction).
        self.redactor = Redactor(self.redaction_marker, redaction)
        # ``build_row``: the C fast path where it was built, over these same caches; it
        # hands whatever is not a plain cache hit (and everything behind trusted proxies)
        # to ``build_row_python``, so the rows are the same either way.
        self.fast_rows: Any = None  # _rows_c.FastRows
        self.build_row: Callable[[tuple[Any, ...]], tuple[Any, ...]] = self.build_row_python
        rows_c = native.rows_c()
        if rows_c is not None and not (trusted.any or trusted.networks):
            self.fast_rows = rows_c.FastRows(
                _REQUEST_HEADER_INDEX,
                self._urls,
                self._locations,
                self._connections,
                self._servers,
                self._keys,
                worker_id,
                store_client_ip,
                self.build_row_python,
            )
            self.build_row = self.fast_rows.build

    def keyed_hash(self, value: str) -> str:
        """A short keyed hash: stable for one secret, irreversible without it."""
        cached = self._keys.get(value)
        if cached is None:
            if len(self._keys) >= MAX_CACHE_ENTRIES:
                self._keys.clear()
            digest = blake2b(value.encode("utf-8", "surrogatepass"), key=self.secret, digest_size=8)
            cached = self._keys[value] = digest.hexdigest()
        return cached

    def _connection_key(self, client: Any) -> str:
        key = self.keyed_hash(f"{client[0]}:{client[1]}")
        if type(client) is tuple and type(client[1]) is int:
            if len(self._connections) >= MAX_CACHE_ENTRIES:
                self._connections.clear()
            self._connections[client] = key
        return key

    def _server_addr(self, server: Any) -> str | None:
        addr: str | None = f"{server[0]}:{server[1]}" if server[1] else server[0]
        if type(server) is tuple and type(server[1]) is int:
            if len(self._servers) >= 64:
                self._servers.clear()
            self._servers[server] = addr
        return addr

    def redaction_marker(self, secret: str) -> str:
        """The marker a secret in a URL is replaced by: the same for the same secret."""
        return MARKER_FORMAT.format(self.keyed_hash("redact:" + secret)[:12])

    def _derive_url(
        self, scheme: str, host: str, path: str | None, raw_path: bytes | None, query_string: bytes
    ) -> tuple[str, str, str, str]:
        """Path, redacted query, URL as sent and redacted URL of a request."""
        if raw_path:
            raw = _text(raw_path)
            # The path as the client sent it: an app may rewrite scope["path"] (Litestar
            # strips a trailing slash) before this runs.
            path = unquote(raw) if "%" in raw else raw
        else:
            path = path or "/"
            raw = quote(path, safe="/:@!$&'()*+,;=-._~%", errors="surrogatepass")
        # Redacted after normalization, the Location after resolution: a redirect's
        # location_url and its follow-up's url redact alike and still link.
        redactor = self.redactor
        sent_query = _text(query_string) if query_string else ""
        query = redactor.query(sent_query)
        sent_url = build_url(scheme, host, raw, sent_query)
        url = redactor.url(sent_url)
        if url is not sent_url:
            path = redacted_path(sent_url, url, path)
        return path, query, sent_url, url

    def build(self, exchange: CapturedExchange) -> tuple[Any, ...]:
        """One row from a capture of this process (the thread writer, probe hops, tests)."""
        return self.build_portable(to_portable(exchange))

    def build_portable(self, item: tuple[Any, ...]) -> tuple[Any, ...]:
        """One row, values in ``ROW_COLUMNS`` order, from ``to_portable``'s tuple."""
        return full_row(self.build_row(item))

    def build_row_python(self, item: tuple[Any, ...]) -> tuple[Any, ...]:
        """``build_portable``'s row, or, when its ``SHORT_OMITS`` columns are all NULL,
        only its ``SHORT_COLUMNS`` values (told apart by length): what the writer stores.
        ``build_row`` is this, or the C fast path in front of it (``_rows_c.c``), which
        must stay in step with it.

        Runs for every request (on the event loop or the writer thread), so the
        common case avoids dicts, urllib and repeated decoding.
        """
        (
            method,
            server_scheme,
            server,
            client,
            path,
            raw_path,
            query_string,
            headers,
            version,
            route,
            started_at,
            ended_at,
            status,
            response_headers,
            response_body_size,
            complete,
            error,
        ) = item
        if type(route) is tuple:  # under a Mount: ``route_reference``'s references
            route = mounted_template(*route)
        # Values are decoded as found; credentials never are (only whether they were sent).
        req: list[str | None] = [None] * _N_REQUEST_FIELDS
        index_of = _REQUEST_HEADER_INDEX.get
        has_authorization = has_cookie = 0
        for name, value in headers or ():
            index = index_of(name)
            if index is None:
                if name.islower():
                    continue
                index = index_of(name.lower())
                if index is None:
                    continue
            if index >= _AUTHORIZATION:
                if index == _AUTHORIZATION:
                    has_authorization = 1
                else:
                    has_cookie = 1
            elif req[index] is None:
                req[index] = (
                    value.decode("latin-1") if len(value) <= MAX_VALUE_CHARS else _text(value)
                )

        status = status or 500
        redirect = 300 <= status < 400
        locations: list[str] = []
        cache_control = expires = None
        for name, value in response_headers or ():
            lname = name if name.islower() else name.lower()
            if lname == b"location":
                locations.append(_text(value))
            elif redirect and lname == b"cache-control":
                cache_control = _text(value)
            elif redirect and lname == b"expires":
                expires = _text(value)

        client = client or (None, None)
        client_ip = client[0]
        server = server or (None, None)
        server_scheme = server_scheme or "http"
        server_host = req[_HOST] or (
            f"{server[0]}:{server[1]}" if server[0] and server[1] else (server[0] or "")
        )
        scheme, host = server_scheme, server_host
        x_forwarded_for = req[_X_FOR]
        forwarded_for = first_value(x_forwarded_for) if x_forwarded_for else None
        if (self.trusted.any or self.trusted.networks) and client_ip in self.trusted:
            forwarded_header = req[_FORWARDED]
            forwarded = parse_forwarded(forwarded_header) if forwarded_header else {}
            scheme = first_value(req[_X_PROTO] or "") or forwarded.get("proto") or scheme
            host = first_value(req[_X_HOST] or "") or forwarded.get("host") or host
            client_ip = first_value(req[_X_FOR] or "") or forwarded.get("for") or client_ip
        scheme = scheme.lower()
        host = host.lower()

        # Most requests repeat a URL seen before: its derived columns come from a cache.
        redactor = self.redactor
        key = (scheme, host, raw_path or path, query_string, route)
        derived = self._urls.get(key)
        if derived is None:
            if route is not None and not redactor.knows(route):
                redactor.learn(route)
                self._urls.clear()  # a newly learned token route may redact cached URLs
                self._locations.clear()
            derived = self._derive_url(scheme, host, path, raw_path, query_string)
            if len(self._urls) >= MAX_CACHE_ENTRIES:
                self._urls.clear()
            self._urls[key] = derived
        path, query, sent_url, url = derived

        location = location_url = locations_json = None
        if locations:
            location_key = (sent_url, locations[0])
            found = self._locations.get(location_key)
            if found is None:
                resolved = resolve_location(sent_url, locations[0], redact=False)
                found = (
                    redactor.reference(locations[0]),
                    None if resolved is None else redactor.url(resolved),
                )
                if len(self._locations) >= MAX_LOCATION_ENTRIES:
                    self._locations.clear()
                self._locations[location_key] = found
            location, location_url = found
            if len(locations) > 1:
                locations_json = json.dumps([redactor.reference(v) for v in locations])

        content_length = req[_CONTENT_LENGTH]
        body_size = (
            int(content_length)
            if content_length and content_length.isascii() and content_length.isdigit()
            else None
        )
        connection_key = server_addr = None
        if type(client) is tuple:
            connection_key = self._connections.get(client)
        if connection_key is None and client[0]:
            connection_key = self._connection_key(client)
        if type(server) is tuple:
            server_addr = self._servers.get(server)
        if server_addr is None:
            server_addr = self._server_addr(server)
        transfer_encoding = req[_TRANSFER_ENCODING]
        chunked = 1 if transfer_encoding and "chunked" in transfer_encoding.lower() else 0
        if (
            locations_json is None
            and body_size is None
            and cache_control is None
            and expires is None
            and forwarded_for is None
            and error is None
            and req[_CONTENT_TYPE] is None
            and req[_X_PROTO] is None
            and req[_X_HOST] is None
            and req[_FORWARDED] is None
            and req[_REQUEST_ID] is None
            and (client_ip is None or not self.store_client_ip)
        ):
            # Keep this tuple in SHORT_COLUMNS order (a test checks every column by name).
            return (
                started_at,
                round((ended_at - started_at) * 1e6) / 1000,  # ms; round(x, 3) costs 2x
                method or "",
                scheme,
                host,
                path,
                query,
                url,
                route,
                status,
                location,
                location_url,
                chunked,
                response_body_size,
                1 if complete else 0,
                server_scheme,
                server_host,
                server_addr,
                self.keyed_hash(client_ip) if client_ip else None,
                connection_key,
                req[_USER_AGENT],
                version,
                self.worker_id,
                has_authorization,
                has_cookie,
            )
        return (
            started_at,
            round((ended_at - started_at) * 1e6) / 1000,
            method or "",
            scheme,
            host,
            path,
            query,
            url,
            route,
            status,
            location,
            location_url,
            locations_json,
            body_size,
            chunked,
            req[_CONTENT_TYPE],
            response_body_size,
            1 if complete else 0,
            cache_control,
            expires,
            req[_X_PROTO],
            req[_X_HOST],
            req[_FORWARDED],
            server_scheme,
            server_host,
            server_addr,
            self.keyed_hash(client_ip) if client_ip else None,
            connection_key,
            client_ip if self.store_client_ip else None,
            req[_USER_AGENT],
            req[_REQUEST_ID],
            version,
            error,
            self.worker_id,
            has_authorization,
            has_cookie,
            self.keyed_hash(forwarded_for) if forwarded_for else None,
        )


def redact_location(location: str) -> str:
    """A raw Location with any userinfo and the values of secret-looking query
    parameters redacted (``http://REDACTED@host/?token=REDACTED``), by name only;
    ``RowBuilder.redactor`` also redacts by shape and route."""
    return DEFAULT_REDACTOR.reference(location)
