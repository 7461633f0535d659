"""Time rendering 20,000 findings in every output format, against auditing traffic.

    python -m benchmarks.render_scale [FINDINGS] [--audit-requests N]

The findings are inserted straight into a traffic database (``make_findings_db``, also
the tests' fixture), then rendered in-process and through ``redirect-auditor audit
--stored`` piped. The audit of generated traffic (``--audit-requests``, default 300,000)
is timed too: rendering its findings, even many more of them, must take no longer.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from auditor.store.schema import connect, create_private_file, ensure_schema

RULES = (
    ("error", "method-change-on-move", "POST", 301),
    ("error", "redirect-loop", "GET", 302),
    ("warning", "redirect-chain", "GET", 301),
    ("warning", "form-reposted-by-307", "POST", 307),
    ("info", "slash-redirect", "GET", 308),
    ("info", "legacy-302", "GET", 302),
)
CLIENTS = ("Chromium", "Firefox", "httpx", "requests", "curl", "urllib")


def make_findings_db(path: Path, count: int = 20_000, seed: int = 0) -> Path:
    """A traffic database holding one stored audit run with ``count`` findings (about
    10% errors, 30% warnings, 60% info), inserted directly: no traffic, no audit."""
    rng = random.Random(seed)
    create_private_file(path)
    conn = connect(path)
    ensure_schema(conn)
    rows = []
    for i in range(count):
        share = i / count
        severity, rule, method, status = RULES[
            (0 if share < 0.1 else 2 if share < 0.4 else 4) + rng.randrange(2)
        ]
        hits = rng.randrange(1, 5000)
        clients = [
            {"client": name, "requests": rng.randrange(1, hits + 1), "followed": 1}
            for name in rng.sample(CLIENTS, rng.randrange(1, 4))
        ]
        source = f"/shop/s{i % 97}/section-{i}/{{id}}"
        rows.append(
            (
                rule,
                severity,
                ("error", "warning", "info").index(severity),
                rule.replace("-", " ").capitalize(),
                f"{hits} requests to {method} {source} were answered {status} → "
                f"{source}/next; followed by {', '.join(c['client'] for c in clients)}.",
                f"Answer {method} {source} with the status that says what is meant.",
                "RFC 9110 §15.4",
                method,
                status,
                source,
                f"https://shop.example.com{source}/next",
                hits,
                1_717_000_000.0 + i,
                1_717_100_000.0 + i,
                json.dumps({"clients": clients, "framework": "starlette"}),
            )
        )
    with conn:
        cursor = conn.execute(
            "insert into audit_runs (started_at, duration_s, options, databases, rows_scanned, "
            "redirects_scanned, chains, errors, warnings, infos, rows_dropped, version) "
            "values (?, 1.0, '{}', ?, ?, ?, 0, ?, ?, ?, 0, 'bench')",
            (
                time.time(),
                json.dumps([str(path)]),
                count * 10,
                count * 2,
                sum(r[1] == "error" for r in rows),
                sum(r[1] == "warning" for r in rows),
                sum(r[1] == "info" for r in rows),
            ),
        )
        conn.executemany(
            "insert into findings (rule, severity, severity_rank, title, message, "
            "recommendation, spec, method, status, source, target, hits, first_seen, "
            "last_seen, evidence, audit_run_id) "
            f"values ({', '.join('?' * 15)}, {cursor.lastrowid})",
            rows,
        )
    conn.close()
    return path


def _timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


def render_times(db: Path) -> dict[str, float]:
    from rich.console import Console

    from auditor.analysis.report import (
        stored_result,
        to_json,
        to_lines,
        to_markdown,
        to_rich,
    )

    times: dict[str, float] = {}
    loaded: list[object] = []
    times["load"] = _timed(lambda: loaded.append(stored_result(db)))
    result = loaded[0]
    assert result is not None
    console = Console(file=io.StringIO(), width=120, force_terminal=True)
    times["text (lines)"] = _timed(lambda: "\n".join(to_lines([result])))  # type: ignore[list-item]
    times["text (terminal, 7)"] = _timed(lambda: console.print(to_rich(result, 7)))  # type: ignore[arg-type]
    times["table (all)"] = _timed(lambda: console.print(to_rich(result, 0)))  # type: ignore[arg-type]
    times["markdown"] = _timed(lambda: to_markdown([result], "error"))  # type: ignore[list-item]
    times["json"] = _timed(lambda: json.dumps(to_json([result], None)))  # type: ignore[list-item]
    for name, args in (("cli text, piped", []), ("cli markdown", ["--format", "markdown"])):
        script = Path(sys.executable).with_name("redirect-auditor")
        command = [str(script), "audit", str(db), "--stored", *args]
        times[name] = _timed(lambda c=command: subprocess.run(c, capture_output=True, check=True))
    return times


def audit_time(requests: int, directory: Path) -> tuple[float, int]:
    from auditor import audit
    from benchmarks.generate_traffic import generate

    db = directory / "traffic.db"
    generate(db, requests, seed=0)
    started = time.perf_counter()
    result = audit(db)
    return time.perf_counter() - started, len(result.findings)


def main(argv: list[str]) -> None:
    count, requests = 20_000, 300_000
    if "--audit-requests" in argv:
        at = argv.index("--audit-requests")
        requests = int(argv[at + 1])
        del argv[at : at + 2]
    if argv:
        count = int(argv[0])
    with tempfile.TemporaryDirectory() as tmp:
        db = make_findings_db(Path(tmp) / "findings.db", count)
        times = render_times(db)
        audit_s, found = audit_time(requests, Path(tmp)) if requests else (0.0, 0)
    for name, seconds in times.items():
        print(f"render {count:,} findings, {name:<18} {seconds:6.3f} s")
    if requests:
        print(f"audit {requests:,} requests ({found:,} findings):       {audit_s:6.3f} s")
        slowest = max(v for k, v in times.items() if k != "table (all)")
        verdict = "ok" if slowest <= audit_s else "SLOWER THAN THE AUDIT"
        print(f"slowest default rendering {slowest:.3f} s vs audit {audit_s:.3f} s: {verdict}")


if __name__ == "__main__":
    main(sys.argv[1:])
