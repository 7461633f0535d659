"""Where the recorder's time goes: the hot path's parts and the writer's per-row parts.

Companion to ``overhead.py`` for choosing optimisations; every figure is this
thread's CPU time (``time.thread_time_ns``), which a busy machine disturbs less
than wall time. Nothing here changes ``auditor``: alternatives are measured on
copies of the relevant lines.

Usage: ``python -m benchmarks.breakdown [--rows N] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.record import registry
from auditor.record.middleware import Exchange
from auditor.record.rows import RowBuilder, to_portable
from auditor.store.requests import (
    _FULL,
    INSERT_SQL,
    ROW_COLUMNS,
    _insert,
    bind_none_directly,
    insert_rows,
)
from auditor.store.schema import connect, ensure_schema
from auditor.urls import TrustedProxies, build_url, redact_query, resolve_location
from benchmarks import apps
from benchmarks.inprocess import Collector, _receive, _send, capture, drive, scope_templates

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"12")]}
BODY = {"type": "http.response.body", "body": b"hello, world"}


def cpu_ns(fn: Callable[[], Any], n: int, repeat: int = 5) -> float:
    """Median CPU ns per call of ``fn`` (called ``n`` times per repeat)."""
    results = []
    for _ in range(repeat):
        c0 = time.thread_time_ns()
        for _ in range(n):
            fn()
        results.append((time.thread_time_ns() - c0) / n)
    return statistics.median(results)


def acpu_ns(make: Callable[[], Any], n: int, repeat: int = 5) -> float:
    """Median CPU ns per ``await make()``."""

    async def run() -> float:
        results = []
        for _ in range(repeat):
            c0 = time.thread_time_ns()
            for _ in range(n):
                await make()
            results.append((time.thread_time_ns() - c0) / n)
        return statistics.median(results)

    return asyncio.run(run())


class LeanExchange:
    """Candidate: ``Exchange.send`` as a plain (not async) function that keeps the
    start message instead of parsing it and returns the server's awaitable."""

    __slots__ = ("_send", "body_size", "ended_at", "scope", "start", "started_at")

    def __init__(self, scope: Any, send: Any) -> None:
        self.scope = scope
        self.started_at = time.time()
        self.ended_at = 0.0
        self.start = None
        self.body_size = 0
        self._send = send

    def send(self, message: Any) -> Awaitable[None]:
        # A plain function returning the server's awaitable: no wrapper coroutine
        # frame per message (ASGI only needs ``send`` to return an awaitable).
        if message["type"] == "http.response.body":
            self.body_size += len(message.get("body", b""))
            if not message.get("more_body"):
                self.ended_at = time.time()
        else:
            self.start = message
        return self._send(message)


class LeanRecorder:
    """Candidate hot path: ``RedirectRecorder.__call__`` with ``LeanExchange`` and the
    queue append inlined (no ``submit`` call)."""

    def __init__(self, app: Any, queue: deque[Any]) -> None:
        self.app = app
        self.queue = queue

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = LeanExchange(scope, send)
        try:
            await self.app(scope, receive, exchange.send)
        finally:
            if len(self.queue) < 20_000:
                self.queue.append(exchange)


def hot_path(n: int) -> dict[str, float]:
    scope = scope_templates()[0]
    out: dict[str, float] = {}
    out["time.time()"] = cpu_ns(time.time, n)
    out["Exchange(scope, send, time())"] = cpu_ns(lambda: Exchange(scope, _send, time.time()), n)
    ex = Exchange(scope, _send, time.time())
    out["await _send(start)+(body) direct"] = acpu_ns(lambda: _two(_send), n)
    out["await exchange.send(start)+(body)"] = acpu_ns(lambda: _two(ex.send), n)
    lex = LeanExchange(scope, _send)
    out["await lean exchange.send(start)+(body)"] = acpu_ns(lambda: _two(lex.send), n)
    q: deque[Any] = deque()

    def submit() -> None:
        if len(q) < 20_000:
            q.append(ex)
        else:
            q.clear()

    out["submit (len check + append)"] = cpu_ns(submit, n)

    # Whole requests: raw ASGI app (no framework) bare vs recorder, gc on and off.
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(BODY)

    rec = apps.RedirectRecorder(raw, db_path=TMP / "hot.db", flush_interval=3600)
    sink = Collector()
    rec.writer = sink  # type: ignore[assignment]

    def run_raw(app: Any) -> float:
        async def go() -> float:
            results = []
            for _ in range(5):
                sink.items.clear()
                c0 = time.thread_time_ns()
                for _ in range(n):
                    await app(dict(scope), _receive, _send)
                    if len(sink.items) >= 500:
                        sink.items.clear()  # like the 50 ms drain
                results.append((time.thread_time_ns() - c0) / n)
            return statistics.median(results)

        return asyncio.run(go())

    out["raw app request, bare"] = run_raw(raw)
    out["raw app request, noop middleware"] = run_raw(apps.NoopMiddleware(raw))
    out["raw app request, recorder"] = run_raw(rec)
    lean = LeanRecorder(raw, deque())
    sink.items = lean.queue  # type: ignore[assignment]
    out["raw app request, candidate lean recorder"] = run_raw(lean)
    sink.items = []
    gc.disable()
    try:
        out["raw app request, bare, gc off"] = run_raw(raw)
        out["raw app request, recorder, gc off"] = run_raw(rec)
    finally:
        gc.enable()

    # Starlette app, the recorder's queue drained (discarded) every 500 requests.
    bare = apps.bare_app()
    srec = apps.RedirectRecorder(apps.bare_app(), db_path=TMP / "hot2.db", flush_interval=3600)
    ssink = Collector()
    srec.writer = ssink  # type: ignore[assignment]
    templates = scope_templates()

    def run_star(app: Any) -> float:
        async def go() -> float:
            results = []
            for _ in range(5):
                _, c = await drive(app, n, templates, 500, ssink.items.clear)
                results.append(c)
            return statistics.median(results)

        return asyncio.run(go())

    out["starlette request, bare"] = run_star(bare)
    out["starlette request, recorder"] = run_star(srec)
    return out


