"""Chain-family rules on traffic recorded through real uvicorn and real clients."""

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


def test_two_followed_redirects_are_a_redirect_chain(result: AuditResult) -> None:
    [finding] = found(result, "redirect-chain", "/c/chain-a")
    assert finding.target is not None and finding.target.endswith("/land/chain")
    assert "/c/chain-b" in finding.message and finding.example_chain_id is not None
    assert found(result, "redirect-chain", "/c/perm-a")


def test_one_hop_redirect_is_not_a_chain(result: AuditResult) -> None:
    assert not found(result, "redirect-chain", "/c/one")
    assert not found(result, "redirect-chain", "/m/post-301")


def test_chain_nobody_followed_is_found_in_the_static_graph(result: AuditResult) -> None:
    [finding] = found(result, "redirect-chain", "/c/s1")
    assert "/c/s2" in finding.message and "/c/s3" in finding.message


def test_chain_threshold_raises_the_bar(tmp_path_factory: pytest.TempPathFactory) -> None:
    strict = audit(scenario_db(tmp_path_factory), chain_threshold=3)
    sources = {f.source for f in strict.findings if f.rule == "redirect-chain"}
    assert sources == {"/c/s1"}


def test_followed_loop_is_a_redirect_loop(result: AuditResult) -> None:
    [finding] = found(result, "redirect-loop", "/c/loop-a")
    assert finding.severity == "error" and "/c/loop-b" in finding.message
    # The target is where the route redirects, not the URL the loop came back to.
    assert finding.target is not None and finding.target.endswith("/c/loop-b")


def test_loop_nobody_followed_is_found_in_the_static_graph(result: AuditResult) -> None:
    [finding] = found(result, "redirect-loop", "/c/static-a")
    assert "/c/static-b" in finding.message


def test_redirect_to_own_url_is_self_redirect_not_loop(result: AuditResult) -> None:
    [finding] = found(result, "self-redirect", "/c/self")
    assert finding.status == 302
    assert not found(result, "redirect-loop", "/c/self")
    assert [f.source for f in result.findings if f.rule == "self-redirect"] == ["/c/self"]


def test_redirect_to_a_missing_page_is_redirect_target_fails(result: AuditResult) -> None:
    [finding] = found(result, "redirect-target-fails", "/c/gone")
    assert "404" in finding.message and finding.severity == "error"
    assert not found(result, "redirect-target-fails", "/c/one")


def test_redirect_never_followed_is_unfollowed(result: AuditResult) -> None:
    [finding] = found(result, "unfollowed-redirect", "/c/unfollowed")
    assert finding.hits == 10 and "follow_redirects" in finding.message
    assert not found(result, "unfollowed-redirect", "/c/followed")


def test_permanent_then_temporary_hop_is_mixed_permanence(result: AuditResult) -> None:
    [finding] = found(result, "mixed-permanence-chain", "/c/chain-a")
    assert "301" in finding.message and "302" in finding.message
    assert not found(result, "mixed-permanence-chain", "/c/perm-a")  # 301 then 308


def test_loops_of_one_route_template_are_one_finding(result: AuditResult) -> None:
    loops = [f for f in result.findings if f.rule == "redirect-loop" and f.source.startswith("/t/")]
    assert len(loops) == 1 and "2 more loops" in loops[0].message  # three ids, one place


def test_urllib_not_following_a_307_post_is_no_unfollowed_redirect(result: AuditResult) -> None:
    assert not found(result, "unfollowed-redirect", "/m/post-307")
