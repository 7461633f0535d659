"""In-process helpers for ``breakdown.py`` and ``instructions.py``: the ASGI app awaited
directly in a loop with the scopes uvicorn hands it for ``overhead.py``'s wrk mix."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from benchmarks import apps

REDIRECT_EVERY = 10  # one request in ten goes to the redirect route


def scope_templates() -> list[dict[str, Any]]:
    """What uvicorn hands the app for wrk's requests: nine ``/`` then one ``/old``."""

    def scope(path: str) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50312),
            "scheme": "http",
            "method": "GET",
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000")],
            "state": {},
        }

    return [scope("/old" if n == REDIRECT_EVERY - 1 else "/") for n in range(REDIRECT_EVERY)]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: MutableMapping[str, Any]) -> None:
    return None


async def drive(
    app: Any,
    n: int,
    templates: list[dict[str, Any]],
    every: int = 0,
    between: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Await the app ``n`` times; (wall ns, this thread's CPU ns) per request.

    With ``between``, it is called untimed after every ``every`` requests.
    """
    k = len(templates)
    wall = cpu = 0
    chunk = every if between else n
    for start in range(0, n, chunk):
        wall0, cpu0 = time.perf_counter_ns(), time.thread_time_ns()
        for i in range(start, min(start + chunk, n)):
            await app(dict(templates[i % k]), _receive, _send)
        wall += time.perf_counter_ns() - wall0
        cpu += time.thread_time_ns() - cpu0
        if between:
            between()
    return wall / n, cpu / n


class Collector:
    """Stands in for the writer: keeps the captured exchanges."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def submit(self, exchange: Any) -> None:
        self.items.append(exchange)


def capture(tmp: Path, n: int) -> list[Any]:
    """``n`` real captured exchanges (nine 200s, one 302 in ten) from the recorder."""
    rec = apps.recorder_app(str(tmp / "capture.db"), flush_interval=3600)
    collector = Collector()
    rec.writer = collector  # type: ignore[assignment]

    async def main() -> None:
        await drive(rec, n, scope_templates())

    asyncio.run(main())
    return collector.items
