"""Streaming, failures inside the app, disconnects, websocket and lifespan through the recorder."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from websockets.sync.client import connect as ws_connect

from auditor import RedirectRecorder
from auditor.store.schema import BATCHES_TABLE
from tests.apps import site
from tests.servers import fetch_rows, raw_request, serve_in_thread, wait_for

Recorder = Callable[..., RedirectRecorder]


def rows(recorder: RedirectRecorder, sql: str = "select * from requests order by id") -> list[Any]:
    recorder.writer.flush()
    return fetch_rows(recorder.writer.db_path, sql)


def test_streaming_response_reaches_client_chunk_by_chunk(make_recorder: Recorder) -> None:
    first_chunk_seen = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"chunk-1", "more_body": True})
        # Waits for the client to have read chunk 1: a buffering recorder would deadlock here.
        assert await asyncio.to_thread(first_chunk_seen.wait, 10)
        await send({"type": "http.response.body", "body": b"chunk-2", "more_body": False})
        await asyncio.sleep(0.3)  # work after the last body message is not response time

    recorder = make_recorder(app)
    with serve_in_thread(recorder) as url:
        started = time.monotonic()
        with httpx.stream("GET", f"{url}/stream", timeout=5) as response:
            chunks = response.iter_raw()
            assert next(chunks) == b"chunk-1"
            first_chunk_seen.set()
            assert b"".join(chunks) == b"chunk-2"
        assert time.monotonic() - started < 5
        wait_for(lambda: rows(recorder), what="the streamed row")
    (row,) = rows(recorder)
    assert (row["status"], row["response_body_size"], row["response_complete"]) == (200, 14, 1)
    assert row["duration_ms"] < 300


def test_app_exception_is_recorded_as_500_and_propagates(make_recorder: Recorder) -> None:
    seen: list[BaseException] = []

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raise ValueError("app bug")

    recorder = make_recorder(failing)

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await recorder(scope, receive, send)
        except ValueError as exc:
            seen.append(exc)
            raise

    with serve_in_thread(outer) as url:
        assert httpx.get(f"{url}/fails").status_code == 500
        assert httpx.get(f"{url}/fails-again").status_code == 500
    assert [str(e) for e in seen] == ["app bug", "app bug"]
    got = rows(recorder, "select path, status, error, response_complete from requests order by id")
    assert got == [
        {"path": "/fails", "status": 500, "error": "ValueError", "response_complete": 0},
        {"path": "/fails-again", "status": 500, "error": "ValueError", "response_complete": 0},
    ]


def test_exception_after_headers_keeps_sent_status(make_recorder: Recorder) -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("died mid-body")

    recorder = make_recorder(half)
    with serve_in_thread(recorder) as url, pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{url}/half")
    got = wait_for(lambda: rows(recorder), what="the row")
    assert got[0]["status"] == 200
    assert (got[0]["error"], got[0]["response_body_size"], got[0]["response_complete"]) == (
        "RuntimeError",
        7,
        0,
    )


def test_starlette_error_page_is_recorded_with_its_status(make_recorder: Recorder) -> None:
    recorder = make_recorder(site.app)
    with serve_in_thread(recorder) as url:
        assert httpx.get(f"{url}/boom").status_code == 500
        assert httpx.get(f"{url}/landing/after").status_code == 200
    got = rows(recorder, "select path, status, error from requests order by id")
    assert got == [
        {"path": "/boom", "status": 500, "error": "RuntimeError"},
        {"path": "/landing/after", "status": 200, "error": None},
    ]


def test_client_disconnect_mid_response_is_recorded(make_recorder: Recorder) -> None:
    disconnected = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()
        await send({"type": "http.response.body", "body": b"never read", "more_body": True})

    recorder = make_recorder(app)
    with serve_in_thread(recorder) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"first" in wait_for(lambda: sock.recv(4096), what="the first chunk")
        assert disconnected.wait(10)
        got = wait_for(lambda: rows(recorder), what="the row of the dropped connection")
    assert (got[0]["path"], got[0]["status"], got[0]["response_complete"]) == ("/slow", 200, 0)
    assert got[0]["response_body_size"] >= 5


def test_websocket_echo_passes_through_unrecorded(make_recorder: Recorder) -> None:
    recorder = make_recorder(site.app)
    with serve_in_thread(recorder) as url:
        with ws_connect(url.replace("http://", "ws://") + "/ws", open_timeout=5) as ws:
            ws.send("ping")
            assert ws.recv(timeout=5) == "echo: ping"
        assert httpx.get(f"{url}/landing/http").status_code == 200
    assert [r["path"] for r in rows(recorder)] == ["/landing/http"]


def test_lifespan_events_reach_the_app_and_shutdown_flushes_rows(make_recorder: Recorder) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        events.append("startup")
        yield
        events.append("shutdown")

    async def ok(request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", ok)], lifespan=lifespan)
    # The writer thread would not drain for a minute: only the shutdown flush writes.
    recorder = make_recorder(app, flush_interval=60)
    with serve_in_thread(recorder, lifespan="on") as url:
        assert events == ["startup"]
        for _ in range(3):
            assert httpx.get(url).status_code == 200
        assert fetch_rows(recorder.writer.db_path, "select * from requests") == []
        assert fetch_rows(recorder.writer.db_path, f"select * from {BATCHES_TABLE}") == []
    assert events == ["startup", "shutdown"]
    assert len(fetch_rows(recorder.writer.db_path, "select * from requests")) == 3


def test_raw_request_helper_reads_a_full_response(make_recorder: Recorder) -> None:
    recorder = make_recorder(site.app)
    with serve_in_thread(recorder) as url:
        reply = raw_request(
            url, b"GET /landing/raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"GET 0")
    assert rows(recorder)[0]["path"] == "/landing/raw"
