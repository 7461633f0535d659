"""redirects.py answers "what does each client send next" as client-behaviour.md measured."""

from __future__ import annotations

import pytest

from auditor.redirects import (
    MEASURED_CLIENTS,
    NOT_FOLLOWED,
    NextHop,
    client_family,
    follow_up_method,
    is_redirect,
    next_hop,
)

# (client, method, status) -> what client-behaviour.md measured.
MEASURED = {
    ("Chromium", "POST", 301): NextHop("GET", False),
    ("Chromium", "PUT", 301): NextHop("PUT", True),
    ("Chromium", "PUT", 302): NextHop("PUT", True),
    ("Chromium", "DELETE", 303): NextHop("GET", False),
    ("Chromium", "POST", 307): NextHop("POST", True),
    ("httpx", "PUT", 301): NextHop("PUT", True),
    ("httpx", "PUT", 302): NextHop("GET", False),
    ("requests", "PUT", 301): NextHop("PUT", False),
    ("requests", "PATCH", 302): NextHop("GET", False),
    ("requests", "POST", 308): NextHop("POST", True),
    ("curl", "POST", 302): NextHop("GET", False),
    ("curl", "PUT", 303): NextHop("PUT", False),
    ("urllib", "POST", 301): NextHop("GET", False),
    ("urllib", "PUT", 301): NOT_FOLLOWED,
    ("urllib", "POST", 307): NOT_FOLLOWED,
    ("urllib", "HEAD", 308): NextHop("GET", False),
    ("urllib", "DELETE", 303): NOT_FOLLOWED,
    ("aiohttp", "HEAD", 303): NextHop("HEAD", False),
}


@pytest.mark.parametrize(("client", "method", "status"), list(MEASURED))
def test_next_hop_is_what_the_client_was_measured_to_send(
    client: str, method: str, status: int
) -> None:
    assert next_hop(client, method, status) == MEASURED[(client, method, status)]


@pytest.mark.parametrize("client", MEASURED_CLIENTS)
def test_get_stays_get_and_nothing_follows_a_300_or_304(client: str) -> None:
    for status in (301, 302, 303, 307, 308):
        assert next_hop(client, "GET", status) == NextHop("GET", False)
    assert next_hop(client, "GET", 304) == NOT_FOLLOWED
    assert next_hop(client, "POST", 300) == NOT_FOLLOWED


def test_most_clients_follow_a_post_on_301_302_303_with_get() -> None:
    assert [follow_up_method("POST", s) for s in (301, 302, 303, 307, 308)] == [
        "GET",
        "GET",
        "GET",
        "POST",
        "POST",
    ]
    assert follow_up_method("HEAD", 303) == "HEAD"


def test_304_is_not_a_redirect() -> None:
    assert is_redirect(301) and is_redirect(300) and not is_redirect(304)
    assert not is_redirect(200) and not is_redirect(None)


@pytest.mark.parametrize(
    ("user_agent", "family"),
    [
        ("python-httpx/0.28.1", "httpx"),
        ("python-requests/2.34.2", "requests"),
        ("Python-urllib/3.11", "urllib"),
        ("curl/8.5.0", "curl"),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/156.0.0.0", "Chromium"),
        (None, "no User-Agent"),
    ],
)
def test_client_family_drops_the_version(user_agent: str | None, family: str) -> None:
    assert client_family(user_agent) == family
