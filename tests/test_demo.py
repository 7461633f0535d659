"""`redirect-auditor demo`, end to end: the installed script, real uvicorn, real clients.

The module runs the demo twice on one database file (first with --no-serve,
then serving Datasette until Ctrl-C) and checks the traffic, the findings and
the fresh start from those two runs.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from auditor.demo import is_demo_database
from auditor.demo_app import CORRECT_ROUTES, EXPECTED_RULES
from auditor.demo_traffic import CLIENTS, client_addresses
from auditor.schema import connect, ensure_schema
from cli.main import app
from tests.servers import cli_command

ENV = {**os.environ, "COLUMNS": "200"}


@dataclass
class DemoRun:
    output: str
    returncode: int
    requests: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    audit_runs: int
    page: str = ""


def snapshot(db: Path, output: str, returncode: int) -> DemoRun:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        requests = [dict(r) for r in conn.execute("select * from requests order by id")]
        findings = [dict(r) for r in conn.execute("select * from findings")]
        runs = conn.execute("select count(*) from audit_runs").fetchone()[0]
    finally:
        conn.close()
    return DemoRun(output, returncode, requests, findings, runs)


def serve_until_ctrl_c(db: Path) -> DemoRun:
    """Run the demo with Datasette, fetch the findings page, then send Ctrl-C."""
    proc = subprocess.Popen(
        cli_command("demo", "--db", str(db)),
        cwd=db.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Datasette" in line:
                break
        match = re.search(r"(http://127\.0\.0\.1:\d+/\S*)", lines[-1])
        assert match, "".join(lines)
        page = httpx.get(match.group(1), timeout=30, follow_redirects=True)
        assert page.status_code == 200
        run = snapshot(db, "", 0)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    run.output, run.returncode, run.page = "".join(lines) + rest, proc.returncode, page.text
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoRun, DemoRun]]:
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    first = subprocess.run(
        cli_command("demo", "--no-serve", "--db", str(db)),
        cwd=db.parent,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    yield snapshot(db, first.stdout + first.stderr, first.returncode), serve_until_ctrl_c(db)


def by_agent(run: DemoRun, client: str) -> list[dict[str, Any]]:
    agent = next(p.user_agent for p in CLIENTS if p.name == client)
    return [r for r in run.requests if r["user_agent"] == agent]


def route(value: str | None) -> str | None:
    return urlsplit(value).path if value and "://" in value else value


# --- The findings ----------------------------------------------------------------------


def test_demo_finds_every_rule_the_app_breaks_on_purpose(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    found = {f["rule"] for f in first.findings}
    assert set(EXPECTED_RULES) <= found, f"missing: {set(EXPECTED_RULES) - found}"
    assert f"All {len(EXPECTED_RULES)} rules the demo app triggers on purpose" in first.output


def test_routes_right_on_purpose_have_no_finding(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    wrong = [
        (f["rule"], f["source"], f["target"])
        for f in first.findings
        if route(f["source"]) in CORRECT_ROUTES or route(f["target"]) in CORRECT_ROUTES
    ]
    assert wrong == []
    exercised = {(r["path"], r["status"]) for r in first.requests}
    assert {("/contact", 303), ("/api/v1/orders", 308), ("/uploads/avatar", 307)} <= exercised


def test_demo_says_it_audits_with_demo_thresholds(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    assert "Auditing with demo thresholds" in first.output
    assert "temporary-looks-permanent" in first.output


# --- The traffic: each client follows redirects as it really does ----------------------


def test_post_on_301_and_302_is_followed_with_a_get_by_every_following_client(
    runs: tuple[DemoRun, DemoRun],
) -> None:
    first, _ = runs
    followed = [r for r in first.requests if r["path"] == "/newsletter/subscribe"]
    assert [(r["method"], r["status"]) for r in followed] == [("GET", 405)] * 3
    assert all(r["follow_up_of"] for r in followed)
    assert [r["method"] for r in first.requests if r["path"] == "/account"] == ["GET"] * 4


def test_requests_like_client_keeps_put_on_301_but_drops_the_body(
    runs: tuple[DemoRun, DemoRun],
) -> None:
    first, _ = runs
    for client, status in (("browser", 200), ("httpx", 200), ("requests", 422)):
        (hop,) = [r for r in by_agent(first, client) if r["path"] == "/api/v2/profile"]
        assert (hop["method"], hop["status"]) == ("PUT", status), client
        assert bool(hop["request_body_size"]) == (client != "requests"), client


def test_307_and_308_keep_method_and_body_and_303_becomes_get(
    runs: tuple[DemoRun, DemoRun],
) -> None:
    first, _ = runs
    for path, method in (("/api/v2/orders", "POST"), ("/storage/avatar", "PUT")):
        landed = [r for r in first.requests if r["path"] == path and r["follow_up_of"]]
        landed = [r for r in landed if r["method"] == method]
        assert len(landed) == 3 and all(r["request_body_size"] for r in landed), path
    thanks = [r for r in first.requests if r["path"] == "/contact/thanks"]
    assert [(r["method"], bool(r["request_body_size"])) for r in thanks] == [("GET", False)] * 3


def test_curl_never_follows(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    curl = by_agent(first, "curl")
    assert len(curl) == 5
    assert not any(r["follow_up_of"] for r in curl)


def test_shop_behind_the_tls_proxy_is_downgraded_to_http(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    (post,) = [r for r in first.requests if r["path"] == "/shop/cart/items"]
    assert (post["scheme"], post["server_scheme"], post["x_forwarded_proto"]) == (
        "https",
        "http",
        "https",
    )
    assert post["location_url"] == "http://shop.example.test/shop/cart"
    (follow_up,) = [r for r in first.requests if r["follow_up_of"] == post["id"]]
    assert (follow_up["method"], follow_up["url"]) == ("GET", post["location_url"])


def test_each_client_has_its_own_client_key(runs: tuple[DemoRun, DemoRun]) -> None:
    if len(set(client_addresses().values())) == 1:
        pytest.skip("only 127.0.0.1 is available as a loopback source address here")
    first, _ = runs
    assert len({r["client_key"] for r in first.requests}) == len(CLIENTS)


# --- Fresh start, Datasette, Ctrl-C ------------------------------------------------------


def test_second_run_starts_from_a_fresh_database(runs: tuple[DemoRun, DemoRun]) -> None:
    first, second = runs
    assert len(second.requests) == len(first.requests) > 100
    assert second.requests[0]["id"] == 1
    assert first.audit_runs == second.audit_runs == 1


def test_demo_serves_the_findings_in_datasette_until_ctrl_c(
    runs: tuple[DemoRun, DemoRun],
) -> None:
    _, second = runs
    assert "findings" in second.page
    assert second.returncode == 0, second.output


# --- Refusals ----------------------------------------------------------------------------


def invoke_demo(db: Path) -> Any:
    return CliRunner().invoke(app, ["demo", "--no-serve", "--db", str(db)])


def test_refuses_to_delete_a_file_that_is_not_a_redirect_auditor_database(
    tmp_path: Path,
) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"my precious notes\n")
    result = invoke_demo(db)
    assert result.exit_code == 2
    assert "not a redirect-auditor database; refusing to delete it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert db.read_bytes() == b"my precious notes\n"


def test_refuses_to_replace_a_traffic_database_that_the_demo_did_not_create(
    tmp_path: Path,
) -> None:
    db = tmp_path / "traffic.db"
    conn = connect(db)
    ensure_schema(conn)
    conn.close()
    before = db.read_bytes()
    result = invoke_demo(db)
    assert result.exit_code == 2
    assert "not a demo one; refusing to delete it" in result.stderr
    assert db.read_bytes() == before
    assert not is_demo_database(db)


def test_refuses_to_delete_a_wal_file_whose_database_is_gone(tmp_path: Path) -> None:
    wal = tmp_path / "demo.db-wal"
    wal.write_bytes(b"wal frames of a lost database")
    result = invoke_demo(tmp_path / "demo.db")
    assert result.exit_code == 2
    assert wal.exists() and not (tmp_path / "demo.db").exists()
