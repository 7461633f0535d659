"""The permanence rules on real traffic: a Starlette app behind the RedirectRecorder,
served by uvicorn on 127.0.0.1, driven by httpx and curl. One database per module.

The time-span rule cannot wait a week: after recording, the test moves the
``started_at`` of the first recorded request of two sources ten days back with an
UPDATE on the test database (see ``shift_first_request``).
"""

from __future__ import annotations

import sqlite3
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor.analysis.rules.base import Finding
from auditor.analysis.rules.permanence import (
    deprecated_status,
    freshness_lifetime,
    legacy_302,
    permanent_target_changed,
    permanent_without_cache_control,
    temporary_looks_permanent,
    temporary_with_long_cache,
)
from auditor.store.journal import unpack_file
from tests.rule_apps import by_source, curl, raw, recording, run_rule

DAY = 86400
YEAR_AHEAD = formatdate(time.time() + 365 * DAY, usegmt=True)
STATE: dict[str, Any] = {"moving": "/landing/v1", "rotation": 0}


async def landing(request: Request) -> Response:
    return PlainTextResponse("landed")


async def moving(request: Request) -> Response:
    return RedirectResponse(STATE["moving"], status_code=301)


async def rotating(request: Request) -> Response:
    STATE["rotation"] += 1
    return RedirectResponse(f"/landing/deal-{STATE['rotation']}", status_code=302)


async def item(request: Request) -> Response:
    return RedirectResponse(f"/things/{request.path_params['id']}", status_code=301)


def redirect(status: int, location: str, **headers: str) -> Any:
    return raw(status, [("location", location), *headers.items()])


APP = Starlette(
    routes=[
        Route("/landing/{name:path}", landing),
        Route("/things/{id}", landing),
        # temporary-looks-permanent
        Route("/promo", redirect(302, "/landing/sale")),
        Route("/rotating", rotating),
        Route("/recent", redirect(307, "/landing/new")),
        # permanent-target-changed
        Route("/moving", moving),
        Route("/items/{id}", item),
        # permanent-without-cache-control
        Route("/moved", redirect(301, "/landing/moved")),
        Route("/api/v1", redirect(308, "/landing/v2", **{"cache-control": "max-age=3600"})),
        Route("/old-expires", redirect(301, "/landing/e", expires=YEAR_AHEAD)),
        Route("/no-store", redirect(301, "/landing/ns", **{"cache-control": "no-store"})),
        # temporary-with-long-cache
        Route("/temp-long", redirect(307, "/landing/t", **{"cache-control": "max-age=31536000"})),
        Route("/temp-expires", redirect(303, "/landing/x", expires=YEAR_AHEAD)),
        Route("/temp-302-expires", redirect(302, "/landing/x", expires=YEAR_AHEAD)),
        Route("/temp-short", redirect(307, "/landing/t", **{"cache-control": "max-age=60"})),
        # legacy-302
        Route("/legacy-form", redirect(302, "/landing/thanks"), methods=["POST"]),
        Route("/see-other", redirect(303, "/landing/thanks"), methods=["POST"]),
        # deprecated-status
        Route("/use-proxy", redirect(305, "/landing/proxy")),
        Route("/unused", redirect(306, "/landing/unused")),
        Route("/temporary", redirect(307, "/landing/temp")),
    ]
)


def shift_first_request(db: Path, path: str, days: float) -> None:
    """Pretend the first request to ``path`` happened ``days`` earlier."""
    unpack_file(db)  # the recorder's batches into requests, where the update looks
    with sqlite3.connect(db) as conn:
        conn.execute(
            "update requests set started_at = started_at - ? "
            "where id = (select min(id) from requests where path = ?)",
            (days * DAY, path),
        )
    conn.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("permanence") / "traffic.db"
    with (
        recording(APP, path) as base,
        httpx.Client(base_url=base, timeout=10, follow_redirects=True) as web,
    ):
        for _ in range(5):
            web.get("/promo")
            web.get("/rotating")
            web.get("/recent")
        for _ in range(3):
            web.get("/moving")
        STATE["moving"] = "/landing/v2"  # the "permanent" target changes
        for _ in range(2):
            web.get("/moving")
        for item_id in (1, 2, 3, 1):
            web.get(f"/items/{item_id}")
        for path_ in ("/moved", "/api/v1", "/old-expires", "/no-store"):
            web.get(path_)
        for path_ in ("/temp-long", "/temp-302-expires", "/temp-short", "/temp-expires"):
            web.get(path_)
        web.post("/legacy-form", data={"name": "x"})
        web.post("/see-other", data={"name": "x"})
        for path_ in ("/use-proxy", "/unused", "/temporary"):
            response = web.get(path_)
            if path_ != "/temporary":  # httpx does not follow 305/306
                assert response.status_code in (305, 306) and not response.history
        # curl -L follows a 306's Location like a 302 (what the message says)
        assert curl("-L", "-w", "%{num_redirects}", f"{base}/unused").stdout == "1"
    shift_first_request(path, "/promo", days=10)
    shift_first_request(path, "/rotating", days=10)
    return path


