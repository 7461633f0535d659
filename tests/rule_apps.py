"""Helpers for the rule-family tests: record real traffic through the real
RedirectRecorder under real uvicorn, then run one rule over the database."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from auditor import RedirectRecorder
from auditor.analysis.audit import recorded_framework
from auditor.analysis.rules.base import AuditContext, AuditOptions, Finding
from auditor.record.registry import flush_all
from auditor.store.journal import unpack_file
from tests.servers import serve_in_thread

Endpoint = Callable[[Request], Any]


def raw(status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> Endpoint:
    """An endpoint answering exactly these headers (repeats and odd bytes included)."""
    header_list = list(headers)

    async def endpoint(request: Request) -> Response:
        response = Response(body, status_code=status)
        for name, value in header_list:
            response.raw_headers.append((name.encode("latin-1"), value.encode("latin-1")))
        return response

    return endpoint


@contextmanager
def recording(app: Any, db_path: Path, **uvicorn_config: Any) -> Iterator[str]:
    """Serve ``app`` behind a RedirectRecorder writing ``db_path``; yield the base URL.

    On exit every recorded row is in the database and the writer thread is stopped.
    """
    recorder = RedirectRecorder(app, db_path=db_path)
    try:
        with serve_in_thread(recorder, **uvicorn_config) as base:
            yield base
    finally:
        recorder.writer.close()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl -s, discarding the body; stdout is whatever -w asked for."""
    return subprocess.run(
        ["curl", "-s", "-o", "/dev/null", *args], capture_output=True, text=True, timeout=30
    )


def run_rule(
    db_path: Path, check: Callable[[AuditContext], Iterable[Finding]], **options: Any
) -> list[Finding]:
    """Every finding of one rule over the recorded database."""
    flush_all()
    unpack_file(db_path)  # the recorder's batches into requests, where the rules read
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        framework = recorded_framework(conn)
        return list(check(AuditContext(conn, AuditOptions(**options), framework=framework)))
    finally:
        conn.close()


def by_source(findings: list[Finding]) -> dict[str, list[Finding]]:
    """Findings keyed by source (route template or path)."""
    result: dict[str, list[Finding]] = {}
    for finding in findings:
        result.setdefault(finding.source, []).append(finding)
    return result
