"""Several hosts: each records into its own file; merged, a chain that crosses them links."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from auditor import RedirectRecorder, audit
from auditor.merge import merge
from auditor.writer import SECRET_ENV
from cli.main import app as cli_app
from tests.servers import serve_in_thread


def landing(request: Request) -> Response:
    return PlainTextResponse("landed")


def host_a(target: str) -> Starlette:
    async def checkout(request: Request) -> Response:
        return RedirectResponse(f"{target}/landing", status_code=301)

    return Starlette(routes=[Route("/checkout", checkout, methods=["GET", "POST"])])


@pytest.fixture
def two_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Host A redirects POST /checkout (301) to host B, and a client follows."""
    monkeypatch.setenv(SECRET_ENV, "one-secret-for-every-host")
    db_a, db_b = tmp_path / "web1.db", tmp_path / "web2.db"
    recorder_b = RedirectRecorder(Starlette(routes=[Route("/landing", landing)]), db_path=db_b)
    with serve_in_thread(recorder_b) as base_b:
        recorder_a = RedirectRecorder(host_a(base_b), db_path=db_a)
        with serve_in_thread(recorder_a) as base_a:
            response = httpx.post(f"{base_a}/checkout", content=b"cart=1", follow_redirects=True)
            assert response.status_code == 200 and response.text == "landed"
            recorder_a.writer.flush()
        recorder_b.writer.flush()
    return db_a, db_b


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_chain_across_two_hosts_links_after_merge(
    two_hosts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "all.db"
    result = merge(out, list(two_hosts))
    assert list(result.added.values()) == [1, 1] and result.total == 2
    findings = audit(out).findings
    with sqlite3.connect(out) as conn:
        link = conn.execute(
            """select r.method, r.status, q.method, q.path from requests q
               join requests r on q.follow_up_of = r.id"""
        ).fetchall()
        workers = conn.execute("select count(*) from recorder_stats").fetchone()[0]
    assert link == [("POST", 301, "GET", "/landing")]
    assert workers == 1  # both servers ran in this test process: one worker id
    assert "method-changed" in {f.rule for f in findings}


def test_merging_the_same_shards_twice_adds_nothing(
    two_hosts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "all.db"
    merge(out, list(two_hosts))
    again = merge(out, list(two_hosts))
    assert list(again.added.values()) == [0, 0] and again.total == 2


def test_merge_cli_refuses_a_bad_shard_and_changes_nothing(
    two_hosts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "all.db"
    merge(out, [two_hosts[0]])
    before = digest(out)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database")
    result = CliRunner().invoke(cli_app, ["merge", str(out), str(two_hosts[1]), str(notes)])
    assert result.exit_code == 2
    assert "not a SQLite database" in result.output
    assert digest(out) == before and notes.read_text() == "not a database"


def test_merge_cli_reports_what_each_shard_added(
    two_hosts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "all.db"
    result = CliRunner().invoke(cli_app, ["merge", str(out), *map(str, two_hosts)])
    assert result.exit_code == 0, result.output
    assert "web1.db: 1 new request(s)" in result.output
    assert "2 request(s) in all" in result.output


def test_audit_combined_links_hops_across_host_files(
    two_hosts: tuple[Path, Path], tmp_path: Path
) -> None:
    before = [digest(p) for p in two_hosts]
    out = tmp_path / "all.db"
    result = CliRunner().invoke(
        cli_app, ["audit", *map(str, two_hosts), "--combined", str(out), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert "method-changed" in result.output
    assert [digest(p) for p in two_hosts] == before  # the shards are left as they are
