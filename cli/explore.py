"""`redirect-auditor explore` (placeholder until its issue lands)."""

from __future__ import annotations

from cli.common import fail


def explore() -> None:
    """Not available yet."""
    fail("'explore' is not available in this build yet")
