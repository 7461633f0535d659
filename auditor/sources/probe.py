"""Follow a redirect chain hop by hop the way a chosen client would.

``next_request`` answers one question from one table (measured, see
client-behaviour.md): after ``status``, what does ``client`` send next for a
``method`` request with ``body``? ``probe`` sends each hop with httpx
(``follow_redirects=False``) and replays the next one by that answer, so one
call shows that a browser's POST to ``/v1/orders`` arrives as a GET.

Hops can be recorded into a traffic database as rows built like the
recorder's (``HopRecorder``), or, for an in-process ASGI app, by the real
``RedirectRecorder`` around it. ``sweep_targets`` lists every route of a
Starlette/FastAPI app so all its redirects can be audited with no traffic.
"""

from __future__ import annotations

import enum
import inspect
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import httpx

from auditor.record.rows import Capture, RowBuilder
from auditor.record.writer import load_secret
from auditor.redirects import FOLLOWED_STATUSES, is_redirect, next_hop
from auditor.store.journal import unpack
from auditor.store.requests import INSERT_SQL
from auditor.store.schema import (
    SchemaError,
    check_traffic_db,
    connect,
    create_private_file,
    ensure_schema,
)
from auditor.urls import TrustedProxies

Action = Literal["keep", "get", "drop-body"]
KEEP: Action = "keep"  # same method, body resent
GET: Action = "get"  # GET without the body
DROP_BODY: Action = "drop-body"  # same method, body dropped

# The clients probe replays, each the client family redirects.next_hop knows.
FAMILIES = {
    "browser": "Chromium",
    "node": "Node fetch",
    "aiohttp": "aiohttp",
    "httpx": "httpx",
    "requests": "requests",
    "curl": "curl",
    "urllib": "urllib",
}
CLIENTS = tuple(FAMILIES)
# Sent unless the caller sets User-Agent: findings then name the client being replayed
# (versions are the ones client-behaviour.md measured).
USER_AGENTS = {
    "browser": "Mozilla/5.0 (redirect-auditor probe) Chromium/156.0",
    "node": "node (redirect-auditor probe)",
    "aiohttp": "Python/3.11 aiohttp/3.14.5 (redirect-auditor probe)",
    "httpx": "python-httpx/0.28.1 (redirect-auditor probe)",
    "requests": "python-requests/2.34.2 (redirect-auditor probe)",
    "curl": "curl/7.88.1 (redirect-auditor probe)",
    "urllib": "Python-urllib/3.11 (redirect-auditor probe)",
}
# Clients that still send the old Content-Type on a follow-up without a body.
KEEPS_CONTENT_TYPE = frozenset({"httpx", "curl"})
# Clients that forward Authorization (and Cookie) to another host.
FORWARDS_CREDENTIALS = frozenset({"urllib"})
DROPS_COOKIE_CROSS_HOST = frozenset({"curl", "aiohttp"})


@dataclass(frozen=True)
class NextRequest:
    """The follow-up a client sends after a redirect."""

    method: str
    body: bytes | None
    action: Action


def next_request(client: str, method: str, status: int, body: bytes | None) -> NextRequest | None:
    """What ``client`` sends after answering ``method`` with ``status``; None: not followed."""
    method = method.upper()
    hop = next_hop(FAMILIES[client], method, status)
    if hop.method is None:
        return None
    if hop.method != method:
        return NextRequest(hop.method, None, GET)
    if hop.body or method in ("GET", "HEAD"):
        return NextRequest(method, body, KEEP)
    return NextRequest(method, None, DROP_BODY)


def describe(client: str, method: str, status: int, follow: NextRequest | None) -> str:
    """One line: what the client did with this redirect."""
    if follow is None:
        return f"{client} does not follow a {status} {method}"
    if follow.action == GET and method.upper() != "GET":
        return f"{client} turns {method} into GET on {status}, body dropped"
    if follow.action == DROP_BODY:
        return f"{client} keeps {method} on {status} but drops the body"
    return f"{client} repeats {follow.method} on {status}" + (
        ", body resent" if follow.body else ""
    )


@dataclass
class Hop:
    """One request of the chain and its response."""

    method: str
    url: str
    status: int | None
    location: str | None = None
    body_size: int = 0
    note: str = ""  # how the client treated this hop's redirect
    error: str | None = None


@dataclass
class ProbeResult:
    hops: list[Hop] = field(default_factory=list)
    outcome: str = "completed"  # completed | not followed | loop | too many hops | ...


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _follow_headers(
    client: str, headers: httpx.Headers, follow: NextRequest, old: httpx.URL, new: httpx.URL
) -> httpx.Headers:
    headers = headers.copy()
    if follow.body is None:
        headers.pop("content-length", None)
        headers.pop("transfer-encoding", None)
        if client not in KEEPS_CONTENT_TYPE:
            headers.pop("content-type", None)
    if _origin(old) != _origin(new) and client not in FORWARDS_CREDENTIALS:
        headers.pop("authorization", None)
        if client in DROPS_COOKIE_CROSS_HOST:
            headers.pop("cookie", None)
    if old.host != new.host:
        headers.pop("host", None)
    return headers


