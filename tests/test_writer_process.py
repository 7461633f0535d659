"""The writer process: what survives a killed serving process, a killed writer
process, and the in-process fallback."""

from __future__ import annotations

import asyncio
import logging
import marshal
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from auditor import RedirectRecorder
from auditor.record import writer_process
from auditor.record.process_writer import ProcessWriter
from auditor.record.rows import ROW_COLUMNS, Capture, RowBuilder, to_portable
from auditor.record.writer import Writer
from auditor.record.writer_process import _Backlog
from auditor.urls import TrustedProxies
from tests.apps import site
from tests.servers import ROOT, fetch_rows, free_port, serve_in_thread, wait_for

DB_ENV = "WRITER_TEST_DB"
INTERVAL_ENV = "WRITER_TEST_FLUSH_INTERVAL"


def recorded_site() -> RedirectRecorder:
    """uvicorn factory for the subprocess tests: the test site behind the recorder."""
    return RedirectRecorder(
        site.app,
        db_path=os.environ[DB_ENV],
        flush_interval=float(os.environ[INTERVAL_ENV]),
    )


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def start_server(db: Path, flush_interval: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, DB_ENV: str(db), INTERVAL_ENV: str(flush_interval)}
    args = [sys.executable, "-m", "uvicorn", "--factory", "tests.test_writer_process:recorded_site"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(args, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/landing/ready").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, timeout=30, what="the server to answer")
    return server, url


def settled_stats(db: Path, writer_pid: int) -> dict[str, Any]:
    """recorder_stats once the writer process has written its last batch and exited."""
    wait_for(lambda: not Path(f"/proc/{writer_pid}").exists(), timeout=30, what="writer exit")
    (row,) = fetch_rows(db, "select * from recorder_stats")
    return row


def kill_mid_traffic(tmp_path: Path, flush_interval: float, requests: int) -> dict[str, Any]:
    db = tmp_path / "traffic.db"
    server, url = start_server(db, flush_interval)
    try:
        (writer_pid,) = wait_for(lambda: children(server.pid), what="the writer process")
        with httpx.Client(base_url=url) as client:
            for i in range(requests):
                assert client.get(f"/landing/{i}").status_code == 200
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
    return settled_stats(db, writer_pid)


def test_a_killed_server_loses_nothing_uncounted_when_nothing_was_shipped(tmp_path: Path) -> None:
    # A flush interval of an hour: every request is still in the server's queue.
    stats = kill_mid_traffic(tmp_path, flush_interval=3600, requests=40)
    assert fetch_rows(tmp_path / "traffic.db", "select path from requests") == []
    assert stats["rows_written"] == 0
    assert stats["dropped_other"] == 41  # the readiness probe and the 40 requests
    assert "ended before handing over 41 request(s)" in stats["last_error"]


def test_a_killed_server_loses_nothing_uncounted_mid_stream(tmp_path: Path) -> None:
    stats = kill_mid_traffic(tmp_path, flush_interval=0.01, requests=300)
    written = len(fetch_rows(tmp_path / "traffic.db", "select id from requests"))
    assert written == stats["rows_written"]
    dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
    assert written + dropped == 301  # the readiness probe and every request: none unaccounted


def test_a_killed_writer_process_falls_back_to_a_thread(
    make_recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = make_recorder()
    writer = recorder.writer
    assert isinstance(writer, ProcessWriter)
    with serve_in_thread(recorder) as url, httpx.Client(base_url=url) as client:
        assert client.get("/landing/one").status_code == 200
        writer.flush()
        assert writer.rows_written == 1
        process = wait_for(lambda: writer._process, what="the writer process")
        with caplog.at_level(logging.WARNING, logger="redirect_auditor"):
            process.send_signal(signal.SIGKILL)
            wait_for(lambda: writer._fallback is not None, what="the fallback writer")
            assert client.get("/landing/two").status_code == 200
            writer.flush()
    paths = [r["path"] for r in fetch_rows(writer.db_path, "select path from requests order by id")]
    assert paths == ["/landing/one", "/landing/two"]
    messages = [r.getMessage() for r in caplog.records if r.name == "redirect_auditor"]
    assert any("continues in a thread of this process" in m for m in messages), messages


def test_an_unstartable_writer_process_falls_back_to_a_thread(
    make_recorder: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with caplog.at_level(logging.WARNING, logger="redirect_auditor"):
        recorder = make_recorder()
        with serve_in_thread(recorder) as url:
            assert httpx.get(f"{url}/landing/x").status_code == 200
        recorder.writer.flush()
    rows = fetch_rows(recorder.writer.db_path, "select path from requests")
    assert [r["path"] for r in rows] == ["/landing/x"]
    assert any("could not start the writer process" in r.getMessage() for r in caplog.records)


def test_writer_thread_option_records_in_process(make_recorder: Any) -> None:
    recorder = make_recorder(writer="thread")
    assert isinstance(recorder.writer, Writer)
    with serve_in_thread(recorder) as url:
        assert httpx.get(f"{url}/landing/t").status_code == 200
    recorder.writer.flush()
    rows = fetch_rows(recorder.writer.db_path, "select path from requests")
    assert [r["path"] for r in rows] == ["/landing/t"]


def test_a_flush_leaves_the_database_at_rest(make_recorder: Any) -> None:
    """A stopping server flushes at lifespan shutdown and may then die by its signal
    (uvicorn re-raises SIGTERM) without a goodbye: the file must be final by then."""
    recorder = make_recorder()
    assert isinstance(recorder.writer, ProcessWriter)
    db = Path(recorder.writer.db_path)
    with serve_in_thread(recorder) as url:
        assert httpx.get(f"{url}/landing/rest").status_code == 200
        recorder.writer.flush()
        # The writer process wrote, checkpointed and closed: no WAL, no open connection.
        assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
        assert [r["path"] for r in fetch_rows(db, "select path from requests")] == ["/landing/rest"]
        assert httpx.get(f"{url}/landing/again").status_code == 200
    recorder.writer.flush()  # and the next rows open it again
    assert [r["path"] for r in fetch_rows(db, "select path from requests order by id")] == [
        "/landing/rest",
        "/landing/again",
    ]


def test_a_forked_worker_gets_its_own_writer_process(make_recorder: Any) -> None:
    """gunicorn --preload: the recorder is built before the fork; each side records."""
    recorder = make_recorder()
    scope = {"type": "http", "method": "GET", "path": "/landing/p", "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        return None

    def one_request(path: str) -> None:
        asyncio.run(recorder({**scope, "path": path}, receive, send))
        recorder.writer.flush()

    one_request("/landing/parent")
    pid = os.fork()
    if pid == 0:  # the child: record one request through the inherited recorder, then leave
        code = 1
        try:
            one_request("/landing/child")
            recorder.writer.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    one_request("/landing/parent-again")
    rows = fetch_rows(recorder.writer.db_path, "select path, worker_id from requests order by id")
    workers = {r["path"]: r["worker_id"] for r in rows}
    assert set(workers) == {"/landing/parent", "/landing/child", "/landing/parent-again"}
    assert workers["/landing/child"].endswith(f":{pid}")
    assert workers["/landing/parent"] == workers["/landing/parent-again"]
    assert workers["/landing/parent"] != workers["/landing/child"]


def test_unknown_writer_kind_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="writer must be 'process' or 'thread'"):
        RedirectRecorder(site.app, db_path="unused.db", writer="fork")  # type: ignore[arg-type]


def test_the_backlog_keeps_frames_as_bytes_up_to_its_limit() -> None:
    backlog = _Backlog(limit_bytes=100)
    assert backlog.put(3, b"x" * 60)
    assert not backlog.put(2, b"y" * 50)  # over the limit: the caller counts 2 dropped
    assert backlog.put(1, b"z" * 40)
    assert backlog.take() == (3, b"x" * 60)
    backlog.done(b"x" * 60)
    assert backlog.put(2, b"y" * 50)  # room again once a frame is written
    backlog.end()
    assert [backlog.take(), backlog.take(), backlog.take()] == [
        (1, b"z" * 40),
        (2, b"y" * 50),
        None,
    ]


def test_the_writer_paces_itself_only_while_traffic_is_light(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(writer_process, "time", SimpleNamespace(monotonic=lambda: now[0]))
    backlog = _Backlog(1 << 30)
    assert backlog.quiet()
    for _ in range(80):  # 20,480 requests within the first second
        assert backlog.put(256, b"x" * 10)
    assert backlog.quiet()  # no rate yet: less than a second has passed
    now[0] = 101.0
    backlog.put(256, b"x" * 10)
    assert backlog.rate > writer_process.PACE_BELOW_RATE and not backlog.quiet()
    now[0] = 103.0  # two seconds with one small frame: light again
    backlog.put(10, b"x" * 10)
    assert backlog.rate == 5.0 and backlog.quiet()
    backlog.put(1, b"y" * (writer_process.PACE_UNTIL_BYTES + 1))  # far behind
    assert not backlog.quiet()


def test_a_capture_survives_the_trip_to_the_writer_process() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "server": ("10.0.0.1", 443),
        "client": ("10.0.0.2", 5000),
        "root_path": "/app",
        "path": "/orders",
        "raw_path": b"/orders",
        "query_string": b"a=1",
        "headers": [(b"host", b"shop.example")],
        "http_version": "2",
        "state": {"not": "shipped"},
    }
    capture = Capture(scope, 1.0, 2.0, 303, [(b"location", b"/done")], 5, True, KeyError("x"))
    shipped = marshal.loads(marshal.dumps(to_portable(capture)))
    builder = RowBuilder(b"k" * 32, "test:1", TrustedProxies(()), store_client_ip=False)
    row = dict(zip(ROW_COLUMNS, builder.build_portable(shipped), strict=True))
    assert row == dict(zip(ROW_COLUMNS, builder.build(capture), strict=True))
    assert (row["method"], row["scheme"], row["host"], row["path"], row["query"]) == (
        "POST",
        "https",
        "shop.example",
        "/orders",
        "a=1",
    )
    assert (row["status"], row["location"], row["response_body_size"]) == (303, "/done", 5)
    assert (row["started_at"], row["duration_ms"], row["response_complete"]) == (1.0, 1000.0, 1)
    assert (row["error"], row["http_version"], row["route"]) == ("KeyError", "2", None)
    assert row["server_addr"] == "10.0.0.1:443"
    assert not any(isinstance(v, dict) for v in shipped[0])  # the scope's state stays home


def test_a_frozen_app_records_in_a_thread(
    make_recorder: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PyInstaller-style: sys.executable is the app itself; never start it again."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with caplog.at_level(logging.WARNING, logger="redirect_auditor"):
        recorder = make_recorder()
        with serve_in_thread(recorder) as url:
            assert httpx.get(f"{url}/landing/frozen").status_code == 200
        recorder.writer.flush()
    assert recorder.writer._process is None
    rows = fetch_rows(recorder.writer.db_path, "select path from requests")
    assert [r["path"] for r in rows] == ["/landing/frozen"]
    assert any("no Python interpreter" in r.getMessage() for r in caplog.records)
