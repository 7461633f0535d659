"""The framework apps' traffic really is recorded: every request the real clients sent
is a row with the status and Location the framework itself answered.

These check the harness behind tests/test_verdicts_*.py (and each framework's redirect
defaults the verdicts depend on), not the analysis.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.frameworks.harness import (
    ARTICLE_IDS,
    ATTACKER_TARGETS,
    USER_IDS,
    Traffic,
    recorded,
)


def seen(traffic: Traffic) -> Counter[tuple[str, str, int]]:
    """(method, path, status) of every recorded request, the servers' readiness probes
    (GET /) left out."""
    return Counter(
        (row["method"], row["path"], row["status"]) for row in traffic.rows() if row["path"] != "/"
    )


def rows_at(traffic: Traffic, method: str, path: str) -> list[dict[str, Any]]:
    return [r for r in traffic.rows() if r["method"] == method and r["path"] == path]


def test_fastapi_traffic_is_recorded(tmp_path_factory: pytest.TempPathFactory) -> None:
    traffic = recorded("fastapi", tmp_path_factory)
    expected: Counter[tuple[str, str, int]] = Counter()
    for path, target, status, method, target_status in (
        ("/feedback", "/welcome", 307, "POST", 200),
        ("/login", "/home", 307, "POST", 200),
        ("/subscribe", "/subscribed", 307, "POST", 405),
        ("/contact", "/contact-sent", 303, "GET", 200),
        ("/api/notes", "/api/notes/", 307, "POST", 200),
    ):
        expected[("POST", path, status)] += 2
        expected[(method, target, target_status)] += 2
    expected[("GET", "/catalog", 307)] += 3  # redirect_slashes, for httpx, requests, curl
    expected[("GET", "/catalog/", 200)] += 3
    for item_id in range(1, 7):
        expected[("PUT", f"/v1/items/{item_id}", 301)] += 1
        # requests re-sends the PUT without its body (422); httpx keeps it
        expected[("PUT", f"/v2/items/{item_id}", 422 if item_id <= 3 else 200)] += 1
        expected[("PUT", f"/v1/orders/{item_id}", 308)] += 1
        expected[("PUT", f"/v2/orders/{item_id}", 200)] += 1
    assert seen(traffic) == expected

    # FastAPI's own route templates are recorded for the app's routes...
    assert {r["route"] for r in rows_at(traffic, "PUT", "/v1/items/1")} == {"/v1/items/{item_id}"}
    # ...and none for redirect_slashes, which answers before any route matched.
    assert {r["route"] for r in rows_at(traffic, "GET", "/catalog")} == {None}
    base = {r["location_url"].split("/catalog/")[0] for r in rows_at(traffic, "GET", "/catalog")}
    assert len(base) == 1 and next(iter(base)).startswith("http://127.0.0.1:")
    assert {r["location"] for r in rows_at(traffic, "POST", "/feedback")} == {"/welcome"}
    # The bodies that arrived at v2: none after requests' 301 follow-up, all after httpx's.
    for item_id in range(1, 7):
        [row] = rows_at(traffic, "PUT", f"/v2/items/{item_id}")
        assert bool(row["request_body_size"]) == (item_id > 3), row


def test_django_traffic_is_recorded_under_the_run_cli(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    traffic = recorded("django", tmp_path_factory)
    expected: Counter[tuple[str, str, int]] = Counter(
        {
            ("GET", "/contact/", 200): 1,  # Chromium loads the form...
            ("POST", "/contact/", 302): 3,  # ...and submits it; requests and httpx too
            ("GET", "/contact/thanks/", 200): 3,
            ("POST", "/newsletter/", 303): 2,
            ("GET", "/newsletter/done/", 200): 2,
            ("POST", "/comments/", 201): 1,
            ("POST", "/comments", 301): 2,  # APPEND_SLASH on POST with DEBUG=False
            ("GET", "/comments/", 200): 2,
        }
    )
    for pk in ARTICLE_IDS:
        expected[("GET", f"/articles/{pk}", 301)] += 1  # APPEND_SLASH
        expected[("GET", f"/articles/{pk}/", 200)] += 1
    assert seen(traffic) == expected

    browser_posts = [
        r for r in rows_at(traffic, "POST", "/contact/") if "Chrome" in (r["user_agent"] or "")
    ]
    assert len(browser_posts) == 1
    assert browser_posts[0]["request_content_type"] == "application/x-www-form-urlencoded"
    assert {r["location"] for r in rows_at(traffic, "POST", "/contact/")} == {"/contact/thanks/"}
    assert {r["location"] for r in rows_at(traffic, "GET", "/articles/42")} == {"/articles/42/"}
    assert {r["location"] for r in rows_at(traffic, "POST", "/comments")} == {"/comments/"}


def test_litestar_traffic_is_recorded(tmp_path_factory: pytest.TempPathFactory) -> None:
    traffic = recorded("litestar", tmp_path_factory)
    expected: Counter[tuple[str, str, int]] = Counter(
        {("POST", "/feedback", 302): 2, ("GET", "/feedback/thanks", 200): 2}
    )
    for user_id in USER_IDS:
        expected[("GET", f"/users/{user_id}/profile-old", 302)] += 1
        expected[("GET", f"/users/{user_id}/profile", 200)] += 1
    # Litestar routes a trailing-slash path to the same handler: no redirect at all.
    # (Litestar also rewrites scope["path"] without the slash: which path the row holds
    # is test_verdicts_litestar's business.)
    slashed = f"/users/{USER_IDS[0]}/profile"
    found = seen(traffic)
    assert found[("GET", slashed, 200)] + found[("GET", slashed + "/", 200)] == 2
    del found[("GET", slashed, 200)], found[("GET", slashed + "/", 200)]
    del expected[("GET", slashed, 200)]
    assert found == expected
    assert {r["location"] for r in rows_at(traffic, "POST", "/feedback")} == {"/feedback/thanks"}
    # Litestar told its handlers the route template (the audit's place for these).
    assert len(traffic.notes["path_templates"]) == 2


def test_quart_traffic_is_recorded(tmp_path_factory: pytest.TempPathFactory) -> None:
    traffic = recorded("quart", tmp_path_factory)
    assert seen(traffic) == Counter(
        {
            ("POST", "/subscribe", 302): 2,
            ("GET", "/subscribed", 200): 2,
            ("GET", "/go", 302): 4,  # the open redirect, never followed
            ("GET", "/library", 308): 1,  # Werkzeug's strict_slashes
            ("GET", "/library/", 200): 1,
        }
    )
    assert {r["location"] for r in rows_at(traffic, "POST", "/subscribe")} == {"/subscribed"}
    assert {r["location"] for r in rows_at(traffic, "GET", "/go")} == set(ATTACKER_TARGETS)
    assert all("next=" in (r["query"] or "") for r in rows_at(traffic, "GET", "/go"))
