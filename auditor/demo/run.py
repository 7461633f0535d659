"""The demo, end to end: serve ``demo.app`` with the recorder, drive traffic, audit.

``run_demo`` is what ``redirect-auditor demo`` runs before it opens Datasette:

1. ``prepare_database``: start from a fresh file; remove a previous demo's
   database (and its -wal/-shm), refuse to touch any other file.
2. ``record_traffic``: uvicorn serves the app, wrapped in ``RedirectRecorder``,
   on a free port of 127.0.0.1 in a thread; the clients of ``demo.traffic``
   send phase 1, the marketing campaign changes, phase 2 follows. Stopping the
   server runs the lifespan shutdown, which flushes the recorder.
3. ``audit_demo``: the real audit with ``redirect-auditor audit``'s default
   options, so ``redirect-auditor audit demo.db`` reports the same findings.
4. ``check_findings``: the stored findings against ``app.PLANTED`` (each
   planted problem once, at its severity, and nothing else) and
   ``app.CORRECT_ROUTES`` (no finding at all).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from auditor.analysis.audit import AuditResult, audit
from auditor.analysis.rules.base import AuditOptions
from auditor.demo.app import CAMPAIGNS, CORRECT_ROUTES, PLANTED, Planted, build_app, start_campaign
from auditor.demo.traffic import (
    Step,
    client_addresses,
    demo_clients,
    phase_steps,
    proxy_address,
)
from auditor.record.middleware import RedirectRecorder
from auditor.store.journal import recorded_rows
from auditor.store.schema import (
    META_TABLE,
    SIDECAR_SUFFIXES,
    SchemaError,
    check_traffic_db,
    connect,
    create_private_file,
    ensure_schema,
    has_meta_key,
)

DEMO_MARKER_KEY = "demo"  # auditor_meta row that marks a database the demo may replace
STARTUP_TIMEOUT = 30.0

# progress(what is happening, steps done, steps in total)
Progress = Callable[[str, int, int], None]


class DemoError(Exception):
    """The demo cannot run (one-line reason)."""


# --- The database ---------------------------------------------------------------------


def is_demo_database(db_path: Path) -> bool:
    """True when the file is a traffic database that the demo created (read-only check)."""
    try:
        check_traffic_db(db_path)
    except SchemaError:
        return False
    return has_meta_key(db_path, DEMO_MARKER_KEY)


def prepare_database(db_path: Path) -> None:
    """Start from a fresh demo database at ``db_path``, marked as the demo's.

    Removes a previous demo database with its -wal/-shm files; raises
    ``DemoError`` rather than delete anything else.
    """
    if db_path.is_dir():
        raise DemoError(f"{db_path}: is a directory; --db takes a SQLite file path")
    if not db_path.absolute().parent.is_dir():
        raise DemoError(f"{db_path}: directory {db_path.absolute().parent} does not exist")
    side_files = [db_path.with_name(db_path.name + suffix) for suffix in SIDECAR_SUFFIXES]
    if db_path.exists():
        if not is_demo_database(db_path):
            try:
                check_traffic_db(db_path)
                kind = "a redirect-auditor database, but not a demo one"
            except SchemaError:
                kind = "not a redirect-auditor database"
            raise DemoError(
                f"{db_path} exists and is {kind}; refusing to delete it (pass another --db)"
            )
        _remove(db_path)
    elif side_files[0].exists():  # a -wal file may hold a lost database's last writes
        raise DemoError(
            f"{side_files[0]} exists without {db_path}; refusing to delete it (pass another --db)"
        )
    for side in side_files:
        _remove(side)
    try:
        create_private_file(db_path)
        conn = connect(db_path)
        try:
            ensure_schema(conn)
            with conn:
                conn.execute(
                    f"insert or replace into {META_TABLE} (key, value) values (?, ?)",
                    (DEMO_MARKER_KEY, "created by `redirect-auditor demo`: replaced on each run"),
                )
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        raise DemoError(f"{db_path}: cannot create the demo database ({exc})") from None


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise DemoError(
            f"{path}: cannot delete the previous demo's file ({exc.strerror})"
        ) from None


# --- The server -----------------------------------------------------------------------


class _ThreadedServer(uvicorn.Server):
    """uvicorn that says when start-up is over, however it ended."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_over = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.startup_over.set()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` under uvicorn on a free port of 127.0.0.1 in a thread; yield its URL.

    Served without ``--proxy-headers`` (that is the shop's mistake). Leaving the
    block stops the server and waits for its lifespan shutdown.
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        proxy_headers=False,
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = _ThreadedServer(config)
    thread = threading.Thread(target=server.run, name="redirect-auditor-demo-app", daemon=True)
    thread.start()
    try:
        server.startup_over.wait(STARTUP_TIMEOUT)
        if not server.started:
            raise DemoError("the demo app did not start under uvicorn")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT)


