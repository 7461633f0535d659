"""pytest plugin: ``pytest --redirect-audit[=DB]`` audits the redirects a test suite sees.

How the requests are recorded: at ``pytest_configure`` the plugin wraps the
constructors of ``starlette.testclient.TestClient`` (which FastAPI re-exports)
and ``httpx.ASGITransport`` so that the ASGI app they are given is wrapped in
``RedirectRecorder`` first. Nothing in the tests or the app changes, the
patches are undone at ``pytest_unconfigure``, and apps that are not ASGI 3
(or are already wrapped) are left alone.

Each test is its own client: the recorder sees ``scope["client"]`` as the test's
node id (the app still sees the real client), so a redirect one test never
follows is not linked to a later test's request for the same URL.

At the end of the session the database is audited; the findings are printed in
the terminal summary with the test that produced each example, and
``--redirect-audit-fail-on=error|warning|info`` fails the run when a finding is
at or above that severity.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import inspect
import os
import sys
import tempfile
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from auditor.analysis.rules.base import Severity
from auditor.middleware import RedirectRecorder
from auditor.registry import TrafficWriter
from auditor.schema import SchemaError, check_traffic_db

DB_ENV = "REDIRECT_AUDIT_DB"  # hands the database path to pytest-xdist workers
SEVERITIES = ("error", "warning", "info")
_STATE = pytest.StashKey["RedirectAuditSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("redirect-audit", "redirect-auditor")
    group.addoption(
        "--redirect-audit",
        action="store",
        nargs="?",
        const="",
        default=None,
        metavar="DB",
        dest="redirect_audit",
        help="Record the requests tests send to ASGI apps (TestClient, httpx.ASGITransport) "
        "and audit their redirects at the end. DB: traffic database, recreated each run "
        "(default: a temporary file). Write --redirect-audit=DB.",
    )
    group.addoption(
        "--redirect-audit-fail-on",
        action="store",
        choices=SEVERITIES,
        default=None,
        dest="redirect_audit_fail_on",
        help="Fail the run when a redirect finding is at or above this severity "
        "(implies --redirect-audit).",
    )


_REAL_CLIENT = "redirect_audit.client"


class _RecordAsTest:
    """In front of the recorder: the recorder sees the current test as the client."""

    def __init__(self, recorder: RedirectRecorder, state: RedirectAuditSession) -> None:
        self.recorder = recorder
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            test = (self.state.identity(), 50000)
            scope = {**scope, "client": test, _REAL_CLIENT: scope.get("client")}
        await self.recorder(scope, receive, send)


class _RealClient:
    """Behind the recorder: the app sees the real client, and the recorder sees what the
    app's router added to the scope (route template, path params)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _REAL_CLIENT not in scope:
            await self.app(scope, receive, send)
            return
        app_scope = {k: v for k, v in scope.items() if k != _REAL_CLIENT}
        app_scope["client"] = scope[_REAL_CLIENT]
        try:
            await self.app(app_scope, receive, send)
        finally:
            scope.update({k: v for k, v in app_scope.items() if k != "client"})


def _is_asgi3(app: Any) -> bool:
    if inspect.isclass(app):
        return False
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else type(app).__call__
    return inspect.iscoroutinefunction(call)


class RedirectAuditSession:
    """The plugin's state for one pytest run."""

    def __init__(self, config: pytest.Config, db_path: Path, fail_on: Severity | None) -> None:
        self.config = config
        self.db_path = db_path
        self.fail_on = fail_on
        self.current_test: str | None = None
        self.tests: set[str] = set()
        self.writers: dict[int, TrafficWriter] = {}
        self.undo: list[Callable[[], None]] = []
        self.result: Any = None
        self.problem: str | None = None
        self.failed = False
        self.closed = False

    def identity(self) -> str:
        test = self.current_test or "outside a test"
        self.tests.add(test)
        return f"pytest:{test}"

    def wrap(self, app: Any) -> Any:
        if isinstance(app, RedirectRecorder | _RecordAsTest) or not _is_asgi3(app):
            return app
        recorder = RedirectRecorder(_RealClient(app), db_path=self.db_path)
        self.writers[id(recorder.writer)] = recorder.writer
        return _RecordAsTest(recorder, self)

    def patch(self, owner: type, name: str = "__init__") -> None:
        original = getattr(owner, name)
        state = self

        @functools.wraps(original)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            if "app" in kwargs:
                kwargs["app"] = state.wrap(kwargs["app"])
            elif args:
                args = (state.wrap(args[0]), *args[1:])
            original(self, *args, **kwargs)

        setattr(owner, name, init)
        self.undo.append(lambda: setattr(owner, name, original))

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        self.closed = True
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
        while self.undo:
            self.undo.pop()()


