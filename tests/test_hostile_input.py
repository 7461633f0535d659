"""The recorder and the importers under malformed or hostile input: record what can be
recorded, refuse what cannot with one clear reason, never raise anything else."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor import RedirectRecorder
from auditor.record.registry import writer_for
from auditor.sources.har import HarError, import_har
from auditor.store.journal import unpack_file


async def redirecting_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 302, "headers": [(b"location", b"/x")]})
    await send({"type": "http.response.body", "body": b""})


def call(recorder: RedirectRecorder, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(recorder(scope, receive, send))
    return sent


MALFORMED_SCOPES = {
    "no client": {"type": "http", "method": "GET", "path": "/a", "headers": [], "client": None},
    "client key missing": {"type": "http", "method": "GET", "path": "/a", "headers": []},
    "no headers key": {"type": "http", "method": "GET", "path": "/a"},
    "no server, no host": {"type": "http", "method": "GET", "path": "/a", "headers": []},
    "http2 pseudo-headers": {
        "type": "http",
        "http_version": "2",
        "method": "GET",
        "scheme": "https",
        "path": "/a",
        "headers": [(b":authority", b"example.test"), (b":path", b"/a"), (b":method", b"GET")],
    },
    "root_path mount": {
        "type": "http",
        "method": "GET",
        "path": "/api/a",
        "root_path": "/api",
        "raw_path": b"/api/a",
        "headers": [(b"host", b"example.test")],
    },
    "minimal scope": {"type": "http"},
    "headers as tuples of tuples": {
        "type": "http",
        "method": "POST",
        "path": "/a",
        "headers": ((b"content-length", b"not-a-number"), (b"host", b"\xff\xfe")),
    },
}


@pytest.mark.parametrize("name", MALFORMED_SCOPES)
def test_malformed_scope_is_recorded_and_the_response_untouched(tmp_path: Path, name: str) -> None:
    db = tmp_path / "t.db"
    recorder = RedirectRecorder(redirecting_app, db_path=db)
    sent = call(recorder, dict(MALFORMED_SCOPES[name]))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 302
    recorder.writer.flush()
    assert recorder.writer.dropped == dict.fromkeys(recorder.writer.dropped, 0)
    unpack_file(db)
    with sqlite3.connect(db) as conn:
        status, location = conn.execute("select status, location from requests").fetchone()
    assert (status, location) == (302, "/x")
    writer_for(db, recorder.writer.options).close()


def _har(entries: Any) -> str:
    return json.dumps({"log": {"version": "1.2", "entries": entries}})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
entry_like = st.fixed_dictionaries(
    {},
    optional={
        "startedDateTime": st.sampled_from(["2026-11-21T06:00:00.000Z", "yesterday", 5]),
        "time": st.sampled_from([1.5, -1, "x", None]),
        "request": st.fixed_dictionaries(
            {},
            optional={
                "method": st.sampled_from(["GET", "POST", 7, ""]),
                "url": st.sampled_from(["http://a.test/x", "https://[::1", "ftp://x", "", None]),
                "headers": json_values,
                "bodySize": json_values,
                "httpVersion": json_values,
            },
        ),
        "response": st.fixed_dictionaries(
            {},
            optional={
                "status": st.sampled_from([200, 301, "301", 99999, None]),
                "headers": json_values,
                "redirectURL": json_values,
                "bodySize": json_values,
            },
        ),
    },
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    document=st.one_of(
        st.text(max_size=50),
        json_values.map(json.dumps),
        st.lists(entry_like | json_values, max_size=4).map(_har),
    )
)
def test_any_har_imports_cleanly_or_fails_with_one_reason(tmp_path: Path, document: str) -> None:
    examples = sorted(tmp_path.glob("fuzz-*.db"))
    db = tmp_path / f"fuzz-{len(examples)}.db"  # a fresh database for every example
    har = tmp_path / "fuzz.har"
    har.write_text(document)
    try:
        result = import_har(har, db)
    except HarError as exc:
        assert str(exc) and "\n" not in str(exc)
        if db.exists():  # refused: nothing half-imported
            with sqlite3.connect(db) as conn:
                assert conn.execute("select count(*) from requests").fetchone()[0] == 0
    else:
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from requests").fetchone()[0] == result.rows