def only(findings: list[Finding], source: str) -> Finding:
    found = by_source(findings).get(source, [])
    assert len(found) == 1, f"{source}: {found}"
    return found[0]


def test_302_to_one_target_for_ten_days_is_temporary_looks_permanent(db: Path) -> None:
    findings = run_rule(db, temporary_looks_permanent, temporary_min_hits=5)
    finding = only(findings, "/promo")
    assert finding.severity == "info" and finding.hits == 5
    assert finding.target and finding.target.endswith("/landing/sale")
    assert "10 days" in finding.message
    assert "301" in finding.recommendation and "RedirectResponse" in finding.recommendation


def test_302_whose_target_changes_or_that_is_recent_is_not_temporary_looks_permanent(
    db: Path,
) -> None:
    sources = by_source(run_rule(db, temporary_looks_permanent, temporary_min_hits=5))
    assert {"/rotating", "/recent"}.isdisjoint(sources)


def test_too_few_hits_is_not_temporary_looks_permanent(db: Path) -> None:
    assert run_rule(db, temporary_looks_permanent, temporary_min_hits=6) == []


def test_301_that_moved_to_another_target_is_permanent_target_changed(db: Path) -> None:
    finding = only(run_rule(db, permanent_target_changed), "/moving")
    assert finding.severity == "warning" and finding.hits == 5
    assert finding.target and finding.target.endswith("/landing/v2")  # the newest target
    assert "/landing/v1 (3 hits" in finding.message and "/landing/v2 (2 hits" in finding.message


def test_route_template_redirecting_each_id_to_its_own_target_is_not_a_change(db: Path) -> None:
    assert "/items/{id}" not in by_source(run_rule(db, permanent_target_changed))


def test_301_without_max_age_or_expires_is_permanent_without_cache_control(db: Path) -> None:
    sources = by_source(run_rule(db, permanent_without_cache_control))
    finding = sources["/moved"][0]
    assert finding.severity == "info" and finding.status == 301
    assert "Cache-Control" in finding.recommendation
    # 308 with max-age, 301 with Expires or no-store say how long: not flagged
    assert {"/api/v1", "/old-expires", "/no-store"}.isdisjoint(sources)
    # every /items/{id} 301 lacks freshness too: one finding for the place
    [items] = sources["/items/{id}"]
    assert items.hits >= 3 and items.target.endswith("/things/{id}")  # one target shape


def test_307_cached_for_a_year_is_temporary_with_long_cache(db: Path) -> None:
    sources = by_source(run_rule(db, temporary_with_long_cache))
    assert set(sources) == {"/temp-long", "/temp-302-expires"}
    assert "365 days" in sources["/temp-long"][0].message
    assert sources["/temp-302-expires"][0].severity == "warning"
    assert "Expires" in sources["/temp-302-expires"][0].message


def test_long_cache_threshold_is_an_option(db: Path) -> None:
    sources = by_source(run_rule(db, temporary_with_long_cache, long_cache_seconds=30))
    assert "/temp-short" in sources


def test_get_answered_302_is_legacy_302_and_a_post_or_303_is_not(db: Path) -> None:
    sources = by_source(run_rule(db, legacy_302))
    # a POST answered 302 is the method family's (post/redirect/get), not legacy-302's
    assert "/legacy-form" not in sources and "/see-other" not in sources


def test_305_and_306_are_deprecated_status_and_307_is_not(db: Path) -> None:
    sources = by_source(run_rule(db, deprecated_status))
    assert set(sources) == {"/use-proxy", "/unused"}
    assert sources["/use-proxy"][0].severity == "error"
    assert "305 Use Proxy is deprecated" in sources["/use-proxy"][0].message


def test_freshness_lifetime_follows_rfc_9111_precedence() -> None:
    now = time.time()
    assert freshness_lifetime("public, max-age=60", YEAR_AHEAD, now) == 60
    assert freshness_lifetime("s-maxage=600, max-age=60", None, now) == 600
    assert freshness_lifetime("no-store, max-age=600", None, now) == 0
    assert freshness_lifetime(None, "0", now) == 0  # invalid Expires: already stale
    assert 364 * DAY < freshness_lifetime(None, YEAR_AHEAD, now) <= 365 * DAY
