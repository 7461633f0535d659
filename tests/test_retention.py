"""Retention: prune keeps the newest traffic and never gets in a recording app's way."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from typer.testing import CliRunner

from auditor import RedirectRecorder
from auditor.store.journal import unpack_file
from auditor.store.retention import parse_duration, prune
from auditor.store.schema import connect
from redirect_auditor_cli.main import app as cli_app
from tests.servers import serve_in_thread


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hi")


def record(db: Path, count: int) -> None:
    recorder = RedirectRecorder(Starlette(routes=[Route("/hello", hello)]), db_path=db)
    with serve_in_thread(recorder) as base, httpx.Client(base_url=base) as client:
        for i in range(count):
            assert client.get(f"/hello?n={i}").status_code == 200
        recorder.writer.flush()
    # The writer's batches into requests: these tests prune rows there (whole batches
    # are test_journal.py's).
    unpack_file(db)


def ids(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("select id from requests order by id")]


def test_max_rows_keeps_the_newest_rows(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    record(db, 30)
    before = ids(db)
    conn = connect(db)
    assert prune(conn, max_rows=10, batch_size=7) == 20
    conn.close()
    assert ids(db) == before[-10:]


def test_max_age_deletes_only_older_rows(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    record(db, 12)
    conn = connect(db)
    # Age the first five recorded rows by two days (we cannot wait that long).
    with conn:
        conn.execute("update requests set started_at = started_at - 172800 where id <= 5")
    assert prune(conn, max_age=parse_duration("1d")) == 5
    assert conn.execute("select min(id), count(*) from requests").fetchone() == (6, 7)
    conn.close()


def test_prune_while_the_app_records_never_fails_a_request(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    record(db, 200)
    recorder = RedirectRecorder(Starlette(routes=[Route("/hello", hello)]), db_path=db)
    statuses: list[int] = []
    with serve_in_thread(recorder) as base:
        conn = connect(db)
        pruner = threading.Thread(
            target=prune, kwargs={"conn": conn, "max_rows": 0, "batch_size": 5}
        )
        with httpx.Client(base_url=base) as client:
            pruner.start()
            while pruner.is_alive() or len(statuses) < 50:
                statuses.append(client.get("/hello").status_code)
        pruner.join()
        conn.close()
        recorder.writer.flush()
    assert set(statuses) == {200}
    assert recorder.writer.dropped == dict.fromkeys(recorder.writer.dropped, 0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("45m", 2700), ("12h", 43200), ("30d", 2592000), ("2w", 1209600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_prune_cli_needs_a_limit_and_a_traffic_database(tmp_path: Path) -> None:
    runner = CliRunner()
    not_db = tmp_path / "notes.txt"
    not_db.write_text("hello")
    result = runner.invoke(cli_app, ["prune", str(not_db)])
    assert result.exit_code == 2
    assert "--max-rows" in result.output
    result = runner.invoke(cli_app, ["prune", str(not_db), "--max-rows", "5"])
    assert result.exit_code == 2
    assert "not a SQLite database" in result.output
    assert not_db.read_text() == "hello"
    result = runner.invoke(cli_app, ["prune", str(not_db), "--max-age", "soon"])
    assert result.exit_code == 2 and "duration" in result.output


def test_prune_cli_reports_what_it_deleted(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    record(db, 8)
    result = CliRunner().invoke(cli_app, ["prune", str(db), "--max-rows", "3"])
    assert result.exit_code == 0, result.output
    assert "Deleted 5 request(s)" in result.output and "3 remain" in result.output


def test_recorder_max_rows_prunes_in_the_writer_thread(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    recorder = RedirectRecorder(Starlette(routes=[Route("/hello", hello)]), db_path=db, max_rows=5)
    with serve_in_thread(recorder) as base, httpx.Client(base_url=base) as client:
        for _ in range(12):
            assert client.get("/hello").status_code == 200
        recorder.writer.flush()
        unpack_file(db)  # rows, not whole batches, for max_rows to count
        assert recorder.writer.prune() == 7
    assert ids(db) == list(range(8, 13))


def test_recorder_rejects_nonsense_retention() -> None:
    with pytest.raises(ValueError, match="max_age"):
        RedirectRecorder(Starlette(), db_path="unused.db", max_age=0)
