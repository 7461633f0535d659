"""`redirect-auditor run APP` serves APP as plain `uvicorn APP` does: the same proxy-header
trust (uvicorn's defaults, its options and its FORWARDED_ALLOW_IPS), the same lifespan,
the factory called once per serving process; and it records what the app saw.

Both servers are real processes on 127.0.0.1 driven by a real HTTP client that plays a
same-host TLS proxy (X-Forwarded-Proto: https from 127.0.0.1).
"""

from __future__ import annotations

import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.servers import cli_command, fetch_rows, free_port, serve_in_process

APP = """
import os
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route


def note(event):
    with open(os.environ["PARITY_LOG"], "a") as log:
        log.write(f"{os.getpid()} {event}\\n")


async def items(request):
    return PlainTextResponse("items")


async def go(request):
    return RedirectResponse(request.url_for("items"), status_code=303)


async def whoami(request):
    client = request.client.host if request.client else None
    return JSONResponse({"scheme": request.url.scheme, "client": client})


@asynccontextmanager
async def lifespan(app):
    note("startup")
    yield
    note("shutdown")


def create():
    note("factory")
    routes = [
        Route("/items/", items, name="items"),
        Route("/go", go),
        Route("/whoami", whoami),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
"""

TLS_PROXY = {"x-forwarded-proto": "https"}
CLIENT = "203.0.113.7"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "parity_app.py").write_text(textwrap.dedent(APP))
    return folder


def plain_uvicorn(app_dir: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "parity_app:create", "--factory",
        "--app-dir", str(app_dir), "--port", str(port), "--log-level", "warning", *extra,
    ]  # fmt: skip


def under_run(app_dir: Path, port: int, db: Path, *extra: str) -> list[str]:
    return cli_command(
        "run", "parity_app:create", "--factory", "--app-dir", str(app_dir), "--db", str(db),
        "--port", str(port), "--log-level", "warning", *extra,
    )  # fmt: skip


def observe(args: list[str], port: int, log: Path, env: dict[str, str]) -> dict[str, Any]:
    """What a client behind the same-host TLS proxy sees; ports written as PORT."""
    with (
        serve_in_process(args, port, env={**env, "PARITY_LOG": str(log)}) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        slash = client.get("/items", headers=TLS_PROXY)  # Starlette's redirect_slashes
        go = client.get("/go", headers=TLS_PROXY)  # request.url_for
        who = client.get("/whoami", headers={**TLS_PROXY, "x-forwarded-for": CLIENT})
    seen = {
        "slash": (slash.status_code, slash.headers.get("location")),
        "url_for": (go.status_code, go.headers.get("location")),
        "whoami": who.json(),
    }
    return {k: str(v).replace(str(port), "PORT") for k, v in seen.items()}


def events_per_process(log: Path) -> list[list[str]]:
    per_pid: dict[str, list[str]] = defaultdict(list)
    for line in log.read_text().splitlines():
        pid, event = line.split()
        per_pid[pid].append(event)
    return sorted(per_pid.values())


VARIANTS = {
    "uvicorn-defaults": ([], {}),
    "no-proxy-headers": (["--no-proxy-headers"], {}),
    "other-proxy-allowed": (["--forwarded-allow-ips", "10.9.8.7"], {}),
    "allowed-by-environment": ([], {"FORWARDED_ALLOW_IPS": "10.9.8.7"}),
    "allow-all": (["--forwarded-allow-ips", "*"], {}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_run_answers_as_plain_uvicorn_and_records_what_the_app_saw(
    app_dir: Path, tmp_path: Path, variant: str
) -> None:
    extra, env = VARIANTS[variant]
    plain_log, run_log, db = tmp_path / "plain.log", tmp_path / "run.log", tmp_path / "t.db"
    port = free_port()
    plain = observe(plain_uvicorn(app_dir, port, *extra), port, plain_log, env)
    port = free_port()
    run = observe(under_run(app_dir, port, db, *extra), port, run_log, env)

    assert run == plain
    # Not vacuous: uvicorn's defaults trust this same-host proxy, the others do not.
    trusted = variant in ("uvicorn-defaults", "allow-all")
    scheme = "https" if trusted else "http"
    assert plain["slash"] == f"(307, '{scheme}://127.0.0.1:PORT/items/')"
    assert plain["url_for"] == f"(303, '{scheme}://127.0.0.1:PORT/items/')"
    client = CLIENT if trusted else "127.0.0.1"
    assert plain["whoami"] == str({"scheme": scheme, "client": client})

    # Each server called the factory once, ran the lifespan once, in its one process.
    once = [["factory", "startup", "shutdown"]]
    assert events_per_process(plain_log) == events_per_process(run_log) == once

    # The recorder records the scheme the app saw (the server has stopped: flushed).
    rows = fetch_rows(db, "select path, scheme, x_forwarded_proto, url from requests")
    slash_rows = [r for r in rows if r["path"] == "/items"]
    assert [(r["scheme"], r["x_forwarded_proto"]) for r in slash_rows] == [(scheme, "https")]
    assert urlsplit(slash_rows[0]["url"]).scheme == scheme


def test_factory_is_called_once_in_each_worker_and_never_by_run_itself(
    app_dir: Path, tmp_path: Path
) -> None:
    plain_log, run_log, db = tmp_path / "plain.log", tmp_path / "run.log", tmp_path / "t.db"
    port = free_port()
    observe(plain_uvicorn(app_dir, port, "--workers", "2"), port, plain_log, {})
    port = free_port()
    observe(under_run(app_dir, port, db, "--workers", "2"), port, run_log, {})
    once_each = [["factory", "startup", "shutdown"]] * 2
    assert events_per_process(plain_log) == events_per_process(run_log) == once_each


def test_lifespan_option_is_passed_through(app_dir: Path, tmp_path: Path) -> None:
    plain_log, run_log, db = tmp_path / "plain.log", tmp_path / "run.log", tmp_path / "t.db"
    port = free_port()
    plain = observe(plain_uvicorn(app_dir, port, "--lifespan", "off"), port, plain_log, {})
    port = free_port()
    run = observe(under_run(app_dir, port, db, "--lifespan", "off"), port, run_log, {})
    assert run == plain
    assert events_per_process(plain_log) == events_per_process(run_log) == [["factory"]]
    assert fetch_rows(db, "select count(*) as n from requests")[0]["n"] >= 3
