"""The recorder notes the wrapped app's framework once per process in ``recorder_stats``,
with either writer, and records Litestar's route template.

Every app is the framework's real application object served by real uvicorn on
127.0.0.1; Django runs in its own process (its settings are process-wide) under
``redirect-auditor run``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor import RedirectRecorder
from auditor.record.middleware import detect_framework
from tests.servers import (
    cli_command,
    fetch_rows,
    free_port,
    serve_in_process,
    serve_in_thread,
    wait_for,
)

WRITERS = ["process", "thread"]


def framework_of(db: Path) -> list[Any]:
    return [row["framework"] for row in fetch_rows(db, "select framework from recorder_stats")]


def record_one_request(recorder: RedirectRecorder, path: str = "/") -> int:
    """Serve the recorder under uvicorn, send one GET, flush; the response's status."""
    with serve_in_thread(recorder) as url:
        status = httpx.get(url + path, timeout=30).status_code
    recorder.writer.flush()
    return status


# --- the apps: each framework's own application object ---------------------------------


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    async def old(request: Any) -> RedirectResponse:
        return RedirectResponse("/new")

    return Starlette(routes=[Route("/", old)])


def fastapi_app() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    app = FastAPI()

    @app.get("/")
    async def old() -> RedirectResponse:
        return RedirectResponse("/new")

    return app


def litestar_app(**kwargs: Any) -> Any:
    from litestar import Litestar, get
    from litestar.response import Redirect

    @get("/")
    async def index() -> Redirect:
        return Redirect(path="/new")

    @get("/users/{user_id:int}/profile-old")
    async def profile_old(user_id: int) -> Redirect:
        return Redirect(path=f"/users/{user_id}/profile", status_code=301)

    # Handlers defined here: their (string) annotations resolve in this namespace.
    namespace = {"Redirect": Redirect}
    return Litestar(route_handlers=[index, profile_old], signature_namespace=namespace, **kwargs)


def quart_app() -> Any:
    from quart import Quart, redirect

    app = Quart("redirect_auditor_quart_test")

    @app.route("/")
    async def old() -> Any:
        return redirect("/new")

    return app


def datasette_app() -> Any:
    from datasette.app import Datasette

    return Datasette(memory=True).app()


async def plain_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 302, "headers": [(b"location", b"/n")]})
    await send({"type": "http.response.body", "body": b""})


