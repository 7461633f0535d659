"""The app keeps answering whatever happens to the database or the bytes on the wire."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from auditor import RedirectRecorder
from auditor.store.schema import restore_sidecar_modes
from tests.apps import site
from tests.servers import fetch_rows, raw_request, serve_in_thread

Recorder = Callable[..., RedirectRecorder]


def drop_warnings(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "redirect_auditor" and f"({reason}:" in r.getMessage()
    ]


def stats(db: Path) -> dict[str, object]:
    (row,) = fetch_rows(db, "select * from recorder_stats")
    return row


def test_locked_database_drops_rows_counted_while_app_answers(
    make_recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "traffic.db"
    recorder = make_recorder(db_path=db, busy_timeout=0.1)
    with serve_in_thread(recorder) as url, httpx.Client(base_url=url) as client:
        assert client.get("/landing/before").status_code == 200
        recorder.writer.flush()
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("begin exclusive")
        try:
            for i in range(3):  # three batches, three failed transactions
                assert client.get(f"/landing/locked-{i}").status_code == 200
                recorder.writer.flush()
        finally:
            locker.execute("rollback")
            locker.close()
        assert client.get("/landing/after").status_code == 200
    recorder.writer.flush()
    paths = [r["path"] for r in fetch_rows(db, "select path from requests order by id")]
    assert paths == ["/landing/before", "/landing/after"]
    row = stats(db)
    assert (row["dropped_locked"], row["rows_written"]) == (3, 2)
    assert "locked" in str(row["last_error"])
    assert len(drop_warnings(caplog, "locked")) == 1


@contextmanager
def read_only_file(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, even for root (who ignores permission bits)."""
    path.chmod(0o444)
    immutable = False
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip("running as root without chattr +i: cannot make a file read-only")
        immutable = True
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o600)


