"""What redaction costs the writer: CPU microseconds per row built.

``RowBuilder.build_portable`` runs once per request in the writer thread (a URL
seen before comes from its cache). This builds rows from the recorder's tuples, for
URLs like most traffic (nothing that could be a secret: the cheap check says so
and the URL is left as it is) and for URLs that carry secrets (the slow path
parses them), and prints the median CPU time per row. Run it on two checkouts
to compare before and after a change; ``--json`` prints machine-readable figures.

Usage: ``python -m benchmarks.redaction [--rows N] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.record.rows import RowBuilder
from auditor.urls import TrustedProxies

TOKEN = "Xq3vL9mZt2Rk8WbN4cYp7Hd1Fs6Gj0Ae5Ui"  # 36 random base64url characters
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

# (label, path, query, status, Location or None, route template or None)
TYPICAL = [
    ("root", "/", "", 200, None, None),
    ("api list", "/api/v1/orders", "page=2&sort=desc", 200, None, "/api/v1/orders"),
    ("id", "/users/42/profile", "", 200, None, "/users/{user_id}/profile"),
    ("slug", "/blog/my-first-post", "", 200, None, "/blog/{slug}"),
    ("date", "/orders/2026-12-05", "", 200, None, None),
    ("uuid", "/items/3f2a9c1e-8b7d-4e6f-a5c3-1d2e3f4a5b6c", "", 200, None, None),
    ("asset", "/static/js/app.min.js", "v=3", 200, None, None),
    ("redirect", "/old", "", 301, "/new", None),
    ("login redirect", "/account", "", 302, "/login?next=/account", None),
]
SECRETS = [
    ("query name", "/callback", f"code={TOKEN}&state=ok", 200, None, None),
    ("nested", "/login", f"next=/x%3Ftoken%3D{TOKEN}", 200, None, None),
    ("path token", f"/users/{TOKEN}/feed.ics", "", 200, None, None),
    ("reset link", f"/reset/MQ/{TOKEN[:6]}-{TOKEN[6:26].lower()}/", "", 200, None, None),
    ("jwt segment", f"/magic/{JWT}", "", 302, "/home", None),
    (
        "redirect to token",
        "/invite",
        "",
        302,
        f"https://app.example.test/invite/{TOKEN}?ref=mail",
        None,
    ),
]


def item(path: str, query: str, status: int, location: str | None, route: str | None) -> tuple:
    scope = (
        "GET",
        "http",
        ("127.0.0.1", 8000),
        ("127.0.0.1", 50000),
        path,
        path.encode(),
        query.encode(),
        [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"curl/8.5.0"), (b"accept", b"*/*")],
        "1.1",
    )
    headers = [(b"content-length", b"0")]
    if location is not None:
        headers.append((b"location", location.encode()))
    return (scope, route, 1_700_000_000.0, 1_700_000_000.001, status, headers, 0, True, None)


def cpu_us(builder: RowBuilder, items: list[tuple], rows: int, repeat: int) -> float:
    """Median CPU microseconds per row, building ``rows`` rows cycling through ``items``."""
    batch = (items * (rows // len(items) + 1))[:rows]
    build = builder.build_portable
    results = []
    for _ in range(repeat):
        t0 = time.thread_time_ns()
        for one in batch:
            build(one)
        results.append((time.thread_time_ns() - t0) / rows / 1000)
    return statistics.median(results)


def measure(rows: int, repeat: int) -> dict[str, Any]:
    builder = RowBuilder(b"k" * 32, "bench:1", TrustedProxies(()), False)
    out: dict[str, Any] = {}
    for name, cases in (("typical", TYPICAL), ("secrets", SECRETS)):
        items = [item(*case[1:]) for case in cases]
        builder.build_portable(items[0])  # warm caches (keyed hashes, compiled patterns)
        out[f"{name}: mixed, per row"] = cpu_us(builder, items, rows, repeat)
        for case, one in zip(cases, items, strict=True):
            out[f"{name}: {case[0]}"] = cpu_us(builder, [one], rows // 4, repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.rows, args.repeat)
    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in figures.items()}))
        return
    for label, value in figures.items():
        print(f"{label:<32} {value:6.2f} us/row")


if __name__ == "__main__":
    main()