HopCallback = Callable[[Hop, httpx.Request, httpx.Response | None, float, float], None]


async def probe(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Iterable[tuple[str, str]] = (),
    client: str = "browser",
    max_hops: int = 10,
    transport: httpx.AsyncBaseTransport | None = None,
    same_host_only: bool = False,
    timeout: float = 10.0,
    on_hop: HopCallback | None = None,
) -> ProbeResult:
    """Send ``method url`` and follow its redirects as ``client`` would, one hop at a time.

    ``same_host_only`` stops at a Location on another host (an in-process app
    cannot answer for it). ``on_hop`` sees each exchange (for recording).
    """
    if client not in FAMILIES:
        raise ValueError(f"unknown client {client!r}; one of {', '.join(CLIENTS)}")
    if not timeout > 0:  # httpx takes 0 as "fail at once" and None as "wait forever"
        raise ValueError(f"timeout must be more than 0 seconds, not {timeout!r}")
    if max_hops < 0:
        raise ValueError(f"max_hops must be 0 or more, not {max_hops!r}")
    result = ProbeResult()
    seen: set[tuple[str, str]] = set()
    request_headers = httpx.Headers(list(headers))
    request_headers.setdefault("user-agent", USER_AGENTS[client])
    method = method.upper()
    current = httpx.URL(url)
    async with httpx.AsyncClient(
        transport=transport, follow_redirects=False, timeout=timeout
    ) as http:
        while True:
            seen.add((method, str(current)))
            request = http.build_request(method, current, content=body, headers=request_headers)
            hop = Hop(method, str(current), None, body_size=len(body or b""))
            result.hops.append(hop)
            started = time.time()
            try:
                response = await http.send(request)
                await response.aread()
            except httpx.HTTPError as exc:
                hop.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if on_hop:
                    on_hop(hop, request, None, started, time.time())
                result.outcome = "error"
                return result
            hop.status = response.status_code
            hop.location = response.headers.get("location")
            if on_hop:
                on_hop(hop, request, response, started, time.time())
            if hop.location is None or hop.status not in FOLLOWED_STATUSES:
                if is_redirect(hop.status):
                    result.outcome = "redirect without Location"
                return result
            follow = next_request(client, method, hop.status, body)
            hop.note = describe(client, method, hop.status, follow)
            if follow is None:
                result.outcome = "not followed"
                return result
            try:
                target = current.join(hop.location)
            except httpx.InvalidURL as exc:
                result.outcome = f"unusable Location ({exc})"
                return result
            if target.scheme not in ("http", "https"):
                result.outcome = f"Location is not http(s): {hop.location}"
                return result
            if same_host_only and target.host != current.host:
                result.outcome = f"leaves the app for {target.host}"
                return result
            target = target.copy_with(fragment=None)
            if (follow.method, str(target)) in seen:
                result.outcome = "loop"
                return result
            if len(result.hops) > max_hops:
                result.outcome = f"stopped after {max_hops} redirects"
                return result
            request_headers = _follow_headers(client, request_headers, follow, current, target)
            method, body, current = follow.method, follow.body, target


# --- recording hops of a live server, rows built like the recorder's ----------------------


