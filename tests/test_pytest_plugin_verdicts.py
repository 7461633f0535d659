"""Verdicts on a test suite follow the severity policy (issue 17, case 3).

A test that provokes a 401 or a 422 behind a slash redirect on purpose (no token, an
invalid body) shows a slash redirect, an info, not an error: a 4xx after a redirect is
the redirect's fault only when the redirect changed the method or body, or pointed at a
missing resource (404/410), or a 303 sent a GET where only POST is taken (405).
Findings group by route template, not by query string.
"""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

API = """
from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@app.get("/items/")
def list_items(q: str | None = None, authorization: str | None = Header(None)):
    if authorization != "Bearer good":
        raise HTTPException(401, "no token")
    return []


@app.post("/items/")
def create_item(item: Item):
    return item


@app.get("/catalogue")
def catalogue():
    return RedirectResponse("/catalog-that-was-removed")


@app.post("/orders")
def place_order():
    return RedirectResponse("/orders/receipt", status_code=303)


@app.post("/orders/receipt")
def receipt():
    return {"ok": True}
"""

PROVOKED = """
from fastapi.testclient import TestClient

from api import app

client = TestClient(app)


def test_listing_needs_a_token():
    for page in range(5):
        assert client.get(f"/items?q=shoes&page={page}").status_code == 401


def test_an_invalid_item_is_refused():
    assert client.post("/items", json={"name": "shoe", "price": "free"}).status_code == 422


def test_a_good_token_lists_items():
    assert client.get("/items?q=hats", headers={"Authorization": "Bearer good"}).json() == []
"""

BROKEN = """
from fastapi.testclient import TestClient

from api import app

client = TestClient(app)


def test_the_catalogue_link():
    assert client.get("/catalogue").status_code == 404


def test_placing_an_order():
    assert client.post("/orders").status_code == 405
"""

FINDING = re.compile(r"^(ERROR|WARNING|INFO) +[a-z-]+: .*\(\d+ hit\(s\)\)$")


def findings(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if FINDING.match(line)]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(api=API)
    pytester.syspathinsert()
    return pytester


def test_provoked_401_and_422_behind_slash_redirects_are_no_error(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_provoked=PROVOKED)
    result = project.runpytest("-p", "no:randomly", "--redirect-audit-fail-on=warning")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.OK
    # One finding per place: the six GETs with their different query strings are one.
    assert findings(result) == [
        "INFO    slash-redirect: GET /items 307 -> http://testserver/items/?q=shoes&page=0 "
        "(6 hit(s))",
        "INFO    slash-redirect: POST /items 307 -> http://testserver/items/ (1 hit(s))",
    ]
    result.stdout.fnmatch_lines(
        [
            "*; seen in test_provoked.py::test_listing_needs_a_token, "
            "test_provoked.py::test_a_good_token_lists_items",
            "*; seen in test_provoked.py::test_an_invalid_item_is_refused",
            "*0 errors, 0 warnings, 2 info*",
        ]
    )


def test_a_redirect_to_a_missing_page_or_a_refused_get_is_an_error(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_broken=BROKEN)
    result = project.runpytest("-p", "no:randomly", "--redirect-audit-fail-on=error")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    errors = [line for line in findings(result) if line.startswith("ERROR")]
    assert errors == [
        "ERROR   redirect-target-fails: GET /catalogue 307 -> "
        "http://testserver/catalog-that-was-removed (1 hit(s))",
        "ERROR   redirect-target-fails: POST /orders 303 -> http://testserver/orders/receipt "
        "(1 hit(s))",
    ]
    result.stdout.fnmatch_lines(
        [
            "ERROR   redirect-target-fails: GET /catalogue*",
            "*; seen in test_broken.py::test_the_catalogue_link",
            "ERROR   redirect-target-fails: POST /orders*",
            "*; seen in test_broken.py::test_placing_an_order",
        ]
    )
