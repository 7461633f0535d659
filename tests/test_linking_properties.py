"""Property tests for hop linking: many clients behind one IP and one user agent,
interleaved at random, with colliding URLs.

Each journey on its own connection: every real link is found, and ``sure``. A request
that followed nothing may still be linked to a redirect nobody followed when URL,
client and user agent all match within the window (from the server's side that is a
browser opening a new connection), but never to a redirect that was followed, and
every link keeps the linking contract.

A new connection for every hop: time order cannot always tell the clients apart, and
every link is right or marked ``ambiguous`` whenever the truth links as many as can
be (every redirect followed, or every candidate a follow-up). Behind a proxy that
pools its connections, one forwarded-for hint per client: every link right and sure."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.analysis import linking
from auditor.analysis.linking import _augment, _unforced, link_requests
from auditor.store.schema import ensure_schema

ORIGIN = "http://shop.test"
PATHS = ["/a", "/b", "/c", "/login", "/account"]  # a small pool: journeys collide on URLs
STARTS = ["/start", "/home"]  # first pages no redirect points at
REDIRECT_CODES = [301, 302, 303, 307, 308]


@dataclass
class Hop:
    started_at: float
    method: str
    path: str
    status: int
    location: str | None
    connection: str
    journey: int
    index: int


def follow_up_method(method: str, status: int) -> str:
    """What browsers send next (client-behaviour.md)."""
    if status == 303 or (status in (301, 302) and method == "POST"):
        return "GET"
    return method


# (start, method, [(path, status)...], final page, gaps, stops before the last hop)
Journey = tuple[float, str, list[tuple[str, int]], str, list[float], bool]

journey = st.tuples(
    st.floats(0, 20),  # start time
    st.sampled_from(["GET", "POST"]),
    st.lists(
        st.tuples(st.sampled_from(PATHS), st.sampled_from(REDIRECT_CODES)), min_size=1, max_size=3
    ),
    st.sampled_from(PATHS),  # final page
    st.lists(st.floats(0.001, 5.0), min_size=4, max_size=4),  # gaps before each follow-up
    st.booleans(),  # the client stops before the last hop (never follows it)
)


def hops_of(number: int, spec: Journey, *, reconnect: bool = False) -> list[Hop]:
    """The hops of journey ``number``: on one connection, or a new one for every hop."""
    start, method, redirects, final, gaps, stops = spec
    hops: list[Hop] = []
    now = start
    targets = [path for path, _ in redirects[1:]] + [final]
    for i, (path, status) in enumerate(redirects):
        connection = f"conn-{number}-{i}" if reconnect else f"conn-{number}"
        hops.append(Hop(now, method, path, status, targets[i], connection, number, i))
        method = follow_up_method(method, status)
        now += 0.0005 + gaps[i]
    if not stops:
        connection = f"conn-{number}-{len(redirects)}" if reconnect else f"conn-{number}"
        hops.append(Hop(now, method, final, 200, None, connection, number, len(redirects)))
    return hops


Links = dict[int, tuple[int, str]]  # follow-up id -> (redirect id, link confidence)


def linked_traffic(
    hops: list[Hop], forwarded: dict[int, str] | None = None
) -> tuple[dict[tuple[int, int], int], dict[int, int], Links]:
    """Record ``hops`` (by time) from one address and one user agent, link them; return
    (journey and index -> id, the true links, the links made)."""
    hops = sorted(hops, key=lambda h: h.started_at)
    conn = sqlite3.connect(":memory:")
    ensure_schema(conn)
    ids: dict[tuple[int, int], int] = {}
    for hop in hops:
        cursor = conn.execute(
            """insert into requests (started_at, duration_ms, method, scheme, host, path, url,
                 status, location, location_url, client_key, connection_key, user_agent,
                 forwarded_for_key)
               values (?, 0.2, ?, 'http', 'shop.test', ?, ?, ?, ?, ?, 'one-ip', ?, 'Browser/1',
                 ?)""",
            (
                hop.started_at,
                hop.method,
                hop.path,
                ORIGIN + hop.path,
                hop.status,
                hop.location,
                ORIGIN + hop.location if hop.location else None,
                hop.connection,
                (forwarded or {}).get(hop.journey),
            ),
        )
        ids[(hop.journey, hop.index)] = int(cursor.lastrowid or 0)
    conn.commit()
    expected = {
        ids[(h.journey, h.index)]: ids[(h.journey, h.index - 1)] for h in hops if h.index > 0
    }
    link_requests(conn)
    linked = {
        q: (r, level)
        for q, r, level in conn.execute(
            "select id, follow_up_of, link_confidence from requests where follow_up_of is not null"
        )
    }
    unconfident = conn.execute(
        "select count(*) from requests where (follow_up_of is null) != (link_confidence is null)"
    ).fetchone()[0]
    assert unconfident == 0  # a link always has its confidence, and only a link
    return ids, expected, linked


def assert_contract(hops: list[Hop], ids: dict[tuple[int, int], int], linked: Links) -> None:
    """What every link keeps, right or not."""
    by_id = {ids[(h.journey, h.index)]: h for h in hops}
    for q, (r, _) in linked.items():
        follow_up, redirect = by_id[q], by_id[r]
        assert redirect.location == follow_up.path
        assert follow_up.method in (redirect.method, "GET")
        assert 0 < follow_up.started_at - redirect.started_at <= 30
    assert len({r for r, _ in linked.values()}) == len(linked)  # one follow-up at most


@settings(max_examples=150, deadline=None)
@given(journeys=st.lists(journey, min_size=1, max_size=12))
def test_interleaved_journeys_behind_one_ip_are_linked_exactly(journeys: list[Journey]) -> None:
    hops = [hop for n, spec in enumerate(journeys) for hop in hops_of(n, spec)]
    ids, expected, links = linked_traffic(hops)
    linked = {q: r for q, (r, _) in links.items()}
    assert {q: r for q, r in linked.items() if expected.get(q) == r} == expected  # complete
    assert all(links[q][1] == "sure" for q in expected)  # on their own connection
    followed = set(expected.values())
    by_id = {ids[(h.journey, h.index)]: h for h in hops}
    assert_contract(hops, ids, links)
    for q, r in linked.items():
        if expected.get(q) != r:  # an extra link: only fresh request, idle redirect
            assert by_id[q].index == 0 and r not in followed
            assert by_id[q].connection != by_id[r].connection


def reconnecting(journeys: list[Journey], every_redirect_followed: bool) -> list[Hop]:
    """Either every journey goes to its end (redirects all followed, first pages may be
    anyone's target), or every journey starts on a page no redirect points at (every
    candidate is a follow-up, some redirects are not followed); a new connection per hop."""
    specs: list[Journey] = []
    for n, (start, method, redirects, final, gaps, stops) in enumerate(journeys):
        if every_redirect_followed:
            stops = False
        else:
            redirects = [(STARTS[n % 2], redirects[0][1]), *redirects[1:]]
        specs.append((start, method, redirects, final, gaps, stops))
    return [hop for n, spec in enumerate(specs) for hop in hops_of(n, spec, reconnect=True)]


@settings(max_examples=200, deadline=None)
@given(
    journeys=st.lists(journey, min_size=1, max_size=12),
    every_redirect_followed=st.booleans(),
)
def test_clients_reconnecting_for_every_hop_are_linked_right_or_ambiguous(
    journeys: list[Journey],
    every_redirect_followed: bool,
) -> None:
    hops = reconnecting(journeys, every_redirect_followed)
    ids, expected, linked = linked_traffic(hops)
    assert_contract(hops, ids, linked)
    wrong = {q: r for q, (r, level) in linked.items() if expected.get(q) != r}
    assert all(linked[q][1] == "ambiguous" for q in wrong), wrong
    if every_redirect_followed:
        assert {r for r, _ in linked.values()} == set(expected.values())
    else:
        assert set(linked) == set(expected)  # every follow-up linked, maybe ambiguously


@settings(max_examples=100, deadline=None)
@given(
    journeys=st.lists(journey, min_size=1, max_size=12),
    every_redirect_followed=st.booleans(),
)
def test_a_client_and_target_too_busy_to_assign_is_linked_in_order_and_ambiguous(
    journeys: list[Journey],
    every_redirect_followed: bool,
) -> None:
    hops = reconnecting(journeys, every_redirect_followed)
    budget = linking.ASSIGNMENT_EDGES
    linking.ASSIGNMENT_EDGES = 0  # every assignment is too big
    try:
        ids, expected, linked = linked_traffic(hops)
    finally:
        linking.ASSIGNMENT_EDGES = budget
    assert_contract(hops, ids, linked)
    wrong = {q: r for q, (r, level) in linked.items() if expected.get(q) != r}
    assert all(linked[q][1] == "ambiguous" for q in wrong), wrong


@settings(max_examples=100, deadline=None)
@given(journeys=st.lists(journey, min_size=1, max_size=12))
def test_behind_a_pooling_proxy_the_forwarded_for_hint_links_surely(
    journeys: list[Journey],
) -> None:
    """One proxy address and one pooled upstream connection for everyone; each journey a
    client of its own, named by its forwarded-for hint."""
    hops = [hop for n, spec in enumerate(journeys) for hop in hops_of(n, spec)]
    for hop in hops:
        hop.connection = "proxy-pool"
    forwarded = {n: f"client-{n}" for n in range(len(journeys))}
    ids, expected, linked = linked_traffic(hops, forwarded)
    assert_contract(hops, ids, linked)
    assert {q: r for q, (r, _) in linked.items()} == expected
    assert {level for _, level in linked.values()} <= {"sure"}


def maximum_matchings(edges: list[list[int]]) -> list[dict[int, int]]:
    """Every largest set of (candidate, redirect) pairs along ``edges``, by brute force."""
    found: list[dict[int, int]] = []

    def extend(qi: int, used: set[int], current: dict[int, int]) -> None:
        if qi == len(edges):
            found.append(dict(current))
            return
        extend(qi + 1, used, current)
        for ri in edges[qi]:
            if ri not in used:
                current[qi] = ri
                extend(qi + 1, used | {ri}, current)
                del current[qi]

    extend(0, set(), {})
    size = max(len(m) for m in found)
    return [m for m in found if len(m) == size]


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda redirects: st.lists(
            st.lists(st.integers(0, redirects - 1), unique=True, max_size=redirects),
            min_size=1,
            max_size=6,
        ).map(lambda edges: (redirects, edges))
    )
)
def test_the_assignment_is_maximum_and_sure_only_where_every_maximum_one_agrees(
    graph: tuple[int, list[list[int]]],
) -> None:
    """The matching step of linking (candidates in time order, each with the redirects it
    may follow in order of preference) against brute force on small graphs."""
    redirects, edges = graph
    follower, followed = [-1] * redirects, [-1] * len(edges)
    for qi, fitting in enumerate(edges):
        free = next((ri for ri in fitting if follower[ri] < 0), -1)
        if free >= 0:
            follower[free], followed[qi] = qi, free
        elif fitting:
            _augment(qi, edges, follower, followed)
    mine = {qi: ri for qi, ri in enumerate(followed) if ri >= 0}
    assert all(follower[ri] == qi for qi, ri in mine.items())
    every = maximum_matchings(edges)
    assert len(mine) == len(every[0])
    sure = set(mine) - _unforced(edges, follower, followed)
    assert sure == {qi for qi, ri in mine.items() if all(m.get(qi) == ri for m in every)}
