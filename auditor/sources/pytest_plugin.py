"""pytest plugin: ``pytest --redirect-audit[=DB]`` audits the redirects a test suite sees.

Installed but not enabled, the plugin is two hooks: ``pytest_addoption`` and a
``pytest_configure`` that returns at once. Loading it imports nothing but pytest and
the standard library (no framework, no anyio, no httpx, none of our recorder), so
a coverage run measures the same lines with or without the package installed.

With ``--redirect-audit`` (or ``--redirect-audit-fail-on``) it registers a
``RedirectAudit`` object holding the other hooks, and records at the *transport*:
the ASGI app handed to Starlette's test-client transport (``TestClient``, which
FastAPI re-exports) and to ``httpx.ASGITransport`` is wrapped in ``RedirectRecorder``
when the client is built. ``TestClient(app).app`` stays the user's app, so
``client.app.dependency_overrides`` and the lifespan (which ``TestClient`` sends to
``client.app``) are untouched; ``ASGITransport(app=app).app`` is a transparent proxy
whose attributes are the app's. The patches are made when those modules are first
imported (test modules often build ``client = TestClient(app)`` at import time),
never by importing them ourselves, and undone when pytest unconfigures.

Each (test, app instance) is its own client and its own site. The recorder sees
``scope["client"]`` as ``app<N>:<test node id>`` (the app still sees the real
client; the recorder stores that label as ``client_ip``), so linking never joins a
redirect of one test, or of one app, with a request of another. Every TestClient
app is served as ``testserver``, though, and the static redirect graph and the
rules that compare URLs join requests by URL: before auditing, when the run has
more than one such partition, each partition's host names get a suffix of their own
in ``host``, ``url`` and ``location_url`` (``testserver`` becomes ``testserver--3``; a
Location naming a host its partition did not serve, such as an open redirect's
target, is left as it is). The raw ``location`` and the Host header columns are
untouched, so the rules that read one request alone see what the client saw.

At the end of the session the database is audited; the findings are printed in
the terminal summary with the tests that showed each one, and
``--redirect-audit-fail-on=error|warning|info`` fails the run when a finding is
at or above that severity.
"""

from __future__ import annotations

import functools
import importlib.abc
import ipaddress
import os
import re
import sys
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import pytest

if TYPE_CHECKING:
    import sqlite3
    from importlib.machinery import ModuleSpec

    from auditor.analysis.audit import AuditResult
    from auditor.analysis.rules.base import Finding, Severity
    from auditor.record.middleware import RedirectRecorder
    from auditor.record.registry import TrafficWriter

DB_ENV = "REDIRECT_AUDIT_DB"  # hands the database path to pytest-xdist workers
SEVERITIES = ("error", "warning", "info")
PLUGIN_NAME = "redirect-audit-session"
OUTSIDE_A_TEST = "(outside a test)"
_REAL_CLIENT = "redirect_audit.client"
MAX_TESTS_SHOWN = 3


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


def pytest_configure(config: pytest.Config) -> None:
    value = config.getoption("redirect_audit", None)
    fail_on = cast("Severity | None", config.getoption("redirect_audit_fail_on", None))
    if value is None and fail_on is None:
        return  # not enabled: nothing imported, nothing registered
    workerinput = getattr(config, "workerinput", None)
    worker = str(workerinput.get("workerid", "")) if isinstance(workerinput, dict) else None
    db_path = _database(value or "", worker is not None)
    if worker is None:
        os.environ[DB_ENV] = str(db_path)
    plugin = RedirectAudit(config, db_path, fail_on, worker)
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    config.add_cleanup(plugin.close)
    plugin.start()


def _database(value: str, worker: bool) -> Path:
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
        from auditor.store.schema import SchemaError, check_traffic_db, remove_database_files

        try:
            check_traffic_db(path)
        except SchemaError as exc:
            raise pytest.UsageError(f"--redirect-audit: {exc}") from None
        remove_database_files(path)  # a fresh database for this run
    return path.absolute()


# --- recording ----------------------------------------------------------------------