WRAPPED: dict[str, Callable[[], Any]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "litestar": litestar_app,
    "quart": quart_app,
    "datasette": datasette_app,
    "other": lambda: plain_asgi,
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("expected", list(WRAPPED))
def test_wrapped_app_framework_is_noted(
    make_recorder: Callable[..., RedirectRecorder], tmp_path: Path, expected: str, writer: str
) -> None:
    db = tmp_path / "t.db"
    recorder = make_recorder(WRAPPED[expected](), db_path=db, writer=writer)
    assert record_one_request(recorder) < 500
    assert framework_of(db) == [expected]
    assert len(fetch_rows(db, "select id from requests")) == 1


def _recorder_in(app: Any) -> RedirectRecorder:
    """The RedirectRecorder that add_middleware built inside a Starlette app's stack."""
    obj = app.middleware_stack
    while not isinstance(obj, RedirectRecorder):
        obj = obj.app
    return obj


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("build", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
def test_add_middleware_settles_the_framework_from_the_first_scope(
    tmp_path: Path, build: Callable[[], Any], writer: str
) -> None:
    # add_middleware hands the recorder the inner stack (exception middleware, router):
    # the application object is only in scope["app"].
    db = tmp_path / "t.db"
    app = build()
    app.add_middleware(RedirectRecorder, db_path=db, writer=writer)
    expected = build.__name__.removesuffix("_app")
    try:
        with serve_in_thread(app) as url:
            for _ in range(3):
                assert httpx.get(url + "/", timeout=30).status_code == 307
            recorder = _recorder_in(app)
            assert recorder.framework == expected
            assert recorder._framework_pending is False
        recorder.writer.flush()
        assert framework_of(db) == [expected]
        assert len(fetch_rows(db, "select id from requests")) == 3
    finally:
        _recorder_in(app).writer.close()


@pytest.mark.parametrize("writer", WRITERS)
def test_litestar_asgi_middleware_settles_the_framework_from_the_scope(
    tmp_path: Path, writer: str
) -> None:
    from litestar.middleware import DefineMiddleware

    db = tmp_path / "t.db"
    made: list[RedirectRecorder] = []

    def recorder(app: Any) -> RedirectRecorder:
        made.append(RedirectRecorder(app, db_path=db, writer=writer))
        return made[-1]

    app = litestar_app(middleware=[DefineMiddleware(recorder)])
    try:
        with serve_in_thread(app) as url:
            assert httpx.get(url + "/", timeout=30).status_code == 302
        made[0].writer.flush()
        assert framework_of(db) == ["litestar"]
    finally:
        for one in made:
            one.writer.close()


def test_framework_behind_other_middleware_is_found_by_walking_the_chain() -> None:
    from starlette.middleware.gzip import GZipMiddleware
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    wrapped = ProxyHeadersMiddleware(GZipMiddleware(quart_app()))
    assert detect_framework(wrapped) == ("quart", True)
    # A FastAPI app's inner stack is only a hint, for the first scope to settle.
    inner = fastapi_app().build_middleware_stack()
    assert detect_framework(inner) == ("fastapi", False)
    assert detect_framework(plain_asgi) == ("other", False)


DJANGO_APP = """
import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="redirect-auditor-tests-not-a-secret",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
)
django.setup()

from django.core.asgi import get_asgi_application
from django.http import HttpResponse
from django.urls import path


def page(request):
    return HttpResponse("page")


urlpatterns = [path("page/", page)]
application = get_asgi_application()
"""


@pytest.mark.parametrize("writer", WRITERS)
def test_django_asgi_handler_is_noted(tmp_path: Path, writer: str) -> None:
    (tmp_path / "django_min_app.py").write_text(textwrap.dedent(DJANGO_APP))
    db = tmp_path / "t.db"
    port = free_port()
    args = cli_command(
        "run", "django_min_app:application", "--app-dir", str(tmp_path), "--db", str(db),
        "--port", str(port), "--writer", writer, "--log-level", "warning",
    )  # fmt: skip
    with serve_in_process(args, port) as url:
        # APPEND_SLASH (Django's default) answers /page with a 301 to /page/.
        response = httpx.get(url + "/page", timeout=30)
        assert (response.status_code, response.headers["location"]) == (301, "/page/")
    # Django answers no lifespan, so nothing flushes at shutdown: the writer thread
    # writes its last rows and stats as it exits, a moment after the server.
    wait_for(lambda: framework_of(db) == ["django"], timeout=30, what="the framework noted")
    routes = fetch_rows(db, "select path, status from requests where path like '/page%'")
    assert {"path": "/page", "status": 301} in routes


@pytest.mark.parametrize("writer", WRITERS)
def test_litestar_route_template_is_recorded(
    make_recorder: Callable[..., RedirectRecorder], tmp_path: Path, writer: str
) -> None:
    db = tmp_path / "t.db"
    recorder = make_recorder(litestar_app(), db_path=db, writer=writer)
    with serve_in_thread(recorder) as url, httpx.Client(base_url=url, timeout=30) as client:
        for user_id in (1, 42, 7310):
            response = client.get(f"/users/{user_id}/profile-old")
            assert response.status_code == 301
        assert client.get("/no/such/route").status_code == 404
    recorder.writer.flush()
    rows = fetch_rows(db, "select path, route from requests order by id")
    assert [r["path"] for r in rows] == [
        "/users/1/profile-old",
        "/users/42/profile-old",
        "/users/7310/profile-old",
        "/no/such/route",
    ]
    # Litestar's own template: parameters named, their types dropped; none for a 404.
    assert [r["route"] for r in rows] == ["/users/{user_id}/profile-old"] * 3 + [None]
