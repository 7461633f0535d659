"""`redirect-auditor audit` (placeholder until its issue lands)."""

from __future__ import annotations

from cli.common import fail


def audit() -> None:
    """Not available yet."""
    fail("'audit' is not available in this build yet")
