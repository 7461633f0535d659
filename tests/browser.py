"""Headless Chromium for tests: the DOM after scripts ran, screenshots, and a page driven
over the DevTools protocol (``open_page``) to wait for scripts and measure what is drawn.

Browser tests are marked ``@pytest.mark.browser`` and use ``require_chromium()``:
skipped when Chromium is missing on a developer machine, failed in CI (env CI set).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ROOT, wait_for

ARTIFACTS = ROOT / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def require_chromium() -> str:
    """The Chromium executable; skip without one, unless running in CI."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI must install it: scripts/test.sh)")
    pytest.skip("chromium is not installed")


def _run(args: list[str], timeout: float = 60) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [require_chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise AssertionError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(url: str) -> str:
    """The serialized DOM of ``url`` once the page loaded."""
    return _run(["--dump-dom", url])


def screenshot(url: str, name: str, size: str = "1280,900") -> Path:
    """A PNG of ``url`` saved as ``artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    path.unlink(missing_ok=True)
    _run([f"--screenshot={path}", f"--window-size={size}", url])
    assert path.exists() and path.stat().st_size > 1000, f"no screenshot at {path}"
    return path


# --- a page driven over the DevTools protocol ------------------------------------------


class Page:
    """One headless Chromium tab, driven over the DevTools protocol (a websocket)."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.next_id = 0

    def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message_id = self.next_id
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer to {method} within {timeout}s")
            reply = json.loads(self.socket.recv(timeout=left))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or expression}")
            time.sleep(0.05)

    def goto(self, url: str, timeout: float = 20) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
            timeout,
            what=f"{url} to load",
        )

    def screenshot(self, path: Path) -> Path:
        """A PNG of the viewport (what a person sees without scrolling)."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def open_page(url: str, width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """Headless Chromium showing ``url`` in a ``width`` x ``height`` viewport."""
    from websockets.sync.client import connect

    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [
                require_chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes in a group of their own
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            wait_for(
                lambda: port_file.exists() and port_file.read_text().strip(),
                timeout=30,
                what="Chromium's DevTools port",
            )
            port = int(port_file.read_text().split()[0])
            targets = wait_for(
                lambda: [
                    t
                    for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                    if t.get("type") == "page"
                ],
                timeout=15,
                what="a Chromium tab",
            )
            with connect(targets[0]["webSocketDebuggerUrl"], max_size=None) as socket:
                page = Page(socket)
                page.send(
                    "Emulation.setDeviceMetricsOverride",
                    width=width,
                    height=height,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                page.goto(url)
                yield page
        finally:
            _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """End the Chromium we started and its helpers (its own process group), then wait
    until the group is gone, so its profile folder can be removed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def group_gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(group_gone, timeout=10, what="Chromium's helper processes to exit")
