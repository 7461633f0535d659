"""RedirectRecorder: the pure ASGI middleware. The hot path, and nothing else.

Per request it only captures references (the scope's values, status, response
headers, byte counts, two timestamps) and appends them, as one flat tuple, to the
writer's bounded queue (the scope itself is let go with the request). Decoding, URL
resolution, hashing and redaction happen once per ``WAKE_AT`` requests, for all of
them at once, and SQLite in the writer's thread (``writer.py``). With
``record="redirects"`` it also decides here what can never be needed
(``targets.py``), as early and as cheaply as it can: a request that is not
sampled and not an expected follow-up (decided before the app runs, with no lookup
at all while no redirect was noted within the window) is only watched for a 3xx
status; unless one comes, it is counted as skipped, never captured or queued.
Where ``setup.py`` built them, the captures, the watches and the checks are the C ones
(``native.py``): per request, work here costs the server many times its own time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from random import random
from time import time
from typing import Any, Literal, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditor.record import native
from auditor.record.options import RecorderOptions
from auditor.record.registry import TrafficWriter, writer_for
from auditor.record.targets import RecentTargets, effective_client, location_path
from auditor.record.writer import load_secret
from auditor.redaction import app_token_routes
from auditor.urls import TrustedProxies

logger = logging.getLogger("redirect_auditor")


class Exchange:
    """Per-request capture; its bound ``send`` wraps the server's send. With a
    ``recorder`` (record="redirects") its redirects are noted in the table of recent
    targets every process on the database shares. ``_capture_c.Exchange`` is the same
    in C, used where it was built (``native.py``)."""

    __slots__ = (
        "_send",
        "body_size",
        "complete",
        "ended_at",
        "error",
        "headers",
        "recorder",
        "scope",
        "started_at",
        "status",
    )

    def __init__(
        self,
        scope: Scope,
        send: Send,
        started_at: float,
        recorder: RedirectRecorder | None = None,
    ) -> None:
        self.scope = scope
        self.started_at = started_at
        self.ended_at = 0.0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.body_size = 0
        self.complete = False
        self.error: BaseException | None = None
        self.recorder = recorder
        self._send = send

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function returning the server's awaitable (ASGI allows any awaitable):
        # no coroutine frame of our own per message.
        kind = message["type"]
        if kind == "http.response.body":
            self.body_size += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.ended_at = time()
                self.complete = True
        elif kind == "http.response.start":
            status = self.status = message["status"]
            headers = message.get("headers", ())
            if type(headers) is not list:  # an iterator would be consumed by the server
                headers = list(headers)
                message = {**message, "headers": headers}
            if 300 <= status < 400:
                self.headers = headers
                if self.recorder is not None:
                    self.recorder.note_redirect(self, headers)  # before the client can follow
            else:
                # Of a response that is no redirect the row reads only a Location: keep
                # the headers only when one is there (what a queued capture holds on to
                # costs the cyclic collector; see Writer.submit).
                for name, _ in headers:
                    if len(name) == 8 and name.lower() == b"location":
                        self.headers = headers
                        break
        return self._send(message)


# Exchange or _capture_c.Exchange: (scope, send, started_at, recorder=None).
MakeExchange = Callable[[Scope, Send, float, "RedirectRecorder | None"], Exchange]


class Watch:
    """record="redirects": a request not known to be needed. Its ``send`` passes the
    server's messages through and reads only the response status; a 3xx makes it a
    capture (``exchange``) from the response start on, before the client can follow.
    ``_capture_c.Watch`` is the same in C."""

    __slots__ = ("_send", "exchange", "recorder", "scope", "started_at")

    def __init__(
        self, scope: Scope, send: Send, started_at: float, recorder: RedirectRecorder
    ) -> None:
        self.scope = scope
        self._send = send
        self.started_at = started_at
        self.recorder = recorder
        self.exchange: Exchange | None = None

    def send(self, message: Message) -> Awaitable[None]:
        exchange = self.exchange
        if exchange is not None:
            return exchange.send(message)
        if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
            recorder = self.recorder
            exchange = self.exchange = recorder.make_exchange(
                self.scope, self._send, self.started_at, recorder
            )
            return exchange.send(message)
        return self._send(message)


async def _sent_after_return(message: Message) -> None:
    raise RuntimeError("ASGI message sent after the application returned")


# Application classes, by the qualified name of a class in the object's MRO (most
# derived first, so FastAPI is not mistaken for the Starlette it subclasses). Names,
# not imports: detecting a framework never imports one.
_APPLICATIONS = {
    "fastapi.applications.FastAPI": "fastapi",
    "starlette.applications.Starlette": "starlette",
    "django.core.handlers.asgi.ASGIHandler": "django",
    "litestar.app.Litestar": "litestar",
    "quart.app.Quart": "quart",
}
# Packages whose other objects (routers, framework middleware) hint at the framework
# without settling it: the application object may still be above us (add_middleware).
_FRAMEWORK_PACKAGES = ("fastapi", "starlette", "django", "litestar", "quart", "datasette")
_MAX_WRAPPERS = 32
MAX_TARGET_PATHS = 4096


def application_framework(obj: Any) -> str | None:
    """The framework whose application object ``obj`` is, or None if it is none of
    theirs. Everything Datasette's ``app()`` returns is Datasette's own wrapper chain."""
    if obj is None:
        return None
    for cls in type(obj).__mro__:
        framework = _APPLICATIONS.get(f"{cls.__module__}.{cls.__qualname__}")
        if framework is not None:
            return framework
    if _package(obj) == "datasette":
        return "datasette"
    return None


def _package(obj: Any) -> str:
    # A class instance's package, or a function's (Datasette's inner ``asgi`` closure).
    try:
        module = getattr(obj, "__module__", None)
    except Exception:  # an object whose __getattr__ raises something else
        module = None
    if not isinstance(module, str):
        module = type(obj).__module__
    return module.partition(".")[0]


def detect_framework(app: Any) -> tuple[str, bool]:
    """The wrapped app's framework and whether that is settled.

    Walks the wrapper chain (``.app`` attributes) down from ``app``. An application
    object settles it. Otherwise a framework's router or middleware met on the way is
    a hint that the first request's ``scope["app"]`` (set by Starlette/FastAPI and
    Litestar before their middleware runs) may still settle; nothing known is ``other``.
    """
    hint: str | None = None
    seen: set[int] = set()
    obj = app
    for _ in range(_MAX_WRAPPERS):
        if obj is None or id(obj) in seen:
            break
        seen.add(id(obj))
        framework = application_framework(obj)
        if framework is not None:
            return framework, True
        package = _package(obj)
        if package in _FRAMEWORK_PACKAGES and hint != "fastapi":  # FastAPI over Starlette
            hint = package
        try:
            obj = getattr(obj, "app", None)
        except Exception:  # a property that raises: stop walking, keep what we know
            break
    return hint or "other", False


class RedirectRecorder:
    """Record every HTTP request of an ASGI app into a SQLite traffic database.

    Works with ``app.add_middleware(RedirectRecorder, db_path=...)`` and by
    wrapping: ``app = RedirectRecorder(app, db_path=...)``. ``record`` is
    ``"all"`` or ``"redirects"`` (3xx responses and the requests that may follow
    them, plus a ``sample_rate`` fraction of the rest; ``follow_up_delay`` is
    accepted and unused). Forwarded headers are
    recorded as seen and trusted for scheme/host only from ``trusted_proxies``
    (IP addresses or CIDR networks, ``"*"`` for any). The recorder never raises
    into the app: rows it cannot write (``busy_timeout`` seconds of another
    process's lock, a read-only or vanished file) are counted in ``recorder_stats``.
    ``max_rows`` / ``max_age`` (seconds) keep the file small: the writer
    deletes the oldest requests beyond them once a minute. Rows are built in
    batches and written by one thread of this process; ``writer`` (``"thread"``, or
    ``"process"`` for the retired writer process) is accepted and changes nothing.
    Secrets in URLs are redacted (``auditor/redaction.py``); beyond the defaults,
    ``redact_params`` names more parameters whose values are secrets,
    ``allow_params`` parameters whose values are kept as sent, ``redact_patterns``
    regexes a secret path segment or value matches, and ``redact_routes`` route
    templates (``/share/{id}``) whose every placeholder is a secret.
    """

    def __init__(
        self,
        app: ASGIApp,
        db_path: str | Path = "traffic.db",
        *,
        record: Literal["all", "redirects"] = "all",
        sample_rate: float = 0.0,
        trusted_proxies: str | Iterable[str] = (),
        store_client_ip: bool = False,
        queue_size: int = 20_000,
        flush_interval: float = 0.05,
        follow_up_delay: float = 2.0,
        follow_up_window: float = 30.0,
        busy_timeout: float = 5.0,
        max_rows: int | None = None,
        max_age: float | None = None,
        writer: Literal["process", "thread"] = "thread",
        redact_params: Iterable[str] = (),
        allow_params: Iterable[str] = (),
        redact_patterns: Iterable[str] = (),
        redact_routes: Iterable[str] = (),
    ) -> None:
        self.app = app
        options = RecorderOptions.build(
            record=record,
            sample_rate=sample_rate,
            trusted_proxies=trusted_proxies,
            store_client_ip=store_client_ip,
            queue_size=queue_size,
            flush_interval=flush_interval,
            follow_up_delay=follow_up_delay,
            follow_up_window=follow_up_window,
            busy_timeout=busy_timeout,
            max_rows=max_rows,
            max_age=max_age,
            writer=writer,
            redact_params=redact_params,
            allow_params=allow_params,
            redact_patterns=redact_patterns,
            redact_routes=redact_routes,
            token_routes=app_token_routes(app),  # once, here: never per request
        )
        self.writer: TrafficWriter = writer_for(db_path, options)
        capture_c = native.capture_c()
        self.make_exchange: MakeExchange = (
            Exchange if capture_c is None else cast(MakeExchange, capture_c.Exchange)
        )
        self.make_watch: Callable[[Scope, Send, float, RedirectRecorder], Watch] = (
            Watch if capture_c is None else capture_c.Watch
        )
        self.targets: RecentTargets | None = None
        # record="redirects": (Location, request path) -> the path a client follows it
        # to, as the shared table keys it (b"": no path).
        self._target_paths: dict[tuple[bytes, str], bytes] = {}
        if options.record == "redirects":
            path = self.writer.db_path
            try:
                self.targets = RecentTargets(path, load_secret(path), options.follow_up_window)
            except OSError as exc:  # no directory yet, read-only, full: never stop the app
                logger.warning(
                    "redirect-auditor: no table of recent redirect targets beside %s (%s); "
                    "this process records every request instead of redirects only",
                    path,
                    exc,
                )
        self._sample_rate = options.sample_rate
        self._trusted = TrustedProxies(options.trusted_proxies) if options.trusted_proxies else None
        self.framework, settled = detect_framework(app)
        self._framework_pending = not settled
        self.writer.note_framework(self.framework)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                send = self._flush_on_shutdown(send)
            await self.app(scope, receive, send)
            return
        if self._framework_pending:  # the only per-request cost of framework detection
            self._settle_framework(scope)
        targets = self.targets
        if targets is None:
            exchange = self.make_exchange(scope, send, time(), None)
        else:
            started_at = time()
            if (
                targets.skips(scope, started_at)
                or not targets.follows(scope, self._trusted, started_at)
            ) and not (self._sample_rate and random() < self._sample_rate):
                # Not known to be needed: watched for a 3xx status, else only counted.
                watch = self.make_watch(scope, send, started_at, self)
                try:
                    await self.app(scope, receive, watch.send)
                except BaseException as exc:
                    if watch.exchange is not None:
                        watch.exchange.error = exc
                    raise
                finally:
                    if watch.exchange is None:
                        self.writer.rows_skipped += 1  # saved with the writer's counts
                    else:
                        self._submit(watch.exchange)
                return
            exchange = self.make_exchange(scope, send, started_at, self)
        try:
            await self.app(scope, receive, exchange.send)
        except BaseException as exc:
            exchange.error = exc
            raise
        finally:
            if not exchange.ended_at:
                exchange.ended_at = time()
            # Let go of the server's send (its request cycle, transport and buffers).
            exchange._send = _sent_after_return
            self.writer.submit(exchange)

    def _submit(self, exchange: Exchange) -> None:
        """``__call__``'s ``finally``, for a watched request that turned out a redirect."""
        if not exchange.ended_at:
            exchange.ended_at = time()
        exchange._send = _sent_after_return
        self.writer.submit(exchange)

    def note_redirect(self, exchange: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
        """record="redirects": a redirect is being sent (event loop): note its target."""
        for name, value in headers:
            if name.lower() == b"location":
                if type(value) is not bytes:  # a bytearray is allowed, and unhashable
                    value = bytes(value)
                key = (value, exchange.scope.get("path") or "/")
                target = self._target_paths.get(key)
                if target is None:  # a redirect route answers the same Location
                    path = location_path(*key)
                    target = b"" if path is None else path.encode("utf-8", "surrogatepass")
                    if len(self._target_paths) >= MAX_TARGET_PATHS:
                        self._target_paths.clear()
                    self._target_paths[key] = target
                if target and self.targets is not None:
                    address = effective_client(exchange.scope, self._trusted)
                    self.targets.note(address, target, time())
                return

    def _settle_framework(self, scope: Scope) -> None:
        # Once, at the first HTTP request: with add_middleware we wrap the inner stack,
        # and the application object is only in the scope.
        self._framework_pending = False
        framework = application_framework(scope.get("app"))
        if framework is not None and framework != self.framework:
            self.framework = framework
            self.writer.note_framework(framework)

    def _flush_on_shutdown(self, send: Send) -> Send:
        writer = self.writer

        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await writer.flush_async()
            await send(message)

        return lifespan_send
