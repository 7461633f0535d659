"""What every audit rule is: a small named unit that turns traffic into findings.

A rule is a function decorated with ``@rule(...)``. It receives an
``AuditContext`` (a read connection to the linked traffic database and the
audit options) and yields ``Finding`` objects, one per (rule, source, method,
status, target) group. Adding a rule touches one module in this package.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


@dataclass
class Finding:
    """One row of the ``findings`` table (see ``schema.FINDING_COLUMNS``)."""

    rule: str
    severity: Severity
    title: str
    message: str
    recommendation: str
    spec: str
    method: str | None
    status: int | None
    source: str  # route template when known, else path
    target: str | None
    hits: int
    first_seen: float
    last_seen: float
    example_request_id: int | None = None
    example_chain_id: int | None = None
    # Per-client evidence, parameter, example targets... (docs/problems.md, "Evidence").
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """Column values for ``findings`` (without id and audit_run_id)."""
        return {
            "rule": self.rule,
            "severity": self.severity,
            "severity_rank": SEVERITIES.index(self.severity),
            "title": self.title,
            "message": self.message,
            "recommendation": self.recommendation,
            "spec": self.spec,
            "method": self.method,
            "status": self.status,
            "source": self.source,
            "target": self.target,
            "hits": self.hits,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "example_request_id": self.example_request_id,
            "example_chain_id": self.example_chain_id,
            "evidence": json.dumps(self.evidence, sort_keys=True) if self.evidence else None,
        }

    def row_values(self) -> tuple[Any, ...]:
        """``as_row``'s values, in its order, without building the dict."""
        return (
            self.rule,
            self.severity,
            SEVERITIES.index(self.severity),
            self.title,
            self.message,
            self.recommendation,
            self.spec,
            self.method,
            self.status,
            self.source,
            self.target,
            self.hits,
            self.first_seen,
            self.last_seen,
            self.example_request_id,
            self.example_chain_id,
            json.dumps(self.evidence, sort_keys=True) if self.evidence else None,
        )


@dataclass(frozen=True)
class AuditOptions:
    """Thresholds and filters; CLI options and ``[tool.redirect-auditor]`` set them."""

    link_window: float = 30.0  # seconds between a redirect and its follow-up
    chain_threshold: int = 2  # redirects in a row that make a chain finding
    temporary_min_span_days: float = 7.0  # temporary-looks-permanent: unchanged this long
    temporary_min_hits: int = 100  # ... and seen this often
    long_cache_seconds: int = 86400  # temporary-with-long-cache: max-age above this
    unfollowed_ratio: float = 0.8  # unfollowed-redirect: a client family's share not followed
    unfollowed_min_hits: int = 5  # ... of at least this many of its requests
    ignore_paths: tuple[str, ...] = ()  # glob patterns on the request path
    ignore_rules: tuple[str, ...] = ()


@dataclass
class StaticGraph:
    """The static redirect graph of one audit, walked once and shared by its rules."""

    edges: list[Any]
    chains: list[Any]  # graph.StaticPath of at least options.chain_threshold redirects
    loops: list[Any]


@dataclass
class AuditContext:
    """What a rule may read: the linked traffic, the options and what the audit knows.

    ``audit`` fills the optional fields as its steps run; rules reach the subset tables
    through ``_subset.ensure_responses`` and the chains through ``_groups``' helpers.
    """

    conn: sqlite3.Connection  # row_factory = sqlite3.Row; chains and follow_up_of are filled
    options: AuditOptions = field(default_factory=AuditOptions)
    # The app's framework as the recorder noted it (fixes name its API); None if unknown.
    framework: str | None = None
    # True while only the responses subset exists (linking still runs on another
    # connection): the rules registered with needs_links=False run then.
    responses_only: bool = False
    # While chains are not built yet: findings whose example chain is filled in later.
    pending_chains: list[Finding] | None = None
    followed: dict[int, int] | None = None  # follow-up id -> the redirect it followed
    chain_of_first: dict[int, int] | None = None  # first request id -> chain id
    graph: StaticGraph | None = None

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Run an analysis query over the ``requests`` / ``chains`` tables."""
        return self.conn.execute(sql, tuple(params)).fetchall()


# Where a finding is grouped: the subset's ``source`` column, the route template the
# framework recorded, else the one inferred from the recorded paths (``_subset``).
SOURCE_SQL = "source"

RuleCheck = Callable[[AuditContext], Iterator[Finding]]


@dataclass(frozen=True)
class Rule:
    """A registered rule: its stable id, default severity, title and spec reference."""

    id: str
    severity: Severity
    title: str
    spec: str
    family: str
    check: RuleCheck
    # False when the rule reads only the recorded responses, neither the follow-up links
    # nor the chains: ``audit`` may run it while linking still scans for follow-ups.
    needs_links: bool = True


REGISTRY: dict[str, Rule] = {}


def rule(
    id: str,
    *,
    severity: Severity,
    title: str,
    spec: str,
    family: str,
    needs_links: bool = True,
) -> Callable[[RuleCheck], RuleCheck]:
    """Register a rule function under its stable id."""

    def register(check: RuleCheck) -> RuleCheck:
        if id in REGISTRY:
            raise ValueError(f"rule {id!r} registered twice")
        REGISTRY[id] = Rule(id, severity, title, spec, family, check, needs_links)
        return check

    return register


def all_rules() -> dict[str, Rule]:
    """Every rule, importing the rule modules on first use."""
    from auditor.analysis import rules  # noqa: F401  (imports each family module)

    return REGISTRY
