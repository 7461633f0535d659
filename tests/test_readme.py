"""The README's two set-up commands are the ones that really work."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT


def quick_start_commands() -> list[str]:
    """The fenced bash commands of the README's Quick start section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_quick_start_has_a_demo_command_and_a_test_command() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert commands[0].endswith("redirect-auditor demo")
    assert "scripts/test.sh" in commands[1]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = quick_start_commands()[1]
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert any(line.strip() == test_command for line in ci_script.splitlines())


def _clean_copy(dest: Path) -> Path:
    """The tracked files of this checkout, as a fresh clone would have them."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_demo_command_runs_as_written_in_a_fresh_clone(tmp_path: Path) -> None:
    """Install into a new venv, run the demo, see Datasette answer, stop it with Ctrl-C."""
    clone = _clean_copy(tmp_path / "clone")
    proc = subprocess.Popen(
        ["bash", "-c", quick_start_commands()[0]],
        cwd=clone,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "200", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.stdout is not None
    output: list[str] = []
    url = None
    deadline = time.monotonic() + 540
    try:
        for line in proc.stdout:
            output.append(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+/\S*)", line)
            if match and "Datasette" in line:
                url = match.group(1)
                break
            assert time.monotonic() < deadline, "demo did not reach Datasette in time"
        assert url, "".join(output[-40:])
        page = httpx.get(url, timeout=10, follow_redirects=True)
        assert page.status_code == 200
        assert "findings" in page.text
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate()
    assert proc.returncode == 0, "".join(output[-20:]) + rest
    assert (clone / "demo.db").exists()
