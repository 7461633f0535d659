"""Verdicts on a real Quart app: ``redirect(url_for(...))`` with its default code (302)
after a form POST, an open redirect taking ``?next=`` probed with four attacker URLs
(never followed off loopback), and Werkzeug's strict-slashes redirect."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from auditor.analysis.rules.base import Finding
from tests.frameworks.harness import (
    ATTACKER_HOSTS,
    METHOD_FAMILY,
    Traffic,
    counts,
    describe,
    foreign_api_names,
    recorded,
    select,
)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    return recorded("quart", tmp_path_factory)


@pytest.fixture(scope="module")
def findings(traffic: Traffic) -> list[Finding]:
    return traffic.audit().findings


def test_form_post_with_the_default_302_is_info_naming_redirect_code_303(
    findings: list[Finding],
) -> None:
    found = select(findings, "post-redirect-get-302", "/subscribe")
    assert len(found) == 1, describe(findings)
    [finding] = found
    assert (finding.severity, finding.method, finding.status) == ("info", "POST", 302)
    assert "redirect(" in finding.recommendation
    assert re.search(r"(?<!_)\bcode=303", finding.recommendation), finding.recommendation
    assert select(findings, source="/subscribe", rules=METHOD_FAMILY) == [finding]


def test_open_redirect_probed_with_four_targets_is_one_error(findings: list[Finding]) -> None:
    found = select(findings, "open-redirect")
    assert len(found) == 1, describe(findings)
    [finding] = found
    assert (finding.severity, finding.source, finding.method) == ("error", "/go", "GET")
    assert finding.hits == 4
    assert finding.evidence.get("parameter") == "next"
    targets = finding.evidence.get("targets") or []
    assert len(targets) >= 2, finding.evidence
    assert {urlsplit(t).hostname for t in targets} <= ATTACKER_HOSTS, targets
    # an attacker-chosen host is never reported as a leak of an internal one
    assert select(findings, "internal-host-leak", "/go") == []


def test_strict_slashes_redirect_on_get_is_slash_redirect_info(findings: list[Finding]) -> None:
    found = select(findings, "slash-redirect", "/library")
    assert len(found) == 1, describe(findings)
    assert (found[0].severity, found[0].method, found[0].status) == ("info", "GET", 308)


def test_one_finding_per_problem_and_place(findings: list[Finding]) -> None:
    assert findings, "the audit found nothing"
    assert {key: n for key, n in counts(findings).items() if n > 1} == {}, describe(findings)


def test_fixes_name_quart_and_no_other_framework(findings: list[Finding]) -> None:
    assert findings, "the audit found nothing"
    for finding in findings:
        assert finding.evidence.get("framework") == "quart", (finding.rule, finding.evidence)
        assert foreign_api_names("quart", finding.recommendation) == [], (
            finding.rule,
            finding.recommendation,
        )


def test_fixes_at_strict_slashes_redirects_name_the_route_setting(
    findings: list[Finding],
) -> None:
    sent_by_router = select(findings, source="/library")
    assert sent_by_router, describe(findings)
    for finding in sent_by_router:
        assert "strict_slashes" in finding.recommendation, (finding.rule, finding.recommendation)