# --- Traffic --------------------------------------------------------------------------


@dataclass
class TrafficSummary:
    """What ``record_traffic`` did."""

    base_url: str
    addresses: dict[str, str]  # client name -> loopback address it connected from
    requests_sent: int = 0
    rows_recorded: int = 0
    seconds: float = 0.0


def count_rows(db_path: Path) -> int:
    """Requests recorded (unpacked or still in the recorder's batches)."""
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return recorded_rows(conn)
    finally:
        conn.close()


def record_traffic(db_path: Path, progress: Progress | None = None) -> TrafficSummary:
    """Serve the demo app with the recorder on ``db_path`` and send both phases."""
    report = progress or (lambda what, done, total: None)
    started = time.perf_counter()
    app = build_app()
    addresses = client_addresses()
    recorder = RedirectRecorder(app, db_path, trusted_proxies=[proxy_address(addresses)])
    phases = [phase_steps(1), phase_steps(2)]
    total = sum(len(steps) for steps in phases)
    done = 0
    try:
        with serving(recorder) as base_url, demo_clients(base_url, addresses) as clients:
            summary = TrafficSummary(base_url, addresses)
            for phase, steps in enumerate(phases, start=1):
                if phase == 2:
                    start_campaign(app, CAMPAIGNS[1])
                    report(f"campaign is now {CAMPAIGNS[1]!r}", done, total)
                for step in steps:
                    report(_describe(phase, step), done, total)
                    summary.requests_sent += clients[step.client].send(step)
                    done += 1
            report("stopping the app (the recorder flushes)", done, total)
    finally:
        recorder.writer.close()
    summary.rows_recorded = count_rows(db_path)
    summary.seconds = round(time.perf_counter() - started, 2)
    report("traffic recorded", total, total)
    return summary


def _describe(phase: int, step: Step) -> str:
    return f"phase {phase}: {step.client} {step.method} {step.path}"


# --- Audit and the expected result ----------------------------------------------------


def audit_demo(db_path: Path) -> AuditResult:
    """The real audit with ``redirect-auditor audit``'s default options."""
    return audit(db_path, options=AuditOptions())


Place = tuple[str, str, str]  # (rule, method, source)


@dataclass
class Expectations:
    """How the stored findings compare with ``PLANTED`` and ``CORRECT_ROUTES``."""

    found: dict[Place, list[str]] = field(default_factory=dict)  # -> severity of each finding
    missing: list[Planted] = field(default_factory=list)
    repeated: list[tuple[Planted, int]] = field(default_factory=list)  # reported more than once
    wrong_severity: list[tuple[Planted, list[str]]] = field(default_factory=list)
    unplanted: list[Place] = field(default_factory=list)  # findings the app does not plant
    on_correct_routes: list[tuple[str, str]] = field(default_factory=list)  # (rule, route)

    @property
    def met(self) -> bool:
        return not (
            self.missing
            or self.repeated
            or self.wrong_severity
            or self.unplanted
            or self.on_correct_routes
        )


def _route_of(value: str | None) -> str | None:
    if not value:
        return None
    return urlsplit(value).path if "://" in value else value.split("?", 1)[0]


def check_findings(db_path: Path) -> Expectations:
    """Read the ``findings`` table and compare it with the documented result."""
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "select rule, severity, method, source, target from findings order by id"
        ).fetchall()
    finally:
        conn.close()
    result = Expectations()
    for rule, severity, method, source, _ in rows:
        result.found.setdefault((rule, method or "", source), []).append(severity)
    planted = {(p.rule, p.method, p.source): p for p in PLANTED}
    for place, p in planted.items():
        severities = result.found.get(place, [])
        if not severities:
            result.missing.append(p)
            continue
        if len(severities) > 1:
            result.repeated.append((p, len(severities)))
        if set(severities) != {p.severity}:
            result.wrong_severity.append((p, severities))
    result.unplanted = [place for place in result.found if place not in planted]
    for rule, _, _, source, target in rows:
        for route in {_route_of(source), _route_of(target)}:
            if route in CORRECT_ROUTES:
                result.on_correct_routes.append((rule, route))
    return result


@dataclass
class DemoResult:
    """Everything ``run_demo`` produced."""

    db_path: Path
    traffic: TrafficSummary
    audit: AuditResult
    expectations: Expectations


def run_demo(db_path: Path, progress: Progress | None = None) -> DemoResult:
    """Prepare the database, record the traffic, audit it and check the result."""
    prepare_database(db_path)
    traffic = record_traffic(db_path, progress)
    result = audit_demo(db_path)
    return DemoResult(db_path, traffic, result, check_findings(db_path))
