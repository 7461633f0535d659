"""`redirect-auditor audit` output that scales: one line per finding when piped, a
screenful in a terminal, one pull-request comment of Markdown, the reason a check failed.
Timing lives in benchmarks/render_scale.py; these tests assert sizes and shapes."""

from __future__ import annotations

import json
import os
import pty
import re
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from contextlib import closing
from fcntl import ioctl
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.render_scale import make_findings_db
from redirect_auditor_cli.main import app

COUNT = 20_000
LINE = re.compile(
    r"^(error|warning|info) [a-z0-9-]+ (?:[A-Z]+|-) \S+(?: \d{3})?(?: → \S+)? "
    r"\([\d,]+ hits?(?:, [\d,]+ clients?)?\)$"
)
SCRIPT = Path(sys.executable).with_name("redirect-auditor")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_findings_db(tmp_path_factory.mktemp("render") / "findings.db", COUNT)


def counts(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("select severity, count(*) from findings group by severity"))


def audit(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["audit", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


def test_piped_output_is_one_line_per_finding_then_a_summary(big: Path) -> None:
    code, out, err = audit(str(big), "--stored")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == COUNT + 1
    assert all(LINE.match(line) for line in lines[:-1]), next(
        line for line in lines[:-1] if not LINE.match(line)
    )
    severities = [line.split(" ", 1)[0] for line in lines[:-1]]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    n = counts(big)
    assert lines[-1].startswith(f"{big}: {n['error']:,} errors, {n['warning']:,} warnings")


def test_limit_cuts_the_lines_and_says_how_many_more(big: Path) -> None:
    code, out, _ = audit(str(big), "--stored", "--limit", "100")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 102
    assert lines[100].startswith(f"…and {COUNT - 100:,} more (")


def test_markdown_fits_one_pull_request_comment_worst_first(big: Path) -> None:
    code, out, err = audit(str(big), "--stored", "--format", "markdown", "--fail-on", "error")
    assert code == 1
    assert len(out) <= 65_536
    assert out.startswith("## redirect-auditor: ")
    assert out.index("#### Errors") < out.index("…and ")
    shown = out.count("\n| `")
    assert 50 < shown < COUNT
    assert f"…and {COUNT - shown:,} more" in out
    n = counts(big)
    assert out.rstrip().endswith(
        f"_Check failed: {n['error']:,} errors at or above `--fail-on error`._"
    )
    assert err.strip().endswith(f"{n['error']:,} errors at or above --fail-on error")


def test_fail_on_ends_with_the_reason(big: Path) -> None:
    code, _, err = audit(str(big), "--stored", "--fail-on", "warning", "--limit", "1")
    n = counts(big)
    total = n["error"] + n["warning"]
    assert code == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(
            f"{total:,} findings ({n['error']:,} errors, {n['warning']:,} warnings) "
            "at or above --fail-on warning"
        )
    )


def test_json_keeps_every_finding(big: Path) -> None:
    code, out, _ = audit(str(big), "--stored", "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert len(document["databases"][0]["findings"]) == COUNT
    assert document["counts"] == {s: counts(big)[s] for s in ("error", "warning", "info")}


def test_stored_on_a_database_never_audited_is_one_line(tmp_path: Path) -> None:
    db = make_findings_db(tmp_path / "t.db", 0)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("delete from audit_runs")
    code, _, err = audit(str(db), "--stored")
    assert code == 2 and err.count("\n") == 1 and "no audit stored" in err


def run_in_terminal(args: list[str], rows: int = 40, columns: int = 120) -> str:
    """Run the installed CLI with a pseudo-terminal as stdout; return what it wrote."""
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([str(SCRIPT), *args], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert process.wait(timeout=max(1.0, deadline - time.monotonic())) is not None
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))


@pytest.mark.skipif(not SCRIPT.exists(), reason="the console script is not installed")
def test_terminal_shows_a_screenful_and_a_hint(big: Path) -> None:
    out = run_in_terminal(["audit", str(big), "--stored"])
    assert len(out.splitlines()) < 80
    text = " ".join(out.split())
    assert "Errors (2,000)" in text and "Fix: " in text  # the worst ones in detail
    brief = [line for line in out.splitlines() if line.startswith(("error ", "warning "))]
    assert len(brief) >= 5  # then a line each
    assert "more (" in text and "--limit 0" in text and "redirect-auditor explore" in text


def test_recorded_text_cannot_escape_a_line_or_a_comment(tmp_path: Path) -> None:
    db = make_findings_db(tmp_path / "hostile.db", 1)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "update findings set source = ?, message = ?",
            ("/a\x1b[31m\n/b", "see ![x](http://evil.example/t.png) <img src=x> | `cell`"),
        )
    _, out, _ = audit(str(db), "--stored")
    assert "\x1b" not in out and "\\x1b[31m\\x0a/b" in out
    assert len(out.splitlines()) == 2
    _, out, _ = audit(str(db), "--stored", "--format", "markdown")
    assert not re.search(r"(?<!\\)(!\[|<img)", out)
    assert "\\!\\[x\\](http://evil.example/t.png) \\<img src=x\\> \\| \\`cell\\`" in out
