"""Verdicts on a real Django project served through Django's ASGI handler under
``redirect-auditor run``: ``redirect()`` (302) after a form POST submitted by headless
Chromium, requests and httpx; a 303 near miss; CommonMiddleware's APPEND_SLASH 301 on
GET (several article ids: one place) and on POST with DEBUG=False."""

from __future__ import annotations

import re

import pytest

from auditor.analysis.rules.base import Finding
from tests.frameworks.harness import (
    ARTICLE_IDS,
    METHOD_FAMILY,
    Traffic,
    client_outcomes,
    counts,
    describe,
    foreign_api_names,
    recorded,
    select,
)

DJANGO_API = re.compile(r"\bHttpResponse\w*Redirect\b|\bHttpResponseSeeOther\b|\bredirect\(")


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    return recorded("django", tmp_path_factory)


@pytest.fixture(scope="module")
def findings(traffic: Traffic) -> list[Finding]:
    return traffic.audit().findings


def only(findings: list[Finding], rule: str, source: str) -> Finding:
    found = select(findings, rule, source)
    assert len(found) == 1, f"one {rule} at {source} expected; found:\n{describe(findings)}"
    return found[0]


def test_form_post_redirect_get_with_302_is_info_and_nothing_worse(
    findings: list[Finding],
) -> None:
    finding = only(findings, "post-redirect-get-302", "/contact/")
    assert (finding.severity, finding.method, finding.status) == ("info", "POST", 302)
    outcomes = client_outcomes(finding)
    assert {"Chromium", "requests", "httpx"} <= set(outcomes), finding.evidence
    for client in ("Chromium", "requests", "httpx"):
        assert any(o.get("method") == "GET" and o.get("status") == 200 for o in outcomes[client]), (
            client,
            finding.evidence,
        )
    assert "303" in finding.recommendation
    assert DJANGO_API.search(finding.recommendation), finding.recommendation
    for source in ("/contact/", "/contact/thanks/"):
        worse = [f for f in select(findings, source=source) if f.severity != "info"]
        assert worse == [], describe(worse)
    assert select(findings, source="/contact/", rules=METHOD_FAMILY) == [finding]


def test_near_miss_303_after_the_form_post_has_no_finding(findings: list[Finding]) -> None:
    for source in ("/newsletter/", "/newsletter/done/"):
        assert select(findings, source=source) == [], describe(findings)


def test_append_slash_on_get_is_one_slash_redirect_info(findings: list[Finding]) -> None:
    slash = select(findings, "slash-redirect")
    assert len(slash) == 1, describe(findings)
    [finding] = slash
    assert finding.source == "/articles/{id}"
    assert (finding.severity, finding.method, finding.status) == ("info", "GET", 301)
    assert finding.hits == len(ARTICLE_IDS)
    assert finding.evidence.get("sent_by") == "framework"
    assert "APPEND_SLASH" in finding.recommendation
    assert "preserve_request" not in finding.recommendation


def test_article_ids_group_into_one_place_per_problem(findings: list[Finding]) -> None:
    articles = [f for f in findings if f.source.startswith("/articles")]
    assert articles, describe(findings)
    assert {f.source for f in articles} == {"/articles/{id}"}, describe(articles)
    assert set(counts(articles).values()) == {1}, describe(articles)


def test_append_slash_on_post_is_method_change_on_move_error(findings: list[Finding]) -> None:
    # DEBUG=False: CommonMiddleware answers the POST with 301 and the clients follow
    # with a bodiless GET, though /comments/ takes POST.
    finding = only(findings, "method-change-on-move", "/comments")
    assert (finding.severity, finding.method, finding.status) == ("error", "POST", 301)
    assert finding.evidence.get("sent_by") == "framework"
    outcomes = client_outcomes(finding)
    for client in ("requests", "httpx"):
        assert any(
            o.get("method") == "GET" and o.get("body") == "dropped"
            for o in outcomes.get(client, [])
        ), (client, finding.evidence)
    assert "APPEND_SLASH" in finding.recommendation
    assert select(findings, source="/comments", rules=METHOD_FAMILY) == [finding]


def test_fixes_name_django_and_no_other_framework(findings: list[Finding]) -> None:
    assert findings, "the audit found nothing"
    for finding in findings:
        assert finding.evidence.get("framework") == "django", (finding.rule, finding.evidence)
        assert foreign_api_names("django", finding.recommendation) == [], (
            finding.rule,
            finding.recommendation,
        )


def test_fixes_at_append_slash_redirects_name_the_middleware(findings: list[Finding]) -> None:
    # CommonMiddleware sent these redirects, not the app's views: every fix there says so
    # instead of suggesting a change to view code that never runs.
    sent_by_middleware = [f for f in findings if f.source in ("/articles/{id}", "/comments")]
    assert sent_by_middleware, describe(findings)
    for finding in sent_by_middleware:
        assert "APPEND_SLASH" in finding.recommendation, (finding.rule, finding.recommendation)
