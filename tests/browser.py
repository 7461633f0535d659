"""Headless Chromium for tests: the DOM after scripts ran, and screenshots.

Browser tests are marked ``@pytest.mark.browser`` and use ``require_chromium()``:
skipped when Chromium is missing on a developer machine, failed in CI (env CI set).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.servers import ROOT

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
