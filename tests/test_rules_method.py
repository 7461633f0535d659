"""The method family on traffic recorded through real uvicorn, the real recorder and
real clients (httpx, requests, curl, urllib): see tests/traffic.py for the scenarios.

One finding per problem and place; what clients did is its evidence."""

from __future__ import annotations

import pytest

from auditor import AuditResult, audit
from auditor.analysis.rules.base import Finding
from tests.traffic import scenario_db

METHOD_FAMILY = (
    "method-change-on-move",
    "post-redirect-get-302",
    "form-reposted-by-307",
    "redirect-target-fails",
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    return audit(scenario_db(tmp_path_factory))


def found(result: AuditResult, rule: str, source: str) -> list[Finding]:
    return [f for f in result.findings if f.rule == rule and f.source == source]


def at(result: AuditResult, source: str) -> list[Finding]:
    return [f for f in result.findings if f.source == source and f.rule in METHOD_FAMILY]


def client(finding: Finding, name: str) -> dict:
    [entry] = [c for c in finding.evidence["clients"] if c["client"] == name]
    return entry


def test_post_302_to_a_page_answering_get_is_post_redirect_get_info(result: AuditResult) -> None:
    [finding] = at(result, "/m/post-302")
    assert (finding.rule, finding.severity) == ("post-redirect-get-302", "info")
    assert "303" in finding.recommendation
    assert "307" not in finding.recommendation.replace("Not 307/308", "")
    assert client(finding, "httpx")["outcomes"][0]["method"] == "GET"


def test_post_301_to_another_page_is_post_redirect_get_not_an_error(result: AuditResult) -> None:
    assert [(f.rule, f.severity) for f in at(result, "/m/post-301")] == [
        ("post-redirect-get-302", "info")
    ]


def test_303_after_post_is_no_finding(result: AuditResult) -> None:
    assert at(result, "/m/post-303") == []


def test_get_after_302_refused_with_405_is_method_change_on_move_error(
    result: AuditResult,
) -> None:
    [finding] = at(result, "/m/form-302")
    assert (finding.rule, finding.severity) == ("method-change-on-move", "error")
    assert "405" in finding.message
    assert "307" in finding.recommendation
    assert client(finding, "httpx")["outcomes"] == [
        {"method": "GET", "body": "dropped", "status": 405, "count": 1}
    ]


def test_moved_api_on_301_is_one_error_with_each_client_as_evidence(result: AuditResult) -> None:
    [finding] = at(result, "/v1/things")
    assert (finding.rule, finding.severity, finding.hits) == ("method-change-on-move", "error", 2)
    assert "308" in finding.recommendation
    assert client(finding, "requests")["outcomes"][0]["body"] == "dropped"
    assert client(finding, "httpx")["outcomes"][0] == {
        "method": "PUT",
        "body": "kept",
        "status": 200,
        "count": 1,
    }


def test_curl_put_on_301_losing_its_body_is_method_change_on_move(result: AuditResult) -> None:
    [finding] = at(result, "/m/put-301")
    assert (finding.rule, finding.severity) == ("method-change-on-move", "error")
    assert client(finding, "curl")["outcomes"][0]["body"] == "dropped"


@pytest.mark.parametrize("source", ["/m/put-308", "/m/post-307", "/m/get-307", "/m/head-307"])
def test_307_and_308_that_keep_the_method_are_no_finding(result: AuditResult, source: str) -> None:
    assert at(result, source) == []


def test_form_post_answered_307_to_another_page_is_a_warning(result: AuditResult) -> None:
    [finding] = at(result, "/m/form-307")
    assert (finding.rule, finding.severity) == ("form-reposted-by-307", "warning")
    assert "303" in finding.recommendation
    assert client(finding, "httpx")["outcomes"][0] == {
        "method": "POST",
        "body": "kept",
        "status": 201,
        "count": 1,
    }


def test_login_form_reposted_by_307_is_an_error(result: AuditResult) -> None:
    [finding] = at(result, "/m/login-307")
    assert (finding.rule, finding.severity) == ("form-reposted-by-307", "error")
    assert "login data" in finding.message


def test_303_to_a_page_refusing_get_is_redirect_target_fails(result: AuditResult) -> None:
    [finding] = at(result, "/m/post-303-bad")
    assert (finding.rule, finding.severity) == ("redirect-target-fails", "error")
    assert "answer GET" in finding.recommendation


def test_post_redirect_get_to_a_missing_page_is_redirect_target_fails(
    result: AuditResult,
) -> None:
    [finding] = at(result, "/m/post-302-gone")
    assert (finding.rule, finding.severity) == ("redirect-target-fails", "error")
    assert "404" in finding.message


def test_slash_redirect_of_a_post_with_307_is_info_not_an_error(result: AuditResult) -> None:
    findings = [f for f in result.findings if f.target and f.target.endswith("/m/items/")]
    assert {(f.rule, f.severity) for f in findings if f.method == "POST"} == {
        ("slash-redirect", "info")
    }
    [get] = [f for f in findings if f.rule == "slash-redirect" and f.method == "GET"]
    assert "redirect_slashes" in get.recommendation  # Starlette's router sent it
    assert get.evidence["sent_by"] == "framework"


def test_each_problem_is_reported_once_per_place(result: AuditResult) -> None:
    places = [(f.rule, f.source, f.method, f.status) for f in result.findings]
    assert len(places) == len(set(places))


def test_no_symptom_rules_remain(result: AuditResult) -> None:
    gone = {"method-changed", "body-dropped", "method-not-preserved", "ambiguous-method-redirect"}
    assert not gone & {f.rule for f in result.findings}
