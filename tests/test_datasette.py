"""The Datasette metadata and canned queries on a recorded, audited database."""

# ruff: noqa: F811 - the shared fixtures are imported, then requested by name

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor import RedirectRecorder
from auditor.analysis.audit import audit
from auditor.explore import build_datasette, database_names, load_metadata
from auditor.explore.plugin import database_metadata
from tests.servers import ROOT, serve_in_thread
from tests.test_datasette_fixture import (  # noqa: F401 - pytest fixtures
    BROWSER_UA,
    CURL_UA,
    audited_db,
    recorded_db,
)

DB = "shop-2026"
# Datasette 0.65 metadata keys (docs: metadata.html); nothing from 1.0's datasette.yaml.
TOP_KEYS = {"title", "description", "description_html", "license", "license_url", "source"}
TOP_KEYS |= {"source_url", "about", "about_url", "databases", "plugins"}
DATABASE_KEYS = TOP_KEYS - {"databases"} | {"tables", "queries"}
TABLE_KEYS = DATABASE_KEYS - {"tables", "queries"} | {"sort", "sort_desc", "facets", "hidden"}
TABLE_KEYS |= {"label_column", "units", "columns", "size", "sortable_columns", "fts_table"}
TABLE_KEYS |= {"fts_pk", "searchmode", "facet_size", "allow"}
QUERY_KEYS = {"sql", "title", "description", "description_html", "hide_sql", "fragment"}
QUERY_KEYS |= {"params", "on_success_message", "allow"}


def fetch(files: list[Path], path: str) -> Any:
    """GET ``path`` from a fresh in-process Datasette built like `explore` builds it."""

    async def go() -> Any:
        response = await build_datasette(files).client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        return response.json() if ".json" in path else response.text

    return asyncio.run(go())


def query(db: Path, name: str, **params: str) -> list[dict[str, Any]]:
    args = "&".join(f"{key}={value}" for key, value in params.items())
    rows: list[dict[str, Any]] = fetch([db], f"/{DB}/{name}.json?_shape=objects&{args}")["rows"]
    return rows


