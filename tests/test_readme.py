"""The README's commands are the ones that really work: the two set-up commands in a
fresh clone, and every other command against a demo database or a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, fetch_rows, free_port, serve_in_thread, wait_for


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


# ---------------------------------------------------------------------------
# Every other command in the README runs, as written, in a scratch directory that
# holds what the README's commands name: traffic.db (the demo's recorded traffic),
# the files of the several-hosts example, a HAR, an app importable as
# myproject.asgi:app (the demo app) and a test file for the pytest plugin. URLs on
# 127.0.0.1:8000 go to that app under real uvicorn; commands that serve until Ctrl-C
# get a free port, must answer, and must stop cleanly on SIGINT.

README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "COLUMNS": "100",  # the width the README's output was pasted at
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}
# Exit codes the README documents for a command run on the demo's traffic.
EXIT_CODES = {r"\baudit traffic\.db --fail-on error\b": 1}
SERVES = re.compile(r"(?:^|\s)(?:redirect-auditor (?:run|explore)|datasette) ")
PROBE_ORIGIN = "http://127.0.0.1:8000"
TEST_FILE = """\
from starlette.testclient import TestClient

from myproject.asgi import app


def test_orders_api_moved_with_308() -> None:
    response = TestClient(app).post("/api/v1/orders", json={"item": 1})
    assert response.status_code == 201
"""


@dataclass
class Command:
    line: str  # as written in the README
    output: list[str]  # for a console block: the lines the README shows it printing

    def __str__(self) -> str:
        return self.line


def readme_commands() -> list[Command]:
    """Each line of every fenced bash block, and each ``$ `` line of every console
    block with the output shown under it; the Quick start's set-up commands are left
    out (the tests above run them)."""
    text = README.read_text()
    setup = set(quick_start_commands())
    commands: list[Command] = []
    for kind, block in re.findall(r"```(bash|console)\n(.*?)```", text, re.S):
        if kind == "bash":
            for line in map(str.strip, block.splitlines()):
                if line and not line.startswith("#") and line not in setup:
                    commands.append(Command(line, []))
        else:
            for line in block.splitlines():
                if line.startswith("$ "):
                    commands.append(Command(line[2:].strip(), []))
                elif commands and line.strip() and line.strip() != "...":
                    commands[-1].output.append(line.rstrip())
    return commands


@pytest.fixture(scope="module")
def demo_traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's recorded and audited traffic, made once by the real command."""
    db = tmp_path_factory.mktemp("demo") / "traffic.db"
    subprocess.run(
        [str(VENV_BIN / "redirect-auditor"), "demo", "--no-serve", "--db", str(db)],
        check=True,
        capture_output=True,
        env=ENV,
        timeout=120,
    )
    return db


@pytest.fixture(scope="module")
def probe_server() -> Iterator[str]:
    """The demo app under real uvicorn, standing in for the README's 127.0.0.1:8000."""
    from auditor.demo.app import build_app

    with serve_in_thread(build_app()) as url:
        yield url


@pytest.fixture(scope="module")
def demo_shards(demo_traffic: Path) -> Path:
    """The demo traffic exported as Parquet shards (its hour closed by --until)."""
    shards = demo_traffic.parent / "shards"
    later = str(time.time() + 7200)
    subprocess.run(
        [
            str(VENV_BIN / "redirect-auditor"),
            "export",
            str(demo_traffic),
            "--to",
            str(shards),
            "--host",
            "web1",
            "--until",
            later,
        ],
        check=True,
        capture_output=True,
        env=ENV,
        timeout=120,
    )
    return shards


@pytest.fixture
def workspace(tmp_path: Path, demo_traffic: Path, demo_shards: Path) -> Path:
    shutil.copytree(demo_shards, tmp_path / "shards")
    for name in ("traffic.db", "demo.db", "shop-2026.db", "web1.db", "web2.db"):
        shutil.copy(demo_traffic, tmp_path / name)
        shutil.copy(f"{demo_traffic}.key", tmp_path / f"{name}.key")
    shutil.copy(ROOT / "tests" / "data" / "chromium-redirects.har", tmp_path / "checkout.har")
    (tmp_path / "myproject").mkdir()
    (tmp_path / "myproject" / "__init__.py").write_text("")
    (tmp_path / "myproject" / "asgi.py").write_text(
        "from auditor.demo.app import build_app\n\napp = build_app()\n"
    )
    (tmp_path / "test_shop.py").write_text(TEST_FILE)
    return tmp_path


def _without_comment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line)


def _with_port(line: str, port: int) -> str:
    if re.search(r"--port \d+", line):
        return re.sub(r"--port \d+", f"--port {port}", line)
    return f"{line} --port {port}"


