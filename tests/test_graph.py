"""The static redirect graph on real recorded traffic that no client followed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder
from auditor.analysis.graph import edges_from_rows, redirect_edges, static_chains, static_loops
from auditor.store.journal import recorded_rows, unpack_file
from tests.servers import serve_in_thread, wait_for

MakeRecorder = Callable[..., RedirectRecorder]

REDIRECTS = {
    "/loop/a": (302, "/loop/b"),
    "/loop/b": (301, "/loop/c"),
    "/loop/c": (302, "http://127.0.0.1:{port}/loop/a"),  # absolute closes the loop
    "/self": (302, "/self"),
    "/form": (303, "/form"),  # POST -> GET /form: post/redirect/get, not a loop
    "/c1": (301, "/c2"),
    "/c2": (308, "/c3/"),
    "/single": (301, "/landing"),
}


async def endpoint(request: Request) -> Response:
    path = request.url.path
    if path in REDIRECTS and (path != "/form" or request.method == "POST"):
        status, location = REDIRECTS[path]
        location = location.format(port=request.url.port)
        return Response(status_code=status, headers={"location": location})
    return PlainTextResponse("ok")


APP = Starlette(
    routes=[Route(path, endpoint, methods=["GET", "POST"]) for path in [*REDIRECTS, "/c3/"]]
)


def record(make_recorder: MakeRecorder, requests: list[tuple[str, str]]) -> sqlite3.Connection:
    """Send each request once, never following a redirect; return the recorded database."""
    recorder = make_recorder(APP)
    with serve_in_thread(recorder) as base, httpx.Client(base_url=base) as client:
        for method, path in requests:
            client.request(method, path)

    def all_written() -> bool:
        recorder.writer.flush()
        with sqlite3.connect(recorder.writer.db_path) as conn:
            return recorded_rows(conn) >= len(requests)

    wait_for(all_written, what="every request to be recorded")
    unpack_file(recorder.writer.db_path)
    return sqlite3.connect(recorder.writer.db_path)


def test_loop_nobody_followed_is_found_in_order(make_recorder: MakeRecorder) -> None:
    conn = record(make_recorder, [("GET", "/loop/b"), ("GET", "/loop/c"), ("GET", "/loop/a")])
    loops = [loop for loop in static_loops(conn) if "/loop/" in loop.urls[0]]
    assert len(loops) == 1
    loop = loops[0]
    assert [url.split("/", 3)[3] for url in loop.urls] == ["loop/a", "loop/b", "loop/c"]
    assert loop.statuses == [302, 301, 302]
    assert loop.methods == ["GET", "GET", "GET"]
    ids = dict(conn.execute("select path, id from requests"))
    assert loop.example_request_ids == [ids["/loop/a"], ids["/loop/b"], ids["/loop/c"]]
    assert loop.length == 3


def test_self_redirect_is_a_loop_but_post_redirect_get_is_not(make_recorder: MakeRecorder) -> None:
    conn = record(make_recorder, [("GET", "/self"), ("POST", "/form"), ("GET", "/form")])
    loops = static_loops(conn)
    assert [[url.rsplit("/", 1)[1] for url in loop.urls] for loop in loops] == [["self"]]
    assert loops[0].statuses == [302]


def test_chain_nobody_followed_is_found_from_its_entry(make_recorder: MakeRecorder) -> None:
    conn = record(
        make_recorder,
        [("GET", "/c2"), ("GET", "/c1"), ("GET", "/c3/"), ("GET", "/single"), ("GET", "/c2")],
    )
    chains = static_chains(conn, min_length=2)
    assert len(chains) == 1
    chain = chains[0]
    assert [url.split("/", 3)[3] for url in chain.urls] == ["c1", "c2", "c3/"]
    assert chain.statuses == [301, 308]
    assert chain.length == 2
    assert chain.hits == 1  # the least-hit edge: /c1 was redirected once, /c2 twice
    assert len(static_chains(conn, min_length=1)) == 2  # /single alone
    assert static_chains(conn, min_length=3) == []
    assert static_chains(conn, 2, edges=redirect_edges(conn)) == chains


def test_redirect_edges_count_hits_per_source_status_and_target(
    make_recorder: MakeRecorder,
) -> None:
    conn = record(make_recorder, [("GET", "/c1"), ("GET", "/c1"), ("GET", "/c2"), ("GET", "/c3/")])
    edges = redirect_edges(conn)
    assert [
        (e.source.rsplit("/", 1)[1], e.status, e.target.split("/", 3)[3], e.hits) for e in edges
    ] == [
        ("c1", 301, "c2", 2),
        ("c2", 308, "c3/", 1),
    ]
    first = conn.execute(
        "select min(id), min(started_at), max(started_at) from requests where path = '/c1'"
    )
    assert (
        edges[0].example_request_id,
        edges[0].first_seen,
        edges[0].last_seen,
    ) == first.fetchone()
    assert edges[0].next_node == ("GET", edges[0].target)


def test_edges_from_redirect_rows_already_read_equal_redirect_edges(
    make_recorder: MakeRecorder,
) -> None:
    conn = record(
        make_recorder,
        [
            *[("GET", "/c1"), ("GET", "/c1"), ("GET", "/c2"), ("GET", "/c3/"), ("GET", "/loop/a")],
            *[("GET", "/self"), ("POST", "/form"), ("GET", "/loop/b"), ("GET", "/c1")],
        ],
    )
    rows = conn.execute(
        """select id, started_at, method, url, status, location_url from requests
           where status between 300 and 399 and status != 304"""
    ).fetchall()
    assert len(rows) >= 8
    assert edges_from_rows(rows) == redirect_edges(conn)
