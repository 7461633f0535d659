"""Time the whole audit (linking, chains, every rule, storing) on generated traffic,
and check its findings against the problems the generator planted.

    python -m benchmarks.audit_scale [100000 300000 1000000]

Each size runs in a fresh child process and the traffic is generated in yet another,
so peak memory (ru_maxrss) is the audit's own.
Target: at most 10 s and 1 GB at 1M requests.

The generator records every problem its walks plant (``GeneratedTraffic.planted_places``:
route template, method, status, problem id). Printed per size: the planted
(route, problem) pairs and places, the findings, the distinct places and pairs they
name, pairs found but not planted and planted but not found, and OK when
findings <= planted places, else OVER. A finding is one problem at one place (route,
method, status, problem), so one problem at two statuses of a route (a 307 and a 308
slash redirect) is two findings of one (route, problem) pair: findings beyond the
planted places are duplicates.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = (100_000, 300_000, 1_000_000)


def measure(n: int, directory: Path) -> dict[str, Any]:
    from auditor import audit

    db = directory / f"traffic-{n}.db"
    planted_json = directory / f"planted-{n}.json"
    # generate in another process so the peak memory measured here is the audit's
    code = (
        "import json; from benchmarks.generate_traffic import generate; "
        f"t = generate({str(db)!r}, {n}, seed=0); "
        f"json.dump(sorted(t.planted_places), open({str(planted_json)!r}, 'w'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    load_before = os.getloadavg()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    clock = time.perf_counter()
    result = audit(db)
    seconds = time.perf_counter() - clock
    after = resource.getrusage(resource.RUSAGE_SELF)
    # CPU of all the audit's threads: less sensitive than wall time to a busy machine
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    load_after = os.getloadavg()
    # read after the audit, so it is not part of the audit's peak
    planted_places = {tuple(p) for p in json.loads(planted_json.read_text())}
    planted_pairs = {(route, problem) for route, _, _, problem in planted_places}
    found_places = {(f.source, f.method, f.status, f.rule) for f in result.findings}
    found_pairs = {(f.source, f.rule) for f in result.findings}
    return {
        "requests": n,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_mb": round(after.ru_maxrss / 1024, 1),
        "peak_mb_before_audit": round(usage.ru_maxrss / 1024, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "findings": len(result.findings),
        "chains": result.chains,
        "rule_errors": len(result.rule_errors),
        "planted_pairs": len(planted_pairs),
        "planted_places": len(planted_places),
        "found_pairs": len(found_pairs),
        "found_places": len(found_places),
        "pairs_not_planted": sorted(found_pairs - planted_pairs),
        "pairs_not_found": sorted(planted_pairs - found_pairs),
    }


def report(row: dict[str, Any]) -> None:
    load = "/".join(f"{x:.2f}" for x in row["load_before"])
    print(
        f"{row['requests']:>9,} requests: audit {row['seconds']:6.2f} s "
        f"(CPU {row['cpu_seconds']:.2f} s), "
        f"peak RSS {row['peak_mb']:7.1f} MB, {row['chains']} chains, "
        f"{row['findings']} findings, {row['rule_errors']} rule errors "
        f"(load average {load} before the audit)"
    )
    findings, pairs, places = row["findings"], row["planted_pairs"], row["planted_places"]
    print(
        f"{'':>11}planted: {pairs} (route, problem) pairs at {places} places; "
        f"found: {row['found_pairs']} pairs at {row['found_places']} places "
        f"({findings - row['found_places']} findings repeat a place); "
        f"{len(row['pairs_not_planted'])} pairs found but not planted, "
        f"{len(row['pairs_not_found'])} planted but not found"
    )
    for label, key in (
        ("found, not planted", "pairs_not_planted"),
        ("not found", "pairs_not_found"),
    ):
        for route, problem in row[key][:5]:
            print(f"{'':>13}{label}: {problem} at {route}")
    # A finding is one problem at one place (route template, method, status, problem):
    # one route may rightly show one problem at two places (GET 307 and POST 307).
    verdict = "OK" if findings <= places else f"OVER by {findings - places}"
    print(f"{'':>11}findings {findings} <= planted places {places}: {verdict}")
    verdict = "OK" if findings <= places else f"OVER by {findings - places}"
    print(f"{'':>11}findings {findings} <= planted places {places}: {verdict}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", type=int, nargs="*", help=f"requests (default: {SIZES})")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(args.sizes[0], Path(tmp))))
        return
    for n in args.sizes or SIZES:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.audit_scale", "--one", str(n)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        report(json.loads(out.strip().splitlines()[-1]))
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
