"""`redirect-auditor explore`: bad input fails cleanly; a real launch audits and serves."""

# ruff: noqa: F811 - the shared fixtures are imported, then requested by name

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from auditor.explore import is_loopback
from redirect_auditor_cli.main import app
from tests.servers import cli_command, free_port, wait_for
from tests.test_datasette_fixture import recorded_db  # noqa: F401

runner = CliRunner()


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["explore", str(tmp_path / "nope.db")])
    assert result.exit_code != 0
    assert "no such file" in result.output
    assert "Traceback" not in result.output


def test_non_sqlite_file_is_refused_and_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_bytes(b"just some text, not a database\n")
    before = notes.read_bytes()
    result = runner.invoke(app, ["explore", str(notes)])
    assert result.exit_code != 0
    assert "not a SQLite database" in result.output
    assert notes.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_database_without_recorder_tables_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("create table t (x)")
    result = runner.invoke(app, ["explore", str(other)])
    assert result.exit_code != 0
    assert "no recorder tables" in result.output


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_explore_audits_serves_and_stops_on_ctrl_c(recorded_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "shop-2026.db"
    shutil.copy(recorded_db, db)
    port = free_port()
    proc = subprocess.Popen(
        cli_command("explore", str(db), "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert f"{base}/shop-2026" in "".join(lines), lines
        assert any("Auditing" in line for line in lines)

        def findings() -> httpx.Response | None:
            try:
                return httpx.get(f"{base}/shop-2026/findings.json?_shape=objects", timeout=5)
            except httpx.TransportError:
                return None

        response = wait_for(findings, timeout=20, what="explore to answer")
        rules = {row["rule"] for row in response.json()["rows"]}
        assert {"post-redirect-get-302", "redirect-loop", "open-redirect"} <= rules
        landing = httpx.get(f"{base}/shop-2026", timeout=5)  # the URL explore printed
        assert landing.status_code == 200 and 'class="ra-report"' in landing.text
        graph = httpx.get(f"{base}/-/redirect-graph", params={"route": "/old"}, timeout=5)
        assert graph.status_code == 200 and "data-ra-dot=" in graph.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("explore did not stop on Ctrl-C")
    rest = proc.stdout.read() if proc.stdout else ""
    assert code in (0, 130)  # uvicorn re-raises SIGINT after a graceful shutdown: 128 + 2
    assert "Traceback" not in rest
