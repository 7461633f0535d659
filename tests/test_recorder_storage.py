"""The database file: private permissions, schema version, re-opening, newer schemas."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from auditor import RedirectRecorder
from auditor.store.schema import (
    BATCHES_TABLE,
    META_TABLE,
    SCHEMA_VERSION,
    connect,
    create_private_file,
    ensure_schema,
)
from redirect_auditor_cli.main import app as cli_app
from tests.servers import fetch_rows, serve_in_thread

Recorder = Callable[..., RedirectRecorder]


def record(recorder: RedirectRecorder, *paths: str) -> None:
    with serve_in_thread(recorder) as url:
        for path in paths:
            assert httpx.get(url + path).status_code == 200
    recorder.writer.flush()


def test_new_database_and_key_file_are_private(
    make_recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIRECT_AUDITOR_SECRET", raising=False)
    db = tmp_path / "traffic.db"
    record(make_recorder(db_path=db), "/landing/a")
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    key = tmp_path / "traffic.db.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text()) == 64
    for sidecar in tmp_path.glob("traffic.db-*"):  # -wal / -shm inherit the mode
        assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600


def test_schema_version_is_stored(make_recorder: Recorder, tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    record(make_recorder(db_path=db), "/landing/a")
    assert fetch_rows(db, f"select key, value from {META_TABLE}") == [
        {"key": "schema_version", "value": str(SCHEMA_VERSION)}
    ]


def test_reopening_keeps_rows_and_client_keys(make_recorder: Recorder, tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    first = make_recorder(db_path=db)
    record(first, "/landing/one", "/landing/two")
    first.writer.close()  # as if the process restarted
    second = make_recorder(db_path=db)
    assert second.writer is not first.writer
    record(second, "/landing/three")
    rows = fetch_rows(db, "select path, client_key from requests order by id")
    assert [r["path"] for r in rows] == ["/landing/one", "/landing/two", "/landing/three"]
    assert len({r["client_key"] for r in rows}) == 1  # the key file survives restarts
    assert fetch_rows(db, "select sum(rows_written) as n from recorder_stats") == [{"n": 3}]


def test_existing_file_permissions_are_left_alone(make_recorder: Recorder, tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    db.touch(mode=0o640)
    db.chmod(0o640)
    record(make_recorder(db_path=db), "/landing/a")
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
    assert len(fetch_rows(db, "select * from requests")) == 1


def test_newer_schema_version_is_refused_and_counted(
    make_recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "future.db"
    create_private_file(db)
    conn = connect(db)
    ensure_schema(conn)
    conn.execute(f"update {META_TABLE} set value = ? where key = 'schema_version'", ("99",))
    conn.commit()
    conn.close()
    recorder = make_recorder(db_path=db)
    record(recorder, "/landing/a", "/landing/b")
    assert recorder.writer.dropped["other"] == 2
    assert fetch_rows(db, "select * from requests") == []
    assert fetch_rows(db, f"select * from {BATCHES_TABLE}") == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "redirect_auditor"]
    assert len(warnings) == 1
    assert "newer than this release supports" in warnings[0]


def test_the_apps_own_database_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    app_db = tmp_path / "app.db"
    with closing(sqlite3.connect(app_db)) as conn:
        conn.execute("create table users (id integer primary key, name text)")
        conn.execute("insert into users (name) values ('alice')")
        conn.commit()
    before = app_db.read_bytes()
    result = CliRunner().invoke(cli_app, ["run", "tests.apps.site:app", "--db", str(app_db)])
    assert result.exit_code == 2
    assert "belongs to something else (tables: users)" in result.output
    assert app_db.read_bytes() == before