TESTCLIENT_MODULE = "starlette.testclient"


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches ``TestClient`` right after ``starlette.testclient`` is first imported
    (test modules often build ``client = TestClient(app)`` at import time)."""

    def __init__(self, state: RedirectAuditSession) -> None:
        self.state = state

    def find_spec(self, name: str, path: Any, target: Any = None) -> ModuleSpec | None:
        if name != TESTCLIENT_MODULE:
            return None
        sys.meta_path.remove(self)  # once, and not for the lookup below
        spec = importlib.util.find_spec(name)
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module
        state = self.state

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            if not state.closed:
                state.patch(module.TestClient)

        spec.loader = _Loader(loader, exec_and_patch)
        return spec


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any, exec_module: Callable[[ModuleType], None]) -> None:
        self.loader = loader
        self._exec_module = exec_module

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return cast(ModuleType | None, self.loader.create_module(spec))

    def exec_module(self, module: ModuleType) -> None:
        self._exec_module(module)


def _database(config: pytest.Config, value: str, worker: bool) -> Path:
    if worker and os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV])
    if not value:
        return Path(tempfile.mkdtemp(prefix="redirect-audit-")) / "traffic.db"
    path = Path(value).expanduser()
    if path.is_dir() or path.suffix == ".py" or "::" in value:
        raise pytest.UsageError(
            f"--redirect-audit took {value!r} as its database; write --redirect-audit=DB, "
            "or put the option after the test paths"
        )
    if path.exists() and not worker:
        try:
            check_traffic_db(path)
        except SchemaError as exc:
            raise pytest.UsageError(f"--redirect-audit: {exc}") from None
        for suffix in ("", "-wal", "-shm"):  # a fresh database for this run
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path.absolute()


def pytest_configure(config: pytest.Config) -> None:
    value = config.getoption("redirect_audit", None)
    fail_on = cast(Severity | None, config.getoption("redirect_audit_fail_on", None))
    if value is None and fail_on is None:
        return
    worker = hasattr(config, "workerinput")
    db_path = _database(config, value or "", worker)
    if not worker:
        os.environ[DB_ENV] = str(db_path)
    state = RedirectAuditSession(config, db_path, fail_on)
    config.stash[_STATE] = state
    import httpx

    state.patch(httpx.ASGITransport)
    # TestClient is patched when starlette.testclient is imported (now, if it already
    # is): importing it ourselves would emit its deprecation warnings in every suite.
    testclient = sys.modules.get(TESTCLIENT_MODULE)
    if testclient is not None:
        state.patch(testclient.TestClient)
    else:
        hook = _PatchOnImport(state)
        sys.meta_path.insert(0, hook)
        state.undo.append(lambda: sys.meta_path.remove(hook) if hook in sys.meta_path else None)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.close()
        if not hasattr(config, "workerinput"):
            os.environ.pop(DB_ENV, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    state = item.config.stash.get(_STATE, None)
    if state is not None:
        state.current_test = item.nodeid
    try:
        return (yield)
    finally:
        if state is not None:
            state.current_test = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is None:
        return
    state.flush()
    if hasattr(session.config, "workerinput"):
        return  # the controller audits once every worker has flushed
    if not state.db_path.exists():
        state.problem = "no requests to an ASGI app were recorded"
        return
    from auditor.analysis.audit import audit
    from auditor.analysis.report import failed

    try:
        state.result = audit(state.db_path)
    except Exception as exc:
        state.problem = f"the audit failed: {type(exc).__name__}: {exc}"
        return
    if state.fail_on and failed([state.result], state.fail_on):
        state.failed = True
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _tests_by_client_key(state: RedirectAuditSession) -> dict[str, str]:
    from auditor.rows import RowBuilder, TrustedProxies
    from auditor.writer import load_secret

    builder = RowBuilder(load_secret(state.db_path), "", TrustedProxies(()), False)
    return {builder.keyed_hash(f"pytest:{test}"): test for test in state.tests}


def _example_tests(state: RedirectAuditSession) -> dict[int, str]:
    """Request id -> the test that sent it, for every finding's example request."""
    import sqlite3

    ids = [f.example_request_id for f in state.result.findings if f.example_request_id]
    if not ids:
        return {}
    tests = _tests_by_client_key(state)
    conn = sqlite3.connect(f"file:{state.db_path}?mode=ro", uri=True)
    try:
        marks = ",".join("?" for _ in ids)
        rows = conn.execute(f"select id, client_key from requests where id in ({marks})", ids)
        return {rid: tests[key] for rid, key in rows if key in tests}
    finally:
        conn.close()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or hasattr(config, "workerinput"):
        return
    tr = terminalreporter
    tr.section("redirect audit")
    if state.problem:
        tr.write_line(f"redirect audit: {state.problem}", yellow=True)
        return
    from auditor.analysis.report import summary_line

    result = state.result
    seen_in = _example_tests(state)
    colour = {"error": {"red": True, "bold": True}, "warning": {"yellow": True}, "info": {}}
    for f in result.findings:
        where = f"{f.method or ''} {f.source} {f.status or ''}".strip()
        target = f" -> {f.target}" if f.target else ""
        tr.write_line(
            f"{f.severity.upper():<7} {f.rule}: {where}{target} ({f.hits} hit(s))",
            **colour.get(f.severity, {}),
        )
        test = seen_in.get(f.example_request_id or 0)
        tr.write_line(f"        {f.title}" + (f"; seen in {test}" if test else ""))
    tr.write_line(summary_line(result))
    tr.write_line(f"explore: redirect-auditor explore {state.db_path}")
    if state.failed:
        tr.write_line(
            f"redirect audit failed: findings at or above '{state.fail_on}' "
            "(--redirect-audit-fail-on)",
            red=True,
            bold=True,
        )
