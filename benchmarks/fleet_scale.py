"""Time the fleet audit (``redirect-auditor audit DIR``) on 1M..100M requests over many
hosts' Parquet shards, and ``export`` per million rows.

    python -m benchmarks.fleet_scale --sizes 1M,10M,100M --hosts 20 --work /tmp/fleet-bench

Data (``benchmarks/fleet_data.py``): a base of ``--base`` requests is generated once by
``generate_traffic`` (cached in ``--work`` with the problems it planted), exported once
with ``redirect-auditor export`` (timed: seconds per million rows), and each size is K
copies of that export (K = size / base), with their own clients, interleaved in time,
spread over ``--hosts`` hosts by a per-request hash, in export's layout and shard names.

Each audit runs as a child process in a session of its own: wall time, CPU, and peak
memory of its process tree (the larger of ``wait4``'s maximum RSS and the tree's RSS
summed every 0.2 s). Its JSON output gives the findings; a size is ``same`` when the set
of (place, method, status, problem) it found equals the base's planted places (copies
do not move places; hits scale), and ``expected`` when it equals the planted places plus
the unfollowed-redirect places that K times the hits lift over ``unfollowed_min_hits``
(at 1M both are the planted set).

Targets (issue 15): 100M requests <= 10 minutes and <= 4 GB peak on this 2-core machine,
time growing near-linearly. ``--json OUT`` saves every figure. Each size's shards and
report are removed after its audit unless ``--keep`` (the base is kept: it is the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.fleet_data import (
    Run,
    auditor_command,
    base_traffic,
    check_shards,
    expected_places,
    export_base,
    remove,
    replicate,
    run_measured,
    unfollowed_hits,
)

Place = tuple[str, str, int, str]  # (route template, method, status, problem id)
TARGET_100M_S = 600.0
TARGET_100M_MB = 4096.0
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_size(text: str) -> int:
    """``1M`` -> 1_000_000, ``500k`` -> 500_000, ``2000`` -> 2000."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: a size like 1M, 500k or 2000000")
    number, unit = match.groups()
    scale = {"": 1, "k": 1_000, "m": 1_000_000}[unit.lower()]
    return round(float(number) * scale)


def size_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def audit(data: Path, report: Path, timeout: float, json_out: Path) -> tuple[Run, Any]:
    """Audit ``data`` in a child process; (the run, its parsed JSON or None)."""
    remove(report)
    command = [auditor_command(), "audit", str(data), "--format", "json", "--limit", "0"]
    command += ["--report", str(report)]
    run = run_measured(command, timeout=timeout, stdout=json_out)
    try:
        parsed = json.loads(json_out.read_text()) if json_out.stat().st_size else None
    except (OSError, ValueError):
        parsed = None
    return run, parsed


def found_places(output: Any) -> tuple[list[dict[str, Any]], set[Place]]:
    findings = [f for db in output.get("databases", []) for f in db.get("findings", [])]
    return findings, {(f["source"], f["method"], f["status"], f["rule"]) for f in findings}


