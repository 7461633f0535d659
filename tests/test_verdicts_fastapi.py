"""Verdicts on a real FastAPI app (docs/problems.md): its own RedirectResponse default
(307), explicit 301/303/308, and the router's redirect_slashes, recorded through
``app.add_middleware(RedirectRecorder, ...)`` under uvicorn and driven by httpx,
requests and curl. One recording, one audit for the module."""

from __future__ import annotations

import pytest

from auditor.analysis.rules.base import Finding
from tests.frameworks.harness import (
    METHOD_FAMILY,
    Traffic,
    client_outcomes,
    counts,
    describe,
    foreign_api_names,
    recorded,
    select,
)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    return recorded("fastapi", tmp_path_factory)


@pytest.fixture(scope="module")
def findings(traffic: Traffic) -> list[Finding]:
    return traffic.audit().findings


def only(findings: list[Finding], rule: str, source: str) -> Finding:
    found = select(findings, rule, source)
    assert len(found) == 1, f"one {rule} at {source} expected; found:\n{describe(findings)}"
    return found[0]


def assert_reposted(finding: Finding, status: int) -> None:
    """httpx and requests both re-sent the form, body and all, to the other page."""
    outcomes = client_outcomes(finding)
    assert {"httpx", "requests"} <= set(outcomes), finding.evidence
    for client in ("httpx", "requests"):
        assert any(
            o.get("method") == "POST" and o.get("body") == "kept" and o.get("status") == status
            for o in outcomes[client]
        ), (client, finding.evidence)


def test_form_post_answered_by_the_default_307_is_a_warning(findings: list[Finding]) -> None:
    finding = only(findings, "form-reposted-by-307", "/feedback")
    assert (finding.severity, finding.method, finding.status) == ("warning", "POST", 307)
    assert_reposted(finding, 200)
    assert "RedirectResponse" in finding.recommendation
    assert "303" in finding.recommendation
    assert select(findings, source="/feedback", rules=METHOD_FAMILY) == [finding]


def test_login_form_reposted_by_307_is_an_error(findings: list[Finding]) -> None:
    finding = only(findings, "form-reposted-by-307", "/login")
    assert (finding.severity, finding.status) == ("error", 307)
    assert_reposted(finding, 200)


def test_reposted_form_the_target_refuses_is_an_error(findings: list[Finding]) -> None:
    finding = only(findings, "form-reposted-by-307", "/subscribe")
    assert finding.severity == "error"
    assert_reposted(finding, 405)
    # the 405 is this problem's evidence, not a second finding
    assert select(findings, source="/subscribe", rules=METHOD_FAMILY) == [finding]


def test_near_miss_same_form_flow_with_303_has_no_method_finding(
    findings: list[Finding],
) -> None:
    for source in ("/contact", "/contact-sent"):
        assert select(findings, source=source, rules=METHOD_FAMILY) == [], describe(findings)


def test_redirect_slashes_on_get_is_slash_redirect_info(findings: list[Finding]) -> None:
    finding = only(findings, "slash-redirect", "/catalog")
    assert (finding.severity, finding.method, finding.status) == ("info", "GET", 307)
    assert finding.hits == 3
    assert finding.evidence.get("sent_by") == "framework"
    assert "redirect_slashes" in finding.recommendation


def test_redirect_slashes_on_json_post_is_no_error(findings: list[Finding]) -> None:
    here = select(findings, source="/api/notes")
    assert [f for f in here if f.severity != "info"] == [], describe(here)
    assert select(here, rules=METHOD_FAMILY) == []
    # 307 keeps the method on the same resource: a slash redirect, nothing worse
    finding = only(here, "slash-redirect", "/api/notes")
    assert (finding.method, finding.evidence.get("sent_by")) == ("POST", "framework")


def test_moved_put_answered_301_is_method_change_on_move_error(findings: list[Finding]) -> None:
    finding = only(findings, "method-change-on-move", "/v1/items/{item_id}")
    assert (finding.severity, finding.method, finding.status) == ("error", "PUT", 301)
    assert finding.hits == 6
    outcomes = client_outcomes(finding)
    # requests keeps PUT and drops the body (v2 answers 422); httpx keeps both
    assert any(
        o.get("method") == "PUT" and o.get("body") == "dropped" and o.get("status") == 422
        for o in outcomes.get("requests", [])
    ), finding.evidence
    assert any(
        o.get("method") == "PUT" and o.get("body") == "kept" for o in outcomes.get("httpx", [])
    ), finding.evidence
    assert "308" in finding.recommendation
    assert "RedirectResponse" in finding.recommendation
    assert select(findings, source="/v1/items/{item_id}", rules=METHOD_FAMILY) == [finding]


def test_near_miss_moved_put_answered_308_has_no_method_finding(
    findings: list[Finding],
) -> None:
    assert select(findings, source="/v1/orders/{order_id}", rules=METHOD_FAMILY) == []


def test_one_finding_per_problem_and_place(findings: list[Finding]) -> None:
    assert findings, "the audit found nothing"
    assert {key: n for key, n in counts(findings).items() if n > 1} == {}, describe(findings)
    # the concrete item paths never become places of their own
    assert not [f for f in findings if f.source.startswith(("/v1/items/", "/v1/orders/"))
                and "{" not in f.source], describe(findings)  # fmt: skip


def test_fixes_name_fastapi_and_no_other_framework(findings: list[Finding]) -> None:
    assert findings, "the audit found nothing"
    for finding in findings:
        assert finding.evidence.get("framework") == "fastapi", (finding.rule, finding.evidence)
        assert foreign_api_names("fastapi", finding.recommendation) == [], (
            finding.rule,
            finding.recommendation,
        )


def test_fixes_at_redirect_slashes_redirects_name_the_router_setting(
    findings: list[Finding],
) -> None:
    sent_by_router = [f for f in findings if f.source in ("/catalog", "/api/notes")]
    assert sent_by_router, describe(findings)
    for finding in sent_by_router:
        assert "redirect_slashes" in finding.recommendation, (finding.rule, finding.recommendation)
