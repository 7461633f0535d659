"""Real servers for tests: uvicorn on 127.0.0.1 in a thread or a subprocess,
and polling with a deadline instead of sleeps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
        last = condition()
    return last


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, **config: Any) -> Iterator[str]:
    """Run ``app`` under real uvicorn on 127.0.0.1 in a thread; yield its base URL."""
    config.setdefault("log_level", "warning")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _ready(url: str) -> bool:
    try:
        httpx.get(url, timeout=1.0)
    except httpx.TransportError:
        return False
    return True


@contextmanager
def serve_in_process(
    args: list[str],
    port: int,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> Iterator[str]:
    """Run a server command (e.g. ``redirect-auditor run ...``) until it answers on ``port``."""
    with serve_processes([(args, port)], env=env, cwd=cwd, timeout=timeout) as [url]:
        yield url


def cli_command(*args: str) -> list[str]:
    """The installed console script, run from this interpreter's environment."""
    return [str(Path(sys.executable).with_name("redirect-auditor")), *args]


def fetch_rows(db_path: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a query on a traffic database as dicts (an empty list while the file is
    absent), after the recorder's batches are unpacked into ``requests``."""
    import sqlite3

    from auditor.store.journal import unpack_file

    if not Path(db_path).exists():
        return []
    try:
        unpack_file(db_path)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def raw_request(base_url: str, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes over a socket (what httpx refuses to send) and read until close."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def serve_processes(
    commands: list[tuple[list[str], int]],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 45.0,
) -> Iterator[list[str]]:
    """Run several server commands together: yields their base URLs once all answer,
    and stops them in order (first command first)."""
    procs = [
        subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args, _ in commands
    ]
    urls = [f"http://127.0.0.1:{port}" for _, port in commands]
    try:
        deadline = time.monotonic() + timeout
        for proc, url in zip(procs, urls, strict=True):
            while not _ready(url):
                if proc.poll() is not None:
                    output = proc.stdout.read() if proc.stdout else ""
                    raise AssertionError(f"server exited with {proc.returncode}: {output}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"server did not answer on {url} within {timeout}s")
                time.sleep(0.05)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
