"""The reference recorder ``overhead.py`` holds ours against: the least a recorder can do.

A deque on the request path, one thread, ``executemany`` of 8 columns into SQLite WAL
every 50 ms (the shape of ``ideal_recorder.py`` in the shared bench).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from typing import Any

COLUMNS = "started_at, duration_ms, method, path, query, status, location, client"
INSERT = f"insert into requests ({COLUMNS}) values (?, ?, ?, ?, ?, ?, ?, ?)"


class ReferenceRecorder:
    def __init__(self, app: Any, db_path: str) -> None:
        self.app, self.db_path, self.queue = app, db_path, deque[tuple[Any, ...]]()
        conn = sqlite3.connect(db_path)
        conn.execute("pragma journal_mode = wal")
        conn.execute(f"create table if not exists requests (id integer primary key, {COLUMNS})")
        conn.close()
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":

            async def flush_at_shutdown(message: Any) -> None:
                if message["type"] == "lifespan.shutdown.complete":
                    self.flush()
                await send(message)

            await self.app(scope, receive, flush_at_shutdown)
            return
        response: list[Any] = [0, None]

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                response[0] = message["status"]
                response[1] = dict(message.get("headers", ())).get(b"location")
            await send(message)

        started = time.time()
        try:
            await self.app(scope, receive, capture)
        finally:
            self.queue.append((started, time.time(), scope, *response))

    def _run(self) -> None:
        conn = sqlite3.connect(self.db_path, check_same_thread=False)
        conn.execute("pragma synchronous = normal")
        while True:
            time.sleep(0.05)
            self.flush(conn)

    def flush(self, conn: sqlite3.Connection | None = None) -> None:
        with self.lock:
            conn = conn or sqlite3.connect(self.db_path)
            items = [self.queue.popleft() for _ in range(len(self.queue))]
            rows = [
                (s, (e - s) * 1000, sc["method"], sc["path"], sc["query_string"].decode("latin-1"),
                 st, loc and loc.decode("latin-1"), (sc.get("client") or ("",))[0])
                for s, e, sc, st, loc in items
            ]  # fmt: skip
            with conn:
                conn.executemany(INSERT, rows)
