"""The C fast paths (``auditor/record/native.py``) do what the Python ones do: every row
here is built both ways (``_rows_c``), and every capture is made both ways
(``_capture_c``); the recorder's whole suite also runs with them turned off (CI)."""

from __future__ import annotations

import os
import shutil
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.record import native
from auditor.record.native import PURE_PYTHON_ENV
from auditor.record.rows import RowBuilder
from auditor.urls import TrustedProxies

SECRET = b"k" * 32
HAVE_COMPILER = bool(shutil.which("cc") or shutil.which("gcc")) and os.path.exists(
    os.path.join(sysconfig.get_paths()["include"], "Python.h")
)


def test_fast_paths_are_built_where_a_compiler_is() -> None:
    if not native.built() and not HAVE_COMPILER:
        pytest.skip("no C compiler or Python headers: the recorder runs in Python only")
    assert native.built(), "setup.py did not build auditor.record's _capture_c, _rows_c, _targets_c"


needs_fast = pytest.mark.skipif(native.rows_c() is None, reason="no C fast path in use")


def _item(
    *,
    method: Any = "GET",
    scheme: Any = "http",
    server: Any = ("127.0.0.1", 8000),
    client: Any = ("10.0.0.7", 50312),
    path: Any = "/a",
    raw_path: Any = b"/a",
    query: Any = b"",
    headers: Any = None,
    version: Any = "1.1",
    route: Any = "/a",
    started: Any = 1_796_497_844.464876,
    ended: Any = 1_796_497_844.4649556,
    status: Any = 200,
    response_headers: Any = None,
    body: Any = 12,
    complete: Any = True,
    error: Any = None,
) -> tuple[Any, ...]:
    if headers is None:
        headers = [(b"host", b"example.test:8000"), (b"user-agent", b"curl/8.5")]
    return (
        method,
        scheme,
        server,
        client,
        path,
        raw_path,
        query,
        headers,
        version,
        route,
        started,
        ended,
        status,
        response_headers,
        body,
        complete,
        error,
    )


