"""How long route-template inference takes over many distinct paths.

Not a test. Each shape below is N distinct paths (default 200,000); the figures are the
best wall time and the best CPU time of this thread over a few runs of
``infer_templates`` (CPU time is less disturbed by other work on the machine).

Usage: ``python -m benchmarks.templates_speed [--paths N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.analysis.templates import infer_templates


def _words(rng: random.Random, n: int) -> str:
    return "-".join(
        rng.choice(["red", "blue", "fast", "post", "news", "cat", "how", "to"]) for _ in range(n)
    )


def mixed(n: int, rng: random.Random) -> list[str]:
    """Ids, UUIDs, hex, dates, slugs (some nested), static pages and scanner noise."""
    makers: list[Callable[[int], str]] = [
        lambda i: f"/users/{i}/profile",
        lambda i: f"/api/v2/orders/{i}/",
        lambda i: f"/files/{uuid.UUID(int=rng.getrandbits(128))}",
        lambda i: f"/commit/{rng.getrandbits(160):040x}/",
        lambda i: f"/archive/2026-{i % 12 + 1:02d}-{i % 28 + 1:02d}/item-{i}",
        lambda i: f"/blog/{_words(rng, 3)}-{i}/",
        lambda i: f"/blog/{_words(rng, 2)}-{i}/edit/",
        lambda i: f"/shop/cat-{i % 40}/{_words(rng, 2)}-{i}",
        lambda i: f"/accounts/{rng.choice(['login', 'logout', 'signup', 'email'])}/",
        lambda i: f"/wp-{_words(rng, 1)}{i}/{_words(rng, 2)}.php",
    ]
    paths: set[str] = set()
    i = 0
    while len(paths) < n:
        paths.add(makers[i % len(makers)](i))
        i += 1
    return sorted(paths)


def slugs(n: int, rng: random.Random) -> list[str]:
    """Worst case: every path stays distinct until the slug pass (one slug route)."""
    return [f"/blog/{_words(rng, 3)}-{i}/" for i in range(n)]


def unique(n: int, rng: random.Random) -> list[str]:
    """No structure at all: nothing collapses, every position is tried over every path."""
    return [f"/{_words(rng, 1)}{i}/{_words(rng, 2)}x{i}/{_words(rng, 1)}y{i}" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, make in (("mixed", mixed), ("slugs", slugs), ("unique", unique)):
        paths = make(args.paths, random.Random(7))
        wall, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.thread_time()
            result = infer_templates(paths)
            wall.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
        print(
            f"{name:7} {len(paths):>8,} paths -> {len(set(result.values())):>7,} templates"
            f"  wall best {min(wall) * 1000:6.0f} ms, worst {max(wall) * 1000:6.0f} ms"
            f"  cpu best {min(cpu) * 1000:6.0f} ms"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
