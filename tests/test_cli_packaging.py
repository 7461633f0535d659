"""The command line installs as redirect_auditor_cli (the repository keeps cli/): no
top-level `cli` package that could clash with another distribution's."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_console_script_points_at_the_installed_name() -> None:
    [script] = [
        ep for ep in distribution("redirect-auditor").entry_points if ep.name == "redirect-auditor"
    ]
    assert script.value == "redirect_auditor_cli.main:main"
    assert callable(script.load())


def test_no_top_level_cli_package_outside_the_repository(tmp_path: Path) -> None:
    code = (
        "import importlib.util, sys; "
        "print(importlib.util.find_spec('cli') is None, "
        "importlib.util.find_spec('redirect_auditor_cli') is not None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["True", "True"]
    version = subprocess.run(
        [sys.executable, "-m", "redirect_auditor_cli", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.startswith("redirect-auditor ")


@pytest.mark.slow
def test_wheel_has_no_cli_package_and_builds_without_warnings(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0 and "network" in build.stderr.lower():
        pytest.skip("building a wheel needs the build requirements from the package index")
    assert build.returncode == 0, build.stderr
    assert "warning" not in (build.stdout + build.stderr).lower()
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"auditor", "redirect_auditor_cli"}
    assert "redirect_auditor_cli/main.py" in names
    assert any(name.startswith("auditor/explore/templates/") for name in names)
    assert any(name.startswith("auditor/explore/static/") for name in names)
