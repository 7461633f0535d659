"""redirect-auditor: record an ASGI app's traffic and audit its redirects.

Importing the package loads nothing: ``RedirectRecorder`` loads the recorder on first
use, ``audit`` and ``AuditResult`` the analysis, so a serving worker never pays for the
analysis and the pytest plugin (``auditor.sources.pytest_plugin``, loaded by every pytest run
where the package is installed) imports no framework unless ``--redirect-audit`` is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.analysis.audit import AuditResult, audit
    from auditor.record.middleware import RedirectRecorder

__all__ = ["AuditResult", "RedirectRecorder", "audit"]


def __getattr__(name: str) -> Any:
    if name == "RedirectRecorder":
        from auditor.record.middleware import RedirectRecorder

        return RedirectRecorder
    if name in ("audit", "AuditResult"):
        from auditor.analysis import audit as audit_module

        return getattr(audit_module, name)
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")
