"""Record a HAR 1.2 file with real headless Chromium, over the DevTools protocol.

Chromium browses a real uvicorn app on 127.0.0.1; its Network domain events
(``requestWillBeSent`` with ``redirectResponse`` for every redirect hop,
``responseReceived``, ``loadingFinished``/``loadingFailed``) are turned into
HAR entries the way DevTools' own HAR writer does (one entry per hop, the
redirect's ``Location`` in its response headers and ``redirectURL``).

Also a script: ``python -m tests.har_support tests/data/chromium-redirects.har``
wrote the committed fixture.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from websockets.sync.client import ClientConnection, connect

from tests.browser import FLAGS
from tests.servers import wait_for

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [*FLAGS, "--remote-debugging-port=0"]

# A page that PUTs with fetch() to a 301, then submits a POST form to a 301 -> 302 chain.
FORM_PAGE = """<!doctype html>
<html><head><link rel="icon" href="data:,"><title>order</title></head><body>
<form method="post" action="/v1/orders"><input name="item" value="book"></form>
<script>
fetch('/api/items/7', {method: 'PUT', body: 'qty=2',
                       headers: {'Content-Type': 'application/x-www-form-urlencoded'}})
  .then(r => r.text())
  .then(() => document.forms[0].submit());
</script></body></html>"""
FINAL_PATH = "/orders/confirmation"


async def form(request: Request) -> Response:
    return HTMLResponse(FORM_PAGE)


async def old_orders(request: Request) -> Response:
    await request.body()
    return RedirectResponse("/v2/orders?token=s3cr3t-har-token", status_code=301)


async def new_orders(request: Request) -> Response:
    return RedirectResponse(FINAL_PATH, status_code=302)


async def confirmation(request: Request) -> Response:
    return HTMLResponse(f"<p>{request.method} confirmed</p>")


async def old_item(request: Request) -> Response:
    await request.body()
    return RedirectResponse(f"/api/v2/items/{request.path_params['id']}", status_code=301)


async def new_item(request: Request) -> Response:
    body = await request.body()
    return PlainTextResponse(f"{request.method} {len(body)}")


def make_app() -> Starlette:
    """The site Chromium browses: a POST 301 -> 302 chain and a PUT 301."""
    return Starlette(
        routes=[
            Route("/form", form),
            Route("/v1/orders", old_orders, methods=["POST"]),
            Route("/v2/orders", new_orders, methods=["GET", "POST"]),
            Route(FINAL_PATH, confirmation, methods=["GET", "POST"]),
            Route("/api/items/{id:int}", old_item, methods=["PUT"]),
            Route("/api/v2/items/{id:int}", new_item, methods=["GET", "PUT"]),
        ]
    )


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None


class DevTools:
    """A minimal synchronous Chrome DevTools protocol client (flattened sessions)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=30))
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        if any(predicate(e) for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [e["method"] for e in self.events]
                raise AssertionError(f"Chromium did not finish browsing within {timeout}s: {seen}")
            event = json.loads(self.ws.recv(timeout=remaining))
            if "method" in event:
                self.events.append(event)
                if predicate(event):
                    return


@contextmanager
def chromium() -> Iterator[DevTools]:
    """Headless Chromium with a throwaway profile; yields a DevTools connection to it."""
    profile = Path(tempfile.mkdtemp(prefix="har-chromium-"))
    proc = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    port_file = profile / "DevToolsActivePort"
    try:

        def active_port() -> list[str] | None:
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited with {proc.returncode}")
            lines = port_file.read_text().split() if port_file.exists() else []
            return lines if len(lines) == 2 else None

        port, path = wait_for(active_port, timeout=60, what="Chromium's DevTools port")
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=20) as ws:
            devtools = DevTools(ws)
            try:
                yield devtools
            finally:
                with contextlib.suppress(Exception):
                    devtools.call("Browser.close")
    finally:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the browser this helper started
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def browse(devtools: DevTools, start_url: str, until_path: str, timeout: float = 60) -> None:
    """Open ``start_url`` in a new tab; return once a response for ``until_path`` finished."""
    target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
    session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    devtools.call("Network.enable", session)
    devtools.call("Network.setCacheDisabled", session, cacheDisabled=True)
    devtools.call("Page.navigate", session, url=start_url)
    finished: set[str] = set()

    def done(event: dict[str, Any]) -> bool:
        params = event.get("params", {})
        if event["method"] == "Network.responseReceived" and params["response"]["url"].endswith(
            until_path
        ):
            finished.add(params["requestId"])
        return event["method"] == "Network.loadingFinished" and params["requestId"] in finished

    devtools.wait_event(done, timeout)
    devtools.call("Target.closeTarget", targetId=target)


def _headers(headers: dict[str, str]) -> list[dict[str, str]]:
    # CDP joins repeated headers with "\n"; HAR lists each value.
    return [
        {"name": name, "value": value}
        for name, joined in headers.items()
        for value in str(joined).split("\n")
    ]