def _same(builder: RowBuilder, item: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Build ``item`` in Python (twice: the first fills the caches), then through
    ``build_row``; the two must agree, value for value and type for type."""
    try:
        builder.build_row_python(item)
        expected = builder.build_row_python(item)
    except Exception as exc:
        with pytest.raises(type(exc)):
            builder.build_row(item)
        return None
    got = builder.build_row(item)
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]
    return got


PLAIN = [
    _item(),
    _item(status=302, response_headers=[(b"location", b"/b")]),
    _item(
        status=301,
        response_headers=[
            (b"Location", b"https://x.test/"),
            (b"cache-control", b"max-age=60"),
            (b"Expires", b"0"),
            (b"cache-control", b"no-store"),
        ],
    ),
    _item(status=200, response_headers=[(b"location", b"/c")]),
    _item(status=307, response_headers=[(b"location", b"/a"), (b"location", b"/b")]),
    _item(
        method="POST",
        headers=[
            (b"Host", b"EXAMPLE.test"),
            (b"Content-Length", b"0012"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"Cookie", b"s=1"),
            (b"authorization", b"Basic x"),
        ],
    ),
    _item(headers=[(b"host", b"h.test"), (b"content-length", b"")]),
    _item(headers=[(b"host", b"h.test"), (b"content-length", b"1_000")]),
    _item(headers=[(b"host", b"h.test"), (b"content-length", b"\xd9\xa3")]),
    _item(headers=[(b"host", b"h.test"), (b"transfer-encoding", b"gzip, CHUNKED")]),
    _item(headers=[(b"host", b"h.test"), (b"transfer-encoding", b"gzip")]),
    _item(headers=[(b"host", b"h.test"), (b"x-forwarded-for", b"1.2.3.4")]),
    _item(
        headers=[
            (b"host", b"h.test"),
            (b"X-Forwarded-Proto", b"https"),
            (b"x-forwarded-host", b"a.test"),
            (b"forwarded", b"for=1.2.3.4"),
            (b"x-request-id", b"r1"),
            (b"X-Correlation-Id", b"r2"),
        ]
    ),
    _item(headers=[(b"host", b"h.test"), (b"user-agent", b"\xff\xfeUA")]),
    _item(headers=[(b"host", b"")]),
    _item(headers=[(b"user-agent", b"no host")]),
    _item(headers=[(b"host", b"h.test"), (b"user-agent", b"x" * 9000)]),
    _item(headers=[]),
    _item(method="", scheme=None, status=0, error="ValueError", complete=False),
    _item(scheme="", status=None),
    _item(scheme="HTTPS", route=None),
    _item(client=None),
    _item(client=("", 0)),
    _item(client=(None, None)),
    _item(server=None),
    _item(server=("h", None)),
    _item(raw_path=b"", path="/p q"),
    _item(raw_path=None, path="/p"),
    _item(query=b"token=abc&x=1", raw_path=b"/a%20b", path="/a b"),
    _item(route=("not", "a", "template")),
    _item(started=1.0, ended=1.0000005),
    _item(started=1.0, ended=1.0000015),
    _item(started=1, ended=2),
    _item(version=None),
    _item(headers=[(b"host", b"h.test"), [b"user-agent", b"list pair"]]),
    _item(headers=[(b"host", b"h.test"), (bytearray(b"user-agent"), b"ua")]),
    _item(headers=[(b"host", b"h.test"), (b"user-agent", bytearray(b"ua"))]),
    _item(response_headers=[(b"location", bytearray(b"/b"))], status=302),
    _item(query=bytearray(b"q=1")),
    _item(headers=(("host", "text"),)),
]


@needs_fast
@pytest.mark.parametrize("store_client_ip", [False, True])
def test_every_plain_case_agrees(store_client_ip: bool) -> None:
    builder = RowBuilder(SECRET, "w:1", TrustedProxies(()), store_client_ip)
    for item in PLAIN:
        _same(builder, item)
    built, handed_on = builder.fast_rows.counts  # type: ignore[union-attr]
    assert built >= len(PLAIN) // 2, "the fast path should build most of these"
    assert handed_on > 0, "some of these are the Python path's"


@needs_fast
def test_redaction_and_token_routes_agree() -> None:
    builder = RowBuilder(SECRET, "w:1", TrustedProxies(()), False)
    for item in (
        _item(query=b"token=s3cr3t&page=2", raw_path=b"/reset"),
        _item(
            raw_path=b"/share/AbCdEfGhIjKlMnOpQrStUv12",
            path="/share/AbCdEfGhIjKlMnOpQrStUv12",
            route="/share/{key}",
        ),
        _item(
            status=302, response_headers=[(b"location", b"https://user:pw@x.test/cb?code=abc123")]
        ),
    ):
        row = _same(builder, item)
        assert row is not None
        assert "s3cr3t" not in repr(row) and "pw@" not in repr(row)


def test_no_fast_path_behind_trusted_proxies_or_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RowBuilder(SECRET, "w:1", TrustedProxies(["10.0.0.0/8"]), False).fast_rows is None
    assert RowBuilder(SECRET, "w:1", TrustedProxies(["*"]), False).fast_rows is None
    monkeypatch.setenv(PURE_PYTHON_ENV, "1")
    builder = RowBuilder(SECRET, "w:1", TrustedProxies(()), False)
    assert builder.fast_rows is None
    assert builder.build_row == builder.build_row_python


_names = st.sampled_from(
    [b"host", b"Host", b"user-agent", b"content-length", b"Content-Length", b"transfer-encoding",
     b"content-type", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-request-id",
     b"request-id", b"authorization", b"COOKIE", b"accept", b"x-other", b"\xc3\x89tag"]
)  # fmt: skip
_values = st.one_of(
    st.sampled_from([b"", b"12", b"007", b"chunked", b"h.test", b"H.Test:80", b"a, b"]),
    st.binary(max_size=12),
)
_response_names = st.sampled_from(
    [b"location", b"LOCATION", b"cache-control", b"Expires", b"content-type", b"set-cookie"]
)


@needs_fast
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(st.tuples(_names, _values), max_size=8),
    response_headers=st.one_of(
        st.none(), st.lists(st.tuples(_response_names, _values), max_size=4)
    ),
    status=st.sampled_from([0, 200, 204, 301, 302, 303, 307, 308, 404, 500]),
    method=st.sampled_from(["GET", "POST", "", "HEAD"]),
    scheme=st.sampled_from(["http", "https", "HTTP", "", None]),
    client=st.sampled_from([None, ("10.0.0.7", 1), ("", 0), ("::1", 443)]),
    query=st.sampled_from([b"", b"a=1", b"password=x"]),
    route=st.sampled_from([None, "/a", "/u/{id}"]),
    error=st.sampled_from([None, "CancelledError"]),
    store_client_ip=st.booleans(),
    duration=st.floats(min_value=0, max_value=100, allow_nan=False),
)
def test_any_capture_agrees(
    headers: list[tuple[bytes, bytes]],
    response_headers: list[tuple[bytes, bytes]] | None,
    status: int,
    method: str,
    scheme: str | None,
    client: tuple[str, int] | None,
    query: bytes,
    route: str | None,
    error: str | None,
    store_client_ip: bool,
    duration: float,
) -> None:
    builder = RowBuilder(SECRET, "w:1", TrustedProxies(()), store_client_ip)
    item = _item(
        headers=headers,
        response_headers=response_headers,
        status=status,
        method=method,
        scheme=scheme,
        client=client,
        query=query,
        route=route,
        error=error,
        ended=1_796_497_844.464876 + duration,
    )
    _same(builder, item)


# -- the capture: _capture_c.Exchange against middleware.Exchange --------------------

needs_capture = pytest.mark.skipif(native.capture_c() is None, reason="no C capture in use")


class _Recorder:
    def __init__(self) -> None:
        self.noted: list[list[Any]] = []

    def note_redirect(self, exchange: Any, headers: list[Any]) -> None:
        self.noted.append(list(headers))


def _scope(**extra: Any) -> dict[str, Any]:
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "path": "/a",
        "raw_path": b"/a",
        "query_string": b"x=1",
        "headers": [(b"host", b"h.test")],
        "http_version": "1.1",
    }
    scope.update(extra)
    return scope


def _run(make: Any, scope: dict[str, Any], messages: list[Any], recorder: Any) -> Any:
    """Send ``messages`` through a capture made by ``make``; what the server got, the
    capture's fields and its portable tuple (times left out), or the error raised."""
    sent: list[Any] = []
    exchange = make(scope, sent.append, 1_700_000_000.25, recorder)
    try:
        for message in messages:
            assert exchange.send(message) is None  # what the server's send returned
    except Exception as exc:
        return type(exc)
    from auditor.record.rows import to_portable

    item = to_portable(exchange)
    ended = item[11]
    return (
        sent,
        exchange.status,
        exchange.headers,
        exchange.body_size,
        exchange.complete,
        ended > 0 if exchange.complete else ended,
        item[:11] + item[12:],
        recorder.noted if recorder is not None else None,
    )


class _Route:
    path = "/u/{id}"


_ROUTE = _Route()


_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x")]}
_BODY = {"type": "http.response.body", "body": b"hello"}


def _captures() -> list[tuple[dict[str, Any], list[Any]]]:
    """Scopes and messages, made anew for each run (one holds an iterator)."""
    return [
        (_scope(), [_START, _BODY]),
        (
            _scope(),
            [_START, {"type": "http.response.body", "body": b"ab", "more_body": True}, _BODY],
        ),
        (
            _scope(),
            [{"type": "http.response.start", "status": 302, "headers": [(b"Location", b"/b")]}],
        ),
        (
            _scope(),
            [{"type": "http.response.start", "status": 200, "headers": [(b"LOCATION", b"/c")]}],
        ),
        (
            _scope(),
            [{"type": "http.response.start", "status": 200, "headers": iter([(b"a", b"b")])}],
        ),
        (
            _scope(),
            [{"type": "http.response.start", "status": 301, "headers": ((b"location", b"/"),)}],
        ),
        (
            _scope(),
            [{"type": "http.response.start", "status": 200, "headers": [[b"location", b"/"]]}],
        ),
        (_scope(), [{"type": "http.response.start", "status": 200, "headers": [(b"x",)]}]),
        (
            _scope(),
            [{"type": "http.response.start", "status": 200}, {"type": "http.response.body"}],
        ),
        (_scope(), [{"type": "http.response.start"}]),
        (_scope(), [{"status": 200}]),
        (_scope(), [{"type": "http.response.start", "status": "302", "headers": []}]),
        (_scope(), [{"type": "websocket.send"}, {"type": 7}]),
        (_scope(route=_ROUTE), [_START, _BODY]),
        (_scope(route=_ROUTE, root_path="/m", app_root_path=""), [_START, _BODY]),
        (_scope(route=object(), path_template="/lit/{x}"), [_START, _BODY]),
        (_scope(path_template=""), [_START, _BODY]),
        ({"type": "http", "path": "/only"}, [_START, _BODY]),
    ]


@needs_capture
@pytest.mark.parametrize("with_recorder", [False, True])
@pytest.mark.parametrize("case", range(len(_captures())))
def test_every_capture_agrees(case: int, with_recorder: bool) -> None:
    from auditor.record.middleware import Exchange

    capture_c = native.capture_c()
    assert capture_c is not None
    python = _run(Exchange, *_captures()[case], _Recorder() if with_recorder else None)
    c = _run(capture_c.Exchange, *_captures()[case], _Recorder() if with_recorder else None)
    assert c == python


@needs_capture
def test_an_error_and_the_send_after_return_are_kept() -> None:
    from auditor.record.middleware import _sent_after_return
    from auditor.record.rows import to_portable

    capture_c = native.capture_c()
    assert capture_c is not None
    exchange = capture_c.Exchange(_scope(), lambda m: None, 1.0)
    exchange.error = TimeoutError("slow")
    exchange._send = _sent_after_return
    exchange.ended_at = 2.5
    item = to_portable(exchange)
    assert item[16] == "TimeoutError" and item[11] == 2.5 and item[12] == 0


# -- record="redirects": _capture_c.Watch and _targets_c against the Python ones ----

needs_targets = pytest.mark.skipif(native.targets_c() is None, reason="no C targets in use")


@needs_capture
@pytest.mark.parametrize("case", range(len(_captures())))
def test_every_watched_request_agrees(case: int) -> None:
    """A watched request passes the same messages on and, at a 3xx, makes the same
    capture through the recorder's ``make_exchange``."""
    from auditor.record.middleware import Exchange, Watch

    capture_c = native.capture_c()
    assert capture_c is not None

    class Recorder(_Recorder):
        make_exchange = staticmethod(Exchange)

    def run(make: Any) -> Any:
        scope, messages = _captures()[case]
        sent: list[Any] = []
        watch = make(scope, sent.append, 5.0, Recorder())
        try:
            for message in messages:
                watch.send(message)
        except Exception as exc:
            return type(exc)
        exchange = watch.exchange
        fields = None if exchange is None else (exchange.status, exchange.headers)
        # a message passed on as it came: the same iterator object, each run its own
        passed = [{k: type(v) if k == "headers" else v for k, v in m.items()} for m in sent]
        return passed, fields, watch.started_at

    assert run(capture_c.Watch) == run(Watch)


@needs_targets
def test_the_cheap_skip_agrees_with_the_table(tmp_path: Path) -> None:
    from auditor.record.targets import RecentTargets

    targets = RecentTargets(tmp_path / "t.db", b"secret", 30.0)
    python = RecentTargets.skips.__get__(targets)
    now = time.time()
    scopes = [
        {"raw_path": b"/new"},
        {"raw_path": b"/other"},
        {"raw_path": b"/caf%C3%A9"},
        {"raw_path": "/caf\xe9".encode("latin-1")},
        {"raw_path": b""},
        {"raw_path": None, "path": "/new"},
        {"path": "/new"},
        {"raw_path": bytearray(b"/new")},
    ]
    times = [now - 100, now - 31, now, now + 20, now + 40, now + 4000, now + 70000]

    def agree() -> None:
        for scope in scopes:
            for at in times:
                assert targets.skips(scope, at) == python(scope, at), (scope, at)

    agree()  # nothing noted: every request skipped
    assert targets.skips({"raw_path": b"/new"}, now)
    targets.note("10.0.0.1", b"/new", now)
    agree()
    assert not targets.skips({"raw_path": b"/new"}, now + 1)
    for i in range(2000):  # many path buckets marked at several times
        targets.note("10.0.0.2", f"/p{i}".encode(), now - (i % 90))
    scopes += [{"raw_path": f"/p{i}".encode()} for i in range(0, 2000, 37)]
    agree()
    targets.close()


@needs_targets
def test_a_note_writes_the_same_table(tmp_path: Path) -> None:
    """Notes made in C and in Python, the same ones in the same order, leave the same
    bytes in the shared table (slots, the newest second, the path marks)."""
    from auditor.record.targets import RecentTargets, targets_path

    (tmp_path / "c").mkdir()
    (tmp_path / "py").mkdir()
    c = RecentTargets(tmp_path / "c" / "t.db", b"secret", 30.0)
    py = RecentTargets(tmp_path / "py" / "t.db", b"secret", 30.0)
    python_note = RecentTargets.note.__get__(py)
    now = 1_796_000_000.75
    for i in range(3000):
        client = ["10.0.0.1", "::1", "caf\xe9.local", "", "\udcff"][i % 5]
        path = [b"/new", f"/p{i % 700}".encode(), "/café".encode(), b""][i % 4]
        at = now + (i % 97) * 3.5
        c.note(client, path, at)
        python_note(client, path, at)
    c.close()
    py.close()
    assert targets_path(tmp_path / "c" / "t.db").read_bytes() == (
        targets_path(tmp_path / "py" / "t.db").read_bytes()
    )