class HopRecorder:
    """Builds ``requests`` rows for a live server's hops, as if the recorder were in front.

    All hops of one recorder are one client on one connection (a per-probe
    identity), so the audit links them like a real client's chain.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self.rows: list[tuple[Any, ...]] = []
        self._identity = f"probe:{uuid.uuid4().hex}"
        self._builder: RowBuilder | None = None

    def check(self) -> None:
        """Fail early (SchemaError) for a file that is not a traffic database."""
        if self.db_path.exists():
            check_traffic_db(self.db_path)
        elif not self.db_path.absolute().parent.is_dir():
            raise SchemaError(
                f"{self.db_path}: directory {self.db_path.absolute().parent} does not exist"
            )

    def __call__(
        self,
        hop: Hop,
        request: httpx.Request,
        response: httpx.Response | None,
        started: float,
        ended: float,
    ) -> None:
        if response is None:  # the recorder never sees a request that got no answer
            return
        if self._builder is None:
            worker = f"probe:{socket.gethostname()}:{os.getpid()}"
            secret = load_secret(self.db_path)
            self._builder = RowBuilder(secret, worker, TrustedProxies(()), store_client_ip=False)
        url = request.url
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": unquote(url.path),
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "headers": list(request.headers.raw),
            "client": (self._identity, 0),
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
        }
        exchange = Capture(
            scope=scope,
            started_at=started,
            ended_at=ended,
            status=response.status_code,
            headers=list(response.headers.raw),
            body_size=len(response.content),
            complete=True,
        )
        self.rows.append(self._builder.build(exchange))

    def save(self) -> int:
        """Insert every hop in one transaction; returns the number of rows."""
        if not self.rows:
            return 0
        create_private_file(self.db_path)
        conn = connect(self.db_path)
        try:
            ensure_schema(conn)
            unpack(conn)  # a live recording's batches first: ids stay in recording order
            with conn:
                conn.executemany(INSERT_SQL, self.rows)
        finally:
            conn.close()
        saved, self.rows = len(self.rows), []
        return saved


# --- sweeping a Starlette/FastAPI app's routes ---------------------------------------------

_PLACEHOLDERS = {
    "IntegerConvertor": 1,
    "FloatConvertor": 1.0,
    "UUIDConvertor": uuid.UUID(int=1),
    "PathConvertor": "x",
    "StringConvertor": "x",
}
SWEEP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


_BY_NAME: dict[str, Any] = {"int": 1, "float": 1.0, "bool": "true", "UUID": uuid.UUID(int=1)}


def _annotated_placeholder(endpoint: Any, name: str) -> Any:
    """FastAPI declares path parameter types on the endpoint: 1 for int, a UUID for UUID..."""
    try:
        try:
            signature = inspect.signature(endpoint, eval_str=True)
        except Exception:  # an annotation that cannot be evaluated here
            signature = inspect.signature(endpoint)
        annotation = signature.parameters[name].annotation
    except (KeyError, TypeError, ValueError):
        return "x"
    if isinstance(annotation, str):  # postponed annotations: go by the type's name
        return _BY_NAME.get(annotation.rsplit(".", 1)[-1], "x")
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return next(iter(annotation)).value if len(annotation) else "x"
        for kind, value in ((bool, "true"), (int, 1), (float, 1.0), (uuid.UUID, uuid.UUID(int=1))):
            if issubclass(annotation, kind):
                return value
    return "x"


def _fill(path_format: str, convertors: dict[str, Any], endpoint: Any = None) -> str:
    for name, convertor in convertors.items():
        kind = type(convertor).__name__
        if kind == "StringConvertor" and endpoint is not None:
            value = _annotated_placeholder(endpoint, name)
        else:
            value = _PLACEHOLDERS.get(kind, "x")
        try:
            text = convertor.to_string(value) if kind != "StringConvertor" else str(value)
        except Exception:
            text = "x"
        path_format = path_format.replace("{" + name + "}", text)
    return path_format


def _methods(route: Any) -> list[str]:
    methods = getattr(route, "methods", None)
    if not methods:  # an endpoint class: the methods it defines
        endpoint = getattr(route, "endpoint", None)
        methods = {m for m in SWEEP_METHODS if hasattr(endpoint, m.lower())} or {"GET"}
    return [m for m in SWEEP_METHODS if m in methods]


def _walk(routes: Iterable[Any], prefix: str) -> Iterator[tuple[str, str]]:
    for route in routes:
        path_format = getattr(route, "path_format", None)
        convertors = getattr(route, "param_convertors", {}) or {}
        included = getattr(route, "original_router", None)
        if included is not None and hasattr(route, "include_context"):
            # FastAPI >= 0.16x keeps include_router() routers as one lazy route.
            include_prefix = getattr(route.include_context, "prefix", "") or ""
            yield from _walk(getattr(included, "routes", []), prefix + include_prefix)
        elif hasattr(route, "routes") and path_format is not None and hasattr(route, "app"):
            # Mount: recurse with the mount's prefix (a Host route has no path_format).
            sub = getattr(route, "routes", None)
            base = prefix + _fill(getattr(route, "path", ""), convertors)
            if sub:
                yield from _walk(sub, base)
            else:
                yield ("GET", base + "/")
        elif path_format is not None and (hasattr(route, "methods") or hasattr(route, "endpoint")):
            if type(route).__name__.startswith("WebSocket"):
                continue
            path = prefix + _fill(path_format, convertors, getattr(route, "endpoint", None))
            for method in _methods(route):
                yield (method, path or "/")


def find_routes(app: Any) -> list[Any] | None:
    """The route list of a Starlette/FastAPI app, looking through middleware wrappers."""
    seen = 0
    while app is not None and seen < 50:
        routes = getattr(app, "routes", None)
        if isinstance(routes, list):
            return routes
        app = getattr(app, "app", None)
        seen += 1
    return None


def sweep_targets(app: Any) -> list[tuple[str, str]]:
    """(method, path) for every HTTP route and method of the app, params filled in."""
    routes = find_routes(app)
    if routes is None:
        raise ValueError("--sweep needs a Starlette or FastAPI app (an object with .routes)")
    targets: list[tuple[str, str]] = []
    for target in _walk(routes, ""):
        if target not in targets:
            targets.append(target)
    return targets
