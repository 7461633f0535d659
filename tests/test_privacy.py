"""Privacy by default: no secret sent by a client or the app reaches the database file.

Every case goes through real uvicorn (in a thread, and under ``redirect-auditor run``),
real clients (httpx and curl) and the writer (``writer`` either way: one thread),
with record="all" and "redirects"; the database, its WAL and its -shm are read as
bytes and searched for every secret, from the request URL and from the Location.
"""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder, audit
from auditor.store.journal import unpack_file
from tests.servers import (
    ROOT,
    cli_command,
    fetch_rows,
    free_port,
    serve_in_process,
    serve_in_thread,
    wait_for,
)

SECRETS = {
    "authorization": "Bearer s3cr3t-authz-0b5e",
    "cookie": "sessionid=s3cr3t-cookie-77aa",
    "set_cookie": "s3cr3t-set-cookie-9c1d",
    "token": "s3cr3t-token-41f2",
    "password": "s3cr3t-password-e8d0",
    "api_key": "s3cr3t-apikey-6b3a",
    "code": "s3cr3t-oauth-code-2d9f",
    "userinfo": "s3cr3t-userinfo-5e7b",  # a password in a (second) Location
    "basic": "s3cr3t-basic-pw-3f1c",  # curl -u deploy:<this>
    # Issue #16: a secret percent-encoded inside another parameter's value ...
    "nested": "s3cr3t-nested-8c4e",  # ?next=/x%3Ftoken%3D<this>
    "nested_twice": "s3cr3t-nested-twice-a7d3",  # ?state=...%253Fsig%253D<this>
    # ... a credential as a path segment (a calendar-feed token: random, long) ...
    "path_token": "Zq7Lm2Xv9Rt4Kb8Wn3Jc6Hd1Fs5Gp0Ya",  # /users/<this>/feed.ics
    # ... and the segment after a token route, whatever it looks like.
    "reset_token": "s3cr3t-reset-55aa",  # /reset-token/<this>
    "django_token": "c4k2ab-9f8e7d6c5b4a39281706f5e4d3c2b1a0",  # /reset/MQ/<this>/
    "magic_jwt": "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYW5uIiwiZXhwIjoxNzAwMDAwMDAwfQ."
    "Yk3pQ9vT2mX8wL1rZ6cN4bH7dF0gJ5sA",  # /magic/<this>
    "invite_code": "s3cr3t-inv-1a",  # /i/{invite_code}: only the template says so
    # The same places in a Location the app sends.
    "location_path": "Wk4Tz8Qn1Vb6Hm3Rx9Lc2Pd7Fg5Js0Ae",  # Location: /download/<this>/...
    "location_token": "s3cr3t-location-token-6e2b",  # Location: ...?token=<this>
    "location_nested": "s3cr3t-location-nested-0d9a",  # Location: ...?next=%2F...%3Fsig%3D
}
CLIENT_ADDRESS = "127.0.0.2"  # a loopback address other than the server's


async def login(request: Request) -> Response:
    response = RedirectResponse(
        f"/callback?code={SECRETS['code']}&state=ok&token={SECRETS['token']}", status_code=302
    )
    response.headers.append("location", f"http://deploy:{SECRETS['userinfo']}@example.test/")
    response.set_cookie("session", SECRETS["set_cookie"])
    return response


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def reset(request: Request) -> Response:
    # What Django's PasswordResetConfirmView does: the token moves into the session.
    return RedirectResponse(f"/reset/{request.path_params['uidb64']}/set-password/", 302)


async def magic(request: Request) -> Response:
    return RedirectResponse("/home", 302)


async def invite(request: Request) -> Response:
    return RedirectResponse(f"/i/{SECRETS['invite_code']}", 302)


async def share(request: Request) -> Response:
    return RedirectResponse(
        f"/download/{SECRETS['location_path']}/report.pdf?token={SECRETS['location_token']}", 302
    )


async def go(request: Request) -> Response:
    nested = quote(f"/download?sig={SECRETS['location_nested']}", safe="")
    return RedirectResponse(f"/welcome?next={nested}", 303)


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/login", login, methods=["GET", "POST"]),
            Route("/callback", ok),
            Route("/users/{ref}/feed.ics", ok),
            Route("/reset-token/{value}", ok),
            Route("/reset/{uidb64}/set-password/", ok),
            Route("/reset/{uidb64}/{key}/", reset),
            Route("/magic/{value}", magic),
            Route("/home", ok),
            Route("/i/{invite_code}", ok),
            Route("/invite", invite),
            Route("/share", share),
            Route("/download/{ref}/report.pdf", ok),
            Route("/go", go),
            Route("/welcome", ok),
        ]
    )


app = make_app()  # for `redirect-auditor run tests.test_privacy:app`


