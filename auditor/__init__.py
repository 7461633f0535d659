"""redirect-auditor: record an ASGI app's traffic and audit its redirects."""

from auditor.middleware import RedirectRecorder

__all__ = ["RedirectRecorder"]
