"""Write a realistic synthetic traffic database for audit-scale benchmarks.

Example:
    python benchmarks/generate_traffic.py --requests 1000000 --out /tmp/traffic.db

Traffic shape (deterministic for a seed): several thousand route templates on two
hosts, many clients, a few client IPs shared by many clients with one user agent
(offices behind NAT), keep-alive connections, and about 10% redirect responses:
trailing-slash and moved-page chains, login round trips, http->https hops with
absolute Locations in odd case and default ports, POST 302/303 -> GET, 307 POSTs
that urllib-like clients never follow, loops walked until the client gives up,
chains into 404s, and off-site Locations. ``follow_up_of`` is left empty: linking
fills it. ``generate`` returns the true links so accuracy can be checked, and the
problems the walks planted (docs/problems.md) so the audit's findings can be:

- slash 307 (GET): slash-redirect
- moved page: redirect-chain at /old...; slash-redirect at the 308, or
  redirect-target-fails there when the chain ends in a 404
- login round trip (GET 302): legacy-302
- http -> https: nothing, unless that https URL redirects in another walk: then the
  static graph has a chain (redirect-chain at the http walk's place)
- POST 302 -> /thanks: post-redirect-get-302; POST 303: nothing
- POST 307 adding a slash, never followed: slash-redirect; unfollowed-redirect once a
  client family other than urllib (whose quirk it is) got it ``unfollowed_min_hits``
  times at that place
- off-site GET 302 to a fixed partner URL: legacy-302 (not an open redirect)
- loop: redirect-loop (its legacy-302 is dropped at an error's place, as the audit does)
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.analysis.rules.base import AuditOptions
from auditor.redirects import client_family
from auditor.store.requests import ROW_COLUMNS
from auditor.store.schema import connect, ensure_schema

HOSTS = ("shop.example.com", "api.example.com")
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
    "python-httpx/0.28.1",
    "python-requests/2.32.3",
    "curl/8.5.0",
    "Python-urllib/3.11",
)
SECTIONS = 60
RESOURCES = 50  # SECTIONS * RESOURCES route templates, ~1/3 of them with an {id}
REQUESTS_PER_SECOND = 120.0
START = 1_717_000_000.0
MOVES = (301, 302, 307, 308)
UNFOLLOWED_MIN_HITS = AuditOptions().unfollowed_min_hits

INSERT_SQL = (
    f"insert into requests (id, {', '.join(ROW_COLUMNS)}) "
    f"values ({', '.join('?' for _ in range(len(ROW_COLUMNS) + 1))})"
)


@dataclass
class Client:
    """One browser or script: an address, a user agent, a keep-alive connection."""

    ip: str
    key: str
    agent: str
    port: int
    connection_key: str
    busy_until: float = 0.0  # one request at a time per connection (HTTP/1.1)


Place = tuple[str, str, int, str]  # (route template, method, status, problem id)
SEVERITY = {  # of the problems the walks plant (docs/problems.md)
    "redirect-loop": "error",
    "redirect-target-fails": "error",
    "redirect-chain": "warning",
    "slash-redirect": "info",
    "legacy-302": "info",
    "post-redirect-get-302": "info",
    "unfollowed-redirect": "info",
}


def without_info_at_errors(places: set[Place]) -> set[Place]:
    """The planted places less the info problems of a (route, method, status) with an
    error: the audit reports one mistake once (a loop's 302s are not also legacy-302)."""
    broken = {place[:3] for place in places if SEVERITY[place[3]] == "error"}
    return {p for p in places if SEVERITY[p[3]] != "info" or p[:3] not in broken}


@dataclass
class GeneratedTraffic:
    """What ``generate`` wrote: counts and the true follow-up links (follow-up -> redirect)."""

    requests: int
    redirects: int
    walks: int
    links: dict[int, int] = field(default_factory=dict)
    # The problems the walks planted under docs/problems.md, one per (route template,
    # method, status, problem id) as the audit places findings, after dropping the info
    # problems of a place that also has an error (as ``without_hygiene_at_errors`` does)...
    planted_places: set[Place] = field(default_factory=set)

    @property
    def planted(self) -> set[tuple[str, str]]:
        """...and the distinct (route template, problem id) pairs among them."""
        return {(route, problem) for route, _, _, problem in self.planted_places}


@dataclass
class _Walk:
    hops: list[_Hop]
    same_connection: bool
    planted: list[Place]
    kind: str = ""  # "http-to-https", "unfollowed": planted by rows() from all walks


@dataclass
class _Hop:
    method: str
    url: str
    route: str
    status: int
    location: str | None = None
    location_url: str | None = None


class _Generator:
    def __init__(self, n_requests: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n_requests = n_requests
        self.routes = [
            f"/s{s}/r{r}/{{id}}" if (s + r) % 3 == 0 else f"/s{s}/r{r}"
            for s in range(SECTIONS)
            for r in range(RESOURCES)
        ]
        self.clients = self._clients(max(200, n_requests // 40))

    def _hex(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def _clients(self, count: int) -> list[Client]:
        rng = self.rng
        shared = [f"203.0.113.{i}" for i in range(1, 5)]  # four offices behind NAT
        clients = []
        for i in range(count):
            if i % 5 == 0:  # a fifth of all clients sit behind a shared address...
                ip = shared[i % len(shared)]
                agent = AGENTS[0] if rng.random() < 0.9 else rng.choice(AGENTS)  # ...one browser
            else:
                ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                agent = rng.choice(AGENTS)
            clients.append(Client(ip, f"ip-{ip}", agent, 0, ""))
        for client in clients:
            self._new_connection(client)
        return clients

    def _new_connection(self, client: Client) -> None:
        client.port = self.rng.randrange(1024, 65536)
        client.connection_key = f"conn-{client.ip}:{client.port}-{self._hex()[:6]}"

    def _page(self) -> tuple[str, str, str]:
        """A random (host, path, route) of an ordinary page."""
        rng = self.rng
        route = self.routes[min(int(rng.paretovariate(1.2)) - 1, len(self.routes) - 1)]
        if rng.random() < 0.5:
            route = rng.choice(self.routes)
        path = route.replace("{id}", str(rng.randrange(1, 5000)))
        return HOSTS[0] if rng.random() < 0.8 else HOSTS[1], path, route

    def walk(self) -> _Walk:
        """One client action: the hops it caused, whether the follow-ups share a
        connection, and the problems it plants (see ``GeneratedTraffic.planted_places``)."""
        rng = self.rng
        host, path, route = self._page()
        base = f"https://{host}"
        kind = rng.random()
        if kind < 0.92:  # ordinary request
            method = "GET" if rng.random() < 0.85 else rng.choice(("POST", "PUT", "DELETE"))
            status = rng.choice((200, 200, 200, 200, 200, 201, 204, 304, 404, 500))
            return _Walk([_Hop(method, base + path, route, status)], True, [])
        kind = rng.random()
        if kind < 0.25:  # trailing slash added
            return _Walk(
                [
                    _Hop("GET", base + path, route, 307, path + "/", f"{base}{path}/"),
                    _Hop("GET", f"{base}{path}/", route + "/", 200),
                ],
                True,
                [(route, "GET", 307, "slash-redirect")],  # only adds a slash: hygiene
            )
        if kind < 0.40:  # moved page: 301 then slash 308, sometimes into a 404
            final = 404 if rng.random() < 0.1 else 200
            planted = [("/old" + route, "GET", 301, "redirect-chain")]
            planted.append((route, "GET", 308, "slash-redirect"))
            if final == 404:
                planted.append((route, "GET", 308, "redirect-target-fails"))
            return _Walk(
                [
                    _Hop("GET", f"{base}/old{path}", "/old" + route, 301, path, base + path),
                    _Hop("GET", base + path, route, 308, path + "/", f"{base}{path}/"),
                    _Hop("GET", f"{base}{path}/", route + "/", final),
                ],
                True,
                planted,
            )
        if kind < 0.55:  # login round trip with an encoded next parameter
            nxt = path.replace("/", "%2F")
            login = f"{base}/login?next={nxt}"
            return _Walk(
                [
                    _Hop("GET", base + path, route, 302, f"/login?next={nxt}", login),
                    _Hop("GET", login, "/login", 200),
                ],
                True,
                [(route, "GET", 302, "legacy-302")],
            )
        if kind < 0.68:  # http -> https with an absolute, oddly written Location
            loc = f"HTTPS://{host.upper()}:443{path}"
            return _Walk(
                [
                    _Hop("GET", f"http://{host}{path}", route, 301, loc, base + path),
                    _Hop("GET", base + path, route, 200),
                ],
                rng.random() < 0.3,  # new TLS connection for the https hop
                [],  # a fine redirect, but a chain when that https URL also redirects
                "http-to-https",
            )
        if kind < 0.80:  # post/redirect/get
            status = rng.choice((302, 303))
            return _Walk(
                [
                    _Hop("POST", base + path, route, status, "/thanks", f"{base}/thanks"),
                    _Hop("GET", f"{base}/thanks", "/thanks", 200),
                ],
                True,
                [(route, "POST", 302, "post-redirect-get-302")] if status == 302 else [],
            )
        if kind < 0.88:  # 307 POST a urllib-like client never follows
            hop = _Hop("POST", base + path, route, 307, path + "/", f"{base}{path}/")
            # Only adds a slash and keeps the method on the same resource: hygiene, not
            # form-reposted-by-307. Unfollowed once a family (not urllib: its quirk) got
            # it often enough: see rows().
            return _Walk([hop], True, [(route, "POST", 307, "slash-redirect")], "unfollowed")
        if kind < 0.93:  # off-site redirect
            loc = f"https://partner.example.net/landing?from={path}"
            hop = _Hop("GET", base + "/out" + path, "/out" + route, 302, loc, loc)
            # the target is fixed, not taken from the request: not an open redirect
            return _Walk([hop], True, [("/out" + route, "GET", 302, "legacy-302")])
        # a loop between two URLs, followed until the client gives up
        a, b = f"{base}/loop{path}/a", f"{base}/loop{path}/b"
        hops = []
        for i in range(rng.choice((2, 5, 10, 21))):
            src, dst = (a, b) if i % 2 == 0 else (b, a)
            hops.append(_Hop("GET", src, "/loop" + route, 302, dst[len(base) :], dst))
        loop = "/loop" + route  # both URLs: one place (legacy-302 hidden by the error)
        return _Walk(
            hops, True, [(loop, "GET", 302, "redirect-loop"), (loop, "GET", 302, "legacy-302")]
        )

    def rows(self) -> tuple[list[tuple[Any, ...]], dict[int, int], int, set[Place]]:
        rng = self.rng
        planted: set[Place] = set()
        get_redirects: set[str] = set()  # URLs that answered a GET with a redirect
        https_after_http: list[tuple[str, str]] = []  # (route, https URL) of http walks
        unfollowed: Counter[tuple[str, str]] = Counter()  # (route, client family)
        clock = START
        pending: list[tuple[float, int, tuple[Any, ...]]] = []  # (started, walk order, row)
        parents: list[tuple[int, int]] = []  # (child index, parent index) in pending
        walks = 0
        while len(pending) < self.n_requests:
            walks += 1
            clock += rng.expovariate(REQUESTS_PER_SECOND)
            client = rng.choice(self.clients)
            if rng.random() < 0.05:
                self._new_connection(client)
            walk = self.walk()
            if len(pending) + len(walk.hops) > self.n_requests:  # no walk is cut short:
                host, path, route = self._page()  # the last one becomes a plain GET
                walk = _Walk([_Hop("GET", f"https://{host}{path}", route, 200)], True, [])
            hops, same_connection = walk.hops, walk.same_connection
            planted.update(walk.planted)
            get_redirects.update(h.url for h in hops if h.method == "GET" and h.status in MOVES)
            if walk.kind == "http-to-https":
                https_after_http.append((hops[0].route, hops[1].url))
            elif walk.kind == "unfollowed":
                unfollowed[hops[0].route, client_family(client.agent)] += 1
            at = max(clock, client.busy_until)
            previous = None
            for hop in hops:
                duration = rng.uniform(0.5, 80.0)
                pending.append((at, len(pending), self._row(client, hop, at, duration)))
                if previous is not None:
                    parents.append((len(pending) - 1, previous))
                previous = len(pending) - 1
                at += duration / 1000 + rng.uniform(0.0005, 0.05)  # client round trip
                if not same_connection:
                    self._new_connection(client)
            client.busy_until = at
        order = sorted(range(len(pending)), key=lambda i: (pending[i][0], i))
        new_id = {old: pos + 1 for pos, old in enumerate(order)}
        rows = [(pos + 1, *pending[old][2]) for pos, old in enumerate(order)]
        links = {new_id[child]: new_id[parent] for child, parent in parents}
        # The static redirect graph chains http://x -> https://x -> wherever https://x
        # redirects (in another walk): redirect-chain at the http walk's place.
        planted.update(
            (route, "GET", 301, "redirect-chain")
            for route, url in https_after_http
            if url in get_redirects
        )
        planted.update(
            (route, "POST", 307, "unfollowed-redirect")
            for (route, family), hits in unfollowed.items()
            if hits >= UNFOLLOWED_MIN_HITS and family != "urllib"
        )
        return rows, links, walks, without_info_at_errors(planted)

    def _row(self, client: Client, hop: _Hop, at: float, duration: float) -> tuple[Any, ...]:
        scheme, _, rest = hop.url.partition("://")
        host, slash, tail = rest.partition("/")
        path, _, query = (slash + tail).partition("?")
        redirect = 300 <= hop.status < 400 and hop.status != 304
        values: dict[str, Any] = {
            "started_at": at,
            "duration_ms": round(duration, 3),
            "method": hop.method,
            "scheme": scheme,
            "host": host,
            "path": path,
            "query": query,
            "url": hop.url,
            "route": hop.route,
            "status": hop.status,
            "location": hop.location,
            "location_url": hop.location_url,
            "request_body_size": 512 if hop.method in ("POST", "PUT") else None,
            "request_body_chunked": 0,
            "request_content_type": "application/x-www-form-urlencoded"
            if hop.method == "POST"
            else None,
            "response_body_size": 0
            if redirect or hop.status in (204, 304)
            else 1000 + 37 * len(hop.url),
            "response_complete": 1,
            "cache_control": "max-age=3600" if hop.status in (301, 308) else None,
            "x_forwarded_proto": scheme,
            "x_forwarded_host": host,
            "server_scheme": "http",
            "server_host": "app:8000",
            "server_addr": "10.9.0.2:8000",
            "client_key": client.key,
            "connection_key": client.connection_key,
            "user_agent": client.agent,
            "request_id": self._hex(),
            "http_version": "1.1",
            "worker_id": f"web-{client.port % 4}:{1000 + client.port % 4}",
        }
        return tuple(map(values.get, ROW_COLUMNS))


def generate(path: str | Path, n_requests: int, seed: int = 0) -> GeneratedTraffic:
    """Write ``n_requests`` synthetic requests into a new traffic database at ``path``."""
    path = Path(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    generator = _Generator(n_requests, seed)
    rows, links, walks, planted = generator.rows()
    conn = connect(path)
    try:
        ensure_schema(conn)
        conn.execute("pragma synchronous = off")
        conn.execute("pragma cache_size = -1000000")  # 1 GB: index inserts stay in memory
        with conn:
            for start in range(0, len(rows), 50_000):
                conn.executemany(INSERT_SQL, rows[start : start + 50_000])
    finally:
        conn.close()
    status = ROW_COLUMNS.index("status") + 1
    redirects = sum(1 for row in rows if 300 <= row[status] < 400 and row[status] != 304)
    return GeneratedTraffic(len(rows), redirects, walks, links, planted)


def _timed(label: str, action: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    result = action()
    print(f"{label}: {time.perf_counter() - began:.2f}s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("traffic-bench.db"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--link", action="store_true", help="also time linking and chains")
    args = parser.parse_args()
    traffic = _timed("generate", lambda: generate(args.out, args.requests, args.seed))
    print(
        f"{traffic.requests} requests, {traffic.redirects} redirects, "
        f"{len(traffic.links)} true links -> {args.out}"
    )
    if args.link:
        from auditor.analysis.linking import build_chains, link_requests

        conn = sqlite3.connect(args.out)
        with conn:
            links = _timed("link_requests", lambda: link_requests(conn))
            chains = _timed("build_chains", lambda: build_chains(conn))
        found = {
            q: (r, confidence)
            for q, r, confidence in conn.execute(
                "select id, follow_up_of, link_confidence from requests where follow_up_of"
            )
        }
        right = sum(1 for q, (r, _) in found.items() if traffic.links.get(q) == r)
        ambiguous = sum(1 for _, confidence in found.values() if confidence == "ambiguous")
        wrong_unmarked = sum(
            1
            for q, (r, confidence) in found.items()
            if traffic.links.get(q) != r and confidence != "ambiguous"
        )
        print(
            f"{links} links ({right} right, {len(found) - right} wrong of which "
            f"{wrong_unmarked} not marked ambiguous, {len(traffic.links) - right} missed; "
            f"{ambiguous} ambiguous), {chains} chains"
        )
        conn.close()


if __name__ == "__main__":
    main()