def send_every_case(base: str) -> None:
    """What a new user tried (issue #16), with httpx and curl, following redirects."""
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
    with httpx.Client(base_url=base, transport=transport, follow_redirects=True) as client:
        response = client.post(
            f"/login?password={SECRETS['password']}&api_key={SECRETS['api_key']}",
            headers={"Authorization": SECRETS["authorization"], "Cookie": SECRETS["cookie"]},
            content=b"user=alice",
        )
        assert response.status_code == 200
        nested_twice = quote(
            "/auth?next=" + quote(f"/x?sig={SECRETS['nested_twice']}", safe=""), safe=""
        )
        for path in (
            f"/login?next=/x%3Ftoken%3D{SECRETS['nested']}",
            f"/callback?state={nested_twice}",
            f"/users/{SECRETS['path_token']}/feed.ics",
            f"/reset-token/{SECRETS['reset_token']}",
            f"/reset/MQ/{SECRETS['django_token']}/",
            f"/magic/{SECRETS['magic_jwt']}",
            "/invite",
            "/share",
            "/go",
        ):
            assert client.get(path).status_code == 200, path
    for auth in (
        ["-u", f"deploy:{SECRETS['basic']}"],
        ["-H", f"Authorization: {SECRETS['authorization']}", "-b", SECRETS["cookie"]],
    ):
        result = subprocess.run(
            [
                *("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-L", *auth),
                f"{base}/callback?code={SECRETS['code']}&password={SECRETS['password']}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout == "200"


def database_bytes(directory: Path) -> bytes:
    """The database and its -wal and -shm files, as they are on disk now."""
    files = [p for p in directory.glob("traffic.db*") if not p.name.endswith(".key")]
    assert any(p.name == "traffic.db" for p in files)
    return b"".join(p.read_bytes() for p in files)


def assert_no_secret_in(blobs: bytes) -> None:
    for name, value in SECRETS.items():
        for form in {value, quote(value, safe=""), quote(quote(value, safe=""), safe="")}:
            assert form.encode() not in blobs, f"{name} value leaked into the database files"


def assert_recorded_redacted(db: Path, record: str) -> None:
    """The cases were recorded (the test is not vacuous), redacted in place, and every
    redirect still links to its follow-up: linking compares the redacted URLs."""
    rows = fetch_rows(db, "select id, path, url, status, location_url, follow_up_of from requests")
    paths = [r["path"] for r in rows]
    expected = [
        "/reset/(redacted:*)/(redacted:*)/",  # uidb64 and token after "reset"
        "/reset/(redacted:*)/set-password/",  # the same uid marker: it links
        "/magic/(redacted:*)",
        "/i/(redacted:*)",
        "/download/(redacted:*)/report.pdf",
    ]
    if record == "all":
        expected += ["/users/(redacted:*)/feed.ics", "/reset-token/(redacted:*)"]
    for pattern in expected:
        head, *rest = pattern.split("*")
        assert any(p.startswith(head) and p.endswith(rest[-1]) for p in paths), (pattern, paths)
    assert any("token%3DREDACTED" in r["url"] for r in rows) or record == "redirects"
    audit(db)
    linked = fetch_rows(
        db,
        """select r.path as redirect, q.path as follow_up, r.location_url, q.url
           from requests q join requests r on r.id = q.follow_up_of""",
    )
    followed = {(r["redirect"].split("/")[1], r["follow_up"].split("/")[1]) for r in linked}
    assert {("reset", "reset"), ("invite", "i"), ("share", "download"), ("go", "welcome")} <= (
        followed
    )
    assert all(r["location_url"] == r["url"] for r in linked)


@pytest.mark.parametrize("writer", ["process", "thread"])
@pytest.mark.parametrize("record", ["all", "redirects"])
def test_no_secret_value_is_anywhere_in_the_database_files(
    tmp_path: Path, record: Literal["all", "redirects"], writer: Literal["process", "thread"]
) -> None:
    db = tmp_path / "traffic.db"
    recorder = RedirectRecorder(make_app(), db_path=db, record=record, writer=writer)
    try:
        with serve_in_thread(recorder) as base:
            send_every_case(base)
            recorder.writer.flush()
            # While the server runs: the thread writer's connection is open and the WAL
            # still holds the rows; the writer has checkpointed it.
            blobs = database_bytes(tmp_path)
    finally:
        recorder.writer.close()
    assert_no_secret_in(blobs + database_bytes(tmp_path))
    assert b"REDACTED" in blobs and b"(redacted:" in blobs  # places kept, values not
    assert CLIENT_ADDRESS.encode() not in blobs  # only a keyed hash of the client
    assert_recorded_redacted(db, record)


@contextmanager
def running(db: Path, record: str) -> Iterator[str]:
    port = free_port()
    args = ["run", "tests.test_privacy:app", "--db", str(db), "--port", str(port)]
    with serve_in_process(
        cli_command(*args, "--record", record, "--log-level", "warning"), port, cwd=ROOT
    ) as base:
        yield base


@pytest.mark.parametrize("record", ["all", "redirects"])
def test_no_secret_reaches_the_database_under_redirect_auditor_run(
    tmp_path: Path, record: str
) -> None:
    db = tmp_path / "traffic.db"
    with running(db, record) as base:
        send_every_case(base)
        # The writer flushes every 50 ms; the last case's rows arrive soon.
        wait_for(
            lambda: fetch_rows(db, "select 1 from requests where url like '%/callback?code=%'"),
            what="the last request's row",
        )
        live = database_bytes(tmp_path)
    assert_no_secret_in(live + database_bytes(tmp_path))
    assert_recorded_redacted(db, record)


def test_database_and_key_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    recorder = RedirectRecorder(make_app(), db_path=db)
    with serve_in_thread(recorder) as base:
        assert httpx.get(f"{base}/callback").status_code == 200
        recorder.writer.flush()
        created = sorted(p.name for p in tmp_path.iterdir())
        for path in tmp_path.iterdir():
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path.name} has mode {oct(mode)}"
    assert "traffic.db" in created and "traffic.db.key" in created


def test_sqlite_reads_what_redaction_wrote(tmp_path: Path) -> None:
    # The markers are plain text in a query: Datasette users can filter on them.
    db = tmp_path / "traffic.db"
    recorder = RedirectRecorder(make_app(), db_path=db, writer="thread")
    try:
        with serve_in_thread(recorder) as base:
            assert httpx.get(f"{base}/users/{SECRETS['path_token']}/feed.ics").status_code == 200
            recorder.writer.flush()
    finally:
        recorder.writer.close()
    unpack_file(db)  # the recorder's batches, into requests
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(
            "select count(*) from requests where path like '/users/(redacted:%)/feed.ics'"
        ).fetchone()
    assert count == 1
