"""The location rules on real traffic: a Starlette app behind the RedirectRecorder,
served by uvicorn on 127.0.0.1, driven by httpx and curl. One database per module."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from auditor.analysis.rules.base import Finding
from auditor.analysis.rules.location import (
    internal_host_leak,
    invalid_location,
    location_on_non_redirect,
    missing_location,
    open_redirect,
    scheme_downgrade,
)
from tests.rule_apps import by_source, curl, raw, recording, run_rule


async def landing(request: Request) -> Response:
    return PlainTextResponse("landed")


async def absolute_to_landing(request: Request) -> Response:
    # Builds an absolute URL from what the server saw (scheme and Host header),
    # as request.url_for() does: the root of scheme downgrades and host leaks.
    return RedirectResponse(str(request.url_for("landing")), status_code=302)


async def login(request: Request) -> Response:
    # The classic open redirect: ?next= used unchecked.
    return RedirectResponse(request.query_params.get("next", "/"), status_code=303)


async def out(request: Request) -> Response:
    return RedirectResponse("https://" + request.path_params["target"], status_code=302)


APP = Starlette(
    routes=[
        Route("/landing", landing, name="landing"),
        # missing-location
        Route("/noloc", raw(302)),
        Route("/withloc", raw(302, [("location", "/landing")])),
        Route("/notmod", raw(304)),
        # invalid-location
        Route("/bad/js", raw(302, [("location", "javascript:alert(1)")])),
        Route("/bad/space", raw(302, [("location", "/landing/a b")])),
        Route("/bad/userinfo", raw(302, [("location", "http://user@www.example.org/x")])),
        Route("/bad/twice", raw(302, [("location", "/landing"), ("location", "/other")])),
        Route("/bad/port", raw(302, [("location", "http://127.0.0.1:99999/")])),
        Route("/bad/control", raw(302, [("location", "/landing\x01")])),
        Route("/bad/backslash", raw(302, [("location", "/\\evil.example/x")])),
        Route("/good/relative", raw(302, [("location", "/landing?x=1")])),
        Route("/good/absolute", raw(307, [("location", "https://www.example.org/x")])),
        Route("/good/scheme-relative", raw(301, [("location", "//cdn.example.org/x")])),
        # location-on-non-redirect
        Route("/created", raw(201, [("location", "/items/1")]), methods=["POST"]),
        Route("/accepted", raw(202, [("location", "/jobs/1")]), methods=["POST"]),
        Route("/ok-with-location", raw(200, [("location", "/landing")], b"ok")),
        Route("/gone-with-location", raw(404, [("location", "/landing")])),
        # scheme-downgrade and internal-host-leak
        Route("/secure/login", absolute_to_landing),
        Route("/secure/relative", raw(302, [("location", "/landing")])),
        Route("/secure/hardcoded", raw(301, [("location", "http://www.example.org/")])),
        Route("/leak/private", raw(302, [("location", "http://10.1.2.3:8000/landing")])),
        Route("/leak/public", raw(302, [("location", "https://www.example.org/")])),
        # open-redirect
        Route("/login", login),
        Route("/out/{target:path}", out),
        Route("/sso", raw(302, [("location", "https://login.example.net/start?return=/x")])),
    ]
)

XFP_HTTPS = {"X-Forwarded-Proto": "https"}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("location") / "traffic.db"
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 by default; turn that off to be
    # the app behind a TLS proxy whose headers are not trusted.
    with (
        recording(APP, path, proxy_headers=False) as base,
        httpx.Client(base_url=base, timeout=10) as web,
    ):
        for _ in range(2):
            web.get("/noloc", follow_redirects=True)
        web.get("/withloc")
        web.get("/notmod")
        # httpx raises on some of these Locations even without following (it builds the
        # next request), so curl, which does not look at them, asks for the bad ones.
        for path_ in ("/bad/js", "/bad/space", "/bad/userinfo", "/bad/twice", "/bad/port"):
            assert curl("-w", "%{http_code}", f"{base}{path_}").stdout == "302"
        # uvicorn (httptools) refuses the header: curl gets no response (exit 52), but the
        # recorder saw the 302 the app sent.
        assert curl(f"{base}/bad/control").returncode == 52
        assert curl("-w", "%{http_code}", f"{base}/bad/backslash").stdout == "302"
        for path_ in ("/good/relative", "/good/absolute", "/good/scheme-relative"):
            web.get(path_)
        web.post("/created")
        web.post("/accepted")
        web.get("/ok-with-location")
        web.get("/gone-with-location")
        # an https client behind an (untrusted) TLS proxy
        for _ in range(3):
            web.get("/secure/login", headers=XFP_HTTPS)
        curl("-H", "Forwarded: for=192.0.2.1;proto=https", f"{base}/secure/login")
        web.get("/secure/relative", headers=XFP_HTTPS)
        web.get("/secure/login")  # a plain http client: http:// is no downgrade
        web.get("/secure/login", headers={"X-Forwarded-Host": "www.example.com"})
        web.get("/leak/private")
        web.get("/leak/public")
        for next_ in ("https://evil.example/phish", "//evil.example/x", "/account"):
            web.get("/login", params={"next": next_})
        web.get("/login", params={"next": f"{base}/account"})  # absolute, but this site
        web.get("/out/evil.example/x")
        web.get("/sso", params={"lang": "en"})
    # The same app with uvicorn trusting the proxy (the recommended fix).
    with (
        recording(APP, path, proxy_headers=True, forwarded_allow_ips="127.0.0.1") as base,
        httpx.Client(base_url=base, timeout=10) as web,
    ):
        web.get("/secure/login", headers=XFP_HTTPS)
        web.get("/secure/hardcoded", headers=XFP_HTTPS)
    return path


def only(findings: list[Finding], source: str) -> Finding:
    found = by_source(findings).get(source, [])
    assert len(found) == 1, f"{source}: {found}"
    return found[0]


def test_302_without_location_is_missing_location_and_curl_stops_there(db: Path) -> None:
    findings = run_rule(db, missing_location)
    finding = only(findings, "/noloc")
    assert (finding.rule, finding.severity, finding.status, finding.hits) == (
        "missing-location",
        "error",
        302,
        2,
    )
    assert "httpx" in finding.message and "RedirectResponse" in finding.recommendation
    assert {"/withloc", "/notmod"}.isdisjoint(by_source(findings))


def test_curl_follow_stops_at_a_302_without_location(db: Path) -> None:
    # The client fact the missing-location message states, measured.
    with recording(APP, db.with_name("curl.db")) as base:
        result = curl("-L", "-w", "%{http_code} %{num_redirects}", f"{base}/noloc")
    assert result.stdout == "302 0"


@pytest.mark.parametrize(
    ("source", "problem", "severity"),
    [
        ("/bad/js", "non-HTTP scheme javascript:", "error"),
        ("/bad/space", "contains a space", "warning"),
        ("/bad/userinfo", "userinfo", "error"),
        ("/bad/twice", "was sent 2 times ('/landing', '/other')", "error"),
        ("/bad/port", "cannot be parsed", "error"),
        ("/bad/control", "control character", "error"),
        ("/bad/backslash", "backslash", "error"),
    ],
)
def test_bad_location_is_invalid_location(
    db: Path, source: str, problem: str, severity: str
) -> None:
    finding = only(run_rule(db, invalid_location), source)
    assert finding.rule == "invalid-location"
    assert problem in finding.message
    assert finding.severity == severity


def test_encoded_paths_absolute_and_scheme_relative_locations_are_valid(db: Path) -> None:
    sources = by_source(run_rule(db, invalid_location))
    assert {"/good/relative", "/good/absolute", "/good/scheme-relative", "/withloc"}.isdisjoint(
        sources
    )
    assert not [s for s in sources if s.startswith(("/secure", "/login", "/leak"))]


def test_location_on_200_and_404_is_flagged_but_not_on_201_202_or_3xx(db: Path) -> None:
    sources = by_source(run_rule(db, location_on_non_redirect))
    assert set(sources) == {"/ok-with-location", "/gone-with-location"}
    finding = sources["/ok-with-location"][0]
    assert finding.severity == "warning" and finding.status == 200
    assert finding.target and finding.target.endswith("/landing")
    assert "303" in finding.recommendation


def test_https_request_redirected_to_http_is_scheme_downgrade(db: Path) -> None:
    finding = only(
        [f for f in run_rule(db, scheme_downgrade) if "127.0.0.1" in (f.target or "")],
        "/secure/login",
    )
    assert finding.severity == "error"
    assert finding.target and finding.target.startswith("http://127.0.0.1:")
    # three httpx requests with X-Forwarded-Proto, one curl with Forwarded: proto=https
    assert finding.hits == 4
    assert "not trusted" in finding.message
    assert "--forwarded-allow-ips" in finding.recommendation
    assert "HTTPSRedirectMiddleware" in finding.recommendation


def test_app_that_saw_https_and_still_sent_http_is_scheme_downgrade(db: Path) -> None:
    finding = only(run_rule(db, scheme_downgrade), "/secure/hardcoded")
    assert finding.target == "http://www.example.org/"
    assert "received https" in finding.message


def test_relative_location_trusted_proxy_and_plain_http_are_not_downgrades(db: Path) -> None:
    findings = run_rule(db, scheme_downgrade)
    assert "/secure/relative" not in by_source(findings)
    # behind the trusting uvicorn the app built https:// URLs; plain http clients got
    # http:// and the X-Forwarded-Host request had no X-Forwarded-Proto: none counted.
    assert [f.hits for f in findings if f.source == "/secure/login"] == [4]


def test_location_naming_backend_host_instead_of_forwarded_host_is_a_leak(db: Path) -> None:
    sources = by_source(run_rule(db, internal_host_leak))
    leak = sources["/secure/login"]
    assert len(leak) == 1 and leak[0].hits == 1  # only the X-Forwarded-Host request
    assert "www.example.com" in leak[0].message and "backend" in leak[0].message
    assert leak[0].severity == "warning"
    assert "USE_X_FORWARDED_HOST" not in leak[0].recommendation  # a Starlette route
    private = sources["/leak/private"][0]
    assert private.target == "http://10.1.2.3:8000/landing"
    assert "internal host 10.1.2.3:8000" in private.message


def test_public_off_site_location_is_not_an_internal_host_leak(db: Path) -> None:
    sources = by_source(run_rule(db, internal_host_leak))
    assert {"/leak/public", "/good/absolute", "/sso", "/login"}.isdisjoint(sources)


def test_off_site_next_parameter_is_one_open_redirect_with_its_targets(db: Path) -> None:
    findings = by_source(run_rule(db, open_redirect))
    [login] = findings["/login"]
    assert login.evidence["parameter"] == "next"
    assert set(login.evidence["targets"]) == {"https://evil.example/phish", "http://evil.example/x"}
    assert (login.severity, login.status, login.hits) == ("error", 303, 2)
    assert "evil.example" in login.message and "CWE-601" in login.spec
    assert "allow-list" in login.recommendation


def test_off_site_host_taken_from_the_path_is_open_redirect(db: Path) -> None:
    finding = only(run_rule(db, open_redirect), "/out/{target:path}")
    assert finding.target == "https://evil.example/x"


def test_same_site_next_and_fixed_off_site_target_are_not_open_redirects(db: Path) -> None:
    findings = run_rule(db, open_redirect)
    assert not [f for f in findings if (f.target or "").startswith("http://127.0.0.1")]
    assert {"/sso", "/good/absolute", "/leak/public"}.isdisjoint(by_source(findings))


def test_an_absolute_location_resolves_even_when_the_request_host_is_garbage() -> None:
    # Host: [:::] makes the request URL unparsable; the Location needs no base.
    from auditor.urls import resolve_location

    assert resolve_location("http://[:::]/x", "https://testserver/") == "https://testserver/"
    assert resolve_location("http://[:::]/x", "/relative") is None


def test_a_port_written_with_leading_zeros_is_the_default_port() -> None:
    from auditor.analysis.rules.location import _hostport

    assert _hostport("testserver:000080") == "testserver"
    assert _hostport("[::1]:8080") == "[::1]:8080" and _hostport("[::1]") == "[::1]"
