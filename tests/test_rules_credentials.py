"""credentials-to-other-origin on traffic recorded through real uvicorn: urllib forwards
Authorization to another host on a redirect, httpx drops it (client-behaviour.md).
127.0.0.1 and localhost are different hosts to every client."""

from __future__ import annotations

import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor import AuditResult, RedirectRecorder, audit
from auditor.analysis.rules.base import Finding
from tests.servers import serve_in_thread


def to_localhost(path: str) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint redirecting to ``path`` on localhost: another host than 127.0.0.1."""

    async def endpoint(request: Request) -> Response:
        return RedirectResponse(str(request.url.replace(hostname="localhost", path=path)), 302)

    return endpoint


async def file(request: Request) -> Response:
    return PlainTextResponse("file")


app = Starlette(
    routes=[
        Route("/account/export", to_localhost("/files/export")),
        Route("/account/report", to_localhost("/files/report")),
        Route("/account/local", lambda _: RedirectResponse("/files/local", 302)),
        Route("/files/{name}", file),
    ]
)
TOKEN = {"Authorization": "Bearer not-a-real-token"}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    db: Path = tmp_path_factory.mktemp("credentials") / "traffic.db"
    recorder = RedirectRecorder(app, db_path=db)
    try:
        with serve_in_thread(recorder) as base:
            # urllib forwards Authorization to localhost
            request = urllib.request.Request(f"{base}/account/export", headers=TOKEN)
            urllib.request.urlopen(request, timeout=10).close()
            # httpx drops it on the way to another host
            httpx.get(f"{base}/account/report", headers=TOKEN, follow_redirects=True, timeout=10)
            httpx.get(f"{base}/account/local", headers=TOKEN, follow_redirects=True, timeout=10)
    finally:
        recorder.writer.close()
    return audit(db)


def found(result: AuditResult, source: str) -> list[Finding]:
    return [
        f for f in result.findings if f.rule == "credentials-to-other-origin" and f.source == source
    ]


def test_a_follow_up_that_carried_authorization_to_another_host_is_an_error(
    result: AuditResult,
) -> None:
    [finding] = found(result, "/account/export")
    assert finding.severity == "error"
    assert "Authorization" in finding.message and "urllib" in finding.message
    [urllib_client] = [c for c in finding.evidence["clients"] if c["client"] == "urllib"]
    assert urllib_client["followed"] == 1


def test_a_redirect_to_another_host_whose_client_dropped_authorization_is_a_warning(
    result: AuditResult,
) -> None:
    [finding] = found(result, "/account/report")
    assert finding.severity == "warning"


def test_a_same_origin_redirect_with_credentials_is_no_finding(result: AuditResult) -> None:
    assert found(result, "/account/local") == []


def test_credential_values_are_never_recorded(result: AuditResult) -> None:
    assert b"not-a-real-token" not in Path(result.db_path).read_bytes()
