"""Property test for hop linking: many clients behind one IP and one user agent, each
journey on its own connection, interleaved at random, with colliding URLs.

Every real link is found. A request that followed nothing may still be linked to a
redirect nobody followed when URL, client and user agent all match within the window
(from the server's side that is a browser opening a new connection), but never to a
redirect that was followed, and every link keeps the linking contract."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.analysis.linking import link_requests
from auditor.schema import ensure_schema

ORIGIN = "http://shop.test"
PATHS = ["/a", "/b", "/c", "/login", "/account"]  # a small pool: journeys collide on URLs
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


def hops_of(number: int, spec: tuple) -> list[Hop]:  # type: ignore[type-arg]
    start, method, redirects, final, gaps, stops = spec
    hops: list[Hop] = []
    now = start
    targets = [path for path, _ in redirects[1:]] + [final]
    for i, (path, status) in enumerate(redirects):
        hops.append(Hop(now, method, path, status, targets[i], f"conn-{number}", number, i))
        method = follow_up_method(method, status)
        now += 0.0005 + gaps[i]
    if not stops:
        hops.append(Hop(now, method, final, 200, None, f"conn-{number}", number, len(redirects)))
    return hops


@settings(max_examples=150, deadline=None)
@given(journeys=st.lists(journey, min_size=1, max_size=12))
def test_interleaved_journeys_behind_one_ip_are_linked_exactly(journeys: list[tuple]) -> None:  # type: ignore[type-arg]
    hops = sorted(
        (hop for n, spec in enumerate(journeys) for hop in hops_of(n, spec)),
        key=lambda h: h.started_at,
    )
    conn = sqlite3.connect(":memory:")
    ensure_schema(conn)
    ids: dict[tuple[int, int], int] = {}
    for hop in hops:
        cursor = conn.execute(
            """insert into requests (started_at, duration_ms, method, scheme, host, path, url,
                 status, location, location_url, client_key, connection_key, user_agent)
               values (?, 0.2, ?, 'http', 'shop.test', ?, ?, ?, ?, ?, 'one-ip', ?, 'Browser/1')""",
            (
                hop.started_at,
                hop.method,
                hop.path,
                ORIGIN + hop.path,
                hop.status,
                hop.location,
                ORIGIN + hop.location if hop.location else None,
                hop.connection,
            ),
        )
        ids[(hop.journey, hop.index)] = int(cursor.lastrowid or 0)
    conn.commit()
    expected = {
        ids[(h.journey, h.index)]: ids[(h.journey, h.index - 1)] for h in hops if h.index > 0
    }
    link_requests(conn)
    linked = dict(
        conn.execute("select id, follow_up_of from requests where follow_up_of is not null")
    )
    assert {q: r for q, r in linked.items() if expected.get(q) == r} == expected  # complete
    followed = set(expected.values())
    by_id = {ids[(h.journey, h.index)]: h for h in hops}
    for q, r in linked.items():
        follow_up, redirect = by_id[q], by_id[r]
        assert redirect.location == follow_up.path
        assert follow_up.method in (redirect.method, "GET")
        assert 0 < follow_up.started_at - redirect.started_at <= 30
        if expected.get(q) != r:  # an ambiguous extra link: only fresh request, idle redirect
            assert follow_up.index == 0 and r not in followed
            assert follow_up.connection != redirect.connection
    assert len(set(linked.values())) == len(linked)  # a redirect has one follow-up at most
