"""Method-family rules on traffic recorded through real uvicorn, the real recorder and
real clients (httpx, curl, urllib): see tests/traffic.py for the scenarios."""

from __future__ import annotations

import pytest

from auditor import AuditResult, audit
from auditor.analysis.rules.base import Finding
from tests.traffic import scenario_db


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    return audit(scenario_db(tmp_path_factory))


def found(result: AuditResult, rule: str, source: str) -> list[Finding]:
    return [f for f in result.findings if f.rule == rule and f.source == source]


def test_post_301_followed_by_get_is_method_changed(result: AuditResult) -> None:
    [finding] = found(result, "method-changed", "/m/post-301")
    assert finding.severity == "error"
    assert (finding.method, finding.status, finding.hits) == ("POST", 301, 1)
    assert "as GET" in finding.message and "httpx" in finding.message
    assert "Chromium" in finding.message  # what other clients do
    assert "308" in finding.recommendation and "303" in finding.recommendation
    assert "§15.4.2" in finding.spec
    assert finding.example_request_id is not None and finding.example_chain_id is not None


def test_post_302_followed_by_get_is_method_changed(result: AuditResult) -> None:
    [finding] = found(result, "method-changed", "/m/post-302")
    assert "307" in finding.recommendation


@pytest.mark.parametrize("source", ["/m/post-303", "/m/post-307", "/m/form-307"])
def test_303_and_307_after_post_are_not_method_changed(result: AuditResult, source: str) -> None:
    assert not found(result, "method-changed", source)
    assert not found(result, "ambiguous-method-redirect", source)
    assert not found(result, "method-change-broke-request", source)


def test_urllib_head_to_get_on_307_is_method_not_preserved(result: AuditResult) -> None:
    [finding] = found(result, "method-not-preserved", "/m/head-307")
    assert "urllib" in finding.message and "as GET" in finding.message


def test_httpx_keeping_method_on_307_is_not_method_not_preserved(result: AuditResult) -> None:
    assert not found(result, "method-not-preserved", "/m/get-307")
    assert not found(result, "method-not-preserved", "/m/post-307")


def test_curl_put_on_301_drops_body(result: AuditResult) -> None:
    [finding] = found(result, "body-dropped", "/m/put-301")
    assert finding.method == "PUT" and "curl 7" in finding.message
    assert "308" in finding.recommendation


def test_curl_put_on_308_keeps_body(result: AuditResult) -> None:
    assert not found(result, "body-dropped", "/m/put-308")
    assert not found(result, "ambiguous-method-redirect", "/m/put-308")


def test_get_on_post_only_endpoint_after_302_is_method_change_broke_request(
    result: AuditResult,
) -> None:
    [finding] = found(result, "method-change-broke-request", "/m/form-302")
    assert "405" in finding.message


def test_non_get_answered_301_or_302_is_ambiguous(result: AuditResult) -> None:
    for source in ("/m/post-301", "/m/post-302", "/m/put-301", "/m/form-302"):
        [finding] = found(result, "ambiguous-method-redirect", source)
        assert finding.severity == "warning"
    assert (
        "requests keeps the method and drops the body"
        in found(result, "ambiguous-method-redirect", "/m/put-301")[0].message
    )


def test_trailing_slash_redirect_is_slash_redirect(result: AuditResult) -> None:
    findings = {f.method: f for f in found(result, "slash-redirect", "/m/items")}
    assert findings["GET"].severity == "info"
    assert findings["POST"].severity == "warning"  # non-GET: warning
    assert "redirect_slashes" in findings["GET"].recommendation


def test_redirect_to_another_path_is_not_slash_redirect(result: AuditResult) -> None:
    assert not found(result, "slash-redirect", "/m/moved")
    assert not [
        f
        for f in result.findings
        if f.rule == "slash-redirect" and f.method == "GET" and f.source != "/m/items"
    ]
