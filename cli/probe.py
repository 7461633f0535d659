"""Placeholder until its issue lands."""

from __future__ import annotations

from cli.common import fail


def probe() -> None:
    """Not available yet."""
    fail("this command is not available in this build yet")