def test_read_only_database_drops_rows_counted_while_app_answers(
    make_recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "traffic.db"
    first = make_recorder(db_path=db)
    with serve_in_thread(first) as url:
        httpx.get(f"{url}/landing/writable")
    first.writer.close()  # the file is complete and closed; a new process would open it now
    with read_only_file(db):
        recorder = make_recorder(db_path=db)
        with serve_in_thread(recorder) as url:
            assert [httpx.get(f"{url}/landing/ro").status_code for _ in range(4)] == [200] * 4
        recorder.writer.flush()
        assert recorder.writer.dropped["read_only"] == 4
        assert recorder.writer.rows_written == 0
    assert len(drop_warnings(caplog, "read_only")) == 1
    assert [r["path"] for r in fetch_rows(db, "select path from requests")] == ["/landing/writable"]


def test_deleted_directory_drops_rows_counted_then_recovers(
    make_recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "traffic.db"
    recorder = make_recorder(db_path=db)
    with serve_in_thread(recorder) as url, httpx.Client(base_url=url) as client:
        assert client.get("/landing/before").status_code == 200
        recorder.writer.flush()
        shutil.rmtree(data)
        assert [client.get(f"/landing/gone-{i}").status_code for i in range(3)] == [200] * 3
        recorder.writer.flush()
        assert recorder.writer.dropped["other"] == 3
        assert not data.exists()  # nothing wrote into an unlinked file or re-created the dir
        data.mkdir()
        assert client.get("/landing/back").status_code == 200
    recorder.writer.flush()
    assert [r["path"] for r in fetch_rows(db, "select path from requests")] == ["/landing/back"]
    assert stats(db)["dropped_other"] == 3
    assert len(drop_warnings(caplog, "other")) == 1


def test_redirects_mode_without_its_targets_table_records_every_request(
    make_recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No directory yet: neither the key, the table of recent targets nor the database
    # can be made. The app still starts and answers; the process records everything.
    data = tmp_path / "data"
    db = data / "traffic.db"
    recorder = make_recorder(db_path=db, record="redirects")
    assert recorder.targets is None
    assert any("no table of recent redirect targets" in r.getMessage() for r in caplog.records)
    with serve_in_thread(recorder) as url, httpx.Client(base_url=url) as client:
        assert client.get("/landing/nowhere").status_code == 200
        recorder.writer.flush()
        assert recorder.writer.dropped["other"] == 1
        data.mkdir()
        assert client.get("/landing/back").status_code == 200  # no redirect led here
    recorder.writer.flush()
    assert [r["path"] for r in fetch_rows(db, "select path from requests")] == ["/landing/back"]


def test_non_utf8_bytes_in_path_query_and_headers_are_stored(make_recorder: Recorder) -> None:
    recorder = make_recorder(site.app)
    raw_target = b"GET /caf\xe9?q=\xff HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    request = (
        b"GET /landing/caf%E9%FF?q=%FF%FE&token=%FFsecret HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"User-Agent: agent\xff\xfe\x80\r\n"
        b"X-Request-ID: rid-\x80\xff\r\n"
        b"X-Forwarded-Host: \xc3\x28\r\n"
        b"Connection: close\r\n\r\n"
    )
    with serve_in_thread(recorder) as url:
        # uvicorn refuses raw non-ASCII in the request target before the app sees it.
        assert raw_request(url, raw_target).startswith(b"HTTP/1.1 400")
        assert raw_request(url, request).startswith(b"HTTP/1.1 200")
        assert httpx.get(f"{url}/landing/next").status_code == 200
    recorder.writer.flush()
    first, second = fetch_rows(recorder.writer.db_path, "select * from requests order by id")
    assert first["path"] == "/landing/caf\ufffd\ufffd"
    assert first["url"].endswith("/landing/caf%E9%FF?q=%FF%FE&token=REDACTED")
    assert first["query"] == "q=%FF%FE&token=REDACTED"
    assert first["user_agent"] == "agent\xff\xfe\x80"
    assert first["request_id"] == "rid-\x80\xff"
    assert first["x_forwarded_host"] == "\xc3\x28"
    assert second["path"] == "/landing/next"


def test_percent_encoded_invalid_utf8_and_crlf_in_request_are_stored(
    make_recorder: Recorder,
) -> None:
    recorder = make_recorder(site.app)
    request = (
        b"GET /redirect/302?to=/x%0D%0ASet-Cookie:%20evil=1&q=%FF%FE HTTP/1.1\r\n"
        b"Host: h\xff\xfest\r\n"
        b"User-Agent: agent\xff\xfe\x80\r\n"
        b"X-Request-ID: rid-\x80\xff\r\n"
        b"Connection: close\r\n\r\n"
    )
    with serve_in_thread(recorder) as url:
        reply = raw_request(url, request)
        crlf_path = raw_request(
            url, b"GET /a%0D%0ASet-Cookie:%20b=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
    assert reply.startswith(b"HTTP/1.1 302")
    assert b"\r\nset-cookie" not in reply.lower()
    assert crlf_path.startswith(b"HTTP/1.1 404")
    recorder.writer.flush()
    redirect, crlf = fetch_rows(recorder.writer.db_path, "select * from requests order by id")
    assert redirect["host"] == "h\xff\xfest"
    assert redirect["user_agent"] == "agent\xff\xfe\x80"
    assert redirect["request_id"] == "rid-\x80\xff"
    assert redirect["query"] == "to=/x%0D%0ASet-Cookie:%20evil=1&q=%FF%FE"
    assert redirect["location"] == "/x%0D%0ASet-Cookie:%20evil=1"
    assert crlf["path"] == "/a\r\nSet-Cookie: b=1"
    assert crlf["status"] == 404


async def raw_location_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Sends the Location the request names, byte for byte (no framework escaping)."""
    if scope["type"] != "http":
        return
    locations = {
        "/long": b"/long/" + b"a" * 65536,
        "/crlf": b"/x\r\nSet-Cookie: evil=1",
        "/latin1": b"/caf\xe9?token=\xff",
    }
    location = locations.get(scope["path"])
    headers = [(b"location", location)] if location else []
    await send(
        {"type": "http.response.start", "status": 302 if location else 200, "headers": headers}
    )
    await send({"type": "http.response.body", "body": b""})


def test_64kb_location_is_stored_truncated_without_failure(make_recorder: Recorder) -> None:
    recorder = make_recorder(raw_location_app)
    with serve_in_thread(recorder) as url:
        reply = raw_request(url, b"GET /long HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 302") and b"/long/" + b"a" * 65536 + b"\r\n" in reply
    recorder.writer.flush()
    (row,) = fetch_rows(recorder.writer.db_path, "select * from requests")
    assert row["location"].startswith("/long/aaaa") and len(row["location"]) < 9000
    assert "more]" in row["location"]
    assert row["location_url"].startswith("http://h/long/aaaa")
    assert recorder.writer.dropped == dict.fromkeys(recorder.writer.dropped, 0)


def test_crlf_location_is_refused_by_server_and_recorded_raw(make_recorder: Recorder) -> None:
    recorder = make_recorder(raw_location_app)
    with serve_in_thread(recorder) as url:
        reply = raw_request(url, b"GET /crlf HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        # The server refuses the header (no response or a 500): nothing is injected.
        assert b"set-cookie" not in reply.lower()
        assert httpx.get(f"{url}/latin1").status_code == 302
        assert httpx.get(f"{url}/fine").status_code == 200
    recorder.writer.flush()
    crlf, latin1, fine = fetch_rows(recorder.writer.db_path, "select * from requests order by id")
    assert crlf["location"] == "/x\r\nSet-Cookie: evil=1"
    assert crlf["status"] == 302 and crlf["error"] is not None
    assert latin1["location"] == "/caf\xe9?token=REDACTED"
    assert fine["status"] == 200


def test_recorder_never_raises_into_the_app_when_the_file_is_a_directory(
    make_recorder: Recorder, tmp_path: Path
) -> None:
    db = tmp_path / "is-a-dir.db"
    db.mkdir()
    recorder = make_recorder(db_path=db)
    with serve_in_thread(recorder) as url:
        assert [httpx.get(f"{url}/landing/x").status_code for _ in range(2)] == [200, 200]
    recorder.writer.flush()
    assert sum(recorder.writer.dropped.values()) == 2


def test_full_queue_drops_are_counted_and_warned_once(
    make_recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    # A writer that never drains on its own: the queue holds one row, the rest overflow.
    recorder = make_recorder(site.app, queue_size=1, flush_interval=60)
    with serve_in_thread(recorder) as url, httpx.Client(base_url=url) as client:
        assert [client.get(f"/landing/{i}").status_code for i in range(5)] == [200] * 5
        recorder.writer.flush()
        assert client.get("/landing/after").status_code == 200
    recorder.writer.flush()
    paths = [r["path"] for r in fetch_rows(recorder.writer.db_path, "select path from requests")]
    assert paths == ["/landing/0", "/landing/after"]
    assert stats(recorder.writer.db_path)["dropped_queue_full"] == 4
    assert len(drop_warnings(caplog, "queue_full")) == 1


def test_sidecar_files_created_while_read_only_get_the_database_mode_back(tmp_path: Path) -> None:
    """A -shm created while the database was 0444 would keep every later write failing."""
    db = tmp_path / "traffic.db"
    db.write_bytes(b"")
    db.chmod(0o600)
    for suffix in ("-wal", "-shm"):
        sidecar = tmp_path / f"traffic.db{suffix}"
        sidecar.write_bytes(b"")
        sidecar.chmod(0o444)
    assert restore_sidecar_modes(db)
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.glob("traffic.db-*")} == {"0o600"}
    assert not restore_sidecar_modes(db)  # nothing left to change
    db.chmod(0o444)
    (tmp_path / "traffic.db-shm").chmod(0o400)
    assert not restore_sidecar_modes(db)  # the database itself is read-only: leave it be
