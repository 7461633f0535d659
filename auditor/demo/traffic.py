"""The demo's traffic: which clients send which requests to ``demo.app``.

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

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

MAX_REDIRECTS = 10  # Chromium gives up after 20, httpx 20, requests 30: 10 keeps the demo short
PROXIED_HOST = "shop.example.test"  # the shop's public name, served by the simulated proxy
VISITOR_IP = "198.51.100.23"  # the shop visitor's address, as the proxy reports it

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
    """One request a client makes (and the hops it then follows), ``repeat`` times.

    The body is a form (``form``, sent urlencoded as httpx ``data=`` does), JSON
    (``json``) or raw bytes (``content`` with ``content_type``), as real clients send them.
    """

    client: str
    method: str
    path: str
    form: dict[str, str] | None = None
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None
    repeat: int = 1


@dataclass(frozen=True)
class Scenario:
    """Steps that exercise one route of ``demo.app``, in one phase of the demo."""

    route: str
    shows: str  # the mistake or the right thing, and the problem id
    steps: tuple[Step, ...]
    phase: int = 1


FOLLOWING = ("browser", "httpx", "requests")  # the clients that follow redirects
SHOP = f"https://{PROXIED_HOST}/shop"
# Attacker-chosen targets for the open redirect (never visited: off-site).
ATTACKER_URLS = (
    "https://evil.example/account",
    "https://evil.example/login?session=expired",
    "//phish.example/shop",
)
AVATAR = b"\x89PNG fake avatar bytes"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "GET /",
        "302 to /dashboard where 307 is meant: legacy-302",
        (Step("browser", "GET", "/", repeat=3), Step("httpx", "GET", "/", repeat=2)),
    ),
    Scenario(
        "POST /login",
        "login form answered 302, then GET /account: post-redirect-get-302",
        (
            Step("browser", "GET", "/login"),
            *(
                Step(client, "POST", "/login", form={"user": client, "password": "hunter2"})
                for client in (*FOLLOWING, "curl")
            ),
        ),
    ),
    Scenario(
        "POST /members/login",
        "login form answered 307: the password is re-posted to /members/home, 405: "
        "form-reposted-by-307",
        (
            Step("browser", "GET", "/members/login"),
            *(
                Step(client, "POST", "/members/login", form={"user": client, "password": "pw"})
                for client in FOLLOWING
            ),
        ),
    ),
    Scenario(
        "POST /subscribe",
        "old form action 301, GET follow-ups get 405: method-change-on-move",
        tuple(
            Step(client, "POST", "/subscribe", form={"email": f"{client}@example.com"})
            for client in FOLLOWING
        ),
    ),
    Scenario(
        "PUT /api/profile",
        "API moved with 301; requests drops the PUT body, 422: method-change-on-move",
        tuple(Step(client, "PUT", "/api/profile", json={"name": client}) for client in FOLLOWING),
    ),
    Scenario(
        "POST /feedback",
        "303 to a POST-only page: the GET gets 405: redirect-target-fails",
        (
            Step("browser", "GET", "/feedback"),
            *(
                Step(client, "POST", "/feedback", form={"message": f"hello from {client}"})
                for client in ("browser", "httpx")
            ),
        ),
    ),
    Scenario(
        "GET /blog/2019/{slug}",
        "301 -> 301 -> page: redirect-chain",
        (
            Step("browser", "GET", "/blog/2019/hello-world"),
            Step("browser", "GET", "/blog/2019/redirects-explained"),
            Step("httpx", "GET", "/blog/2019/hello-world"),
            Step("requests", "GET", "/blog/2019/hello-world"),
        ),
    ),
    Scenario(
        "GET /docs",
        "trailing-slash round trip (Starlette's redirect_slashes): slash-redirect",
        (Step("browser", "GET", "/docs", repeat=2), Step("curl", "GET", "/docs")),
    ),
    Scenario(
        "GET /account/settings",
        "settings <-> preferences: redirect-loop",
        (Step("browser", "GET", "/account/settings"), Step("httpx", "GET", "/account/settings")),
    ),
    Scenario(
        "GET /promo",
        "301 to this season's sale (spring)",
        (
            Step("browser", "GET", "/promo"),
            Step("httpx", "GET", "/promo"),
            Step("curl", "GET", "/promo"),
        ),
    ),
    Scenario(
        "GET /about-us",
        "301 without Cache-Control: permanent-without-cache-control",
        (Step("browser", "GET", "/about-us"), Step("requests", "GET", "/about-us")),
    ),
    Scenario(
        "GET /login/return?next=",
        "unchecked ?next= sends users to any host: open-redirect",
        (
            Step("browser", "GET", "/login/return?next=/account"),
            Step("browser", "GET", "/login/return?" + urlencode({"next": ATTACKER_URLS[0]})),
            Step("requests", "GET", "/login/return?" + urlencode({"next": ATTACKER_URLS[1]})),
            Step("curl", "GET", "/login/return?" + urlencode({"next": ATTACKER_URLS[2]})),
        ),
    ),
    Scenario(
        "POST /shop/cart/items",
        "behind the TLS proxy, 303 to http://: scheme-downgrade",
        (
            Step("shop-visitor", "GET", f"{SHOP}/cart"),
            Step("shop-visitor", "POST", f"{SHOP}/cart/items", form={"item": "42"}),
        ),
    ),
    Scenario(
        "DELETE /api/v2/orders/{order_id}",
        "200 with an empty body: delete-200-no-content",
        (Step("httpx", "DELETE", "/api/v2/orders/7"), Step("curl", "DELETE", "/api/v2/orders/8")),
    ),
    Scenario(
        "POST /contact",
        "right: 303 after POST to a page that answers GET (no finding)",
        (
            Step("browser", "GET", "/contact"),
            *(
                Step(client, "POST", "/contact", form={"message": f"hello from {client}"})
                for client in FOLLOWING
            ),
        ),
    ),
    Scenario(
        "POST /api/v1/orders",
        "right: API moved with 308, method and body kept (no finding)",
        (
            Step("httpx", "GET", "/api/v1/orders"),
            *(
                Step(client, "POST", "/api/v1/orders", json={"item": 42, "client": client})
                for client in FOLLOWING
            ),
        ),
    ),
    Scenario(
        "PUT /uploads/avatar",
        "right: 307 keeps the PUT and its body (no finding)",
        tuple(
            Step(client, "PUT", "/uploads/avatar", content=AVATAR, content_type="image/png")
            for client in FOLLOWING
        ),
    ),
    # Phase 2: the campaign has changed.
    Scenario(
        "GET /promo",
        "the same 301 now points at the summer sale: permanent-target-changed",
        (Step("browser", "GET", "/promo"), Step("requests", "GET", "/promo")),
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
        request = self.http.build_request(
            step.method,
            step.path,
            data=step.form,
            json=step.json,
            content=step.content,
            headers={"Content-Type": step.content_type} if step.content_type else None,
        )
        if self.profile.native:
            try:
                response = self.http.send(request, follow_redirects=True)
            except httpx.TooManyRedirects:
                return MAX_REDIRECTS + 1
            return len(response.history) + 1
        return self._follow_by_hand(request)

    def _follow_by_hand(self, request: httpx.Request) -> int:
        for sent in range(1, MAX_REDIRECTS + 2):
            response = self.http.send(request)
            policy = self.profile.policy
            if policy is None or not response.has_redirect_location or sent > MAX_REDIRECTS:
                return sent
            target = request.url.join(response.headers["Location"])
            if target.host not in self.home_hosts:
                return sent  # off-site: the demo never leaves loopback
            method, keep_body = policy(request.method, response.status_code)
            content_type = request.headers.get("Content-Type")
            if keep_body and request.content and content_type:
                # Re-sent as it was: the same bytes and Content-Type.
                request = self.http.build_request(
                    method, target, content=request.content, headers={"Content-Type": content_type}
                )
            else:
                request = self.http.build_request(method, target)
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
