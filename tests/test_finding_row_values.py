"""``Finding.row_values`` is ``as_row``'s values in its order (what ``audit`` stores)."""

from __future__ import annotations

from auditor.analysis.rules.base import Finding


def test_row_values_match_as_row() -> None:
    found = Finding(
        rule="slash-redirect",
        severity="warning",
        title="t",
        message="m",
        recommendation="r",
        spec="s",
        method="POST",
        status=301,
        source="/a",
        target="http://x/a/",
        hits=3,
        first_seen=1.5,
        last_seen=2.5,
        example_request_id=7,
        example_chain_id=None,
    )
    assert found.row_values() == tuple(found.as_row().values())
