"""redirect-auditor: record an ASGI app's traffic and audit its redirects.

Importing the package loads the recorder only; ``audit`` and ``AuditResult`` load the
analysis on first use, so a serving worker never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from auditor.middleware import RedirectRecorder

if TYPE_CHECKING:
    from auditor.analysis.audit import AuditResult, audit

__all__ = ["AuditResult", "RedirectRecorder", "audit"]


def __getattr__(name: str) -> Any:
    if name in ("audit", "AuditResult"):
        from auditor.analysis import audit as audit_module

        return getattr(audit_module, name)
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")
