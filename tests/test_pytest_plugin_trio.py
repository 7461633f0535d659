"""`--redirect-audit` on tests parametrized for anyio's trio backend (issue 17, case 1).

The recorder's lifespan-shutdown flush used ``asyncio.to_thread``, which raises outside
asyncio: every trio-parametrized lifespan test failed with the plugin on, and an app
served on trio would have failed at shutdown. Here the same tests pass with and without
the plugin, and the app's own recorder flushes at a trio shutdown, with both writers.
"""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]
pytest.importorskip("trio")

PROJECT = """
import contextlib
import sqlite3

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from auditor import RedirectRecorder
from auditor.store.journal import unpack_file

events = []


@contextlib.asynccontextmanager
async def lifespan(app):
    events.append("startup")
    yield
    events.append("shutdown")


async def old(request):
    return RedirectResponse("/new", status_code=308)


async def new(request):
    return PlainTextResponse("new")


def make_app(**recorder):
    app = Starlette(routes=[Route("/old", old), Route("/new", new)], lifespan=lifespan)
    if recorder:
        app.add_middleware(RedirectRecorder, **recorder)
    return app


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


def test_lifespan(anyio_backend):
    events.clear()
    with TestClient(make_app(), backend=anyio_backend) as client:
        assert client.get("/old").text == "new"
    assert events == ["startup", "shutdown"]


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_the_apps_own_recorder_flushes_at_shutdown(anyio_backend, writer, tmp_path):
    db = tmp_path / "own.db"
    # An hour between the writer's own flushes: only the shutdown flush writes the rows.
    app = make_app(db_path=db, writer=writer, flush_interval=3600)
    with TestClient(app, backend=anyio_backend) as client:
        assert client.get("/old").text == "new"
    unpack_file(db)  # the recorder's batches into requests
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("select path, status from requests order by id").fetchall()
    finally:
        conn.close()
    assert rows == [("/old", 308), ("/new", 200)]


@pytest.mark.anyio
async def test_asgi_transport(anyio_backend):
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        assert (await client.get("/old", follow_redirects=True)).text == "new"
"""

SUMMARY = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)")


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Test node id -> outcome, from the ``-rA`` short summary."""
    found = (SUMMARY.match(line) for line in result.outlines)
    return {m.group(2): m.group(1) for m in found if m}


def test_trio_parametrized_lifespan_tests_pass_with_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_backends=PROJECT)
    plain = pytester.runpytest("-rA", "-p", "no:randomly")
    audited = pytester.runpytest("-rA", "-p", "no:randomly", "--redirect-audit")
    expected = {
        "test_backends.py::test_lifespan[asyncio]",
        "test_backends.py::test_lifespan[trio]",
        "test_backends.py::test_the_apps_own_recorder_flushes_at_shutdown[asyncio-process]",
        "test_backends.py::test_the_apps_own_recorder_flushes_at_shutdown[asyncio-thread]",
        "test_backends.py::test_the_apps_own_recorder_flushes_at_shutdown[trio-process]",
        "test_backends.py::test_the_apps_own_recorder_flushes_at_shutdown[trio-thread]",
        "test_backends.py::test_asgi_transport[asyncio]",
        "test_backends.py::test_asgi_transport[trio]",
    }
    assert outcomes(plain) == dict.fromkeys(expected, "PASSED")
    assert outcomes(audited) == outcomes(plain)
    assert audited.ret == pytest.ExitCode.OK
    # Every request of every backend was recorded: 2 per test, 8 tests.
    audited.stdout.fnmatch_lines(["*redirect audit*", "*from 16 requests (8 redirects*"])
