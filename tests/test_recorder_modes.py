"""record="redirects": 3xx responses and their follow-ups are kept, the rest skipped and counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from auditor import RedirectRecorder
from tests.servers import fetch_rows, serve_in_thread

Recorder = Callable[..., RedirectRecorder]
ALICE = {"x-forwarded-for": "198.51.100.1"}
BOB = {"x-forwarded-for": "198.51.100.2"}


def test_redirects_mode_keeps_redirects_and_their_follow_ups_only(make_recorder: Recorder) -> None:
    # Trusting the loopback proxy lets one test client act as several clients.
    recorder = make_recorder(record="redirects", trusted_proxies=["127.0.0.1"])
    with serve_in_thread(recorder, proxy_headers=False) as url, httpx.Client(base_url=url) as c:
        assert c.post("/redirect/303?to=/landing/thanks", headers=ALICE).status_code == 303
        assert c.get("/landing/thanks", headers=ALICE).status_code == 200  # the follow-up
        assert c.get("/landing/thanks", headers=BOB).status_code == 200  # same URL, other client
        assert c.get("/landing/other", headers=ALICE).status_code == 200  # unrelated
        assert c.get("/redirect/301?to=/redirect/302", headers=BOB).status_code == 301
        assert c.get("/redirect/302", headers=BOB).status_code == 302  # a chain: both 3xx
        assert c.get("/landing/done", headers=BOB).status_code == 200  # end of the chain
    recorder.writer.flush()
    rows = fetch_rows(
        recorder.writer.db_path, "select method, path, status from requests order by started_at"
    )
    assert [(r["method"], r["path"], r["status"]) for r in rows] == [
        ("POST", "/redirect/303", 303),
        ("GET", "/landing/thanks", 200),
        ("GET", "/redirect/301", 301),
        ("GET", "/redirect/302", 302),
        ("GET", "/landing/done", 200),
    ]
    (stats,) = fetch_rows(recorder.writer.db_path, "select * from recorder_stats")
    assert (stats["rows_written"], stats["rows_skipped"]) == (5, 2)
    assert stats["dropped_other"] == 0


def test_redirects_mode_with_full_sample_rate_keeps_everything(make_recorder: Recorder) -> None:
    recorder = make_recorder(record="redirects", sample_rate=1.0)
    with serve_in_thread(recorder) as url:
        assert httpx.get(f"{url}/landing/unrelated").status_code == 200
    recorder.writer.flush()
    rows = fetch_rows(recorder.writer.db_path, "select path from requests")
    assert rows == [{"path": "/landing/unrelated"}]


def test_all_mode_records_every_request(make_recorder: Recorder) -> None:
    recorder = make_recorder()
    with serve_in_thread(recorder) as url:
        for i in range(20):
            assert httpx.get(f"{url}/landing/{i}").status_code == 200
    recorder.writer.flush()
    assert len(fetch_rows(recorder.writer.db_path, "select id from requests")) == 20
    (stats,) = fetch_rows(recorder.writer.db_path, "select * from recorder_stats")
    assert (stats["rows_written"], stats["rows_skipped"]) == (20, 0)


def test_redirects_mode_records_a_redirect_whose_app_then_raises(make_recorder: Recorder) -> None:
    """A request not known to be needed is only watched; its 3xx start makes it a
    capture, which keeps the rest of the exchange, the exception included."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/moved":
            await send({"type": "http.response.start", "status": 307, "headers": [
                (b"location", b"/there")]})  # fmt: skip
            await send({"type": "http.response.body", "body": b"moved", "more_body": True})
        raise RuntimeError("boom")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    recorder = make_recorder(app, record="redirects")
    for path in ("/moved", "/broken"):
        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "headers": [], "client": ("198.51.100.1", 1)}  # fmt: skip
        with pytest.raises(RuntimeError):
            asyncio.run(recorder(scope, receive, send))
    recorder.writer.flush()
    rows = fetch_rows(
        recorder.writer.db_path,
        "select path, status, location, response_body_size, response_complete, error from requests",
    )
    assert rows == [
        {
            "path": "/moved",
            "status": 307,
            "location": "/there",
            "response_body_size": 5,
            "response_complete": 0,
            "error": "RuntimeError",
        }
    ]
    (stats,) = fetch_rows(recorder.writer.db_path, "select * from recorder_stats")
    assert (stats["rows_written"], stats["rows_skipped"]) == (1, 1)


def test_a_location_on_a_response_that_is_no_redirect_is_still_recorded(
    make_recorder: Recorder,
) -> None:
    """Headers of a non-3xx response are kept only when a Location is among them."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain")]
        if scope["path"] == "/created":
            headers.append((b"Location", b"/items/7"))
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    recorder = make_recorder(app)
    for path in ("/created", "/plain"):
        scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "headers": [], "client": ("198.51.100.1", 1)}  # fmt: skip
        asyncio.run(recorder(scope, receive, send))
    recorder.writer.flush()
    rows = fetch_rows(
        recorder.writer.db_path, "select path, status, location from requests order by id"
    )
    assert rows == [
        {"path": "/created", "status": 201, "location": "/items/7"},
        {"path": "/plain", "status": 201, "location": None},
    ]


def test_redirects_mode_follows_a_location_sent_as_bytearray_twice(make_recorder: Recorder) -> None:
    """The shared table notes where a redirect leads (cached per Location and request
    path): a Location an app sends as a bytearray, which no dict can key, still works,
    the second time from the cache, and its follow-up is kept."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/old":
            headers = [(b"location", bytearray(b"/new"))]
            await send({"type": "http.response.start", "status": 302, "headers": headers})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    statuses: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    recorder = make_recorder(app, record="redirects")
    for path in ("/old", "/old", "/new", "/elsewhere"):
        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "headers": [], "client": ("198.51.100.1", 1)}  # fmt: skip
        asyncio.run(recorder(scope, receive, send))
    assert statuses == [302, 302, 200, 200]
    recorder.writer.flush()
    rows = fetch_rows(recorder.writer.db_path, "select path, status, location from requests")
    assert rows == [
        {"path": "/old", "status": 302, "location": "/new"},
        {"path": "/old", "status": 302, "location": "/new"},
        {"path": "/new", "status": 200, "location": None},
    ]
