"""A recorded traffic database for the Datasette, explore and browser tests.

Real HTTP over loopback: a small Starlette shop behind ``RedirectRecorder`` and
httpx clients that follow its redirects; then the real ``audit()`` fills hop
links, chains and findings.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder
from auditor.analysis.audit import audit
from auditor.store.journal import unpack_file
from auditor.store.schema import connect
from tests.servers import serve_in_thread

XSS_PATH = "/<script>alert(1)</script>"
BROWSER_UA = "fixture-browser/1.0"
CURL_UA = "curl/8.5.0"


def raw_redirect(location: str, status: int = 302) -> Response:
    """A redirect whose Location is sent exactly as given (no quoting)."""
    response = Response(status_code=status)
    response.raw_headers.append((b"location", location.encode("latin-1")))
    return response


async def login(request: Request) -> Response:
    if request.method == "POST":
        await request.body()
        return RedirectResponse("/home", status_code=302)
    return PlainTextResponse("login form")


async def page(request: Request) -> Response:
    return PlainTextResponse(f"page {request.url.path}")


async def old(request: Request) -> Response:
    return RedirectResponse("/new", status_code=301)


async def step_a(request: Request) -> Response:
    return RedirectResponse("/b", status_code=302)


async def step_b(request: Request) -> Response:
    return RedirectResponse("/c", status_code=307)


async def loop(request: Request) -> Response:
    other = 2 if request.path_params["n"] == 1 else 1
    return RedirectResponse(f"/loop/{other}", status_code=302)


async def go(request: Request) -> Response:
    return raw_redirect(request.query_params.get("next", "/home"))


async def secure(request: Request) -> Response:
    return raw_redirect(f"http://{request.headers['host']}/home", status=301)


async def xss(request: Request) -> Response:
    return raw_redirect(XSS_PATH)


APP = Starlette(
    routes=[
        Route("/login", login, methods=["GET", "POST"]),
        Route("/home", page),
        Route("/new", page),
        Route("/c", page),
        Route("/old", old),
        Route("/a", step_a),
        Route("/b", step_b),
        Route("/loop/{n:int}", loop),
        Route("/go", go),
        Route("/secure", secure),
        Route("/xss", xss),
    ]
)


def record_traffic(db_path: Path) -> None:
    """Serve APP behind the recorder and drive every scenario over real HTTP."""
    recorder = RedirectRecorder(APP, db_path, trusted_proxies=["127.0.0.1"])
    try:
        with serve_in_thread(recorder) as base:
            browser = httpx.Client(
                base_url=base, follow_redirects=True, headers={"user-agent": BROWSER_UA}
            )
            curl = httpx.Client(
                base_url=base, follow_redirects=True, headers={"user-agent": CURL_UA}
            )
            with browser, curl:
                for client in (browser, browser, curl):
                    client.post("/login", data={"user": "ann"})  # 302: POST becomes GET
                for _ in range(3):
                    browser.get("/old")
                browser.get("/a")
                looper = httpx.Client(base_url=base, follow_redirects=True, max_redirects=5)
                with looper, pytest.raises(httpx.TooManyRedirects):
                    looper.get("/loop/1")
                browser.get("/go", params={"next": "https://evil.example/phish"},
                            follow_redirects=False)  # fmt: skip
                browser.get("/secure", headers={"x-forwarded-proto": "https"},
                            follow_redirects=False)  # fmt: skip
                browser.get("/xss")
    finally:
        recorder.writer.close()
    unpack_file(db_path)  # the recorder's batches into requests, as any reader does first


@pytest.fixture(scope="session")
def recorded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Recorded (not audited) traffic, shared read-only: copy it before changing it."""
    path = tmp_path_factory.mktemp("recorded") / "traffic.db"
    record_traffic(path)
    return path


@pytest.fixture(scope="session")
def audited_db(recorded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recorded traffic with chains and findings, as ``shop-2026.db``."""
    path = tmp_path_factory.mktemp("audited") / "shop-2026.db"
    shutil.copy(recorded_db, path)
    audit(path)
    return path


def test_fixture_records_every_scenario(recorded_db: Path) -> None:
    conn = connect(recorded_db)
    paths = {row[0] for row in conn.execute("select path from requests")}
    conn.close()
    assert {"/login", "/home", "/old", "/new", "/a", "/b", "/c", "/go", "/secure"} <= paths
    assert {"/loop/1", "/loop/2", "/xss", XSS_PATH} <= paths


def test_fixture_is_audited(audited_db: Path) -> None:
    conn = connect(audited_db)
    assert conn.execute("select count(*) from findings").fetchone()[0] > 0
    assert conn.execute("select count(*) from chains").fetchone()[0] > 0
    conn.close()