class _Recorded:
    """What a test client's transport calls instead of the user's app.

    HTTP requests go through the recorder with the test and app instance as the
    client; everything else (lifespan, websockets) goes through it untouched.
    Attributes are the user's app's, read and written: ``transport.app.state`` and
    ``transport.app.dependency_overrides`` work as without the plugin.
    """

    __slots__ = ("__wrapped__", "_audit", "_number", "_recorder")

    def __init__(
        self, app: Any, recorder: RedirectRecorder, audit: RedirectAudit, number: int
    ) -> None:
        object.__setattr__(self, "__wrapped__", app)
        object.__setattr__(self, "_recorder", recorder)
        object.__setattr__(self, "_audit", audit)
        object.__setattr__(self, "_number", number)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            real = scope.get("client")
            port = real[1] if isinstance(real, list | tuple) and len(real) > 1 else 0
            label = self._audit.client_label(self._number)
            scope = {**scope, "client": (label, port), _REAL_CLIENT: real}
        await self._recorder(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__wrapped__, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.__wrapped__, name)

    def __repr__(self) -> str:
        return f"<recorded {self.__wrapped__!r}>"


class _RealClient:
    """Behind the recorder: the app sees the real client, and the recorder sees what the
    app's router added to the scope (route template, path params)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
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
    import inspect

    if inspect.isclass(app):
        return False
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else type(app).__call__
    return inspect.iscoroutinefunction(call)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches a module right after its first import. Its loader is wrapped for that
    one ``exec_module`` and put back: the module keeps its own loader."""

    def __init__(self, patches: dict[str, Callable[[ModuleType], None]]) -> None:
        self.patches = patches

    def find_spec(self, name: str, path: Any, target: Any = None) -> ModuleSpec | None:
        patch = self.patches.get(name)
        if patch is None:
            return None
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        del self.patches[name]
        if not self.patches:
            self.remove()
        spec.loader = _PatchingLoader(loader, patch)
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, patch: Callable[[ModuleType], None]) -> None:
        self.loader = loader
        self.patch = patch

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return cast("ModuleType | None", self.loader.create_module(spec))

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None:
            spec.loader = self.loader
        module.__loader__ = self.loader
        self.loader.exec_module(module)
        self.patch(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class RedirectAudit:
    """The plugin's state and hooks for one pytest run with ``--redirect-audit``."""

    def __init__(
        self, config: pytest.Config, db_path: Path, fail_on: Severity | None, worker: str | None
    ) -> None:
        self.config = config
        self.db_path = db_path
        self.fail_on = fail_on
        self.worker = worker
        self.current_test: str | None = None
        self.undo: list[Callable[[], None]] = []
        # The writers of our recorders (one per process and file), not the recorders:
        # they would keep every app of the suite alive.
        self.writers: dict[int, TrafficWriter] = {}
        # App instance -> its number (weakly held: a suite builds thousands of apps).
        self.numbers: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self.numbers_by_id: dict[int, tuple[Any, int]] = {}  # apps that cannot be weakly held
        self.apps_seen = 0
        self.result: AuditResult | None = None
        self.hosts: dict[str, str] = {}  # suffixed host name -> the one recorded
        self.problem: str | None = None
        self.failed = False
        self.closed = False

    # -- wrapping ---------------------------------------------------------------------

    def start(self) -> None:
        patches: dict[str, Callable[[ModuleType], None]] = {
            "starlette.testclient": self._patch_testclient,
            "httpx": self._patch_httpx,
        }
        for name in list(patches):
            module = sys.modules.get(name)
            if module is not None:
                patches.pop(name)(module)
        if patches:
            hook = _PatchOnImport(patches)
            sys.meta_path.insert(0, hook)
            self.undo.append(hook.remove)

    def _patch_testclient(self, module: ModuleType) -> None:
        if self.closed:
            return
        # The transport, not TestClient: TestClient keeps the user's app as .app and
        # sends the lifespan there; the transport serves the requests.
        transport = getattr(module, "_TestClientTransport", None)
        self.patch(transport if isinstance(transport, type) else module.TestClient)

    def _patch_httpx(self, module: ModuleType) -> None:
        if not self.closed:
            self.patch(module.ASGITransport)

    def patch(self, owner: type) -> None:
        original = owner.__init__  # type: ignore[misc]
        wrap = self.wrap

        @functools.wraps(original)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            if "app" in kwargs:
                kwargs["app"] = wrap(kwargs["app"])
            elif args:
                args = (wrap(args[0]), *args[1:])
            original(self, *args, **kwargs)

        owner.__init__ = init  # type: ignore[misc]
        self.undo.append(functools.partial(setattr, owner, "__init__", original))

    def wrap(self, app: Any) -> Any:
        from auditor.record.middleware import RedirectRecorder

        if self.closed or isinstance(app, _Recorded) or not _is_asgi3(app):
            return app
        recorder = RedirectRecorder(_RealClient(app), db_path=self.db_path, store_client_ip=True)
        self.writers.setdefault(id(recorder.writer), recorder.writer)
        return _Recorded(app, recorder, self, self._number(app))

    def _number(self, app: Any) -> int:
        try:
            number = self.numbers.get(app)
            if number is None:
                number = self.numbers[app] = self._next_number()
            return number
        except TypeError:  # unhashable, or no weak reference to it
            held = self.numbers_by_id.get(id(app))
            if held is None:
                held = self.numbers_by_id[id(app)] = (app, self._next_number())
            return held[1]

    def _next_number(self) -> int:
        self.apps_seen += 1  # never reused: a collected app's number stays its own
        return self.apps_seen

    def client_label(self, number: int) -> str:
        """The client the recorder sees: this app instance in the current test."""
        worker = f"{self.worker}/" if self.worker else ""
        return f"{worker}app{number}:{self.current_test or OUTSIDE_A_TEST}"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
        while self.undo:
            self.undo.pop()()
        if self.worker is None:
            os.environ.pop(DB_ENV, None)

    # -- hooks ------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        self.current_test = item.nodeid
        try:
            return (yield)
        finally:
            self.current_test = None

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        for writer in self.writers.values():
            writer.flush()
        if self.worker is not None:
            return  # the controller audits once every worker has flushed
        if not self.db_path.exists():
            self.problem = "no requests to an ASGI app were recorded"
            return
        from auditor.analysis.audit import audit
        from auditor.analysis.report import failed
        from auditor.store.journal import unpack
        from auditor.store.schema import connect

        try:
            conn = connect(self.db_path)
            try:
                unpack(conn)  # the recorder's batches, before partitions are read
                with conn:
                    self.hosts = separate_partitions(conn)
            finally:
                conn.close()
            self.result = audit(self.db_path)
        except Exception as exc:
            self.problem = f"the audit failed: {type(exc).__name__}: {exc}"
            return
        if self.fail_on and failed([self.result], self.fail_on):
            self.failed = True
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker is not None:
            return
        tr = terminalreporter
        tr.section("redirect audit")
        if self.problem or self.result is None:
            tr.write_line(f"redirect audit: {self.problem}", yellow=True)
            return
        from auditor.analysis.report import summary_line

        result = self.result
        seen_in = self._tests_per_finding(result.findings)
        colour = {"error": {"red": True, "bold": True}, "warning": {"yellow": True}, "info": {}}
        for i, f in enumerate(result.findings):
            where = f"{f.method or ''} {f.source} {f.status or ''}".strip()
            target = f" -> {self.shown_url(f.target)}" if f.target else ""
            tr.write_line(
                f"{f.severity.upper():<7} {f.rule}: {where}{target} ({f.hits} hit(s))",
                **colour.get(f.severity, {}),
            )
            tests = seen_in[i]
            shown = ", ".join(tests[:MAX_TESTS_SHOWN])
            if len(tests) > MAX_TESTS_SHOWN:
                shown += f" and {len(tests) - MAX_TESTS_SHOWN} more"
            tr.write_line(f"        {f.title}" + (f"; seen in {shown}" if tests else ""))
        tr.write_line(summary_line(result))
        tr.write_line(f"explore: redirect-auditor explore {self.db_path}")
        if self.failed:
            tr.write_line(
                f"redirect audit failed: findings at or above '{self.fail_on}' "
                "(--redirect-audit-fail-on)",
                red=True,
                bold=True,
            )

    def shown_url(self, url: str) -> str:
        """A recorded URL with its host name as the client sent it."""
        if not self.hosts:
            return url
        scheme, sep, rest = url.partition("://")
        netloc, slash, tail = rest.partition("/")
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = _split_port(hostport)
        return f"{scheme}{sep}{userinfo}{at}{self.hosts.get(host, host)}{colon}{port}{slash}{tail}"

    def _tests_per_finding(self, findings: list[Finding]) -> list[list[str]]:
        """Per finding, the test of its example request, then those of the requests at
        its place (method, status, recorded route or path equal to its source): all of
        them when they are as many as the finding's hits, else those with its target
        (a finding may be about some of a place's requests), else all of them (a
        chain's target is where it ends, which no request at its place has)."""
        import sqlite3

        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            shown = []
            for f in findings:
                example = conn.execute(
                    "select client_ip from requests where id = ?", (f.example_request_id,)
                ).fetchall()
                place = conn.execute(
                    """select client_ip, location_url from requests
                       where method = ? and status = ? and coalesce(route, path) = ?
                       order by id""",
                    (f.method, f.status, f.source),
                ).fetchall()
                target = self.shown_url(f.target) if f.target else None
                same = [
                    label
                    for label, location in place
                    if location and self.shown_url(location) == target
                ]
                everyone = [row[0] for row in place]
                chosen = everyone if len(place) == f.hits or not same else same
                labels = [row[0] for row in example] + chosen
                tests = dict.fromkeys(_test_of(label) for label in labels if label)
                shown.append([t for t in tests if t is not None])
            return shown
        finally:
            conn.close()


def _test_of(label: str) -> str | None:
    """The test node id in a recorded client label (``app3:tests/test_x.py::test_y``)."""
    head, sep, test = label.partition(":")
    if not sep or "app" not in head:
        return None
    return test


# --- keeping partitions apart ---------------------------------------------------------


def _split_port(hostport: str) -> tuple[str, str, str]:
    """'host:8000' -> ('host', ':', '8000'); '[::1]:80' -> ('[::1]', ':', '80')."""
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host, rest = hostport[:end], hostport[end:]
        return (host, ":", rest[1:]) if rest.startswith(":") else (host, "", "")
    host, colon, port = hostport.rpartition(":")
    return (host, colon, port) if colon else (hostport, "", "")


_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*)(?:\.[a-z0-9_-]+)*\.?")