def _same_output(printed: str, shown: list[str]) -> None:
    """Every line the README shows is a line the command printed (timings aside)."""

    def norm(line: str) -> str:
        return re.sub(r" in \d+\.\d+ s$", " in _ s", line.rstrip())

    lines = {norm(line) for line in printed.splitlines()}
    missing = [line for line in shown if norm(line) not in lines]
    assert not missing, f"the README shows lines this command no longer prints: {missing}"


def _run_to_completion(command: Command, line: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120
    )
    expected = next((code for rx, code in EXIT_CODES.items() if re.search(rx, line)), 0)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == expected, printed[-3000:]
    assert "Traceback" not in printed, printed[-3000:]
    if command.output:
        _same_output(proc.stdout, command.output)
    if written := re.search(r">\s*(\S+\.json)$", line):
        json.loads((cwd / written.group(1)).read_text())


def _serve_then_stop(line: str, cwd: Path) -> None:
    """Start a command that serves until Ctrl-C, see it answer, then press Ctrl-C."""
    port = free_port()
    line = _with_port(line, port)
    log = cwd / "server.log"
    recording = " run " in f" {line} "
    db = cwd / m.group(1) if (m := re.search(r"--db (\S+)", line)) else None
    count = "SELECT count(*) AS n FROM requests WHERE path = '/'"
    before = fetch_rows(db, count)[0]["n"] if db and db.exists() else 0
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-c", line],
            cwd=cwd,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        path = "/" if recording else "/-/databases.json"
        wait_for(lambda: _answers(base + path), timeout=30, what=f"{line!r} to answer")
        if recording:  # every worker up before Ctrl-C, as a person would see it
            workers = int(m.group(1)) if (m := re.search(r"--workers (\d+)", line)) else 1
            wait_for(
                lambda: log.read_text().count("Application startup complete") >= workers,
                timeout=30,
                what="every worker to start",
            )
        else:
            for name in re.findall(r"(\S+)\.db\b", line):
                report = httpx.get(f"{base}/-/redirect-report/{name}", timeout=10)
                assert report.status_code == 200 and "Redirect report" in report.text
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    printed = log.read_text()
    assert proc.returncode == 0, printed[-3000:]
    assert "Traceback" not in printed, printed[-3000:]
    if recording:  # the request that saw it answer was recorded
        assert db, line
        assert fetch_rows(db, count)[0]["n"] > before


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.TransportError:
        return False


def test_the_readme_has_commands_for_every_part() -> None:
    lines = [command.line for command in readme_commands()]
    parts = (
        "run",
        "audit",
        "explore",
        "demo",
        "probe",
        "import-har",
        "merge",
        "prune",
        "export",
        "unpack",
    )
    for part in parts:
        assert any(f"redirect-auditor {part} " in line for line in lines), part
    assert any(line.startswith("pytest --redirect-audit") for line in lines)
    assert any(line.startswith("datasette ") for line in lines)


def test_the_readme_catalogue_names_every_problem_in_docs() -> None:
    text = README.read_text()
    table = text.split("## Problem catalogue", 1)[1].split("\n## ", 1)[0]
    in_readme = set(re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`", table.split("| family", 1)[1]))
    docs = (ROOT / "docs" / "problems.md").read_text()
    in_docs = set(re.findall(r"^\| `([a-z0-9-]+)` \|", docs, re.M))
    assert len(in_docs) > 20, "docs/problems.md: no catalogue tables found"
    assert in_readme == in_docs


@pytest.mark.timeout(90)
@pytest.mark.parametrize("command", readme_commands(), ids=lambda c: _without_comment(c.line))
def test_readme_command_runs_as_written(
    command: Command, workspace: Path, probe_server: str
) -> None:
    line = _without_comment(command.line)
    if line.startswith(".venv/"):  # a development command: from the checkout
        if not (ROOT / ".venv" / "bin" / "python").exists():
            pytest.skip("no .venv in the checkout (bash scripts/test.sh makes it)")
        _run_to_completion(command, line, ROOT)
    elif SERVES.search(f" {line}"):
        _serve_then_stop(line, workspace)
    else:
        _run_to_completion(command, line.replace(PROBE_ORIGIN, probe_server), workspace)


def test_readme_configuration_block_is_what_audit_reads(workspace: Path) -> None:
    """The README's [tool.redirect-auditor] example, as a project's pyproject.toml."""
    (toml,) = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    (workspace / "pyproject.toml").write_text(toml)
    proc = subprocess.run(
        [str(VENV_BIN / "redirect-auditor"), "audit", "traffic.db", "--format", "json"],
        cwd=workspace,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (database,) = json.loads(proc.stdout)["databases"]
    options = database["options"]
    assert options["ignore_rules"] == ["legacy-302"]
    assert options["ignore_paths"] == ["/healthz", "/static/*"]
    assert "legacy-302" not in {finding["rule"] for finding in database["findings"]}
