"""The hot path in instructions: repeatable where microseconds are not.

Wall-clock figures for the hot path move by a microsecond or more from run to
run on a shared VM (``overhead.py`` reports them anyway). ``valgrind
--tool=callgrind`` counts the instructions the CPU executes instead, which is
the same for the same code whatever else the machine is doing.

Each variant's ASGI app is awaited directly in a loop, as in ``overhead.py``'s
in-process part. It runs twice under callgrind, with ``--requests`` requests
more the second time; the difference, divided by ``--requests``, is the
instructions per request, free of start-up and imports.

- ``bare``, ``noop``: as in ``overhead.py``.
- ``recorder``: ``RedirectRecorder(record="all")`` with the writer's own ``submit``
  (counter increment and queue append) and no writer thread: the harness empties
  the queue every 500 requests, which stands for the writer thread taking the
  captures.
- ``redirects``: ``record="redirects"`` on the same mix (its table of recent targets
  in a temporary directory), the queue emptied likewise.
- ``redirects/``: ``record="redirects"`` with every request to ``/`` (nothing is a
  redirect, so nothing is kept: the shared yardstick's case).

Usage: ``python -m benchmarks.instructions [--requests N]`` (needs valgrind;
about a minute per variant, two variants at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from auditor.record.middleware import RedirectRecorder  # noqa: E402
from auditor.record.writer import Writer  # noqa: E402
from benchmarks import apps  # noqa: E402
from benchmarks.inprocess import _receive, _send, scope_templates  # noqa: E402

VARIANTS = ("bare", "noop", "recorder", "redirects", "redirects/")
WARM_UP = 2000
CLEAR_EVERY = 500


class _QueueOnly(Writer):
    """``Writer.submit`` and ``skip`` as they are, without the writer thread."""

    def __init__(self, real: Any) -> None:  # no super().__init__: nothing starts
        self.db_path = real.db_path
        self.options = real.options
        self._queue = deque()
        self._limit = 1 << 30
        self._queued = memoryview(bytearray(8)).cast("Q")
        self.dropped_queue_full = 0
        self.dropped_unreadable = 0
        self.rows_skipped = 0
        self._wake = threading.Event()  # set at WAKE_AT captures, as the writer's is
        self._builder = None  # as before the thread opened the database: nothing is built


def _app(variant: str) -> Any:
    if variant in ("recorder", "redirects", "redirects/"):
        record = "all" if variant == "recorder" else "redirects"
        db = Path(tempfile.mkdtemp(prefix="instructions-")) / "traffic.db"
        rec = RedirectRecorder(apps.bare_app(), db_path=db, record=record)
        real = rec.writer
        rec.writer = _QueueOnly(real)
        real.close()  # its thread would wake every flush interval
        return rec
    return apps.build(variant)


async def _drive(app: Any, n: int, variant: str = "") -> None:
    templates = scope_templates()
    if variant == "redirects/":
        templates = templates[:1]
    k = len(templates)
    queue = getattr(getattr(app, "writer", None), "_queue", None)
    for i in range(n):
        await app(dict(templates[i % k]), _receive, _send)
        if queue is not None and i % CLEAR_EVERY == 0:
            queue.clear()


def _count(variant: str, n: int) -> int:
    """Instructions of one whole run of ``n`` requests (plus start-up), under callgrind."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    cmd += [sys.executable, "-m", "benchmarks.instructions", "--run", variant, str(n)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stderr
    found = re.search(r"Collected : (\d+)", out)
    if not found:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{out[-2000:]}")
    return int(found.group(1))


def _per_request(variant: str, requests: int) -> float:
    return (_count(variant, WARM_UP + requests) - _count(variant, WARM_UP)) / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests counted")
    parser.add_argument("--run", nargs=2, metavar=("VARIANT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:  # inside valgrind
        asyncio.run(_drive(_app(args.run[0]), int(args.run[1]), args.run[0]))
        return 0
    if not shutil.which("valgrind"):
        sys.exit("instructions.py: valgrind is not installed (apt-get install valgrind)")
    with ThreadPoolExecutor(max_workers=2) as pool:
        per_request = pool.map(lambda v: _per_request(v, args.requests), VARIANTS)
        counts = dict(zip(VARIANTS, per_request, strict=True))
    print(f"instructions per request, {args.requests} requests (1 in 10 a 302; redirects/:"
          " all to /), callgrind:")  # fmt: skip
    for variant, count in counts.items():
        print(
            f"  {variant:9} {count:9,.0f}  {count - counts['bare']:+8,.0f} vs bare  "
            f"{count - counts['noop']:+8,.0f} vs noop"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
