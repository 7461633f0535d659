"""`redirect-auditor demo`, end to end: the installed script, real uvicorn, real clients.

The module runs the demo twice on one database file (first with --no-serve,
then serving Datasette until Ctrl-C), and `redirect-auditor audit` on the first
run's database in between; it checks the traffic, the findings, that `audit`
reports what the demo printed, and the fresh start from those two runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from auditor.analysis.rules.base import AuditOptions
from auditor.demo.app import CORRECT_ROUTES, PLANTED, Planted
from auditor.demo.run import is_demo_database
from auditor.demo.traffic import CLIENTS, client_addresses
from auditor.store.schema import connect, ensure_schema
from redirect_auditor_cli.main import app
from tests.servers import cli_command

ENV = {**os.environ, "COLUMNS": "200"}


@dataclass
class DemoRun:
    output: str
    returncode: int
    requests: list[dict[str, Any]]
    findings: list[dict[str, Any]]
    audit_runs: int
    audit_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    page: str = ""
    audit_json: dict[str, Any] = dataclasses.field(default_factory=dict)  # `audit --format json`


def snapshot(db: Path, output: str, returncode: int) -> DemoRun:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        requests = [dict(r) for r in conn.execute("select * from requests order by id")]
        findings = [dict(r) for r in conn.execute("select * from findings")]
        runs = conn.execute("select count(*) from audit_runs").fetchone()[0]
        options = json.loads(conn.execute("select options from audit_runs").fetchone()[0])
    finally:
        conn.close()
    return DemoRun(output, returncode, requests, findings, runs, options)


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
    first_run = snapshot(db, first.stdout + first.stderr, first.returncode)
    # What a user runs next: the audit, as the demo suggests, on the demo's database.
    audited = subprocess.run(
        cli_command("audit", str(db), "--format", "json"),
        cwd=db.parent,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert audited.returncode == 0, audited.stdout + audited.stderr
    first_run.audit_json = json.loads(audited.stdout)
    yield first_run, serve_until_ctrl_c(db)


def by_agent(run: DemoRun, client: str) -> list[dict[str, Any]]:
    agent = next(p.user_agent for p in CLIENTS if p.name == client)
    return [r for r in run.requests if r["user_agent"] == agent]


def route(value: str | None) -> str | None:
    return urlsplit(value).path if value and "://" in value else value


# --- The findings ----------------------------------------------------------------------

# The rules report the planted loop twice: the loop clients ran into (at /account/settings)
# and the static graph's cycle, which starts at its smallest URL (/account/preferences),
# so chains.redirect_loop's by-source de-duplication misses it.
LOOP_REPORTED_AGAIN = ("redirect-loop", "GET", "/account/preferences")


def places(findings: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter((f["rule"], f["method"] or "", f["source"]) for f in findings)


@pytest.mark.parametrize("planted", PLANTED, ids=lambda p: f"{p.rule}:{p.method} {p.source}")
def test_each_planted_problem_is_reported_once_at_its_severity(
    runs: tuple[DemoRun, DemoRun], planted: Planted
) -> None:
    first, _ = runs
    found = [
        f["severity"]
        for f in first.findings
        if (f["rule"], f["method"], f["source"]) == (planted.rule, planted.method, planted.source)
    ]
    assert found == [planted.severity], planted.how


def test_nothing_is_reported_that_the_app_does_not_plant(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    planted = {(p.rule, p.method, p.source) for p in PLANTED}
    unplanted = set(places(first.findings)) - planted - {LOOP_REPORTED_AGAIN}
    assert unplanted == set()


def test_the_planted_loop_is_reported_once(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    assert places(first.findings)[LOOP_REPORTED_AGAIN] == 0
    assert "Reported but not planted" not in first.output


def test_routes_right_on_purpose_have_no_finding(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    wrong = [
        (f["rule"], f["source"], f["target"])
        for f in first.findings
        if route(f["source"]) in CORRECT_ROUTES or route(f["target"]) in CORRECT_ROUTES
    ]
    assert wrong == []
    exercised = {(r["path"], r["method"], r["status"]) for r in first.requests}
    assert {
        ("/contact", "POST", 303),
        ("/api/v1/orders", "POST", 308),
        ("/uploads/avatar", "PUT", 307),
    } <= exercised


def test_demo_output_names_every_planted_problem(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    for planted in PLANTED:
        assert planted.rule in first.output
    assert "No finding on the routes that are right on purpose" in first.output
    assert (
        f"Each of the {len(PLANTED)} problems the demo app plants on purpose was found once, "
        "at its severity" in " ".join(first.output.split())
    )


# --- The same audit as `redirect-auditor audit` ------------------------------------------

COUNTS = re.compile(r"(\d+) errors?, (\d+) warnings?, (\d+) info from")


def test_demo_audits_with_the_default_options(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    defaults = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in dataclasses.asdict(AuditOptions()).items()
    }
    assert first.audit_options == defaults
    assert "default options of redirect-auditor audit" in first.output


def test_audit_reports_the_counts_the_demo_printed(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    match = COUNTS.search(first.output)
    assert match, first.output
    printed = dict(zip(("error", "warning", "info"), map(int, match.groups()), strict=True))
    assert first.audit_json["counts"] == printed
    assert sum(printed.values()) == len(first.findings)
    (database,) = first.audit_json["databases"]
    assert places(database["findings"]) == places(first.findings)
    severities = {(f["rule"], f["source"], f["severity"]) for f in database["findings"]}
    assert severities == {(f["rule"], f["source"], f["severity"]) for f in first.findings}


# --- The traffic: each client follows redirects as it really does ----------------------


def follow_ups(run: DemoRun, method: str, path: str) -> list[dict[str, Any]]:
    """The requests that followed the redirects of ``method path``, in order."""
    ids = {r["id"] for r in run.requests if (r["method"], r["path"]) == (method, path)}
    return [r for r in run.requests if r["follow_up_of"] in ids]


def test_post_on_301_and_302_is_followed_with_a_get_by_every_following_client(
    runs: tuple[DemoRun, DemoRun],
) -> None:
    first, _ = runs
    subscribe = follow_ups(first, "POST", "/subscribe")
    assert [(r["path"], r["method"], r["status"]) for r in subscribe] == [
        ("/newsletter/subscribe", "GET", 405)
    ] * 3
    login = follow_ups(first, "POST", "/login")
    assert [(r["path"], r["method"], r["status"]) for r in login] == [("/account", "GET", 200)] * 3
    assert not any(r["request_body_size"] for r in subscribe + login)


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
    for path, method in (
        ("/api/v2/orders", "POST"),
        ("/storage/avatar", "PUT"),
        ("/members/home", "POST"),
    ):
        landed = [r for r in first.requests if r["path"] == path and r["follow_up_of"]]
        landed = [r for r in landed if r["method"] == method]
        assert len(landed) == 3 and all(r["request_body_size"] for r in landed), path
    thanks = [r for r in first.requests if r["path"] == "/contact/thanks"]
    assert [(r["method"], bool(r["request_body_size"])) for r in thanks] == [("GET", False)] * 3


def test_forms_are_sent_form_encoded_and_re_posted_as_they_were(
    runs: tuple[DemoRun, DemoRun],
) -> None:
    first, _ = runs
    form = "application/x-www-form-urlencoded"
    for path in ("/login", "/members/login", "/subscribe", "/feedback", "/contact"):
        posts = [r for r in first.requests if (r["method"], r["path"]) == ("POST", path)]
        assert posts and all(
            r["request_content_type"] == form and r["request_body_size"] for r in posts
        ), path
    reposted = follow_ups(first, "POST", "/members/login")
    assert [(r["method"], r["status"], r["request_content_type"]) for r in reposted] == [
        ("POST", 405, form)
    ] * 3
    originals = {r["id"]: r for r in first.requests}
    for r in reposted:
        assert r["request_body_size"] == originals[r["follow_up_of"]]["request_body_size"]


def test_curl_never_follows(runs: tuple[DemoRun, DemoRun]) -> None:
    first, _ = runs
    curl = by_agent(first, "curl")
    assert len(curl) == 5
    assert not any(r["follow_up_of"] for r in curl)
    assert not any(r["follow_up_of"] in {c["id"] for c in curl} for r in first.requests)


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
