"""The status rules on real traffic: a Starlette app behind the RedirectRecorder,
served by uvicorn on 127.0.0.1, driven by httpx and curl. One database per module."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auditor import audit
from auditor.analysis.rules.status import body_on_no_content, delete_200_no_content
from tests.rule_apps import by_source, curl, raw, recording, run_rule


async def delete_empty_200(request: Request) -> Response:
    return Response(status_code=200)


async def delete_204(request: Request) -> Response:
    return Response(status_code=204)


async def delete_with_status_body(request: Request) -> Response:
    return JSONResponse({"deleted": request.path_params["id"]})


APP = Starlette(
    routes=[
        Route("/items/{id}", delete_empty_200, methods=["DELETE"]),
        Route("/things/{id}", delete_204, methods=["DELETE"]),
        Route("/records/{id}", delete_with_status_body, methods=["DELETE"]),
        Route("/empty-get", delete_empty_200),
        Route("/no-content-with-body", raw(204, body=b"oops")),
        Route("/not-modified-with-body", raw(304, body=b"<html>")),
        Route("/no-content", raw(204)),
        Route("/not-modified", raw(304, [("etag", '"v1"')])),
    ]
)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("status") / "traffic.db"
    with recording(APP, path) as base, httpx.Client(base_url=base, timeout=10) as web:
        for item_id in (1, 2):
            web.delete(f"/items/{item_id}")
        web.delete("/things/1")
        web.delete("/records/1")
        web.get("/empty-get")
        # uvicorn refuses the body after sending the headers: the client sees a bodiless
        # 204/304; the recorder counted the bytes the app sent.
        response = web.get("/no-content-with-body")
        assert (response.status_code, response.content) == (204, b"")
        assert curl("-w", "%{http_code}", f"{base}/not-modified-with-body").stdout == "304"
        web.get("/no-content")
        web.get("/not-modified")
    return path


def test_delete_answered_200_with_empty_body_is_delete_200_no_content(db: Path) -> None:
    sources = by_source(run_rule(db, delete_200_no_content))
    assert set(sources) == {"/items/{id}"}
    finding = sources["/items/{id}"][0]
    assert (finding.severity, finding.method, finding.status, finding.hits) == (
        "info",
        "DELETE",
        200,
        2,
    )
    assert "204" in finding.message and "status_code=204" in finding.recommendation


def test_delete_204_json_200_and_empty_get_are_not_delete_200_no_content(db: Path) -> None:
    sources = by_source(run_rule(db, delete_200_no_content))
    assert {"/things/{id}", "/records/{id}", "/empty-get"}.isdisjoint(sources)


def test_204_and_304_with_a_body_are_body_on_no_content(db: Path) -> None:
    sources = by_source(run_rule(db, body_on_no_content))
    assert set(sources) == {"/no-content-with-body", "/not-modified-with-body"}
    finding = sources["/no-content-with-body"][0]
    assert finding.severity == "warning" and finding.status == 204
    assert "uvicorn" in finding.message
    assert sources["/not-modified-with-body"][0].status == 304


def test_audit_stores_the_status_findings(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    # audit() writes findings and links hops: give it its own copy of the traffic
    source, target = sqlite3.connect(db), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    result = audit(copy)
    rules = {f.rule for f in result.findings}
    assert {"delete-200-no-content", "body-on-no-content"} <= rules
