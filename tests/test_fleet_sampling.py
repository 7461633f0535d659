"""A fleet audit past its row budget audits a sample of hops at every place: the same
findings as the audit of every row, hits scaled back to the whole traffic."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.generate_traffic import generate
from tests.servers import ROOT, cli_command

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return result


def findings(stdout: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    (database,) = json.loads(stdout)["databases"]
    return {
        (f["rule"], f["source"], f["method"], f["status"], f["severity"]): f
        for f in database["findings"]
    }


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    tmp = tmp_path_factory.mktemp("sampling")
    traffic = generate(tmp / "web1.db", 40_000, seed=3)
    later = str(time.time() + 400 * 86400)  # generated traffic is from the past
    run("export", str(tmp / "web1.db"), "--to", str(tmp / "shards"), "--until", later)
    return tmp / "shards", traffic


def test_a_sample_finds_what_every_row_finds(shards: tuple[Path, Any], tmp_path: Path) -> None:
    out, traffic = shards
    whole = run("audit", str(out), "--format", "json", "--report", str(tmp_path / "all.db"))
    sample = run(
        "audit",
        str(out),
        "--format",
        "json",
        "--report",
        str(tmp_path / "sample.db"),
        "--sample-above",
        "2000",
    )
    assert "a sample of" not in whole.stderr
    read, kept = (int(n.replace(",", "")) for n in _counts(sample.stderr))
    assert kept < read  # it did sample

    every_row, sampled = findings(whole.stdout), findings(sample.stdout)
    assert sampled.keys() == every_row.keys()
    planted = {
        (route, method, status, problem)
        for route, method, status, problem in traffic.planted_places
    }
    assert {(s, m, st, r) for r, s, m, st, _ in sampled} == planted

    scaled = [f for f in sampled.values() if "sampled" in f["evidence"]]
    assert scaled, "some places were sampled"
    for finding in scaled:
        counts = finding["evidence"]["sampled"]
        assert counts["audited"] < counts["requests"]
        assert finding["hits"] >= every_row[_key(finding)]["hits"] * 0.5
    # Totals are the whole traffic's.
    (database,) = json.loads(sample.stdout)["databases"]
    assert database["rows_scanned"] == traffic.requests


def _key(finding: dict[str, Any]) -> tuple[Any, ...]:
    return (
        finding["rule"],
        finding["source"],
        finding["method"],
        finding["status"],
        finding["severity"],
    )


def _counts(stderr: str) -> tuple[str, str]:
    read = stderr.split(" of them read by the audit")[0].rsplit(", ", 1)[1]
    kept = stderr.split("a sample of ")[1].split(" ")[0]
    return read, kept
