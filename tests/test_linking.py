"""Hop linking and chains on real traffic: uvicorn, RedirectRecorder, httpx and urllib.

Every client request carries a unique X-Request-ID, and each client keeps what it
actually did (httpx's response history), so the expected links are known exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder
from auditor.analysis.linking import build_chains, link_and_build_chains, link_requests
from auditor.store.journal import recorded_rows, unpack_file
from tests.servers import serve_in_thread, wait_for

AGENT = "walker/1.0"  # every client below shares it (and 127.0.0.1)
ODD_LOCATION = "HTTPS://EXAMPLE.com:443/%7euser/caf%c3%a9?q=a%2fb#top"


def redirect(location: str, status: int = 302) -> Response:
    return Response(status_code=status, headers={"location": location})


async def walk(request: Request) -> Response:
    """/walk/{name}/{n}: n relative redirects down to /walk/{name}/0."""
    name, n = request.path_params["name"], request.path_params["n"]
    if n == 0:
        return PlainTextResponse(f"{name} done")
    return redirect(f"/walk/{name}/{n - 1}", 301 if n % 2 else 302)


async def absolute(request: Request) -> Response:
    """/abs/{name}: an absolute Location to /walk/{name}/1."""
    return redirect(str(request.url.replace(path=f"/walk/{request.path_params['name']}/1")))


async def secure(request: Request) -> Response:
    if request.headers.get("x-forwarded-proto") == "http":
        return redirect("https://example.com/secure", 301)
    return PlainTextResponse("secure")


SLOW_STARTED = threading.Event()


async def slow(request: Request) -> Response:
    SLOW_STARTED.set()
    await request.app.state.release.wait()
    return redirect("/landing")


async def release(request: Request) -> Response:
    request.app.state.release.set()
    return PlainTextResponse("released")


async def landing(request: Request) -> Response:
    return PlainTextResponse("landing")


def make_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/walk/{name}/{n:int}", walk),
            Route("/abs/{name}", absolute),
            Route("/form307", lambda r: redirect("/landing", 307), methods=["POST"]),
            Route("/loop/a", lambda r: redirect("/loop/b")),
            Route("/loop/b", lambda r: redirect("/loop/a")),
            Route("/to-missing", lambda r: redirect("/missing")),
            Route("/odd", lambda r: redirect(ODD_LOCATION)),
            Route("/rel", lambda r: redirect("/landing")),
            Route("/absolute-a", lambda r: redirect("http://a.example/landing")),
            Route("/external", lambda r: redirect("https://elsewhere.example/x")),
            Route("/secure", secure),
            Route("/slow", slow),
            Route("/release", release),
            Route("/landing", landing),
            Route("/~user/{rest:path}", landing),
        ]
    )
    app.state.release = asyncio.Event()
    return app


class Traffic:
    """The recorder under test plus what the clients did."""

    def __init__(self, recorder: RedirectRecorder, base: str) -> None:
        self.recorder = recorder
        self.base = base
        self.sent = 0  # requests sent, to know when all rows are written
        self.expected: dict[str, str | None] = {}  # request id -> id of the redirect it followed
        self._ids = itertools.count()

    def client(self, **options: Any) -> httpx.AsyncClient:
        """An AsyncClient (its own connection) that tags every request, redirects included."""

        async def tag(request: httpx.Request) -> None:
            self.sent += 1
            request.headers["x-request-id"] = f"r{next(self._ids)}"

        headers = {"user-agent": AGENT, **options.pop("headers", {})}
        return httpx.AsyncClient(
            base_url=self.base, headers=headers, event_hooks={"request": [tag]}, **options
        )

    def walked(self, response: httpx.Response) -> None:
        """Remember the links a followed walk made."""
        ids = [r.request.headers["x-request-id"] for r in [*response.history, response]]
        self.expected[ids[0]] = None
        for previous, current in itertools.pairwise(ids):
            self.expected[current] = previous

    def linked(self) -> sqlite3.Connection:
        """Wait for every row, then link and build chains; return the connection."""
        path = self.recorder.writer.db_path

        def all_written() -> bool:
            self.recorder.writer.flush()
            with sqlite3.connect(path) as conn:
                return recorded_rows(conn) >= self.sent

        wait_for(all_written, what="every request to be recorded")
        unpack_file(path)  # the recorder's batches into requests, before linking reads it
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        with conn:  # a write transaction: the recorder's writer may commit meanwhile
            conn.execute("begin immediate")
            link_requests(conn)
            build_chains(conn)
        return conn


@pytest.fixture
def traffic(make_recorder: Callable[..., RedirectRecorder]) -> Iterator[Traffic]:
    SLOW_STARTED.clear()
    recorder = make_recorder(make_app(), trusted_proxies=["127.0.0.1"])
    with serve_in_thread(recorder) as base:
        yield Traffic(recorder, base)


def links_by_request_id(conn: sqlite3.Connection) -> dict[str, str | None]:
    rows = conn.execute(
        """select q.request_id, r.request_id from requests q
           left join requests r on r.id = q.follow_up_of"""
    )
    return {row[0]: row[1] for row in rows}


def row(conn: sqlite3.Connection, where: str) -> sqlite3.Row:
    found = conn.execute(f"select * from requests where {where}").fetchall()
    assert len(found) == 1, where
    return found[0]


def chain_of(conn: sqlite3.Connection, request_id: int) -> sqlite3.Row:
    return conn.execute("select * from chains where first_request_id = ?", (request_id,)).fetchone()


@contextmanager
def one_client(traffic: Traffic, **options: Any) -> Iterator[httpx.Client]:
    """A synchronous client with the same tagging, for simple sequential scenarios."""
    counter = itertools.count()

    def tag(request: httpx.Request) -> None:
        traffic.sent += 1
        request.headers["x-request-id"] = f"s{next(counter)}"

    headers = {"user-agent": AGENT, **options.pop("headers", {})}
    with httpx.Client(
        base_url=traffic.base, headers=headers, event_hooks={"request": [tag]}, **options
    ) as client:
        yield client


def test_fifty_concurrent_clients_behind_one_ip_are_linked_exactly(traffic: Traffic) -> None:
    async def client_walks(number: int) -> None:
        async with traffic.client(follow_redirects=True) as client:
            for step in range(4):
                name = "abc"[(number + step) % 3]  # shared URLs across clients
                if (number + step) % 4 == 0:
                    response = await client.get(f"/abs/{name}")
                else:
                    response = await client.get(f"/walk/{name}/{1 + (number + step) % 3}")
                traffic.walked(response)
                # a direct request to a URL other clients reach by redirect
                response = await client.get(f"/walk/{name}/0")
                traffic.walked(response)

    async def main() -> None:
        await asyncio.gather(*(client_walks(n) for n in range(50)))

    asyncio.run(main())
    conn = traffic.linked()
    assert links_by_request_id(conn) == traffic.expected
    assert sum(1 for v in traffic.expected.values() if v) > 300
    # each client follows on its own keep-alive connection: no link is in doubt
    confidence = "select distinct link_confidence from requests where follow_up_of is not null"
    assert {level for (level,) in conn.execute(confidence)} == {"sure"}
    outcomes = {r[0] for r in conn.execute("select distinct outcome from chains")}
    assert outcomes == {"completed"}
    # one chain per walk that started with a redirect, with the redirects counted
    walks = conn.execute("select count(*) from chains").fetchone()[0]
    assert walks == 50 * 4
    assert conn.execute("select max(length) from chains").fetchone()[0] == 3


def test_relative_and_absolute_locations_chain_with_path_text(traffic: Traffic) -> None:
    with one_client(traffic, follow_redirects=True) as client:
        traffic.walked(client.get("/abs/x"))
    conn = traffic.linked()
    assert links_by_request_id(conn) == traffic.expected
    first = row(conn, "path = '/abs/x'")
    chain = chain_of(conn, first["id"])
    assert chain["path_text"] == "GET /abs/x —302→ GET /walk/x/1 —301→ GET /walk/x/0 —200"
    assert chain["length"] == 2
    assert chain["outcome"] == "completed"
    assert chain["final_status"] == 200
    assert chain["final_url"].endswith("/walk/x/0")
    hops = json.loads(chain["hops"])
    assert [h["status"] for h in hops] == [302, 301, 200]
    assert set(hops[0]) == {"request_id", "method", "url", "status"}


def test_case_percent_encoding_and_default_port_differences_still_link(traffic: Traffic) -> None:
    forwarded = {"x-forwarded-host": "Example.COM", "x-forwarded-proto": "https"}
    with one_client(traffic, headers=forwarded) as client:
        response = client.get("/odd")
        assert response.headers["location"] == ODD_LOCATION
        client.get("/~user/caf%C3%A9?q=a%2Fb", headers={"x-forwarded-host": "example.com:443"})
    conn = traffic.linked()
    redirect_row = row(conn, "path = '/odd'")
    follow_up = row(conn, "path like '/~user/%'")
    assert (
        redirect_row["location_url"]
        == follow_up["url"]
        == "https://example.com/~user/caf%C3%A9?q=a%2Fb"
    )
    assert follow_up["follow_up_of"] == redirect_row["id"]


def test_http_to_https_hop_through_a_trusted_proxy_links(traffic: Traffic) -> None:
    with one_client(traffic, headers={"x-forwarded-host": "example.com"}) as client:
        first = client.get("/secure", headers={"x-forwarded-proto": "http"})
        assert first.headers["location"] == "https://example.com/secure"
        client.get("/secure", headers={"x-forwarded-proto": "https"})
    conn = traffic.linked()
    http = row(conn, "scheme = 'http'")
    https = row(conn, "scheme = 'https'")
    assert https["follow_up_of"] == http["id"]
    chain = chain_of(conn, http["id"])
    assert chain["path_text"] == "GET /secure —301→ GET https://example.com/secure —200"


def test_relative_location_compares_path_only_absolute_compares_host(traffic: Traffic) -> None:
    with one_client(traffic) as client:
        client.get("/rel", headers={"x-forwarded-host": "a.example"})
        client.get("/landing", headers={"x-forwarded-host": "b.example"})
        client.get("/absolute-a", headers={"x-forwarded-host": "b.example"})
        client.get("/landing", headers={"x-forwarded-host": "b.example"})
    conn = traffic.linked()
    rel, absolute = row(conn, "path = '/rel'"), row(conn, "path = '/absolute-a'")
    landings = conn.execute("select * from requests where path = '/landing' order by id").fetchall()
    assert landings[0]["follow_up_of"] == rel["id"]
    assert landings[1]["follow_up_of"] is None  # another host than the absolute Location's
    assert chain_of(conn, absolute["id"])["outcome"] == "unfollowed"


def test_307_post_that_urllib_does_not_follow_stays_unlinked(traffic: Traffic) -> None:
    request = urllib.request.Request(
        traffic.base + "/form307", data=b"a=1", method="POST", headers={"User-Agent": AGENT}
    )
    traffic.sent += 1
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 307
    with one_client(traffic, headers={"user-agent": "python-httpx"}) as client:
        client.get("/landing")  # same IP, soon after, the very target: another client
    conn = traffic.linked()
    post = row(conn, "method = 'POST'")
    assert (
        conn.execute("select count(*) from requests where follow_up_of is not null").fetchone()[0]
        == 0
    )
    chain = chain_of(conn, post["id"])
    assert (chain["outcome"], chain["length"]) == ("unfollowed", 1)
    assert chain["path_text"] == "POST /form307 —307→ /landing (not followed)"


def test_follow_up_on_a_new_connection_is_linked(traffic: Traffic) -> None:
    with one_client(traffic) as first:
        response = first.get("/walk/n/1")
    with one_client(traffic) as second:  # the redirected client reconnected
        second.get(response.headers["location"])
    conn = traffic.linked()
    redirect_row, follow_up = row(conn, "path = '/walk/n/1'"), row(conn, "path = '/walk/n/0'")
    assert redirect_row["connection_key"] != follow_up["connection_key"]
    assert follow_up["follow_up_of"] == redirect_row["id"]


def test_request_that_started_before_the_redirect_ended_is_not_its_follow_up(
    traffic: Traffic,
) -> None:
    async def main() -> None:
        async with traffic.client() as slow_client, traffic.client() as other:
            pending = asyncio.create_task(slow_client.get("/slow"))
            await asyncio.to_thread(SLOW_STARTED.wait, 10)
            await other.get("/landing")  # done while /slow still waits for its release
            await other.get("/release")
            assert (await pending).status_code == 302

    asyncio.run(main())
    conn = traffic.linked()
    assert row(conn, "path = '/landing'")["follow_up_of"] is None
    assert chain_of(conn, row(conn, "path = '/slow'")["id"])["outcome"] == "unfollowed"


def test_loop_chain_gets_outcome_loop(traffic: Traffic) -> None:
    with (
        one_client(traffic, follow_redirects=True, max_redirects=3) as client,
        pytest.raises(httpx.TooManyRedirects),
    ):
        client.get("/loop/a")
    conn = traffic.linked()
    chains = conn.execute("select * from chains").fetchall()
    assert len(chains) == 1
    assert (chains[0]["outcome"], chains[0]["length"]) == ("loop", 4)
    assert chains[0]["path_text"] == (
        "GET /loop/a —302→ GET /loop/b —302→ GET /loop/a —302→ GET /loop/b —302→ "
        "/loop/a (not followed)"
    )


def test_chain_into_404_gets_outcome_error(traffic: Traffic) -> None:
    with one_client(traffic, follow_redirects=True) as client:
        assert client.get("/to-missing").status_code == 404
    conn = traffic.linked()
    chain = chain_of(conn, row(conn, "path = '/to-missing'")["id"])
    assert (chain["outcome"], chain["final_status"]) == ("error", 404)
    assert chain["path_text"] == "GET /to-missing —302→ GET /missing —404"


def test_redirect_to_an_unrecorded_host_gets_outcome_external(traffic: Traffic) -> None:
    with one_client(traffic) as client:
        client.get("/external")
    conn = traffic.linked()
    chain = chain_of(conn, row(conn, "path = '/external'")["id"])
    assert chain["outcome"] == "external"
    assert chain["path_text"] == "GET /external —302→ https://elsewhere.example/x (not followed)"


def test_relinking_replaces_links_and_chains(traffic: Traffic) -> None:
    with one_client(traffic, follow_redirects=True) as client:
        traffic.walked(client.get("/walk/z/2"))
    conn = traffic.linked()
    with conn:
        conn.execute("begin immediate")
        assert link_requests(conn) == 2
        assert build_chains(conn) == 1
        assert link_requests(conn, window=0.0) == 0
        assert build_chains(conn) == 2  # each redirect now starts its own chain
    assert (
        conn.execute("select count(*) from requests where follow_up_of is not null").fetchone()[0]
        == 0
    )


def test_unfollowed_redirect_does_not_take_a_later_redirects_follow_up(traffic: Traffic) -> None:
    with one_client(traffic) as client:
        client.get("/walk/u/1")  # not followed
        traffic.walked(client.get("/walk/u/1", follow_redirects=True))
    conn = traffic.linked()
    first, second = conn.execute("select id from requests where path = '/walk/u/1' order by id")
    assert row(conn, "path = '/walk/u/0'")["follow_up_of"] == second["id"]
    assert chain_of(conn, first["id"])["outcome"] == "unfollowed"


def test_request_with_another_method_than_get_or_the_redirects_is_not_a_follow_up(
    traffic: Traffic,
) -> None:
    with one_client(traffic) as client:
        client.get("/rel")
        client.delete("/landing")  # no client turns a GET redirect into a DELETE
        client.get("/landing")
    conn = traffic.linked()
    assert row(conn, "method = 'DELETE'")["follow_up_of"] is None
    assert (
        row(conn, "path = '/landing' and method = 'GET'")["follow_up_of"]
        == row(conn, "path = '/rel'")["id"]
    )


def test_without_a_transaction_linking_commits_its_own_while_the_recorder_writes(
    traffic: Traffic,
) -> None:
    with one_client(traffic, follow_redirects=True) as client:
        traffic.walked(client.get("/walk/y/2"))
    traffic.linked().close()
    conn = sqlite3.connect(traffic.recorder.writer.db_path)
    for _ in range(3):  # the writer thread commits its stats meanwhile
        with one_client(traffic) as client:
            client.get("/landing")
        assert not conn.in_transaction
        assert link_requests(conn, window=0.0) == 0
        assert link_requests(conn) == 2
        assert build_chains(conn) == 1
        assert not conn.in_transaction
    other = sqlite3.connect(traffic.recorder.writer.db_path)
    links = dict(other.execute("select path, follow_up_of from requests where path like '/walk/%'"))
    ids = dict(other.execute("select path, id from requests where path like '/walk/%'"))
    assert links == {
        "/walk/y/2": None,
        "/walk/y/1": ids["/walk/y/2"],
        "/walk/y/0": ids["/walk/y/1"],
    }
    assert other.execute("select count(*) from chains").fetchone()[0] == 1


def test_linking_and_chains_in_one_pass_from_a_copy_equal_the_two_steps(traffic: Traffic) -> None:
    async def client_walks(number: int) -> None:
        async with traffic.client(follow_redirects=True) as client:
            for step in range(3):
                name = "abc"[(number + step) % 3]
                traffic.walked(await client.get(f"/walk/{name}/{1 + (number + step) % 3}"))
                traffic.walked(await client.get(f"/abs/{name}"))

    async def main() -> None:
        await asyncio.gather(*(client_walks(n) for n in range(10)))

    asyncio.run(main())
    conn = traffic.linked()  # link_requests, then build_chains
    columns = "first_request_id, last_request_id, length, path_text, hops, outcome, final_url"
    chains = conn.execute(f"select {columns} from chains order by id").fetchall()
    conn.execute("update requests set follow_up_of = null")
    conn.execute("delete from chains")
    conn.commit()
    conn.execute("create temp table redirects as select * from requests where status >= 300")
    walked: list[bool] = []
    links, built = link_and_build_chains(
        conn, redirects_from="temp.redirects", meanwhile=lambda rows: walked.append(len(rows) > 0)
    )
    assert walked == [True]
    assert not conn.in_transaction
    assert links_by_request_id(conn) == traffic.expected
    assert links == sum(1 for v in traffic.expected.values() if v)
    assert built == len(chains) > 0
    assert conn.execute(f"select {columns} from chains order by id").fetchall() == chains