def _renamable(host: str) -> bool:
    """A host name that takes a suffix: not an IP address, nor a malformed Host header
    (``[:::]``), which stay as recorded."""
    if not _HOST_NAME.fullmatch(host):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def _suffixed(host: str, number: int) -> str:
    """``testserver`` -> ``testserver--3``, ``api.example.com`` -> ``api--3.example.com``:
    the first label changes, so single-label, ``.internal``/``.local`` and
    ``localhost``-like names stay what they were to the rules."""
    first, dot, rest = host.partition(".")
    return f"{first}--{number}{dot}{rest}"


def _url_with_host(url: str, hosts: dict[str, str]) -> str:
    """``url`` (normalized, absolute) with its host name replaced from ``hosts``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    host, colon, port = _split_port(hostport)
    new = hosts.get(host)
    if new is None:
        return url
    return f"{scheme}{sep}{userinfo}{at}{new}{colon}{port}{slash}{tail}"


def separate_partitions(conn: sqlite3.Connection) -> dict[str, str]:
    """Give each (test, app instance)'s host names a suffix of their own, in ``host``,
    ``url`` and ``location_url``, when the database holds more than one partition:
    the static redirect graph and the rules that compare URLs then never join two
    partitions' requests. A Location naming a host its partition never served
    (another site, an open redirect's target), IP addresses and malformed Host
    headers keep their names.
    Returns suffixed name -> recorded name, to show hosts as they were sent."""
    rows = conn.execute(
        "select id, client_ip, host, url, location_url from requests order by id"
    ).fetchall()
    numbers: dict[str, int] = {}
    served: dict[str, set[str]] = {}
    for _, label, host, _, _ in rows:
        if label not in numbers:
            numbers[label] = len(numbers) + 1
            served[label] = set()
        if host:
            served[label].add(_split_port(host)[0])
    if len(numbers) < 2:
        return {}
    renames = {
        label: {h: _suffixed(h, numbers[label]) for h in hosts if _renamable(h)}
        for label, hosts in served.items()
    }
    updates = []
    for rid, label, host, url, location_url in rows:
        names = renames[label]
        if not names:
            continue
        new_host = host
        if host:
            name, colon, port = _split_port(host)
            new_host = f"{names.get(name, name)}{colon}{port}"
        new_url = _url_with_host(url, names) if url else url
        new_location = _url_with_host(location_url, names) if location_url else location_url
        if (new_host, new_url, new_location) != (host, url, location_url):
            updates.append((new_host, new_url, new_location, rid))
    conn.executemany(
        "update requests set host = ?, url = ?, location_url = ? where id = ?", updates
    )
    return {new: old for names in renames.values() for old, new in names.items()}