def _iso(wall_time: float) -> str:
    return (
        datetime.fromtimestamp(wall_time, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _post_data(request: dict[str, Any]) -> str | None:
    if "postData" in request:
        return str(request["postData"])
    entries = request.get("postDataEntries")
    if entries:
        return b"".join(base64.b64decode(e.get("bytes", "")) for e in entries).decode(
            "utf-8", "replace"
        )
    return None


def _response(cdp: dict[str, Any], redirect_url: str = "") -> dict[str, Any]:
    headers = cdp.get("headers", {})
    return {
        "status": cdp.get("status", 0),
        "statusText": cdp.get("statusText", ""),
        "httpVersion": cdp.get("protocol", "http/1.1"),
        "headers": _headers(headers),
        "cookies": [],
        "content": {"size": -1, "mimeType": cdp.get("mimeType", "x-unknown")},
        "redirectURL": redirect_url,
        "headersSize": -1,
        "bodySize": -1,
        "_transferSize": cdp.get("encodedDataLength", 0),
    }


def har_from_events(events: list[dict[str, Any]], browser_version: str) -> dict[str, Any]:
    """A HAR 1.2 document from Network domain events (one entry per redirect hop)."""
    entries: list[dict[str, Any]] = []
    open_entries: dict[str, dict[str, Any]] = {}
    # The headers really sent and received (Content-Length, Host, Set-Cookie...) come in
    # *ExtraInfo events, one per hop in hop order, as DevTools pairs them.
    sent: dict[str, list[dict[str, str]]] = {}
    received: dict[str, list[dict[str, str]]] = {}
    for event in events:
        if event["method"] == "Network.requestWillBeSentExtraInfo":
            sent.setdefault(event["params"]["requestId"], []).append(event["params"]["headers"])
        elif event["method"] == "Network.responseReceivedExtraInfo":
            received.setdefault(event["params"]["requestId"], []).append(event["params"]["headers"])
    hop_counts: dict[str, int] = {}

    def wire(table: dict[str, list[dict[str, str]]], rid: str, hop: int) -> dict[str, str] | None:
        hops = table.get(rid, [])
        return hops[hop] if hop < len(hops) else None

    def close(entry: dict[str, Any], end_timestamp: float) -> None:
        entry.pop("_hop")
        entry["time"] = round((end_timestamp - entry.pop("_start")) * 1000, 3)

    for event in events:
        method, params = event["method"], event.get("params", {})
        rid = params.get("requestId")
        if method == "Network.requestWillBeSent":
            request = params["request"]
            if "redirectResponse" in params and rid in open_entries:
                previous = open_entries.pop(rid)
                redirect = dict(params["redirectResponse"])
                redirect["headers"] = wire(received, rid, previous["_hop"]) or redirect.get(
                    "headers", {}
                )
                previous["response"] = _response(redirect, redirect_url=request["url"])
                previous["serverIPAddress"] = redirect.get("remoteIPAddress", "")
                previous["connection"] = str(redirect.get("connectionId", ""))
                close(previous, params["timestamp"])
            body = _post_data(request)
            hop = hop_counts[rid] = hop_counts.get(rid, -1) + 1
            har_request: dict[str, Any] = {
                "method": request["method"],
                "url": request["url"] + request.get("urlFragment", ""),
                "httpVersion": "http/1.1",
                "headers": _headers(wire(sent, rid, hop) or request.get("headers", {})),
                "queryString": [],
                "cookies": [],
                "headersSize": -1,
                "bodySize": len(body.encode()) if body is not None else 0,
            }
            if body is not None:
                har_request["postData"] = {
                    "mimeType": request.get("headers", {}).get("Content-Type", ""),
                    "text": body,
                }
            entry = {
                "_resourceType": params.get("type", "").lower(),
                "_start": params["timestamp"],
                "_hop": hop,
                "startedDateTime": _iso(params["wallTime"]),
                "request": har_request,
                "response": _response({}),
                "cache": {},
                "timings": {"send": 0, "wait": 0, "receive": 0},
            }
            open_entries[rid] = entry
            entries.append(entry)
        elif method == "Network.responseReceived" and rid in open_entries:
            entry = open_entries[rid]
            response = dict(params["response"])
            response["headers"] = wire(received, rid, entry["_hop"]) or response.get("headers", {})
            entry["response"] = _response(response)
            entry["request"]["httpVersion"] = response.get("protocol", "http/1.1")
            entry["serverIPAddress"] = response.get("remoteIPAddress", "")
            entry["connection"] = str(response.get("connectionId", ""))
        elif method == "Network.loadingFinished" and rid in open_entries:
            entry = open_entries.pop(rid)
            entry["response"]["bodySize"] = max(
                0, int(params.get("encodedDataLength", 0)) - entry["response"]["_transferSize"]
            )
            entry["response"]["_transferSize"] = int(params.get("encodedDataLength", 0))
            close(entry, params["timestamp"])
        elif method == "Network.loadingFailed" and rid in open_entries:
            entry = open_entries.pop(rid)
            entry["response"]["_error"] = params.get("errorText", "failed")
            close(entry, params["timestamp"])
    for entry in open_entries.values():
        entry.pop("_start", None)
        entry.pop("_hop", None)
        entry["time"] = -1
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "redirect-auditor tests/har_support.py (CDP)", "version": "1"},
            "browser": {"name": "Chromium", "version": browser_version},
            "pages": [],
            "entries": entries,
        }
    }


def record_har(base_url: str, start_path: str = "/form", until_path: str = FINAL_PATH) -> Any:
    """Browse ``base_url + start_path`` in headless Chromium and return the HAR document."""
    with chromium() as devtools:
        version = devtools.call("Browser.getVersion").get("product", "Chromium")
        browse(devtools, base_url + start_path, until_path)
        return har_from_events(devtools.events, version)


def main(argv: list[str]) -> int:
    """Write the committed fixture: ``python -m tests.har_support OUT.har``."""
    from tests.servers import serve_in_thread

    out = Path(argv[0]) if argv else Path("tests/data/chromium-redirects.har")
    with serve_in_thread(make_app()) as base:
        har = record_har(base)
    out.write_text(json.dumps(har, indent=2) + "\n")
    print(f"wrote {len(har['log']['entries'])} entries to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
