"""The recorder's journal: batches in, requests out, nothing lost, changed or run."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from auditor import RedirectRecorder, audit
from auditor.record.rows import Capture, RowBuilder, to_portable
from auditor.store import journal
from auditor.store.merge import merge
from auditor.store.requests import ROW_COLUMNS
from auditor.store.retention import prune
from auditor.store.schema import BATCHES_TABLE, META_TABLE, SCHEMA_VERSION, connect, ensure_schema
from auditor.urls import TrustedProxies
from redirect_auditor_cli.main import app as cli_app
from tests.servers import serve_in_thread, wait_for


async def hello(request: Request) -> Response:
    if request.url.path == "/old":
        return RedirectResponse("/hello", status_code=301)
    return PlainTextResponse("hi")


APP = Starlette(routes=[Route("/hello", hello), Route("/old", hello)])


def record(db: Path, count: int, **options: Any) -> None:
    recorder = RedirectRecorder(APP, db_path=db, **options)
    try:
        with serve_in_thread(recorder) as base, httpx.Client(base_url=base) as client:
            for i in range(count):
                assert client.get(f"/hello?n={i}").status_code == 200
            recorder.writer.flush()
    finally:
        recorder.writer.close()


def queries(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [q for (q,) in conn.execute("select query from requests order by id")]


def batch_count(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f"select count(*) from {BATCHES_TABLE}").fetchone()[0])


def built_rows(starts: list[float]) -> list[tuple[Any, ...]]:
    """Rows as the writer builds them, one per start time."""
    builder = RowBuilder(b"k" * 32, "test:1", TrustedProxies(()), store_client_ip=False)
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("shop.example", 80),
        "client": ("127.0.0.1", 5000),
        "path": "/p",
        "raw_path": b"/p",
        "query_string": b"",
        "headers": [(b"host", b"shop.example")],
    }
    return [
        builder.build_row(to_portable(Capture(scope, start, start + 0.001, 200, None, 2, True)))
        for start in starts
    ]


def test_recorded_rows_wait_in_batches_until_a_reader_unpacks_them(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    record(db, 40)
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("select count(*) from requests").fetchone()[0] == 0
        assert journal.pending_rows(conn) == 40
        assert journal.recorded_rows(conn) == 40
    assert journal.unpack_file(db) == 40
    assert queries(db) == [f"n={i}" for i in range(40)]  # in the order they were served
    assert batch_count(db) == 0
    assert journal.unpack_file(db) == 0


def test_audit_unpacks_first(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    recorder = RedirectRecorder(APP, db_path=db)
    try:
        with serve_in_thread(recorder) as base, httpx.Client(base_url=base) as client:
            for _ in range(3):
                assert client.get("/old", follow_redirects=True).status_code == 200
            recorder.writer.flush()
    finally:
        recorder.writer.close()
    result = audit(db)
    assert result.rows_scanned == 6 and result.redirects_scanned == 3
    assert batch_count(db) == 0
    with closing(sqlite3.connect(db)) as conn:
        linked = conn.execute("select count(*) from requests where follow_up_of is not null")
        assert linked.fetchone()[0] == 3


def test_a_damaged_batch_stays_and_the_others_move(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "t.db"
    conn = connect(db)
    ensure_schema(conn)
    with conn:
        journal.append(conn, "w", [journal.encode(built_rows([1.0, 2.0]))])
        conn.execute(
            f"insert into {BATCHES_TABLE} (worker_id, first_started_at, last_started_at, rows, "
            "data) values ('w', 3, 3, 1, ?)",
            (b"\x80\x05not a pickle",),
        )
        journal.append(conn, "w", [journal.encode(built_rows([4.0]))])
    with caplog.at_level(logging.WARNING, logger="redirect_auditor"):
        assert journal.unpack(conn) == 3
    assert "left unread" in caplog.text
    assert conn.execute("select started_at from requests order by id").fetchall() == [
        (1.0,),
        (2.0,),
        (4.0,),
    ]
    assert conn.execute(f"select first_started_at from {BATCHES_TABLE}").fetchall() == [(3.0,)]
    conn.close()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_a_batch_that_names_code_is_refused_and_never_run(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    marker = tmp_path / "ran"
    conn = connect(db)
    ensure_schema(conn)
    with conn:
        conn.execute(
            f"insert into {BATCHES_TABLE} (worker_id, first_started_at, last_started_at, rows, "
            "data) values ('w', 1, 1, 1, ?)",
            (pickle.dumps([_Payload(marker)]),),
        )
    assert journal.unpack(conn) == 0
    assert not marker.exists()
    with pytest.raises(journal.JournalError):
        journal.batch_rows(pickle.dumps([("not", "a", "row")]))
    conn.close()


def test_an_older_database_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    conn = connect(db)
    ensure_schema(conn)
    with conn:  # as schema version 2 left it: no journal, one recorded row
        conn.execute(f"drop table {BATCHES_TABLE}")
        conn.execute(f"update {META_TABLE} set value = '2' where key = 'schema_version'")
        conn.execute(
            f"insert into requests ({', '.join(ROW_COLUMNS)}) values "
            f"({', '.join('?' * len(ROW_COLUMNS))})",
            tuple(
                {"started_at": 1.0, "method": "GET", "query": "old", "status": 200}.get(c)
                for c in ROW_COLUMNS
            ),
        )
    conn.close()
    record(db, 3)
    with closing(sqlite3.connect(db)) as conn:
        version = conn.execute(f"select value from {META_TABLE} where key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)
    journal.unpack_file(db)
    assert queries(db) == ["old", "n=0", "n=1", "n=2"]


def test_retention_counts_and_drops_whole_batches(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    conn = connect(db)
    ensure_schema(conn)
    with conn:
        for first in (100.0, 200.0, 300.0):
            journal.append(conn, "w", [journal.encode(built_rows([first + i for i in range(10)]))])
    # The newest 15 rows span the two newest batches: the oldest goes whole.
    assert prune(conn, max_rows=15) == 10
    assert journal.pending_rows(conn) == 20
    assert prune(conn, max_age=1000, now=1210.5) == 10  # the batch that ended at 209
    journal.unpack(conn)
    assert [r[0] for r in conn.execute("select started_at from requests order by id")] == [
        300.0 + i for i in range(10)
    ]
    conn.close()


def test_merge_reads_a_shards_batches_without_changing_the_shard(tmp_path: Path) -> None:
    shard = tmp_path / "web1.db"
    record(shard, 12)
    digest = hashlib.sha256(shard.read_bytes()).hexdigest()
    out = tmp_path / "all.db"
    assert merge(out, [shard]).added == {str(shard): 12}
    assert hashlib.sha256(shard.read_bytes()).hexdigest() == digest
    with closing(sqlite3.connect(shard)) as conn:
        assert journal.pending_rows(conn) == 12  # still batches there
    assert merge(out, [shard]).added == {str(shard): 0}  # merged twice: nothing new
    assert sorted(queries(out)) == sorted(f"n={i}" for i in range(12))


def test_unpacking_while_recording_loses_and_repeats_nothing(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    recorder = RedirectRecorder(APP, db_path=db, flush_interval=0.01)
    stop = threading.Event()
    moved: list[int] = []

    def unpack_all_the_time() -> None:
        while not stop.is_set():
            if db.exists():
                moved.append(journal.unpack_file(db))

    reader = threading.Thread(target=unpack_all_the_time)
    try:
        with serve_in_thread(recorder) as base, httpx.Client(base_url=base) as client:
            reader.start()
            for i in range(300):
                assert client.get(f"/hello?n={i}").status_code == 200
            recorder.writer.flush()
    finally:
        stop.set()
        if reader.is_alive():
            reader.join()
        recorder.writer.close()
    journal.unpack_file(db)
    assert sum(moved) > 0  # the reader did move rows while requests were served
    assert queries(db) == [f"n={i}" for i in range(300)]


def test_the_explore_follower_moves_a_live_recording(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    record(db, 1)  # the file exists, as explore requires
    stop = journal.follow([db], every=0.02)
    try:
        recorder = RedirectRecorder(APP, db_path=db)
        try:
            with serve_in_thread(recorder) as base, httpx.Client(base_url=base) as client:
                for i in range(1, 6):
                    assert client.get(f"/hello?n={i}").status_code == 200
                recorder.writer.flush()
        finally:
            recorder.writer.close()
        # Nobody else unpacks: only the follower can bring them into requests.
        wait_for(lambda: len(queries(db)) == 6, what="the follower to unpack")
    finally:
        stop.set()
    assert queries(db) == [f"n={i}" for i in range(6)]
    assert batch_count(db) == 0


def test_the_unpack_command_moves_a_recording_for_other_tools(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    record(db, 4)
    result = CliRunner().invoke(cli_app, ["unpack", str(db)])
    assert result.exit_code == 0, result.output
    assert f"Moved 4 recorded request(s) into requests in {db}." in result.stdout
    assert queries(db) == [f"n={i}" for i in range(4)]
    again = CliRunner().invoke(cli_app, ["unpack", str(db)])
    assert "Moved 0 recorded request(s)" in again.stdout
