"""Several hosts: each records into its own file; merged, a chain that crosses them links."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from auditor import audit
from auditor.record.writer import SECRET_ENV
from auditor.store.journal import recorded_rows
from auditor.store.merge import merge
from redirect_auditor_cli.main import app as cli_app
from tests.servers import ROOT, cli_command, free_port, serve_in_process, wait_for


def wait_for_rows(db: Path, count: int) -> None:
    def written() -> bool:
        if not db.exists():
            return False
        # closing(): a connection left to the garbage collector would, as the last one
        # open, checkpoint the shard's WAL later and change its bytes mid-test.
        with closing(sqlite3.connect(db)) as conn:
            return recorded_rows(conn) >= count  # unpacked or still in batches

    wait_for(written, timeout=20, what=f"{count} row(s) in {db.name}")


@pytest.fixture
def two_hosts(tmp_path: Path) -> tuple[Path, Path]:
    """Two uvicorn processes, two files: host A answers POST /checkout with a 301 to
    host B, and an httpx client follows."""
    db_a, db_b = tmp_path / "web1.db", tmp_path / "web2.db"
    port_a, port_b = free_port(), free_port()
    env = {SECRET_ENV: "one-secret-for-every-host", "LANDING_HOST": f"http://127.0.0.1:{port_b}"}

    def run(app: str, db: Path, port: int) -> list[str]:
        return cli_command(
            "run", app, "--db", str(db), "--port", str(port), "--log-level", "warning"
        )

    with (
        serve_in_process(
            run("tests.apps.hosts:landing_host", db_b, port_b), port_b, env=env, cwd=ROOT
        ),
        serve_in_process(
            run("tests.apps.hosts:checkout_host", db_a, port_a), port_a, env=env, cwd=ROOT
        ),
    ):
        response = httpx.post(
            f"http://127.0.0.1:{port_a}/checkout", content=b"cart=1", follow_redirects=True
        )
        assert response.status_code == 200 and response.text == "landed"
        # The readiness probes of serve_in_process are recorded too (GET /): 2 rows each.
        wait_for_rows(db_a, 2)
        wait_for_rows(db_b, 2)
    return db_a, db_b


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_chain_across_two_hosts_links_after_merge(
    two_hosts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "all.db"
    result = merge(out, list(two_hosts))
    assert list(result.added.values()) == [2, 2] and result.total == 4
    findings = audit(out).findings
    with sqlite3.connect(out) as conn:
        link = conn.execute(
            """select r.method, r.status, r.worker_id, q.method, q.path, q.worker_id
               from requests q join requests r on q.follow_up_of = r.id"""
        ).fetchall()
        workers = conn.execute("select count(*) from recorder_stats").fetchone()[0]
    assert [(m, s, qm, qp) for m, s, _, qm, qp, _ in link] == [("POST", 301, "GET", "/landing")]
    assert link[0][2] != link[0][5]  # served by two different processes
    assert workers == 2
    assert "post-redirect-get-302" in {f.rule for f in findings}  # /checkout -> /landing page


def test_merging_the_same_shards_twice_adds_nothing(
    two_hosts: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "all.db"
    merge(out, list(two_hosts))
    again = merge(out, list(two_hosts))
    assert list(again.added.values()) == [0, 0] and again.total == 4


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
    assert "web1.db: 2 new request(s)" in result.output
    assert "4 request(s) in all" in result.output


def test_audit_combined_links_hops_across_host_files(
    two_hosts: tuple[Path, Path], tmp_path: Path
) -> None:
    before = [digest(p) for p in two_hosts]
    out = tmp_path / "all.db"
    result = CliRunner().invoke(
        cli_app, ["audit", *map(str, two_hosts), "--combined", str(out), "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert "post-redirect-get-302" in result.output
    assert [digest(p) for p in two_hosts] == before  # the shards are left as they are