def measure_size(
    n: int, args: argparse.Namespace, exported: Path, planted: set[Place], unfollowed: Any
) -> dict[str, Any]:
    copies = n // args.base
    label = size_label(n)
    data = args.work / f"fleet-{label}-{args.hosts}hosts"
    print(f"{label}: making {copies} copies over {args.hosts} hosts in {data}", flush=True)
    made = replicate(exported, data, copies, args.hosts, threads=args.threads)
    check_shards(data)
    row: dict[str, Any] = {
        "size": label,
        "rows": made.rows,
        "copies": copies,
        "hosts": args.hosts,
        "shards": made.files,
        "data_mb": round(made.bytes / 2**20, 1),
        "generate_s": round(made.seconds, 1),
        "generate_cached": made.cached,
    }
    cached = " (cached)" if made.cached else ""
    print(
        f"{label}: {made.rows:,} rows in {made.files} shards, {row['data_mb']:,.0f} MB, "
        f"generated in {made.seconds:.1f} s{cached}; auditing (timeout {args.timeout:.0f} s)",
        flush=True,
    )
    report = args.work / f"report-{label}.db"
    json_out = args.work / f"audit-{label}.json"
    run, output = audit(data, report, args.timeout, json_out)
    row.update(
        {
            "audit_s": round(run.seconds, 1),
            "audit_cpu_s": round(run.cpu_s, 1),
            "peak_mb": round(run.peak_mb, 1),
            "maxrss_mb": round(run.maxrss_mb, 1),
            "tree_sampled_mb": round(run.tree_mb, 1),
            "exit": run.returncode,
            "timed_out": run.timed_out,
            "stderr_tail": run.stderr.strip().splitlines()[-3:],
        }
    )
    if output is not None:
        findings, places = found_places(output)
        expected = expected_places(planted, unfollowed, copies)
        row.update(
            {
                "rows_scanned": sum(db.get("rows_scanned", 0) for db in output["databases"]),
                "findings": len(findings),
                "places": len(places),
                "hits": sum(f.get("hits") or 0 for f in findings),
                "planted": len(planted),
                "same": places == planted,
                "expected_places": len(expected),
                "expected": places == expected,
                "not_expected": sorted(places - expected)[:10],
                "missed": sorted(expected - places)[:10],
                "missed_count": len(expected - places),
                "not_expected_count": len(places - expected),
            }
        )
    if not args.keep:
        for path in (data, report, Path(f"{report}-wal"), Path(f"{report}-shm"), json_out):
            remove(path)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'size':>5} {'rows':>12} {'shards':>6} {'gen s':>7} {'audit s':>8} "
        f"{'s/M':>6} {'CPU s':>7} {'peak MB':>8} {'findings':>8} {'hits':>10} same expected"
    )
    print(header)
    for r in rows:
        if "findings" in r:
            found = f"{r['findings']:>8,} {r['hits']:>10,} {_yes(r['same']):>4} "
            found += f"{_yes(r['expected']):>8}"
        else:
            why = "timed out" if r.get("timed_out") else f"exit {r.get('exit')}"
            found = f"{'-':>8} {'-':>10} {why}"
        per_m = r["audit_s"] / (r["rows"] / 1e6) if r["rows"] else 0.0
        print(
            f"{r['size']:>5} {r['rows']:>12,} {r['shards']:>6} {r['generate_s']:>7.1f} "
            f"{r['audit_s']:>8.1f} {per_m:>6.1f} {r['audit_cpu_s']:>7.1f} "
            f"{r['peak_mb']:>8,.0f} {found}"
        )
    for r in rows:
        for key, label in (
            ("missed", "expected, not found"),
            ("not_expected", "found, unexpected"),
        ):
            for place in r.get(key, [])[:3]:
                print(f"  {r['size']}: {label}: {place}")
        if r.get("exit") not in (0, 1):
            for line in r.get("stderr_tail", []):
                print(f"  {r['size']} stderr: {line}")
    big = [r for r in rows if r["rows"] >= 100_000_000]
    for r in big:
        ok = (
            not r.get("timed_out")
            and r["audit_s"] <= TARGET_100M_S
            and r["peak_mb"] <= TARGET_100M_MB
        )
        print(
            f"target at {r['size']}: <= {TARGET_100M_S:.0f} s and <= {TARGET_100M_MB:.0f} MB: "
            f"{'met' if ok else 'NOT met'}"
        )


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="1M,10M,100M",
        help="comma-separated request counts, multiples of --base (default 1M,10M,100M)",
    )
    parser.add_argument("--hosts", type=int, default=20, help="host partitions (default 20)")
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/fleet-bench"), help="work directory (cache)"
    )
    parser.add_argument(
        "--base", type=parse_size, default=1_000_000, help="generated base (default 1M)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per audit (default 1800)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="threads making the data (default 2)"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="save the results here")
    parser.add_argument(
        "--keep", action="store_true", help="keep each size's shards, report and JSON"
    )
    parser.add_argument("--no-audit", action="store_true", help="make the data only")
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    bad = [s for s in sizes if s < args.base or s % args.base]
    if bad:
        parser.error(f"sizes must be multiples of --base {args.base}: {bad}")
    args.work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.work).free
    need = max(sizes) / 1e6 * 60 * 2**20  # about 55 MB a million rows, with room
    if free < need:
        parser.error(f"{args.work}: {free / 2**30:.1f} GB free, {max(sizes):,} rows need more")

    base = base_traffic(args.work, args.base, args.seed)
    note = "cached" if base.cached else f"{base.generate_s:.1f} s"
    print(
        f"base: {base.requests:,} requests ({note}) in {base.db}, "
        f"{len(base.planted)} planted places",
        flush=True,
    )
    exported = export_base(base, args.work / f"base-{args.base}-seed{args.seed}-parquet")
    per_m = exported.seconds / (exported.rows / 1e6)
    print(
        f"export: {exported.rows:,} rows into {exported.files} files in {exported.seconds:.1f} s "
        f"({per_m:.1f} s per million rows), peak {exported.peak_mb:.0f} MB",
        flush=True,
    )
    unfollowed = unfollowed_hits(exported.out)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average": os.getloadavg(),
        "base": {
            "requests": base.requests,
            "seed": args.seed,
            "generate_s": round(base.generate_s, 1),
            "cached": base.cached,
            "planted_places": len(base.planted),
        },
        "export": {
            "rows": exported.rows,
            "files": exported.files,
            "seconds": round(exported.seconds, 2),
            "s_per_million": round(per_m, 2),
            "peak_mb": round(exported.peak_mb, 1),
        },
        "sizes": [],
    }
    for n in sizes:
        if args.no_audit:
            made = replicate(
                exported.out,
                args.work / f"fleet-{size_label(n)}-{args.hosts}hosts",
                n // args.base,
                args.hosts,
                threads=args.threads,
            )
            print(f"{size_label(n)}: {made.rows:,} rows, {made.files} shards, {made.seconds:.1f} s")
            results["sizes"].append({"size": size_label(n), "generate_s": round(made.seconds, 1)})
            if not args.keep:
                remove(made.out)
            continue
        row = measure_size(n, args, exported.out, base.planted, unfollowed)
        results["sizes"].append(row)
        print_table([row])
        print(flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=list))
    if not args.no_audit:
        print(f"export: {per_m:.1f} s per million rows")
        print_table(results["sizes"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=list))
        print(f"results: {args.json}")


if __name__ == "__main__":
    main(sys.argv[1:])
