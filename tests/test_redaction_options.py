"""Redaction options reach the rows: from the constructor to the writer, and
from `redirect-auditor run` to every worker; bad ones stop start-up with one line."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder
from tests.servers import (
    ROOT,
    cli_command,
    fetch_rows,
    free_port,
    serve_in_process,
    serve_in_thread,
    wait_for,
)

STRIPE_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def to_share(request: Request) -> Response:
    return RedirectResponse("/s/ab12", 302)


def make_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/products", ok),
            Route("/keys/{name}", ok),
            Route("/s/{id}", ok),
            Route("/share", to_share),
        ]
    )


app = make_app()  # for `redirect-auditor run tests.test_redaction_options:app`


def send(base: str) -> None:
    with httpx.Client(base_url=base, follow_redirects=True) as client:
        assert client.get("/products?voucher=SPRING25&code=ABC-1&page=2").status_code == 200
        assert client.get(f"/keys/{STRIPE_KEY}").status_code == 200
        assert client.get("/share").status_code == 200


def check(db: Path) -> None:
    rows = {
        r["path"].split("/")[1]: r
        for r in fetch_rows(db, "select path, query, url, location, location_url from requests")
    }
    assert rows["products"]["query"] == "voucher=REDACTED&code=ABC-1&page=2"
    assert rows["keys"]["path"].startswith("/keys/(redacted:")
    assert rows["s"]["path"].startswith("/s/(redacted:")
    # The Location and its follow-up redact alike.
    assert rows["share"]["location_url"] == rows["s"]["url"]
    assert rows["share"]["location"] == rows["s"]["path"]
    text = repr(rows)
    assert "SPRING25" not in text and STRIPE_KEY not in text and "ab12" not in text


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_constructor_options_reach_the_writer(
    tmp_path: Path, writer: Literal["process", "thread"]
) -> None:
    db = tmp_path / "traffic.db"
    recorder = RedirectRecorder(
        make_app(),
        db_path=db,
        writer=writer,
        redact_params=["voucher"],
        allow_params=["code"],
        redact_patterns=[r"sk_live_\w+"],
        redact_routes=["/s/{id}"],
    )
    try:
        with serve_in_thread(recorder) as base:
            send(base)
            recorder.writer.flush()
    finally:
        recorder.writer.close()
    check(db)


def test_run_options_reach_every_worker(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    port = free_port()
    args = ["run", "tests.test_redaction_options:app", "--db", str(db), "--port", str(port)]
    args += ["--workers", "2", "--log-level", "warning"]
    args += ["--redact-param", "voucher", "--allow-param", "code"]
    args += ["--redact-pattern", r"sk_live_\w+", "--redact-route", "/s/{id}"]
    with serve_in_process(cli_command(*args), port, cwd=ROOT) as base:
        send(base)
        wait_for(lambda: len(fetch_rows(db, "select 1 from requests where path like '/s/%'")))
    check(db)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--redact-pattern", "(", "redact pattern '(' is not a regex"),
        ("--redact-route", "share/{id}", "must start with '/'"),
    ],
)
def test_run_refuses_a_bad_option_in_one_line(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    db = tmp_path / "traffic.db"
    result = subprocess.run(
        cli_command("run", "tests.test_redaction_options:app", "--db", str(db), option, value),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not db.exists()


def test_the_constructor_refuses_a_bad_pattern() -> None:
    with pytest.raises(ValueError, match="is not a regex"):
        RedirectRecorder(make_app(), db_path="unused.db", redact_patterns=["("])
