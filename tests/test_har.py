"""`redirect-auditor import-har`: browser traffic becomes recorded requests the audit links."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auditor import RedirectRecorder
from auditor.analysis.audit import audit
from redirect_auditor_cli.main import app
from tests import har_support
from tests.servers import fetch_rows, serve_in_thread

DATA = Path(__file__).parent / "data"
CHROMIUM_HAR = DATA / "chromium-redirects.har"

needs_chromium = pytest.mark.skipif(
    not har_support.chromium_available() and not os.environ.get("CI"),
    reason="headless Chromium is not installed (CI installs it)",
)


def import_har(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["import-har", *args])
    return result.exit_code, result.stdout, result.stderr


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def hops(db: Path) -> set[tuple[str, str, int, str | None, str | None]]:
    """(method, path, status, redirect method, redirect path) of every linked follow-up."""
    rows = fetch_rows(
        db,
        """select q.method, q.path, q.status, r.method as rm, r.path as rp
           from requests q join requests r on r.id = q.follow_up_of""",
    )
    return {(r["method"], r["path"], r["status"], r["rm"], r["rp"]) for r in rows}


def entry(url: str, started: str, status: int = 200, **extra: Any) -> dict[str, Any]:
    request = {"method": "GET", "url": url, "httpVersion": "HTTP/1.1", "headers": []}
    response = {"status": status, "headers": [], "redirectURL": "", "bodySize": 0}
    request.update(extra.pop("request", {}))
    response.update(extra.pop("response", {}))
    return {"startedDateTime": started, "time": 5, "request": request, "response": response}


def write_har(path: Path, entries: list[Any]) -> Path:
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}))
    return path


# --- real Chromium ------------------------------------------------------------------


@pytest.mark.browser
@needs_chromium
def test_chromium_har_gives_the_same_hops_and_findings_as_the_recorder(tmp_path: Path) -> None:
    recorded, imported, har_file = tmp_path / "recorded.db", tmp_path / "har.db", tmp_path / "c.har"
    recorder = RedirectRecorder(har_support.make_app(), db_path=recorded)
    try:
        with serve_in_thread(recorder) as base:
            har = har_support.record_har(base)
        recorder.writer.flush()
    finally:
        recorder.writer.close()
    har_file.write_text(json.dumps(har))

    code, stdout, _ = import_har(str(har_file), "--db", str(imported))
    assert code == 0, stdout
    assert "Imported" in stdout

    found = {}
    for db in (recorded, imported):
        result = audit(db)
        found[db] = {(f.rule, f.method, f.status) for f in result.findings}
    # Chromium turned the form's POST into a GET on the 301, and kept PUT and body on 301.
    expected_hops = {
        ("GET", "/v2/orders", 302, "POST", "/v1/orders"),
        ("GET", "/orders/confirmation", 200, "GET", "/v2/orders"),
        ("PUT", "/api/v2/items/7", 200, "PUT", "/api/items/7"),
    }
    # One side at a time, so a failure says which side lost a hop.
    assert hops(recorded) == expected_hops, "hops linked in the recorder's database"
    assert hops(imported) == expected_hops, "hops linked in the imported HAR"
    # /v1/orders -> /v2/orders is a moved resource: Chromium's GET lost the form
    assert ("method-change-on-move", "POST", 301) in found[imported]
    assert found[imported] == found[recorded]


# --- the committed Chromium HAR -----------------------------------------------------


def test_imported_chromium_har_is_one_client_whose_redirect_hops_link(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    code, _, stderr = import_har(str(CHROMIUM_HAR), "--db", str(db))
    assert code == 0, stderr
    rows = fetch_rows(db, "select * from requests order by id")
    assert {r["client_key"] for r in rows} != {None}
    assert len({r["client_key"] for r in rows}) == 1
    assert {r["worker_id"] for r in rows} == {"har:chromium-redirects.har"}
    assert [r["started_at"] for r in rows] == sorted(r["started_at"] for r in rows)
    post = next(r for r in rows if r["method"] == "POST")
    assert post["status"] == 301
    assert post["request_body_size"] == len("item=book")
    assert post["location"] == "/v2/orders?token=REDACTED"
    assert post["location_url"].endswith("/v2/orders?token=REDACTED")
    assert post["user_agent"].startswith("Mozilla/5.0")
    assert post["http_version"] == "1.1"

    result = audit(db)
    rules = {(f.rule, f.method, f.status, f.source) for f in result.findings}
    assert ("method-change-on-move", "POST", 301, "/v1/orders") in rules
    assert hops(db) == {
        ("GET", "/v2/orders", 302, "POST", "/v1/orders"),
        ("GET", "/orders/confirmation", 200, "GET", "/v2/orders"),
        ("PUT", "/api/v2/items/7", 200, "PUT", "/api/items/7"),
    }
    chains = fetch_rows(db, "select * from chains where length = 2")
    assert [c["outcome"] for c in chains] == ["completed"]
    assert b"s3cr3t-har-token" not in db.read_bytes()


def test_a_file_already_imported_is_refused_unless_forced(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    assert import_har(str(CHROMIUM_HAR), "--db", str(db))[0] == 0
    count = len(fetch_rows(db, "select id from requests"))

    code, _, stderr = import_har(str(CHROMIUM_HAR), "--db", str(db))
    assert code != 0
    assert "already imported" in one_line(stderr)
    assert len(fetch_rows(db, "select id from requests")) == count

    assert import_har(str(CHROMIUM_HAR), "--db", str(db), "--force")[0] == 0
    assert len(fetch_rows(db, "select id from requests")) == 2 * count


# --- other HAR writers (Firefox, proxies) -------------------------------------------


def test_redirect_url_without_location_header_and_cache_headers_on_3xx(tmp_path: Path) -> None:
    har = write_har(
        tmp_path / "firefox.har",
        [
            entry(
                "https://Shop.Example:443/cart?session=abc&x=1#top",
                "2024-05-01T12:00:00.000+02:00",
                status=308,
                request={
                    "method": "delete",
                    "httpVersion": "HTTP/2",
                    "headers": [
                        {"name": "User-Agent", "value": "Firefox/126"},
                        {"name": "X-Request-ID", "value": "req-1"},
                    ],
                    "bodySize": 7,
                },
                response={
                    "redirectURL": "https://shop.example/basket",
                    "headers": [
                        {"name": "Cache-Control", "value": "max-age=60"},
                        {"name": "Expires", "value": "Wed, 01 May 2024 10:01:00 GMT"},
                    ],
                    "bodySize": -1,
                    "content": {"size": 0},
                },
            ),
            entry(
                "https://shop.example/basket",
                "2024-05-01T10:00:00.010Z",
                request={
                    "method": "DELETE",
                    "httpVersion": "h2",
                    "headers": [{"name": "User-Agent", "value": "Firefox/126"}],
                },
                response={"headers": [{"name": "Cache-Control", "value": "no-store"}]},
            ),
            entry("data:text/plain,hi", "2024-05-01T10:00:00.020Z"),
        ],
    )
    db = tmp_path / "traffic.db"
    code, _, stderr = import_har(str(har), "--db", str(db))
    assert code == 0
    assert "not an http(s) request" in stderr
    first, second = fetch_rows(db, "select * from requests order by id")
    assert first["started_at"] == 1714557600.0
    assert (first["method"], first["scheme"], first["host"]) == ("DELETE", "https", "shop.example")
    assert first["query"] == "session=REDACTED&x=1"
    assert first["url"] == "https://shop.example/cart?session=REDACTED&x=1"
    assert first["location"] == "https://shop.example/basket"
    assert first["location_url"] == "https://shop.example/basket"
    assert first["cache_control"] == "max-age=60"
    assert first["expires"] == "Wed, 01 May 2024 10:01:00 GMT"
    assert (first["request_body_size"], first["response_body_size"]) == (7, 0)
    assert (first["http_version"], first["request_id"]) == ("2", "req-1")
    assert first["user_agent"] == "Firefox/126"
    assert second["cache_control"] is None  # stored for redirects only, like the recorder
    assert second["http_version"] == "2"
    audit(db)
    assert hops(db) == {("DELETE", "/basket", 200, "DELETE", "/cart")}


def test_a_follow_up_stamped_just_before_its_redirect_ended_still_links(tmp_path: Path) -> None:
    """Truncated wall-clock stamps plus a little clock drift (seen in CI): the redirect
    started at .0001 ms and took 5.0299 ms on the monotonic clock; the follow-up's wall
    stamp is .4999, truncated to .004 -- seemingly 0.03 ms before the redirect ended."""
    agent = {"headers": [{"name": "User-Agent", "value": "Chrome/126"}]}
    har = write_har(
        tmp_path / "drift.har",
        [
            entry(
                "http://127.0.0.1:8000/api/items/7",
                "2024-05-01T10:00:00.000Z",
                status=301,
                request={"method": "PUT", **agent},
                response={
                    "headers": [{"name": "Location", "value": "/api/v2/items/7"}],
                    "redirectURL": "/api/v2/items/7",
                },
            ),
            entry(
                "http://127.0.0.1:8000/api/v2/items/7",
                "2024-05-01T10:00:00.004Z",
                request={"method": "PUT", **agent},
            ),
        ],
    )
    har.write_text(har.read_text().replace('"time": 5,', '"time": 5.0299,', 1))
    db = tmp_path / "traffic.db"
    assert import_har(str(har), "--db", str(db))[0] == 0
    audit(db)
    assert hops(db) == {("PUT", "/api/v2/items/7", 200, "PUT", "/api/items/7")}


def test_a_target_requested_twice_in_the_window_is_reported_as_ambiguous(tmp_path: Path) -> None:
    har = write_har(
        tmp_path / "two-tabs.har",
        [
            entry(
                "http://127.0.0.1:8000/old",
                "2024-05-01T10:00:00.000Z",
                status=302,
                response={"headers": [{"name": "Location", "value": "/new"}]},
            ),
            entry("http://127.0.0.1:8000/new", "2024-05-01T10:00:00.100Z"),
            entry("http://127.0.0.1:8000/new", "2024-05-01T10:00:01.000Z"),
        ],
    )
    code, _, stderr = import_har(str(har), "--db", str(tmp_path / "t.db"))
    assert code == 0
    assert "ambiguous linking" in stderr
    assert "2 requests to the target" in stderr


# --- malformed input: one line, non-zero, nothing imported ---------------------------


def broken_hars() -> list[Any]:
    good = entry("http://127.0.0.1:8000/a", "2024-05-01T10:00:00.000Z")
    text = CHROMIUM_HAR.read_text()
    return [
        pytest.param(text[: len(text) // 2], "not valid JSON", id="truncated"),
        pytest.param("{", "not valid JSON", id="bad-json"),
        pytest.param('{"log": {"version": "1.2"}}', "log.entries", id="no-entries"),
        pytest.param("[]", "no top-level 'log'", id="not-a-har"),
        pytest.param(
            [good, {"startedDateTime": "2024-05-01T10:00:00Z", "request": {"method": "GET"}}],
            "entry 1: request has no 'url'",
            id="entry-without-url",
        ),
        pytest.param(
            [good, entry("http://127.0.0.1:8000/b", "yesterday")],
            "entry 1 (http://127.0.0.1:8000/b): startedDateTime 'yesterday'",
            id="bad-date",
        ),
        pytest.param(
            [good, entry("http://127.0.0.1:8000/c", "2024-05-01T10:00:00Z", status="301")],
            "entry 1 (http://127.0.0.1:8000/c): response status '301'",
            id="status-not-a-number",
        ),
        pytest.param(
            [good, entry("http://127.0.0.1:99999/d", "2024-05-01T10:00:00Z")],
            "entry 1 (http://127.0.0.1:99999/d): request url cannot be parsed",
            id="bad-port",
        ),
        pytest.param(
            [good, {**good, "time": "fast"}],
            "entry 1 (http://127.0.0.1:8000/a): time 'fast'",
            id="bad-time",
        ),
    ]


@pytest.mark.parametrize(("content", "message"), broken_hars())
def test_a_broken_har_fails_with_one_line_and_imports_nothing(
    tmp_path: Path, content: Any, message: str
) -> None:
    db = tmp_path / "traffic.db"
    assert import_har(str(CHROMIUM_HAR), "--db", str(db))[0] == 0
    before = db.read_bytes(), fetch_rows(db, "select count(*) as n from requests")

    har = tmp_path / "broken.har"
    if isinstance(content, str):
        har.write_text(content)
    else:
        write_har(har, content)
    code, _, stderr = import_har(str(har), "--db", str(db))
    assert code != 0
    line = one_line(stderr)
    assert message in line
    assert str(har) in line
    assert fetch_rows(db, "select count(*) as n from requests") == before[1]


def test_a_broken_har_creates_no_database(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    har = write_har(tmp_path / "b.har", [entry("http://x/", "not a date")])
    code, _, stderr = import_har(str(har), "--db", str(db))
    assert code != 0
    assert "entry 0 (http://x/)" in one_line(stderr)
    assert list(tmp_path.iterdir()) == [har]


def test_a_file_that_is_not_a_traffic_database_is_not_touched(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_text("my notes")
    code, _, stderr = import_har(str(CHROMIUM_HAR), "--db", str(db))
    assert code != 0
    assert "not a SQLite database" in one_line(stderr)
    assert db.read_text() == "my notes"

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)").connection.close()
    before = other.read_bytes()
    code, _, stderr = import_har(str(CHROMIUM_HAR), "--db", str(other))
    assert code != 0
    assert "no recorder tables" in one_line(stderr)
    assert other.read_bytes() == before


def test_a_missing_har_file_is_one_line(tmp_path: Path) -> None:
    code, _, stderr = import_har(str(tmp_path / "nope.har"), "--db", str(tmp_path / "t.db"))
    assert code != 0
    assert "cannot read" in one_line(stderr)
    assert not (tmp_path / "t.db").exists()


def test_the_chromium_fixture_is_reproducible_by_the_support_script() -> None:
    # The fixture documents how it was made; keep it a real Chromium capture.
    har = json.loads(CHROMIUM_HAR.read_text())
    assert har["log"]["browser"]["name"] == "Chromium"
    assert "HeadlessChrome" in json.dumps(har["log"]["entries"][0]["request"]["headers"])
