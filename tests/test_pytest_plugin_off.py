"""Installed but not enabled, the plugin changes nothing (issue 17, case 5).

pytest loads every installed plugin before pytest-cov starts measuring. A plugin that
imports starlette, anyio or httpx when it loads hides their module-level lines (and a
project's own, when it is one of them) from coverage. Ours imports pytest and the
standard library only, and registers its recording hooks only with --redirect-audit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]
pytest.importorskip("pytest_cov")

USER_STACK = ("starlette", "anyio", "httpx", "sniffio", "fastapi", "sqlite_utils", "uvicorn")

SHOP_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route


async def old(request):
    return RedirectResponse("/new", status_code=308)


async def new(request):
    return PlainTextResponse("new")


app = Starlette(routes=[Route("/old", old), Route("/new", new)])
"""

TEST_SHOP = """
from starlette.testclient import TestClient

from shop_app import app


def test_old_moved():
    assert TestClient(app).get("/old").text == "new"
"""


def coverage(pytester: pytest.Pytester, name: str, *args: str) -> tuple[dict[str, Any], str]:
    """Executed lines per measured file of one run in a fresh interpreter, and its output
    (coverage's warnings go to stderr)."""
    report = pytester.path / f"{name}.json"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "--cov=starlette",
        "--cov=httpx",
        "--cov=shop_app",
        f"--cov-report=json:{report}",
        *args,
    )
    result.assert_outcomes(passed=1)
    files = json.loads(report.read_text())["files"]
    output = result.stdout.str() + result.stderr.str()
    return {path: data["executed_lines"] for path, data in files.items()}, output


def test_coverage_is_the_same_installed_but_off_as_without_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(shop_app=SHOP_APP, test_shop=TEST_SHOP)
    pytester.syspathinsert()
    installed, installed_output = coverage(pytester, "installed")
    without, _ = coverage(pytester, "without", "-p", "no:redirect_audit")
    assert installed == without
    assert any("starlette" in path for path in installed) and any(
        path.endswith("shop_app.py") for path in installed
    )
    assert "previously imported" not in installed_output
    assert "redirect audit" not in installed_output
    # The comparison sees the difference when something loaded with the plugins imports
    # the framework early, as the plugin used to.
    early, early_output = coverage(pytester, "early", "-p", "starlette.routing")
    assert early != without
    assert "previously imported" in early_output


def test_loading_the_plugin_imports_nothing_from_the_users_stack() -> None:
    code = (
        "import sys, auditor.sources.pytest_plugin; "
        f"print(sorted({{m.partition('.')[0] for m in sys.modules}} & {set(USER_STACK)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_only_two_hooks_until_enabled(pytester: pytest.Pytester) -> None:
    import auditor.sources.pytest_plugin as plugin

    module_hooks = sorted(name for name in vars(plugin) if name.startswith("pytest_"))
    assert module_hooks == ["pytest_addoption", "pytest_configure"]
    off = pytester.parseconfigure()
    assert off.pluginmanager.get_plugin(plugin.PLUGIN_NAME) is None
    on = pytester.parseconfigure(f"--redirect-audit={Path(str(pytester.path), 'on.db')}")
    assert isinstance(on.pluginmanager.get_plugin(plugin.PLUGIN_NAME), plugin.RedirectAudit)


def test_the_old_module_path_still_loads_the_plugin(tmp_path: Path) -> None:
    """``-p auditor.pytest_plugin`` (the path before sources/) is the same module."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    for args in (["-p", "auditor.pytest_plugin"], ["-p", "auditor.sources.pytest_plugin"]):
        out = subprocess.run(
            [sys.executable, "-m", "pytest", *args, "--help"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "--redirect-audit" in out.stdout
    import auditor.pytest_plugin as old
    import auditor.sources.pytest_plugin as new

    assert old is new
