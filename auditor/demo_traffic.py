"""The demo's traffic: which clients send which requests to ``demo_app``.

Five clients, each on its own loopback address so the recorder sees five
different client keys (as it would for five users):

- ``browser``: follows redirects like Chromium (POST -> GET on 301/302, every
  other method kept with its body; anything -> GET on 303).
- ``httpx``: real httpx with ``follow_redirects=True`` (POST -> GET on 301,
  every method but HEAD -> GET on 302 and 303).
- ``requests``: follows like requests (as httpx, but a PUT/PATCH/DELETE on 301
  keeps its method and loses its body).
- ``curl``: curl without ``-L``: never follows.
- ``shop-visitor``: a browser reaching ``/shop`` through a TLS-terminating proxy.

The emulated clients use httpx with ``follow_redirects=False`` and take each
hop by hand, as measured in ``client-behaviour.md``. Every client gives up
after ``MAX_REDIRECTS`` and never leaves the demo server (an off-site Location
is recorded, not visited).

The proxy is simulated by an httpx transport (``TLSTerminatingProxy``): the
visitor's client asks for ``https://shop.example.test/...``; the transport
forwards the request over plain http to the app with ``Host``,
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-For`` set, as
nginx does after terminating TLS. The app is served without
``--proxy-headers``, so it thinks the request was http; the recorder trusts
the proxy's address, so it knows better.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

MAX_REDIRECTS = 10  # Chromium gives up after 20, httpx 20, requests 30: 10 keeps the demo short
PROXIED_HOST = "shop.example.test"  # the shop's public name, served by the simulated proxy
VISITOR_IP = "198.51.100.23"  # the shop visitor's address, as the proxy reports it
HOME_HITS_PER_PHASE = 15  # the 302 on "/" must be seen often to look permanent

# How a client follows a redirect: (method, status) -> (follow-up method, body kept).
Policy = Callable[[str, int], tuple[str, bool]]


def browser_policy(method: str, status: int) -> tuple[str, bool]:
    """Chromium (and Node fetch, aiohttp): POST -> GET on 301/302, non-HEAD -> GET on 303."""
    if (status in (301, 302) and method == "POST") or (status == 303 and method != "HEAD"):
        return "GET", False
    return method, True


def requests_policy(method: str, status: int) -> tuple[str, bool]:
    """requests: like httpx, but PUT/PATCH/DELETE keep the method on 301 and lose the body."""
    if status == 303 and method != "HEAD":
        return "GET", False
    if status == 302 and method != "HEAD":
        return "GET", False
    if status == 301:
        return ("GET" if method == "POST" else method), False
    return method, True


@dataclass(frozen=True)
class ClientProfile:
    """One demo client: how it follows redirects and where it connects from."""

    name: str
    description: str
    user_agent: str
    policy: Policy | None  # None: never follows
    native: bool = False  # True: real httpx redirect following instead of a policy
    via_proxy: bool = False


CLIENTS: tuple[ClientProfile, ...] = (
    ClientProfile(
        "browser",
        "follows like Chromium: POST -> GET on 301/302",
        "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 (redirect-auditor demo)",
        browser_policy,
    ),
    ClientProfile(
        "httpx",
        "real httpx, follow_redirects=True: POST -> GET on 301, -> GET on 302",
        f"python-httpx/{httpx.__version__}",
        None,
        native=True,
    ),
    ClientProfile(
        "requests",
        "follows like requests: PUT on 301 kept, body dropped",
        "python-requests/2.34.2 (redirect-auditor demo)",
        requests_policy,
    ),
    ClientProfile("curl", "curl without -L: never follows", "curl/7.88.1", None),
    ClientProfile(
        "shop-visitor",
        "a browser reaching /shop through a TLS-terminating proxy",
        "Mozilla/5.0 (Macintosh) Safari/605.1 (redirect-auditor demo)",
        browser_policy,
        via_proxy=True,
    ),
)


@dataclass(frozen=True)
class Step:
    """One request a client makes (and the hops it then follows), ``repeat`` times."""

    client: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None
    repeat: int = 1


@dataclass(frozen=True)
class Scenario:
    """Steps that exercise one route of ``demo_app``, in one phase of the demo."""

    route: str
    shows: str  # the mistake or the right thing, and the rule ids
    steps: tuple[Step, ...]
    phase: int = 1


Body = tuple[bytes, str]  # content and its Content-Type


def form(**fields: str) -> Body:
    """An urlencoded form body."""
    return urlencode(fields).encode(), "application/x-www-form-urlencoded"


def json_body(**fields: object) -> Body:
    """A JSON body."""
    return json.dumps(fields).encode(), "application/json"


def _step(client: str, method: str, path: str, repeat: int = 1, body: Body | None = None) -> Step:
    content, content_type = body or (None, None)
    return Step(client, method, path, content, content_type, repeat)


SHOP = f"https://{PROXIED_HOST}/shop"
EVIL = "https://evil.example/account"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "GET /",
        "302 to /dashboard that never changes: temporary-looks-permanent, legacy-302",
        (_step("browser", "GET", "/", HOME_HITS_PER_PHASE - 5), _step("httpx", "GET", "/", 5)),
    ),
    Scenario(
        "POST /login",
        "login form answered 302: ambiguous-method-redirect, method-changed, legacy-302",
        (
            _step("browser", "GET", "/login"),
            _step("browser", "POST", "/login", body=form(user="ada")),
            _step("httpx", "POST", "/login", body=form(user="grace")),
            _step("requests", "POST", "/login", body=form(user="linus")),
            _step("curl", "POST", "/login", body=form(user="ken")),
        ),
    ),
    Scenario(
        "POST /subscribe",
        "old form action 301, GET follow-up gets 405: method-change-broke-request",
        tuple(
            _step(client, "POST", "/subscribe", body=form(email=f"{client}@example.com"))
            for client in ("browser", "httpx", "requests")
        ),
    ),
    Scenario(
        "PUT /api/profile",
        "API moved with 301; requests drops the PUT body: body-dropped",
        tuple(
            _step(client, "PUT", "/api/profile", body=json_body(name=client))
            for client in ("browser", "httpx", "requests")
        ),
    ),
    Scenario(
        "GET /blog/2019/{slug}",
        "301 -> 302 -> 307: redirect-chain, mixed-permanence-chain, slash-redirect",
        (
            _step("browser", "GET", "/blog/2019/hello-world"),
            _step("browser", "GET", "/blog/2019/redirects-explained"),
            _step("httpx", "GET", "/blog/2019/hello-world"),
            _step("requests", "GET", "/blog/2019/hello-world"),
        ),
    ),
    Scenario(
        "GET /docs",
        "trailing-slash round trip (Starlette's redirect_slashes): slash-redirect",
        (_step("browser", "GET", "/docs", 2), _step("curl", "GET", "/docs")),
    ),
    Scenario(
        "GET /account/settings",
        "settings <-> preferences: redirect-loop",
        (_step("browser", "GET", "/account/settings"), _step("httpx", "GET", "/account/settings")),
    ),
    Scenario(
        "GET /promo",
        "301 to this season's sale (spring): permanent-without-cache-control",
        (
            _step("browser", "GET", "/promo"),
            _step("httpx", "GET", "/promo"),
            _step("curl", "GET", "/promo"),
        ),
    ),
    Scenario(
        "GET /login/return?next=",
        "unchecked ?next= sends users off-site: open-redirect",
        (
            _step("browser", "GET", "/login/return?next=/account"),
            _step("browser", "GET", "/login/return?" + urlencode({"next": EVIL})),
            _step("curl", "GET", "/login/return?" + urlencode({"next": EVIL})),
        ),
    ),
    Scenario(
        "POST /shop/cart/items",
        "behind the TLS proxy, 303 to http://: scheme-downgrade",
        (
            _step("shop-visitor", "GET", f"{SHOP}/cart"),
            _step("shop-visitor", "POST", f"{SHOP}/cart/items", body=form(item="42")),
        ),
    ),
    Scenario(
        "DELETE /api/v2/orders/{order_id}",
        "200 with an empty body: delete-200-no-content",
        (_step("httpx", "DELETE", "/api/v2/orders/7"), _step("curl", "DELETE", "/api/v2/orders/8")),
    ),
    Scenario(
        "POST /contact",
        "right: 303 after POST (no finding)",
        (
            _step("browser", "GET", "/contact"),
            *(
                _step(client, "POST", "/contact", body=form(message=f"hello from {client}"))
                for client in ("browser", "httpx", "requests")
            ),
        ),
    ),
    Scenario(
        "POST /api/v1/orders",
        "right: API moved with 308, method and body kept (no finding)",
        (
            _step("httpx", "GET", "/api/v1/orders"),
            *(
                _step(client, "POST", "/api/v1/orders", body=json_body(item=42, client=client))
                for client in ("browser", "httpx", "requests")
            ),
        ),
    ),
    Scenario(
        "PUT /uploads/avatar",
        "right: 307 keeps the PUT and its body (no finding)",
        tuple(
            _step(
                client, "PUT", "/uploads/avatar", body=(b"\x89PNG fake avatar bytes", "image/png")
            )
            for client in ("browser", "httpx", "requests")
        ),
    ),
    # Phase 2: the campaign has changed; the 302 on / is still the same.
    Scenario(
        "GET /promo",
        "the same 301 now points at the summer sale: permanent-target-changed",
        (_step("browser", "GET", "/promo"), _step("requests", "GET", "/promo")),
        phase=2,
    ),
    Scenario(
        "GET /",
        "still 302 to /dashboard, seconds later: temporary-looks-permanent",
        (_step("browser", "GET", "/", HOME_HITS_PER_PHASE - 5), _step("requests", "GET", "/", 5)),
        phase=2,
    ),
)


def phase_steps(phase: int) -> list[Step]:
    """Every step of one phase, repeats expanded, in order."""
    return [
        step
        for scenario in SCENARIOS
        if scenario.phase == phase
        for step in scenario.steps
        for _ in range(step.repeat)
    ]


def client_addresses() -> dict[str, str]:
    """A distinct loopback source address per client (127.0.0.2, ...), so that each has
    its own client key; all ``127.0.0.1`` where only that one exists (macOS)."""
    addresses = {profile.name: f"127.0.0.{i}" for i, profile in enumerate(CLIENTS, start=2)}
    try:
        with socket.socket() as sock:
            sock.bind((addresses[CLIENTS[-1].name], 0))
    except OSError:
        return dict.fromkeys(addresses, "127.0.0.1")
    return addresses


def proxy_address(addresses: dict[str, str]) -> str:
    """The address the simulated TLS proxy connects from: the recorder trusts it."""
    return next(addresses[p.name] for p in CLIENTS if p.via_proxy)


class TLSTerminatingProxy(httpx.BaseTransport):
    """Plays the TLS-terminating proxy in front of the app (see the module docstring)."""

    def __init__(self, upstream: httpx.URL, local_address: str) -> None:
        self.upstream = upstream
        self.inner = httpx.HTTPTransport(local_address=local_address)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        public = request.url
        request.headers["X-Forwarded-Proto"] = public.scheme
        request.headers["X-Forwarded-Host"] = public.netloc.decode("ascii")
        request.headers["X-Forwarded-For"] = VISITOR_IP
        request.url = public.copy_with(
            scheme=self.upstream.scheme, host=self.upstream.host, port=self.upstream.port
        )
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class DemoClient:
    """One client profile bound to its own loopback address."""

    def __init__(self, profile: ClientProfile, base_url: str, address: str) -> None:
        self.profile = profile
        self.address = address
        upstream = httpx.URL(base_url)
        transport: httpx.BaseTransport
        if profile.via_proxy:
            transport = TLSTerminatingProxy(upstream, address)
            self.home_hosts = {PROXIED_HOST}
        else:
            transport = httpx.HTTPTransport(local_address=address)
            self.home_hosts = {upstream.host}
        self.http = httpx.Client(
            base_url=base_url,
            transport=transport,
            headers={"User-Agent": profile.user_agent},
            max_redirects=MAX_REDIRECTS,
            timeout=30.0,
        )

    def close(self) -> None:
        self.http.close()

    def send(self, step: Step) -> int:
        """Make the step's request and follow its redirects; return the requests sent."""
        headers = {"Content-Type": step.content_type} if step.content_type else {}
        if self.profile.native:
            try:
                response = self.http.request(
                    step.method,
                    step.path,
                    content=step.body,
                    headers=headers,
                    follow_redirects=True,
                )
            except httpx.TooManyRedirects:
                return MAX_REDIRECTS + 1
            return len(response.history) + 1
        return self._follow_by_hand(step.method, self.http.base_url.join(step.path), step)

    def _follow_by_hand(self, method: str, url: httpx.URL, step: Step) -> int:
        body, content_type = step.body, step.content_type
        for sent in range(1, MAX_REDIRECTS + 2):
            headers = {"Content-Type": content_type} if body is not None and content_type else {}
            response = self.http.request(method, url, content=body, headers=headers)
            policy = self.profile.policy
            if policy is None or not response.has_redirect_location or sent > MAX_REDIRECTS:
                return sent
            target = url.join(response.headers["Location"])
            if target.host not in self.home_hosts:
                return sent  # off-site: the demo never leaves loopback
            method, keep_body = policy(method, response.status_code)
            if not keep_body:
                body = content_type = None
            url = target
        return MAX_REDIRECTS + 1


@contextmanager
def demo_clients(base_url: str, addresses: dict[str, str]) -> Iterator[dict[str, DemoClient]]:
    """Every client of ``CLIENTS`` on its address, closed afterwards."""
    with ExitStack() as stack:
        clients = {}
        for profile in CLIENTS:
            client = DemoClient(profile, base_url, addresses[profile.name])
            stack.callback(client.close)
            clients[profile.name] = client
        yield clients
