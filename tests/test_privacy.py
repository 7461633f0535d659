"""Privacy by default: no secret sent by a client or the app reaches the database file."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder
from tests.servers import serve_in_thread

SECRETS = {
    "authorization": "Bearer s3cr3t-authz-0b5e",
    "cookie": "sessionid=s3cr3t-cookie-77aa",
    "set_cookie": "s3cr3t-set-cookie-9c1d",
    "token": "s3cr3t-token-41f2",
    "password": "s3cr3t-password-e8d0",
    "api_key": "s3cr3t-apikey-6b3a",
    "code": "s3cr3t-oauth-code-2d9f",
    "userinfo": "s3cr3t-userinfo-5e7b",  # a password in a (second) Location
}
CLIENT_ADDRESS = "127.0.0.2"  # a loopback address other than the server's


async def login(request: Request) -> Response:
    response = RedirectResponse(
        f"/callback?code={SECRETS['code']}&state=ok&token={SECRETS['token']}", status_code=302
    )
    response.headers.append("location", f"http://deploy:{SECRETS['userinfo']}@example.test/")
    response.set_cookie("session", SECRETS["set_cookie"])
    return response


async def callback(request: Request) -> Response:
    return PlainTextResponse("welcome")


def make_app(db: Path) -> RedirectRecorder:
    app = Starlette(
        routes=[Route("/login", login, methods=["GET", "POST"]), Route("/callback", callback)]
    )
    return RedirectRecorder(app, db_path=db)


def test_no_secret_value_is_anywhere_in_the_database_files(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    recorder = make_app(db)
    with serve_in_thread(recorder) as base:
        transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
        with httpx.Client(base_url=base, transport=transport) as client:
            response = client.post(
                f"/login?password={SECRETS['password']}&api_key={SECRETS['api_key']}",
                headers={"Authorization": SECRETS["authorization"], "Cookie": SECRETS["cookie"]},
                content=b"user=alice",
                follow_redirects=True,
            )
        assert response.status_code == 200
        recorder.writer.flush()
        # Read while the WAL still holds the rows: both files are grepped below.
        with sqlite3.connect(db) as conn:
            rows = conn.execute("select method, status, query, location from requests").fetchall()
        assert ("POST", 302) in [(m, s) for m, s, _, _ in rows]
        blobs = b"".join(p.read_bytes() for p in tmp_path.glob("traffic.db*") if p.suffix != ".key")
    for name, value in SECRETS.items():
        assert value.encode() not in blobs, f"{name} value leaked into the database files"
    assert b"REDACTED" in blobs  # the parameters are kept, their values are not
    assert CLIENT_ADDRESS.encode() not in blobs  # only a keyed hash of the client


def test_database_and_key_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    recorder = make_app(db)
    with serve_in_thread(recorder) as base:
        assert httpx.get(f"{base}/callback").status_code == 200
        recorder.writer.flush()
        created = sorted(p.name for p in tmp_path.iterdir())
        for path in tmp_path.iterdir():
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path.name} has mode {oct(mode)}"
    assert "traffic.db" in created and "traffic.db.key" in created
