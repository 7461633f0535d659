"""`redirect-auditor probe`: each hop as the chosen client sends it, recorded and audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from auditor.sources.probe import CLIENTS, next_request, sweep_targets
from redirect_auditor_cli.main import app as cli
from redirect_auditor_cli.probe import Client
from tests.servers import fetch_rows, free_port, serve_in_thread

ARRIVED: list[tuple[str, str, int, str | None]] = []  # (method, path, body size, authorization)


async def moved(request: Request) -> Response:
    await request.body()
    code = int(request.query_params.get("code", "301"))
    to = request.query_params.get("to", "/v2/orders")
    return RedirectResponse(to, status_code=code)


async def landing(request: Request) -> Response:
    body = await request.body()
    ARRIVED.append(
        (request.method, request.url.path, len(body), request.headers.get("authorization"))
    )
    return PlainTextResponse(f"{request.method} {len(body)}")


async def loop(request: Request) -> Response:
    return RedirectResponse("/loop", status_code=302)


async def step(request: Request) -> Response:
    return RedirectResponse(f"/step/{request.path_params['n'] + 1}", status_code=307)


METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
app = Starlette(
    routes=[
        Route("/v1/orders", moved, methods=METHODS),
        Route("/v2/orders", landing, methods=METHODS),
        Route("/loop", loop),
        Route("/step/{n:int}", step),
    ]
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(app) as base:
        yield base


@pytest.fixture(autouse=True)
def fresh_arrivals() -> None:
    ARRIVED.clear()


def probe(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["probe", *args])
    return result.exit_code, " ".join(result.stdout.split()), result.stderr


# --- the behaviour table (client-behaviour.md) --------------------------------------


@pytest.mark.parametrize(
    ("client", "method", "status", "expected"),
    [
        ("browser", "POST", 301, ("GET", False)),
        ("browser", "POST", 302, ("GET", False)),
        ("browser", "PUT", 301, ("PUT", True)),
        ("browser", "PUT", 302, ("PUT", True)),
        ("browser", "DELETE", 303, ("GET", False)),
        ("browser", "HEAD", 303, ("HEAD", False)),
        ("browser", "POST", 307, ("POST", True)),
        ("httpx", "PUT", 301, ("PUT", True)),
        ("httpx", "PATCH", 302, ("GET", False)),
        ("requests", "PUT", 301, ("PUT", False)),
        ("requests", "POST", 308, ("POST", True)),
        ("curl", "POST", 303, ("GET", False)),
        ("curl", "PUT", 302, ("PUT", False)),
        ("curl", "DELETE", 308, ("DELETE", True)),
        ("urllib", "POST", 302, ("GET", False)),
        ("urllib", "HEAD", 301, ("GET", False)),
        ("urllib", "PUT", 301, None),
        ("urllib", "POST", 307, None),
        ("urllib", "GET", 308, ("GET", False)),
        ("node", "POST", 301, ("GET", False)),
        ("aiohttp", "PATCH", 302, ("PATCH", True)),
        ("browser", "GET", 300, None),
        ("browser", "GET", 304, None),
    ],
)
def test_next_request_follows_the_measured_client_table(
    client: str, method: str, status: int, expected: tuple[str, bool] | None
) -> None:
    follow = next_request(client, method, status, None if method in ("GET", "HEAD") else b"x=1")
    if expected is None:
        assert follow is None
    else:
        assert follow is not None
        assert (follow.method, follow.body is not None) == expected


def test_every_client_in_the_table_is_a_cli_choice() -> None:
    assert {c.value for c in Client} == set(CLIENTS)


# --- a live uvicorn server ----------------------------------------------------------


def test_a_browser_post_to_v1_orders_arrives_as_a_get(server: str, tmp_path: Path) -> None:
    db = tmp_path / "probe.db"
    code, out, _ = probe(
        f"{server}/v1/orders", "-d", "item=book", "--as", "browser", "--db", str(db)
    )
    assert code == 0
    assert "browser turns POST into GET on 301, body dropped" in out
    assert f"POST {server}/v1/orders arrived as GET {server}/v2/orders" in out
    assert ARRIVED == [("GET", "/v2/orders", 0, None)]

    rows = fetch_rows(db, "select * from requests order by id")
    assert [(r["method"], r["path"], r["status"]) for r in rows] == [
        ("POST", "/v1/orders", 301),
        ("GET", "/v2/orders", 200),
    ]
    assert rows[0]["request_body_size"] == len("item=book")
    assert rows[0]["location_url"] == rows[1]["url"]
    assert rows[0]["client_key"] == rows[1]["client_key"] is not None
    assert rows[0]["user_agent"].startswith("Mozilla/5.0")

    assert CliRunner().invoke(cli, ["audit", str(db)]).exit_code == 0
    assert fetch_rows(db, "select follow_up_of from requests order by id")[1] == {
        "follow_up_of": rows[0]["id"]
    }
    rules = {r["rule"] for r in fetch_rows(db, "select rule from findings")}
    assert "method-change-on-move" in rules


def test_requests_keeps_put_on_301_but_drops_the_body(server: str) -> None:
    code, out, _ = probe(f"{server}/v1/orders", "-X", "PUT", "-d", "qty=2", "--as", "requests")
    assert code == 0
    assert "requests keeps PUT on 301 but drops the body" in out
    assert ARRIVED == [("PUT", "/v2/orders", 0, None)]


def test_httpx_resends_the_body_on_307(server: str) -> None:
    code, _, _ = probe(f"{server}/v1/orders?code=307", "-d", "qty=2", "--as", "httpx")
    assert code == 0
    assert ARRIVED == [("POST", "/v2/orders", 5, None)]


def test_urllib_does_not_follow_a_307_post(server: str) -> None:
    code, out, _ = probe(f"{server}/v1/orders?code=307", "-d", "qty=2", "--as", "urllib")
    assert code == 0
    assert "urllib does not follow a 307 POST" in out
    assert out.count("not followed: 0 redirect(s) followed, final status 307") == 1
    assert ARRIVED == []


def test_credentials_are_dropped_on_a_cross_host_redirect_except_by_urllib(server: str) -> None:
    other = server.replace("127.0.0.1", "localhost")
    to = f"{other}/v2/orders"
    for client in ("browser", "urllib"):
        code, _, _ = probe(
            f"{server}/v1/orders?code=302&to={to}", "-H", "Authorization: Bearer t", "--as", client
        )
        assert code == 0
    assert ARRIVED == [("GET", "/v2/orders", 0, None), ("GET", "/v2/orders", 0, "Bearer t")]


def test_a_loop_and_a_long_chain_stop(server: str) -> None:
    code, out, _ = probe(f"{server}/loop")
    assert code == 0
    assert "loop: 0 redirect(s) followed, final status 302" in out

    code, out, _ = probe(f"{server}/step/1", "--max-hops", "3")
    assert code == 0
    assert "stopped after 3 redirects: 3 redirect(s) followed" in out


def test_nothing_listening_is_a_clear_failure(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    code, out, err = probe(f"http://127.0.0.1:{free_port()}/", "--db", str(db))
    assert code == 2  # the environment, not a redirect: bad input, one line on stderr
    assert out == "" and err.count("\n") == 1 and "no response" in err
    assert not db.exists()


# --- in-process ASGI app ------------------------------------------------------------


def test_app_in_process_is_recorded_by_the_real_recorder(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    code, out, _ = probe(
        "--app", "tests.test_probe:app", "/v1/orders", "-d", "a=1", "--db", str(db)
    )
    assert code == 0, out
    assert "POST http://testserver/v1/orders arrived as GET http://testserver/v2/orders" in out
    rows = fetch_rows(db, "select method, route, status, follow_up_of from requests order by id")
    assert [(r["method"], r["route"], r["status"]) for r in rows] == [
        ("POST", "/v1/orders", 301),
        ("GET", "/v2/orders", 200),
    ]


def test_app_in_process_does_not_leave_the_app(tmp_path: Path) -> None:
    code, out, _ = probe(
        "--app", "tests.test_probe:app", "/v1/orders?to=https://elsewhere.example/x"
    )
    assert code == 0
    assert "leaves the app for elsewhere.example" in out


def test_sweep_visits_every_route_and_audits_with_no_traffic(tmp_path: Path) -> None:
    assert ("POST", "/v1/orders") in sweep_targets(app)
    assert ("GET", "/step/1") in sweep_targets(app)
    db = tmp_path / "sweep.db"
    code, out, _ = probe("--app", "tests.test_probe:app", "--sweep", "--db", str(db))
    assert code == 0, out
    assert "POST /v1/orders 301 -> GET /v2/orders 200" in out
    assert "method-change-on-move" in out
    assert "(loop)" in out
    findings = fetch_rows(db, "select rule, method, status, source from findings")
    assert {
        "rule": "method-change-on-move",
        "method": "POST",
        "status": 301,
        "source": "/v1/orders",
    } in (findings)


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a URL to probe"),
        (["--sweep"], "--sweep needs --app"),
        (["ftp://x/"], "is not an http(s) URL"),
        (["http://127.0.0.1:1/", "-H", "nocolon"], "is not of the form 'Name: value'"),
        (["--app", "no_such_module_xyz:app", "/"], "no_such_module_xyz"),
        (["--app", "tests.test_probe:nope", "/"], "has no attribute"),
        (["--app", "tests.servers:ROOT", "--sweep"], "not an ASGI application"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    code, _, stderr = probe(*args)
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert message in lines[0]


def test_a_file_that_is_not_a_traffic_database_is_not_touched(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_text("notes")
    code, _, stderr = probe("http://127.0.0.1:1/", "--db", str(db))
    assert code != 0
    assert "not a SQLite database" in stderr
    assert db.read_text() == "notes"


def test_sweep_fills_fastapi_path_parameters_from_their_annotations() -> None:
    fastapi = pytest.importorskip("fastapi")
    import uuid

    api = fastapi.FastAPI()
    router = fastapi.APIRouter(prefix="/api")

    @router.get("/orders/{order_id}")
    def get_order(order_id: int) -> dict[str, int]:
        return {"id": order_id}

    @router.put("/things/{thing}")
    def put_thing(thing: uuid.UUID) -> None:
        return None

    api.include_router(router)
    targets = sweep_targets(api)
    assert ("GET", "/api/orders/1") in targets
    assert ("PUT", f"/api/things/{uuid.UUID(int=1)}") in targets
