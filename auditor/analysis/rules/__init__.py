"""The rule catalogue: one module per family, each rule a small unit (see ``base``)."""

from auditor.analysis.rules import chains, location, method, permanence, status  # noqa: F401
from auditor.analysis.rules.base import (
    REGISTRY,
    AuditContext,
    AuditOptions,
    Finding,
    Rule,
    all_rules,
)

__all__ = ["REGISTRY", "AuditContext", "AuditOptions", "Finding", "Rule", "all_rules"]