def sql(db: Path, text: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(text, params).fetchall()


def test_packaged_metadata_is_the_top_level_file() -> None:
    top_level = json.loads((ROOT / "datasette_metadata.json").read_text("utf-8"))
    assert load_metadata() == top_level
    assert (ROOT / "datasette_metadata.json").read_bytes() == (
        ROOT / "auditor" / "explore" / "metadata.json"
    ).read_bytes()
    assert "databases" not in top_level  # applies to every database through the plugin


def test_metadata_uses_only_datasette_065_keys() -> None:
    assert set(load_metadata()) <= TOP_KEYS
    for database in [database_metadata()]:
        assert set(database) <= DATABASE_KEYS
        for table in database["tables"].values():
            assert set(table) <= TABLE_KEYS
        for canned in database["queries"].values():
            assert set(canned) <= QUERY_KEYS
            assert canned["title"] and canned["description"]
            assert not canned.get("write")


def test_database_names_follow_datasette() -> None:
    files = [Path("shop-2026.db"), Path("a/traffic.db"), Path("b/traffic.db")]
    assert database_names(files) == ["shop-2026", "traffic", "traffic_2"]


def test_several_databases_each_get_titles_and_queries(
    audited_db: Path, recorded_db: Path, tmp_path: Path
) -> None:
    second = tmp_path / "traffic.db"
    second.write_bytes(recorded_db.read_bytes())
    data = fetch([audited_db, second], "/-/metadata.json")
    assert set(data["databases"]) == {DB, "traffic"}
    page = fetch([audited_db, second], "/traffic/requests")
    assert "One row per HTTP request" in page
    for name in (DB, "traffic"):
        assert f'href="/{name}/findings_by_severity"' in fetch([audited_db, second], f"/{name}")


def test_every_canned_query_runs(audited_db: Path) -> None:
    queries = database_metadata()["queries"]
    for name in queries:
        data = fetch([audited_db], f"/{DB}/{name}.json?rule=&route=&bucket=&client_key=")
        assert data["ok"], name


def test_findings_by_severity_puts_errors_first(audited_db: Path) -> None:
    rows = query(audited_db, "findings_by_severity", rule="")
    ranks = {"error": 0, "warning": 1, "info": 2}
    keys = [(ranks[r["severity"]], -r["hits"]) for r in rows]
    assert len(rows) == sql(audited_db, "select count(*) from findings")[0][0] > 0
    assert keys == sorted(keys)
    only = query(audited_db, "findings_by_severity", rule="post-redirect-get-302")
    assert {r["rule"] for r in only} == {"post-redirect-get-302"}
    assert {r["source"] for r in only} == {"/login"}
    (login,) = only
    clients = {c["client"]: c for c in json.loads(login["evidence"])["clients"]}
    assert clients["curl"]["outcomes"] == [
        {"method": "GET", "body": "dropped", "status": 200, "count": 1}
    ]


def test_findings_by_client_spreads_the_evidence(audited_db: Path) -> None:
    rows = query(audited_db, "findings_by_client", rule="post-redirect-get-302")
    assert {(r["source"], r["client"]): r["requests"] for r in rows} == {
        ("/login", BROWSER_UA.partition("/")[0]): 2,  # the product, no version
        ("/login", "curl"): 1,
    }
    assert all(r["followed"] == r["requests"] and r["not_followed"] == 0 for r in rows)
    assert query(audited_db, "findings_by_client", rule="no-such-problem") == []


# --- Clients' follow-ups: changes only where the status did not ask for them ----------


async def contact(request: Request) -> Response:
    await request.body()
    return RedirectResponse("/thanks", status_code=303)


async def old_form(request: Request) -> Response:
    return RedirectResponse("/form", status_code=307)


async def old_profile(request: Request) -> Response:
    return RedirectResponse("/v2/profile", status_code=301)


async def echo(request: Request) -> Response:
    return PlainTextResponse(f"{request.method} {len(await request.body())} bytes")


FOLLOW_UPS_APP = Starlette(
    routes=[
        Route("/contact", contact, methods=["POST"]),
        Route("/thanks", echo),
        Route("/old-form", old_form, methods=["POST"]),
        Route("/form", echo, methods=["POST"]),
        Route("/profile", old_profile, methods=["PUT"]),
        Route("/v2/profile", echo, methods=["PUT"]),
    ]
)


@pytest.fixture(scope="module")
def follow_ups_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """httpx following as it does, and two clients' quirks sent by hand: curl -L -X POST
    (keeps POST on a 303, without the body) and requests (drops a PUT's body on 301)."""
    path = tmp_path_factory.mktemp("follow-ups") / f"{DB}.db"
    recorder = RedirectRecorder(FOLLOW_UPS_APP, path)
    try:
        with serve_in_thread(recorder) as base, httpx.Client(base_url=base) as client:
            form = {"message": "hello"}
            client.post("/contact", data=form, follow_redirects=True)  # 303: GET, as asked
            client.post("/old-form", data=form, follow_redirects=True)  # 307: re-posted
            client.put("/profile", json={"name": "ada"}, follow_redirects=True)  # 301: PUT kept
            sent = client.post("/contact", data=form, headers={"user-agent": CURL_UA})
            client.post(sent.headers["location"], headers={"user-agent": CURL_UA})
            sent = client.put("/profile", json={"name": "bob"}, headers={"user-agent": "req"})
            client.put(sent.headers["location"], headers={"user-agent": "req"})
    finally:
        recorder.writer.close()
    audit(path)
    return path


def test_follow_ups_per_redirect_flags_only_unasked_changes(
    follow_ups_db: Path, audited_db: Path
) -> None:
    rows = query(follow_ups_db, "follow_ups_per_redirect", route="")
    seen = {
        (r["route_or_path"], r["status"], r["follow_up_method"], r["body"]): r["unasked_change"]
        for r in rows
    }
    assert seen == {
        ("/contact", 303, "GET", "dropped"): "",  # post/redirect/get done right
        ("/contact", 303, "POST", "dropped"): "sent POST, not GET; body dropped",
        ("/old-form", 307, "POST", "kept"): "",
        ("/profile", 301, "PUT", "kept"): "",
        ("/profile", 301, "PUT", "dropped"): "body dropped",
    }
    assert rows[0]["unasked_change"]  # unasked changes first
    assert query(follow_ups_db, "follow_ups_per_redirect", route="/old-form")[0]["follow_ups"] == 1

    (login,) = [
        r
        for r in query(audited_db, "follow_ups_per_redirect", route="/login")
        if r["follow_up_method"] == "GET"
    ]
    assert login | {"user_agents": None, "example_request_id": None} == {
        "route_or_path": "/login",
        "method": "POST",
        "status": 302,
        "expected_method": "POST",
        "follow_up_method": "GET",
        "body": "dropped",
        "unasked_change": "sent GET, not POST; body dropped",
        "follow_up_statuses": "200",
        "follow_ups": 3,
        "ambiguous_links": 0,
        "clients": 1,  # one loopback address: the client key is a hash of it
        "user_agents": None,
        "example_request_id": None,
    }
    assert set(login["user_agents"].split(",")) == {BROWSER_UA, CURL_UA}


def test_longest_chains_lists_the_two_hop_chain(audited_db: Path) -> None:
    rows = query(audited_db, "longest_chains")
    assert [r["length"] for r in rows] == sorted((r["length"] for r in rows), reverse=True)
    two_hops = [r for r in rows if r["path_text"].startswith("GET /a ")]
    assert len(two_hops) == 1
    assert two_hops[0]["length"] == 2
    assert two_hops[0]["path_text"] == "GET /a —302→ GET /b —307→ GET /c —200"
    assert two_hops[0]["final_status"] == 200


def test_redirect_loops_groups_the_loop(audited_db: Path) -> None:
    rows = query(audited_db, "redirect_loops")
    assert len(rows) == 1
    assert rows[0]["path_text"].startswith("GET /loop/1 —302→ GET /loop/2 —302→")
    assert rows[0]["times_seen"] == 1
    assert rows[0]["example_chain_id"]


def test_temporary_vs_permanent_shows_the_evidence(audited_db: Path) -> None:
    rows = {r["route_or_path"]: r for r in query(audited_db, "temporary_vs_permanent")}
    assert rows["/a"]["statuses"] == "302"
    assert rows["/a"]["looks_like"] == "temporary redirect with one target"
    assert rows["/old"]["statuses"] == "301"
    assert rows["/old"]["hits"] == 3
    assert rows["/old"]["targets"] == 1
    assert rows["/old"]["looks_like"] == ""


def test_security_query_has_open_redirect_and_downgrade(audited_db: Path) -> None:
    rows = query(audited_db, "security_redirects")
    by_rule = {r["rule"]: r for r in rows}
    assert by_rule["open-redirect"]["source"] == "/go"
    assert by_rule["open-redirect"]["example_location"] == "https://evil.example/phish"
    assert by_rule["open-redirect"]["parameter"] == "next"
    assert json.loads(by_rule["open-redirect"]["example_targets"]) == ["https://evil.example/phish"]
    assert by_rule["scheme-downgrade"]["source"] == "/secure"
    assert by_rule["scheme-downgrade"]["example_location"].startswith("http://127.0.0.1:")


def test_redirects_over_time_counts_every_redirect(audited_db: Path) -> None:
    total, permanent = sql(
        audited_db,
        "select count(*), sum(status in (301, 308)) from requests where status between 300 and 399",
    )[0]
    for bucket in ("hour", "day", ""):
        rows = query(audited_db, "redirects_over_time", bucket=bucket)
        assert sum(r["redirects"] for r in rows) == total
        assert sum(r["s301"] + r["s308"] for r in rows) == permanent == 4
    (day,) = query(audited_db, "redirects_over_time", bucket="day")
    assert len(day["period"]) == len("2026-01-01")


def test_top_redirect_sources_ranks_the_loop_first(audited_db: Path) -> None:
    rows = query(audited_db, "top_redirect_sources")
    total = sql(audited_db, "select count(*) from requests")[0][0]
    assert rows[0]["route_or_path"] == "/loop/{n:int}"
    assert rows[0]["redirects"] == 6
    assert rows[0]["percent_of_traffic"] == round(100 * 6 / total, 2)
    assert {"/login", "/old", "/go", "/secure", "/xss"} <= {r["route_or_path"] for r in rows}


def test_client_timeline_shows_a_post_and_its_follow_up(audited_db: Path) -> None:
    ((post_id, client_key),) = sql(
        audited_db,
        "select id, client_key from requests where method = 'POST' and user_agent = ? "
        "order by id limit 1",
        CURL_UA,
    )
    rows = query(audited_db, "client_timeline", client_key=client_key)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    follow_up = next(r for r in rows if r["follow_up_of"] == post_id)
    assert (follow_up["method"], follow_up["status"]) == ("GET", 200)
    assert follow_up["url"].endswith("/home")
    assert query(audited_db, "client_timeline", client_key="nobody") == []


def test_findings_link_to_example_request_and_chain(audited_db: Path) -> None:
    ((request_id, chain_id),) = sql(
        audited_db,
        "select example_request_id, example_chain_id from findings "
        "where rule = 'post-redirect-get-302'",
    )
    page = fetch([audited_db], f"/{DB}/findings?rule=post-redirect-get-302")
    assert f'href="/{DB}/requests/{request_id}"' in page
    assert f'href="/{DB}/chains/{chain_id}"' in page
    assert "col-evidence" in page and "Per client family" in page  # the column's description
    chain = fetch([audited_db], f"/{DB}/chains/{chain_id}")
    assert f'href="/{DB}/requests/{request_id}"' in chain


def test_findings_table_has_facets_and_default_sort(audited_db: Path) -> None:
    data = fetch([audited_db], f"/{DB}/findings.json?_shape=objects")
    keys = [(r["severity_rank"], -r["hits"]) for r in data["rows"]]
    assert keys == sorted(keys)  # the audit numbers findings worst first; id order shows that
    assert {"rule", "severity"} == set(data["facet_results"])


def test_internal_tables_are_hidden(audited_db: Path) -> None:
    data = fetch([audited_db], f"/{DB}.json")
    hidden = {t["name"] for t in data["tables"] if t["hidden"]}
    assert "auditor_meta" in hidden
    assert "findings" not in hidden


def test_durations_have_units(audited_db: Path) -> None:
    page = fetch([audited_db], f"/{DB}/requests?_size=1")
    assert '<td class="col-duration_ms type-Quantity">' in page
    assert "duration_ms" in fetch([audited_db], f"/{DB}/requests.json")["units"]


def test_error_pages_print_no_traceback_of_locals(
    audited_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Datasette 0.65 prints every error with rich when rich is installed (it is, with
    # us): a traceback with every local variable (SQL, parameters, rows) on the console
    # for a mistyped URL, or a failed page where rich finds no exception to print.
    async def statuses() -> list[tuple[int, str]]:
        client = build_datasette([audited_db]).client
        missing_table = await client.get("/shop-2026/no_such_table")
        missing_finding = await client.get("/-/redirect-report/shop-2026/999999")
        return [
            (missing_table.status_code, missing_table.text),
            (missing_finding.status_code, missing_finding.text),
        ]

    for status, page in asyncio.run(statuses()):
        assert status == 404
        assert "Error 404" in page
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
