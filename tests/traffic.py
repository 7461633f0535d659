"""Scenario traffic for audit tests: a Starlette app with one endpoint per redirect
scenario, served by real uvicorn behind the real RedirectRecorder, driven by real
clients (httpx, curl, urllib). Recorded once per test session; every caller gets its
own copy of the database.

Each scenario has its own paths (and its own landing page), so hop linking is never
ambiguous. Scenarios that must not be linked run from other loopback addresses
(127.0.0.2, ...): another client key.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder
from tests.servers import serve_in_thread

# path -> (status, Location) for every plain redirect endpoint
REDIRECTS: dict[str, tuple[int, str]] = {
    # method family
    "/m/post-301": (301, "/land/post-301"),
    "/m/post-302": (302, "/land/post-302"),
    "/m/post-303": (303, "/land/post-303"),
    "/m/post-307": (307, "/land/post-307"),
    "/m/put-301": (301, "/land/put-301"),
    "/m/put-308": (308, "/land/put-308"),
    "/m/head-307": (307, "/land/head-307"),
    "/m/get-307": (307, "/land/get-307"),
    "/m/form-302": (302, "/m/post-only"),
    "/m/form-307": (307, "/m/post-only-2"),
    "/m/login-307": (307, "/land/welcome"),
    "/m/post-303-bad": (303, "/m/post-only"),
    "/m/post-302-gone": (302, "/m/no-such-page"),
    "/v1/things": (301, "/v2/things"),
    "/m/moved": (301, "/m/items/"),
    # chains family
    "/c/chain-a": (301, "/c/chain-b"),
    "/c/chain-b": (302, "/land/chain"),
    "/c/perm-a": (301, "/c/perm-b"),
    "/c/perm-b": (308, "/land/perm"),
    "/c/one": (301, "/land/one"),
    "/c/loop-a": (302, "/c/loop-b"),
    "/c/loop-b": (302, "/c/loop-a"),
    "/c/static-a": (302, "/c/static-b"),
    "/c/static-b": (302, "/c/static-a"),
    "/c/s1": (301, "/c/s2"),
    "/c/s2": (301, "/c/s3"),
    "/c/s3": (301, "/land/s"),
    "/c/self": (302, "/c/self"),
    "/c/gone": (301, "/c/missing"),
    "/c/unfollowed": (302, "/land/unfollowed"),
    "/c/followed": (302, "/land/followed"),
}


async def redirect(request: Request) -> Response:
    status, location = REDIRECTS[request.url.path]
    return RedirectResponse(location, status_code=status)


async def id_loop(request: Request) -> Response:
    """/t/{n}/a <-> /t/{n}/b: one loop per id, all at one place."""
    n, side = request.path_params["n"], request.path_params["side"]
    return RedirectResponse(f"/t/{n}/{'b' if side == 'a' else 'a'}", status_code=302)


async def landing(request: Request) -> Response:
    body = await request.body()
    return PlainTextResponse(f"{request.method} {len(body)}")


async def post_only(request: Request) -> Response:
    return PlainTextResponse("created", status_code=201)


async def items(request: Request) -> Response:
    return PlainTextResponse("items")


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

app = Starlette(
    routes=[
        *(Route(path, redirect, methods=ALL_METHODS) for path in REDIRECTS),
        Route("/land/{name}", landing, methods=ALL_METHODS),
        Route("/m/post-only", post_only, methods=["POST"]),
        Route("/m/post-only-2", post_only, methods=["POST"]),
        Route("/v2/things", landing, methods=["PUT"]),
        Route("/t/{n:int}/{side}", id_loop),
        Route("/m/items/", items, methods=["GET", "POST"]),  # /m/items -> 307 (redirect_slashes)
    ]
)


def curl(*args: str) -> None:
    subprocess.run(["curl", "-s", "-o", "/dev/null", *args], check=True, timeout=30)


def urllib_request(url: str, method: str) -> None:
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10).close()


def from_address(address: str) -> httpx.Client:
    """An httpx client whose requests come from another loopback address (client key)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def drive(base: str) -> None:
    """Every scenario, in order; each client follows exactly as it does in the wild."""
    with httpx.Client(base_url=base, follow_redirects=True, timeout=10, max_redirects=5) as web:
        # method family: httpx turns POST into GET on 301/302, keeps it on 307
        for path in ("/m/post-301", "/m/post-302", "/m/post-303", "/m/post-307"):
            web.post(path, content=b"name=value")
        web.get("/m/get-307")
        web.head("/m/get-307")
        web.post("/m/form-302", content=b"a=1")  # -> GET /m/post-only -> 405
        web.post("/m/form-307", data={"a": "1"})  # form -> POST /m/post-only-2 -> 201
        web.post("/m/login-307", data={"user": "u", "password": "p"})  # re-posted to /land
        web.post("/m/post-303-bad", data={"a": "1"})  # -> GET /m/post-only -> 405
        web.post("/m/post-302-gone", data={"a": "1"})  # -> GET /m/no-such-page -> 404
        web.get("/m/items")  # Starlette redirect_slashes: 307 to /m/items/
        web.post("/m/items", content=b"a=1")
        web.get("/m/items/")
        web.get("/m/moved")
        # chains family
        web.get("/c/chain-a")
        web.get("/c/perm-a")
        web.get("/c/one")
        with contextlib.suppress(httpx.TooManyRedirects):
            web.get("/c/loop-a")
        web.get("/c/gone")
        web.get("/c/self", follow_redirects=False)
        for _ in range(10):
            web.get("/c/unfollowed", follow_redirects=False)
            web.get("/c/followed")
    # curl -L -X PUT --data keeps the method and drops the body on 301; keeps both on 308
    curl("-L", "-X", "PUT", "--data", "x=1", f"{base}/m/put-301")
    curl("-L", "-X", "PUT", "--data", "x=1", f"{base}/m/put-308")
    # a moved API: requests keeps PUT and drops the body on 301; httpx keeps both
    requests.put(f"{base}/v1/things", data=b"x=1", timeout=10)
    httpx.put(f"{base}/v1/things", content=b"x=1", follow_redirects=True, timeout=10)
    # urllib does not follow a 307 POST: its quirk, not an unfollowed redirect
    for _ in range(6):
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{base}/m/post-307",
                    data=b'{"a": 1}',
                    headers={"Content-Type": "application/json"},
                    method="POST",
                ),
                timeout=10,
            ).close()
    # three loops of one route template, each hop requested once by another client: only
    # the static graph sees them
    for n in (1, 2, 3):
        for side, address in (("a", f"127.0.1.{n}"), ("b", f"127.0.2.{n}")):
            with from_address(address) as client:
                client.get(f"{base}/t/{n}/{side}")
    # urllib follows a HEAD on 307 with a GET
    urllib_request(f"{base}/m/head-307", "HEAD")
    # the static graph: each redirect requested once, by different clients, never followed
    for address, path in (
        ("127.0.0.2", "/c/static-a"),
        ("127.0.0.3", "/c/static-b"),
        ("127.0.0.4", "/c/s1"),
        ("127.0.0.5", "/c/s2"),
        ("127.0.0.6", "/c/s3"),
    ):
        with from_address(address) as client:
            client.get(f"{base}{path}")


def record(db_path: Path) -> Path:
    """Serve the scenario app under uvicorn with the recorder and drive every scenario."""
    recorder = RedirectRecorder(app, db_path=db_path)
    try:
        with serve_in_thread(recorder) as base:
            drive(base)
    finally:
        recorder.writer.close()
    return db_path


_recorded: Path | None = None


def scenario_db(tmp_path_factory: pytest.TempPathFactory, name: str = "traffic.db") -> Path:
    """A fresh copy of the scenario traffic database (recorded on first use per session)."""
    global _recorded
    if _recorded is None:
        _recorded = record(tmp_path_factory.mktemp("scenario-traffic") / "recorded.db")
    copy = tmp_path_factory.mktemp("audit") / name
    source = sqlite3.connect(_recorded)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy
