"""The apps ``overhead.py`` measures, importable by uvicorn as ``--factory`` strings.

- ``bare_app``: a Starlette app with a short text route and a redirect route.
- ``noop_app``: the same app behind a pure ASGI middleware that does nothing,
  the floor any middleware pays.
- ``recorder_app``: the same app behind ``RedirectRecorder(record="all")``
  writing to ``$BENCH_DB`` (the default ``writer="process"``: rows are built and
  written in a writer process).
- ``recorder_thread_app``: the same with ``writer="thread"`` (rows built and
  written by a thread of the serving process), for comparison.
- ``redirects_app``, ``redirects_thread_app``: ``record="redirects"``, each writer.
- ``reference_app``: the reference recorder (``reference_recorder.py``).
- With ``overhead.py --decompose``: ``hot_path_only_app`` (the middleware, each
  capture thrown away at once) and ``shipping_only_app`` (captures shipped as
  for the writer process, but into ``cat > /dev/null``): where the cost comes from.
  And ``bare_beside_idle_spinner_app``: the bare app while a child process spins
  at SCHED_IDLE, the priority of the writer process: what any work beside the
  server costs on this machine, however low its priority.

Each factory builds a fresh Starlette app, so variants never share state.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from auditor import RedirectRecorder
from auditor.record.process_writer import ProcessWriter

DB_ENV = "BENCH_DB"
SWITCH_ENV = "BENCH_SWITCH_INTERVAL"  # sys.setswitchinterval for every variant, if set
VARIANTS = (
    "bare",
    "noop",
    "reference",
    "recorder",
    "recorder(thread)",
    "recorder(redirects)",
    "recorder(redirects/thread)",
)
# ``overhead.py --decompose`` adds these: where the recorder's cost comes from.
DECOMPOSITION = ("hot path only", "shipping only", "bare + idle spinner")
# The factory uvicorn imports for each variant (``benchmarks.apps:<factory>``).
FACTORIES = {
    "bare": "bare_app",
    "noop": "noop_app",
    "recorder": "recorder_app",
    "recorder(thread)": "recorder_thread_app",
    "reference": "reference_app",
    "recorder(redirects)": "redirects_app",
    "recorder(redirects/thread)": "redirects_thread_app",
    "hot path only": "hot_path_only_app",
    "shipping only": "shipping_only_app",
    "bare + idle spinner": "bare_beside_idle_spinner_app",
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


def recorder_thread_app(db_path: str | None = None, **options: Any) -> RedirectRecorder:
    """``recorder_app`` with the in-process writer thread (``writer="thread"``)."""
    return recorder_app(db_path, writer="thread", **options)


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


def redirects_thread_app(db_path: str | None = None, **options: Any) -> RedirectRecorder:
    return redirects_app(db_path, writer="thread", **options)


class _Discard:
    """A writer that throws every capture away at once."""

    def submit(self, exchange: Any) -> None:
        return None

    async def flush_async(self) -> None:
        return None


def hot_path_only_app() -> RedirectRecorder:
    """The recorder's middleware with a writer that discards each capture at once:
    the hot path alone, under a real server."""
    rec = RedirectRecorder(bare_app(), db_path=os.environ[DB_ENV], writer="thread")
    rec.writer.close()
    rec.writer = _Discard()  # type: ignore[assignment]
    return rec


class _ShipToNowhere(ProcessWriter):
    """The process writer's serving side, shipping into ``cat > /dev/null``."""

    def _ensure_process(self) -> bool:
        if self._process is None:
            read_end, self._to_child = os.pipe()
            self._process = subprocess.Popen(["cat"], stdin=read_end, stdout=subprocess.DEVNULL)
            os.close(read_end)
        return True

    def flush(self) -> None:
        self._ship()  # cat sends no acknowledgement


def shipping_only_app() -> RedirectRecorder:
    """The recorder with the writer process replaced by ``cat``: the hot path plus the
    serving side of shipping (capture retained, flat tuples, marshal, pipe)."""
    rec = RedirectRecorder(bare_app(), db_path=os.environ[DB_ENV], writer="thread")
    rec.writer.close()
    rec.writer = _ShipToNowhere(rec.writer.db_path, rec.writer.options)
    return rec


# Spins at SCHED_IDLE (as the writer process runs) until its parent, the server, is gone.
_IDLE_SPINNER = """
import os
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


def bare_beside_idle_spinner_app() -> Starlette:
    """The bare app, with a child process burning every CPU cycle nobody else wants."""
    subprocess.Popen([sys.executable, "-c", _IDLE_SPINNER])
    return bare_app()


def build(variant: str, db_path: str | None = None, **options: Any) -> ASGIApp:
    """One variant by name (``VARIANTS``)."""
    if variant == "bare":
        return bare_app()
    if variant == "noop":
        return noop_app()
    if variant == "recorder":
        return recorder_app(db_path, **options)
    if variant == "recorder(thread)":
        return recorder_thread_app(db_path, **options)
    if variant == "reference":
        return reference_app(db_path)
    if variant == "recorder(redirects)":
        return redirects_app(db_path, **options)
    if variant == "recorder(redirects/thread)":
        return redirects_thread_app(db_path, **options)
    raise ValueError(f"unknown variant {variant!r}")
