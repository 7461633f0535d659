"""A recorded traffic database for the Datasette, explore and browser tests.

Real HTTP over loopback: a small Starlette shop behind ``RedirectRecorder`` and
httpx clients that follow its redirects. Then the real ``audit()`` fills hop
links, chains and findings when it is available; until then ``link_and_find``
stands in with the few rows these tests need.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder
from auditor.schema import SEVERITY_RANK, connect
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


def link_and_find(db_path: Path) -> None:
    """Stand-in for audit(): link follow-ups, build chains and a few findings."""
    conn = connect(db_path)
    conn.row_factory = __import__("sqlite3").Row
    with conn:
        rows = conn.execute("select * from requests order by id").fetchall()
        redirect_of: dict[int, int] = {}
        for q in rows:
            for r in rows:
                if (
                    r["id"] < q["id"]
                    and r["location_url"] == q["url"]
                    and r["client_key"] == q["client_key"]
                    and r["id"] not in redirect_of.values()
                    and 300 <= r["status"] < 400
                ):
                    redirect_of[q["id"]] = r["id"]
                    break
        for q_id, r_id in redirect_of.items():
            conn.execute("update requests set follow_up_of = ? where id = ?", (r_id, q_id))
        by_id = {r["id"]: r for r in rows}
        follow = {r_id: q_id for q_id, r_id in redirect_of.items()}
        chain_ids: dict[str, int] = {}
        for r in rows:
            if r["id"] in redirect_of or not 300 <= r["status"] < 400:
                continue
            hops, current, seen = [r], r, {r["url"]}
            while current["id"] in follow:
                current = by_id[follow[current["id"]]]
                hops.append(current)
                if current["url"] in seen:
                    break
                seen.add(current["url"])
            loop = len(seen) < len(hops)
            text = " ".join(
                f"{h['method']} {h['path']} —{h['status']}" + ("→" if i < len(hops) - 1 else "")
                for i, h in enumerate(hops)
            )
            cur = conn.execute(
                "insert into chains (first_request_id, last_request_id, length, path_text, "
                "hops, start_url, final_url, final_status, outcome, client_key, started_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    hops[0]["id"],
                    hops[-1]["id"],
                    sum(1 for h in hops if 300 <= h["status"] < 400),
                    text,
                    json.dumps(
                        [
                            {"request_id": h["id"], "method": h["method"], "url": h["url"]}
                            | {"status": h["status"]}
                            for h in hops
                        ]
                    ),
                    hops[0]["url"],
                    hops[-1]["url"],
                    hops[-1]["status"],
                    "loop" if loop else ("completed" if len(hops) > 1 else "unfollowed"),
                    r["client_key"],
                    r["started_at"],
                ),
            )
            chain_ids.setdefault(r["path"], int(cur.lastrowid or 0))

        def first(path: str) -> int:
            return int(next(r["id"] for r in rows if r["path"] == path))

        run = conn.execute(
            "insert into audit_runs (started_at, rows_scanned, errors, warnings, infos) "
            "values (0, ?, 3, 2, 1)",
            (len(rows),),
        ).lastrowid
        findings = [
            ("method-changed", "error", "POST redirected with 302 became GET", "/login", "POST",
             302, "/home", 3, "/login"),
            ("redirect-loop", "error", "Redirect loop", "/loop/{n}", "GET", 302, "/loop/2", 1,
             "/loop/1"),
            ("open-redirect", "error", "Open redirect from a query parameter", "/go", "GET", 302,
             "https://evil.example/phish", 1, "/go"),
            ("scheme-downgrade", "warning", "https redirected to http://", "/secure", "GET", 301,
             "http://127.0.0.1/home", 1, "/secure"),
            ("redirect-to-error", "warning", "Redirect ends in 404", "/xss", "GET", 302, XSS_PATH,
             1, "/xss"),
            ("redirect-chain", "info", "Chain of 2 redirects", "/a", "GET", 302, "/c", 1, "/a"),
        ]  # fmt: skip
        for rule, severity, title, source, method, status, target, hits, path in findings:
            conn.execute(
                "insert into findings (rule, severity, severity_rank, title, message, source, "
                "method, status, target, hits, first_seen, last_seen, example_request_id, "
                "example_chain_id, audit_run_id) values (?, ?, ?, ?, '', ?, ?, ?, ?, ?, 0, 0, "
                "?, ?, ?)",
                (rule, severity, SEVERITY_RANK[severity], title, source, method, status, target,
                 hits, first(path), chain_ids.get(path), run),
            )  # fmt: skip
    conn.close()


def audit_fixture(db_path: Path) -> None:
    """The real audit when it exists, else the stand-in."""
    try:
        from auditor.audit import audit
    except ImportError:
        link_and_find(db_path)
    else:
        audit(db_path)


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
    audit_fixture(path)
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
