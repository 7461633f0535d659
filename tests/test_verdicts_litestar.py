"""Verdicts on a real Litestar app: ``Redirect(path=...)`` with its default status (302)
after a form POST, and a moved profile page redirected for five user ids that Litestar
routes through one path template."""

from __future__ import annotations

import pytest

from auditor.analysis.rules.base import Finding
from tests.frameworks.harness import (
    METHOD_FAMILY,
    USER_IDS,
    Traffic,
    counts,
    describe,
    foreign_api_names,
    recorded,
    select,
)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    return recorded("litestar", tmp_path_factory)


@pytest.fixture(scope="module")
def findings(traffic: Traffic) -> list[Finding]:
    return traffic.audit().findings


def profile_template(traffic: Traffic) -> str:
    """The path template Litestar itself routed the old profile URLs with."""
    [template] = [t for t in traffic.notes["path_templates"] if t.endswith("/profile-old")]
    return str(template)


def test_form_post_with_the_default_302_is_info_naming_litestar_redirect(
    findings: list[Finding],
) -> None:
    found = select(findings, "post-redirect-get-302", "/feedback")
    assert len(found) == 1, describe(findings)
    [finding] = found
    assert (finding.severity, finding.method, finding.status) == ("info", "POST", 302)
    assert "Redirect(" in finding.recommendation
    assert "status_code=303" in finding.recommendation
    assert select(findings, source="/feedback", rules=METHOD_FAMILY) == [finding]
    assert [f for f in select(findings, source="/feedback") if f.severity != "info"] == []


def test_moved_profiles_make_one_finding_per_problem_at_litestars_template(
    traffic: Traffic, findings: list[Finding]
) -> None:
    template = profile_template(traffic)
    profiles = [f for f in findings if f.source.startswith("/users/")]
    assert profiles, describe(findings)
    assert {f.source for f in profiles} == {template}, describe(profiles)
    assert set(counts(profiles).values()) == {1}, describe(profiles)
    # a GET answered 302: the hygiene finding, counted over all five ids
    [legacy] = select(profiles, "legacy-302")
    assert (legacy.severity, legacy.method, legacy.status) == ("info", "GET", 302)
    assert legacy.hits == len(USER_IDS)


def test_request_path_is_recorded_as_the_client_sent_it(traffic: Traffic) -> None:
    # Litestar rewrites scope["path"] without the trailing slash while routing; the row
    # must still hold what the client asked for (hop linking compares it with Location).
    slashed = f"/users/{USER_IDS[0]}/profile/"
    rows = traffic.rows("select path, url from requests where url like '%/profile/'")
    assert [r["path"] for r in rows] == [slashed], rows


def test_fixes_name_litestar_and_no_other_framework(findings: list[Finding]) -> None:
    assert findings, "the audit found nothing"
    for finding in findings:
        assert finding.evidence.get("framework") == "litestar", (finding.rule, finding.evidence)
        assert foreign_api_names("litestar", finding.recommendation) == [], (
            finding.rule,
            finding.recommendation,
        )
