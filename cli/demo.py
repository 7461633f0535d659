"""`redirect-auditor demo` (placeholder until its issue lands)."""

from __future__ import annotations

from cli.common import fail


def demo() -> None:
    """Not available yet."""
    fail("'demo' is not available in this build yet")
