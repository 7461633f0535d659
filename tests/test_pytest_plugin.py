"""`pytest --redirect-audit`: a project's own test suite records and audits its redirects."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import fetch_rows

pytest_plugins = ["pytester"]

SHOP_APP = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route


async def old_orders(request: Request):
    await request.body()
    return RedirectResponse("/v2/orders", status_code=301)


async def orders(request: Request):
    body = await request.body()
    return PlainTextResponse(f"{request.method} {len(body)} {request.client.host}")


app = Starlette(
    routes=[
        Route("/v1/orders", old_orders, methods=["POST"]),
        Route("/v2/orders", orders, methods=["GET", "POST"]),
    ]
)
"""

POSTS_TO_A_301 = """
from starlette.testclient import TestClient

from shop_app import app


def test_create_order():
    client = TestClient(app)
    response = client.post("/v1/orders", data={"item": "book"})
    assert response.status_code == 200
    assert response.text == "GET 0 testclient"  # the app still sees the real client
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(shop_app=SHOP_APP)
    pytester.syspathinsert()
    return pytester


def test_the_summary_shows_the_finding_and_the_test_that_caused_it(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    project.makepyfile(test_orders=POSTS_TO_A_301)
    db = tmp_path / "suite.db"
    result = project.runpytest(f"--redirect-audit={db}")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*redirect audit*",
            "ERROR   method-change-on-move: POST /v1/orders 301 -> */v2/orders (1 hit(s))",
            "*; seen in test_orders.py::test_create_order",
            "*1 error*",
            f"explore: redirect-auditor explore {db}",
        ]
    )
    rows = fetch_rows(db, "select method, route, status, follow_up_of from requests order by id")
    assert [(r["method"], r["route"], r["status"]) for r in rows] == [
        ("POST", "/v1/orders", 301),
        ("GET", "/v2/orders", 200),
    ]
    assert rows[1]["follow_up_of"] is not None


def test_fail_on_error_fails_a_passing_run(project: pytest.Pytester) -> None:
    # A fresh interpreter, and the FastAPI-docs style client built at import time.
    project.makepyfile(
        test_orders="""
        from starlette.testclient import TestClient
        from shop_app import app

        client = TestClient(app)

        def test_create_order():
            assert client.post("/v1/orders", data={"item": "book"}).status_code == 200
        """
    )
    result = project.runpytest_subprocess("--redirect-audit", "--redirect-audit-fail-on=error")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*redirect audit failed: findings at or above 'error'*"])


def test_fail_on_is_not_triggered_by_milder_findings(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_fine="""
        from starlette.testclient import TestClient
        from shop_app import app

        def test_get():
            assert TestClient(app).get("/v2/orders").status_code == 200
        """
    )
    result = project.runpytest("--redirect-audit-fail-on=warning")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*redirect audit*", "*0 errors*"])


def test_httpx_asgi_transport_is_recorded_too(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_async="""
        import asyncio
        import httpx
        from shop_app import app

        def test_post_with_asgi_transport():
            async def main():
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
                    return await c.post("/v1/orders", content=b"x=1", follow_redirects=True)
            assert asyncio.run(main()).status_code == 200
        """
    )
    result = project.runpytest("--redirect-audit", "--redirect-audit-fail-on=error")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["ERROR   method-change-on-move: POST /v1/orders 301*", "*seen in test_async.py::*"]
    )


def test_each_test_is_its_own_client(project: pytest.Pytester) -> None:
    # One test stops at the 301; the next GETs the target. As one client they would be
    # linked into a POST->GET that lost the body (an error); as two clients they are not,
    # and the moved resource is only a risk (a warning).
    project.makepyfile(
        test_two="""
        from starlette.testclient import TestClient
        from shop_app import app

        def test_redirect_is_permanent():
            response = TestClient(app).post("/v1/orders", follow_redirects=False)
            assert response.status_code == 301

        def test_list_orders():
            assert TestClient(app).get("/v2/orders").status_code == 200
        """
    )
    result = project.runpytest("--redirect-audit", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert "ERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines(["WARNING method-change-on-move: POST /v1/orders 301*"])


def test_without_the_option_nothing_is_recorded(project: pytest.Pytester) -> None:
    project.makepyfile(test_orders=POSTS_TO_A_301)
    result = project.runpytest()
    result.assert_outcomes(passed=1)
    assert "redirect audit" not in result.stdout.str()


def test_a_suite_without_asgi_requests_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--redirect-audit")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*no requests to an ASGI app were recorded*"])


def test_a_database_that_is_not_a_traffic_database_is_refused(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("keep me")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest(f"--redirect-audit={notes}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--redirect-audit: *not a SQLite database*"])
    assert notes.read_text() == "keep me"


def test_a_test_path_after_a_bare_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_nothing():\n    pass\n")
    result = pytester.runpytest("--redirect-audit", "test_x.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*write --redirect-audit=DB*"])
