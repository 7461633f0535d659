"""Time the whole audit (linking, chains, every rule, storing) on generated traffic.

    python -m benchmarks.audit_scale [100000 300000 1000000]

Each size runs in a fresh child process and the traffic is generated in yet another,
so peak memory (ru_maxrss) is the audit's own.
Target: at most 10 s and 1 GB at 1M requests.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (100_000, 300_000, 1_000_000)


def measure(n: int, directory: Path) -> dict[str, float]:
    from auditor import audit

    db = directory / f"traffic-{n}.db"
    # generate in another process so the peak memory measured here is the audit's
    code = f"from benchmarks.generate_traffic import generate; generate({str(db)!r}, {n}, seed=0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    clock = time.perf_counter()
    result = audit(db)
    seconds = time.perf_counter() - clock
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "requests": n,
        "seconds": round(seconds, 2),
        "peak_mb": round(peak_mb, 1),
        "peak_mb_before_audit": round(before / 1024, 1),
        "findings": len(result.findings),
        "chains": result.chains,
        "rule_errors": len(result.rule_errors),
    }


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(int(argv[1]), Path(tmp))))
        return
    for n in [int(a) for a in argv] or SIZES:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.audit_scale", "--one", str(n)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(
            f"{row['requests']:>9,} requests: audit {row['seconds']:6.2f} s, "
            f"peak RSS {row['peak_mb']:7.1f} MB, {row['chains']} chains, "
            f"{row['findings']} findings, {row['rule_errors']} rule errors"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
