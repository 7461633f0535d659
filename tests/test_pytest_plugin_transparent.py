"""With `--redirect-audit` the test client's app is still the user's app (issue 17,
case 4): ``client.app.dependency_overrides`` works, ``client.app is app``, and the
requests are recorded all the same."""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

API = """
from fastapi import Depends, FastAPI
from fastapi.responses import RedirectResponse

app = FastAPI()


def current_user():
    return "anonymous"


@app.get("/me")
def me(user: str = Depends(current_user)):
    return {"user": user}


@app.get("/profile")
def profile():
    return RedirectResponse("/me", status_code=302)
"""

TESTS = """
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import app, current_user


@pytest.fixture
def client():
    client = TestClient(app)
    client.app.dependency_overrides[current_user] = lambda: "ada"
    yield client
    client.app.dependency_overrides.clear()


def test_the_client_app_is_the_app(client):
    assert client.app is app
    assert isinstance(client.app, FastAPI)


def test_dependency_overrides_through_client_app(client):
    assert client.get("/profile").json() == {"user": "ada"}


def test_lifespan_state_through_client_app():
    with TestClient(app) as client:
        client.app.state.greeting = "hello"
        assert app.state.greeting == "hello"
        assert client.get("/me").json() == {"user": "anonymous"}


def test_asgi_transport_app_reads_and_writes_the_app():
    transport = httpx.ASGITransport(app=app)
    transport.app.dependency_overrides[current_user] = lambda: "grace"
    try:
        assert transport.app.dependency_overrides is app.dependency_overrides
        assert transport.app.title == app.title

        async def main():
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
                return (await c.get("/profile", follow_redirects=True)).json()

        import asyncio

        assert asyncio.run(main()) == {"user": "grace"}
    finally:
        app.dependency_overrides.clear()
"""

SUMMARY = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)")


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Test node id -> outcome, from the ``-rA`` short summary."""
    found = (SUMMARY.match(line) for line in result.outlines)
    return {m.group(2): m.group(1) for m in found if m}


def test_client_app_stays_the_users_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(api=API, test_api=TESTS)
    pytester.syspathinsert()
    plain = pytester.runpytest("-rA", "-p", "no:randomly")
    audited = pytester.runpytest("-rA", "-p", "no:randomly", "--redirect-audit")
    assert len(outcomes(plain)) == 4 and set(outcomes(plain).values()) == {"PASSED"}
    assert outcomes(audited) == outcomes(plain)
    # Recorded all the same: 2 + 1 + 2 requests, and the 302 GET is a finding.
    audited.stdout.fnmatch_lines(
        [
            "INFO    legacy-302: GET /profile 302 -> http://*/me (2 hit(s))",
            "*; seen in test_api.py::test_dependency_overrides_through_client_app, "
            "test_api.py::test_asgi_transport_app_reads_and_writes_the_app",
            "*from 5 requests (2 redirects*",
        ]
    )


def test_the_same_in_a_fresh_interpreter(pytester: pytest.Pytester) -> None:
    # FastAPI and httpx imported after the plugin started: patched on import.
    pytester.makepyfile(api=API, test_api=TESTS)
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--redirect-audit")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*from 5 requests (2 redirects*"])