async def _two(send: Any) -> None:
    await send(START)
    await send(BODY)


def writer_parts(rows_n: int, profile: bool) -> dict[str, float]:
    captures = capture(TMP, rows_n)
    builder = RowBuilder(b"k" * 32, "bench:1", TrustedProxies(()), False)
    out: dict[str, float] = {}
    it = iter(captures * 6)
    out["RowBuilder.build, per row (1 in 10 a 302)"] = cpu_ns(
        lambda: builder.build(next(it)), rows_n
    )
    portables = [to_portable(c) for c in captures]
    it2 = iter(portables * 6)
    out["RowBuilder.build_row (the writer's, from queued tuples)"] = cpu_ns(
        lambda: builder.build_row(next(it2)), rows_n
    )
    it3 = iter(captures * 6)
    out["to_portable (event loop, in Writer.submit)"] = cpu_ns(
        lambda: to_portable(next(it3)), rows_n
    )
    out["  build_url (normalize_url)"] = cpu_ns(
        lambda: build_url("http", "127.0.0.1:8000", "/", ""), rows_n
    )
    out["  resolve_location (302 rows only)"] = cpu_ns(
        lambda: resolve_location("http://127.0.0.1:8000/old", "/"), rows_n
    )
    out["  redact_query('')"] = cpu_ns(lambda: redact_query(""), rows_n)
    out["  keyed_hash (cached)"] = cpu_ns(lambda: builder.keyed_hash("127.0.0.1"), rows_n)
    values = dict.fromkeys(ROW_COLUMNS, 1)
    out["  values dict -> tuple in ROW_COLUMNS order"] = cpu_ns(
        lambda: tuple(values[c] for c in ROW_COLUMNS), rows_n
    )
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        for c in captures:
            builder.build(c)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
        print(buf.getvalue())

    rows = [builder.build(c) for c in captures]
    built = [builder.build_row(p) for p in portables]

    def insert(
        label: str,
        setup: Callable[[sqlite3.Connection], object],
        batch: int = 500,
        many: Callable[[sqlite3.Connection, list[Any]], object] | None = None,
        rows: list[Any] = rows,
    ) -> None:
        path = TMP / f"ins-{len(out)}.db"
        conn = connect(path)
        ensure_schema(conn)
        setup(conn)
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        for i in range(0, len(rows), batch):
            with conn:
                if many is None:
                    conn.executemany(INSERT_SQL, rows[i : i + batch])
                else:
                    many(conn, rows[i : i + batch])
        out[label] = (time.thread_time_ns() - c0) / len(rows)
        out[label + " (wall)"] = (time.perf_counter_ns() - w0) / len(rows)
        conn.close()

    def drop_indexes(conn: sqlite3.Connection) -> None:
        names = conn.execute(
            "select name from sqlite_master where type = 'index' and tbl_name = 'requests' "
            "and name not like 'sqlite_%'"
        ).fetchall()
        for (name,) in names:
            conn.execute(f"drop index [{name}]")

    def drop_url_index(conn: sqlite3.Connection) -> None:
        conn.execute("drop index if exists idx_requests_url")

    insert("insert as shipped (6 indexes, WAL, synchronous=FULL), 500/txn", lambda c: None)
    insert(
        "insert, synchronous=NORMAL",
        lambda c: c.execute("pragma synchronous = normal"),
    )
    insert("insert, without the url index", drop_url_index)
    insert("insert, without any secondary index", drop_indexes)
    insert("insert, 5000/txn", lambda c: None, 5000)
    bind_none_directly()  # as unpack does (process-wide: these two lines come last)
    normal = "pragma synchronous = normal"
    insert(
        "writer's insert_rows (short/full shapes), NORMAL",
        lambda c: c.execute(normal),
        500,
        insert_rows,
    )
    insert("  same, every row the full shape", lambda c: c.execute(normal), 500, _full_only)
    insert(
        "  same, build_row's rows (no shape check)",
        lambda c: c.execute(normal),
        500,
        insert_rows,
        built,
    )
    return out


def _full_only(conn: sqlite3.Connection, rows: list[Any]) -> None:
    """The writer's multi-row statements before the short shape: every column bound."""
    _insert(conn, _FULL, rows)


TMP = Path(tempfile.mkdtemp(prefix="ra-breakdown-"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="hot-path iterations")
    parser.add_argument("--rows", type=int, default=20_000, help="writer rows")
    parser.add_argument("--profile", action="store_true", help="cProfile RowBuilder.build")
    args = parser.parse_args(argv)
    try:
        print("hot path (CPU ns per call / per request):")
        for label, ns in hot_path(args.n).items():
            print(f"  {label:48} {ns / 1000:8.3f} us")
        print("writer (CPU us per row):")
        for label, ns in writer_parts(args.rows, args.profile).items():
            print(f"  {label:64} {ns / 1000:8.2f} us")
    finally:
        registry.flush_all()
        for p in TMP.iterdir():
            p.unlink()
        TMP.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
