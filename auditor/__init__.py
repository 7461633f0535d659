"""redirect-auditor: record an ASGI app's traffic and audit its redirects."""

from auditor.audit import AuditResult, audit
from auditor.middleware import RedirectRecorder

__all__ = ["AuditResult", "RedirectRecorder", "audit"]
