"""The apps ``overhead.py`` measures, importable by uvicorn as ``--factory`` strings.

- ``bare_app``: a Starlette app with a short text route and a redirect route.
- ``noop_app``: the same app behind a pure ASGI middleware that does nothing,
  the floor any middleware pays.
- ``recorder_app``: the same app behind ``RedirectRecorder(record="all")`` writing
  to ``$BENCH_DB``.
- ``redirects_app``: the same with ``record="redirects"``.
- ``reference_app``: the reference recorder (``reference_recorder.py``).

Each factory builds a fresh Starlette app, so variants never share state.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from auditor import RedirectRecorder

DB_ENV = "BENCH_DB"
SWITCH_ENV = "BENCH_SWITCH_INTERVAL"  # sys.setswitchinterval for every variant, if set
VARIANTS = ("bare", "noop", "reference", "recorder", "recorder(redirects)")
# The factory uvicorn imports for each variant (``benchmarks.apps:<factory>``).
FACTORIES = {
    "bare": "bare_app",
    "noop": "noop_app",
    "recorder": "recorder_app",
    "reference": "reference_app",
    "recorder(redirects)": "redirects_app",
}


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello, world")


async def old(request: Request) -> Response:
    return RedirectResponse("/new", status_code=302)


def bare_app() -> Starlette:
    """The app with nothing around it."""
    if os.environ.get(SWITCH_ENV):
        sys.setswitchinterval(float(os.environ[SWITCH_ENV]))
    return Starlette(routes=[Route("/", hello), Route("/old", old)])


class NoopMiddleware:
    """A pure ASGI middleware that only passes the call through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def noop_app() -> ASGIApp:
    return NoopMiddleware(bare_app())


def recorder_app(db_path: str | None = None, **options: Any) -> RedirectRecorder:
    """The app behind the recorder; the database is ``db_path`` or ``$BENCH_DB``."""
    path = db_path or os.environ.get(DB_ENV)
    if not path:
        raise RuntimeError(f"set {DB_ENV} to the traffic database path")
    return RedirectRecorder(bare_app(), db_path=path, record="all", **options)


def _db_path(db_path: str | None) -> str:
    path = db_path or os.environ.get(DB_ENV)
    if not path:
        raise RuntimeError(f"set {DB_ENV} to the traffic database path")
    return path


def reference_app(db_path: str | None = None) -> ASGIApp:
    """The app behind the reference recorder (``reference_recorder.py``)."""
    from benchmarks.reference_recorder import ReferenceRecorder

    return ReferenceRecorder(bare_app(), _db_path(db_path))


def redirects_app(db_path: str | None = None, **options: Any) -> RedirectRecorder:
    """The app behind ``RedirectRecorder(record="redirects")``."""
    return RedirectRecorder(bare_app(), db_path=_db_path(db_path), record="redirects", **options)


def build(variant: str, db_path: str | None = None, **options: Any) -> ASGIApp:
    """One variant by name (``VARIANTS``)."""
    if variant == "bare":
        return bare_app()
    if variant == "noop":
        return noop_app()
    if variant == "recorder":
        return recorder_app(db_path, **options)
    if variant == "reference":
        return reference_app(db_path)
    if variant == "recorder(redirects)":
        return redirects_app(db_path, **options)
    raise ValueError(f"unknown variant {variant!r}")
