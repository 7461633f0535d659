"""The audit overlaps work: rules that need no links run while other connections scan
for follow-ups, over id ranges the scanners take in turn. Same results either way."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from auditor import audit
from auditor.analysis import linking
from auditor.analysis.rules.base import all_rules
from benchmarks.generate_traffic import generate


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("overlap") / "traffic.db"
    generate(path, 4000, seed=1)
    return path


def copy_of(traffic: Path, tmp_path: Path, name: str = "copy.db") -> Path:
    copy = tmp_path / name
    source, target = sqlite3.connect(traffic), sqlite3.connect(copy)
    source.backup(target)
    source.close()
    target.close()
    return copy


def links(path: Path) -> dict[int, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("select id, follow_up_of from requests where follow_up_of"))
    finally:
        conn.close()


def test_ranges_on_two_connections_link_like_one_scan(
    traffic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = copy_of(traffic, tmp_path, "a.db"), copy_of(traffic, tmp_path, "b.db")
    for path, threshold in ((one, 10**9), (two, 0)):
        monkeypatch.setattr(linking, "PARALLEL_SCAN_ROWS", threshold)
        conn = sqlite3.connect(path)
        linking.link_requests(conn)
        conn.close()
    assert links(one) and links(one) == links(two)


def test_alongside_runs_once_on_the_connection_during_the_scan(
    traffic: Path, tmp_path: Path
) -> None:
    expected = copy_of(traffic, tmp_path, "a.db")
    conn = sqlite3.connect(expected)
    linking.link_and_build_chains(conn)
    conn.close()
    path = copy_of(traffic, tmp_path, "b.db")
    conn = sqlite3.connect(path)
    seen: list[int] = []
    linking.link_and_build_chains(
        conn,
        alongside=lambda: seen.append(conn.execute("select count(*) from requests").fetchone()[0]),
    )
    conn.close()
    assert seen == [4000]
    assert links(path) == links(expected)


def test_rules_run_during_linking_still_name_their_example_chain(
    traffic: Path, tmp_path: Path
) -> None:
    path = copy_of(traffic, tmp_path)
    result = audit(path)
    early = {r.id for r in all_rules().values() if not r.needs_links}
    conn = sqlite3.connect(path)
    first_of = dict(conn.execute("select first_request_id, min(id) from chains group by 1"))
    conn.close()
    starting = [f for f in result.findings if f.rule in early and f.example_request_id in first_of]
    assert starting  # e.g. legacy-302 on a redirect that starts a chain
    for found in starting:
        assert found.example_chain_id == first_of[found.example_request_id]
