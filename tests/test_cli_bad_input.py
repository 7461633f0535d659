"""Every command refuses bad input and a bad environment the same way: exit 2, exactly
one line on stderr, no traceback, and no file created or changed (no -wal, -shm or .key
left beside a file that was refused)."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.store.merge import merge
from auditor.store.schema import connect, create_private_file, ensure_schema
from redirect_auditor_cli.main import app
from tests.servers import free_port


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, result.stdout, result.stderr


def files(directory: Path) -> dict[str, str]:
    """Every file in ``directory`` with the sha256 of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def assert_refused(code: int, stderr: str, *needles: str) -> None:
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("Error: "), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in stderr, stderr


def traffic_db(path: Path, rows: int = 50) -> Path:
    """A real traffic database (the recorder's schema) with ``rows`` requests, all in the
    main file (checkpointed), as a copied or long-closed database is."""
    create_private_file(path)
    conn = connect(path)
    ensure_schema(conn)
    with conn:
        conn.executemany(
            "insert into requests (started_at, method, scheme, host, path, url, status, "
            "location_url, client_key, worker_id) values (?, 'GET', 'http', 'x', ?, ?, ?, ?, "
            "'k', 'w')",
            [(1000.0 + i, f"/p{i}", f"http://x/p{i}", 301, f"http://x/q{i}") for i in range(rows)],
        )
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    return path


def corrupt_db(path: Path) -> Path:
    """A traffic database whose header and schema read fine but whose request pages are
    overwritten: what a disk error or a half-copied file leaves."""
    traffic_db(path, rows=3000)
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    pages = len(data) // page_size
    start = page_size * (pages // 2)
    data[start : start + page_size * 4] = b"\x5a" * (page_size * 4)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    return corrupt_db(tmp_path / "corrupt.db")


@contextmanager
def busy_port() -> Iterator[int]:
    """A port some other program is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_audit_refuses_a_corrupt_database(corrupt: Path) -> None:
    before = files(corrupt.parent)
    code, out, err = invoke("audit", str(corrupt), "--no-config")
    assert_refused(code, err, "corrupt.db", "damaged")
    assert out == ""
    assert files(corrupt.parent) == before


def test_unpack_refuses_a_corrupt_or_missing_database(corrupt: Path) -> None:
    before = files(corrupt.parent)
    code, out, err = invoke("unpack", str(corrupt))
    assert_refused(code, err, "corrupt.db", "damaged")
    code, out, err = invoke("unpack", str(corrupt.parent / "missing.db"))
    assert_refused(code, err, "missing.db", "no such file")
    assert out == ""
    assert files(corrupt.parent) == before


def test_audit_combined_refuses_a_corrupt_database(corrupt: Path) -> None:
    good = traffic_db(corrupt.parent / "good.db")
    before = files(corrupt.parent)
    code, _, err = invoke(
        "audit", str(good), str(corrupt), "--combined", str(corrupt.parent / "all.db")
    )
    assert_refused(code, err, "corrupt.db")
    assert files(corrupt.parent) == before


def test_explore_refuses_a_corrupt_database_before_serving(corrupt: Path) -> None:
    before = files(corrupt.parent)
    code, _, err = invoke("explore", str(corrupt), "--port", "0")
    assert_refused(code, err, "corrupt.db", "damaged")
    assert files(corrupt.parent) == before


def test_explore_on_a_busy_port_fails_before_auditing(tmp_path: Path) -> None:
    db = traffic_db(tmp_path / "traffic.db")  # no findings yet: explore would audit it
    before = files(tmp_path)
    with busy_port() as port:
        code, _, err = invoke("explore", str(db), "--port", str(port))
    assert_refused(code, err, str(port))
    assert files(tmp_path) == before


def test_merge_blames_the_corrupt_shard_and_creates_nothing(corrupt: Path) -> None:
    before = files(corrupt.parent)
    code, _, err = invoke("merge", str(corrupt.parent / "all.db"), str(corrupt))
    assert_refused(code, err, "corrupt.db")
    assert "all.db" not in err
    assert files(corrupt.parent) == before


def test_merge_leaves_an_existing_output_unchanged_when_a_shard_is_corrupt(
    corrupt: Path,
) -> None:
    out = corrupt.parent / "all.db"
    merge(out, [traffic_db(corrupt.parent / "web1.db")])
    before = files(corrupt.parent)
    code, _, err = invoke("merge", str(out), str(corrupt))
    assert_refused(code, err, "corrupt.db")
    assert files(corrupt.parent) == before


def test_merge_typed_in_cp_order_does_not_write_into_the_first_shard(tmp_path: Path) -> None:
    a, b = traffic_db(tmp_path / "a.db"), traffic_db(tmp_path / "b.db")
    before = files(tmp_path)
    code, _, err = invoke("merge", str(a), str(b), str(tmp_path / "all.db"))
    assert_refused(code, err, "a.db", "not one made by merge")
    assert files(tmp_path) == before


def test_merge_writes_again_into_an_output_it_made(tmp_path: Path) -> None:
    a, b = traffic_db(tmp_path / "a.db"), traffic_db(tmp_path / "b.db", rows=60)
    out = tmp_path / "all.db"
    code, _, err = invoke("merge", str(out), str(a))
    assert code == 0, err
    code, out_text, err = invoke("merge", str(out), str(b))
    assert code == 0, err
    assert f"{out}: " in out_text


def test_run_refuses_a_corrupt_database_before_serving(corrupt: Path) -> None:
    before = files(corrupt.parent)
    code, out, err = invoke("run", "tests.apps.site:app", "--db", str(corrupt), "--port", "0")
    assert_refused(code, err, "corrupt.db", "damaged")
    assert "Recording" not in out
    assert files(corrupt.parent) == before


def test_run_on_a_busy_port_fails_before_creating_the_database(tmp_path: Path) -> None:
    with busy_port() as port:
        code, out, err = invoke(
            "run", "tests.apps.site:app", "--db", str(tmp_path / "traffic.db"), "--port", str(port)
        )
    assert_refused(code, err, f"127.0.0.1:{port}")
    assert "Recording" not in out
    assert files(tmp_path) == {}


def test_probe_to_a_closed_port_is_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it
    db = tmp_path / "probe.db"
    code, out, err = invoke("probe", f"http://127.0.0.1:{port}/", "--db", str(db))
    assert_refused(code, err, f"127.0.0.1:{port}", "no response")
    assert out == ""
    assert files(tmp_path) == {}


@pytest.mark.parametrize("timeout", ["0", "-1"])
def test_probe_rejects_a_timeout_that_is_not_positive(timeout: str) -> None:
    code, _, err = invoke("probe", "http://127.0.0.1:9/", "--timeout", timeout)
    assert_refused(code, err, "--timeout")


def test_import_har_with_no_entries_creates_no_database(tmp_path: Path) -> None:
    har = tmp_path / "empty.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "entries": []}}))
    before = files(tmp_path)
    code, _, err = invoke("import-har", str(har), "--db", str(tmp_path / "traffic.db"))
    assert_refused(code, err, "empty.har", "no entries")
    assert files(tmp_path) == before


def test_import_har_with_no_entries_leaves_an_existing_database_unchanged(
    tmp_path: Path,
) -> None:
    db = traffic_db(tmp_path / "traffic.db")
    har = tmp_path / "empty.har"
    har.write_text(json.dumps({"log": {"version": "1.2", "entries": []}}))
    before = files(tmp_path)
    code, _, err = invoke("import-har", str(har), "--db", str(db))
    assert_refused(code, err, "no entries")
    assert files(tmp_path) == before


def test_demo_on_a_busy_port_fails_before_its_work(tmp_path: Path) -> None:
    started = time.monotonic()
    with busy_port() as port:
        code, out, err = invoke("demo", "--db", str(tmp_path / "demo.db"), "--port", str(port))
    assert_refused(code, err, str(port))
    assert out == ""
    assert files(tmp_path) == {}
    assert time.monotonic() - started < 10  # not after recording and auditing


def test_a_refused_wal_database_gets_no_sidecar_files(tmp_path: Path) -> None:
    """The read-only checks leave no -wal/-shm beside a file they refuse."""
    db = traffic_db(tmp_path / "future.db")
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("update auditor_meta set value = '99' where key = 'schema_version'")
    assert sorted(files(tmp_path)) == ["future.db"]
    before = files(tmp_path)
    for command in (["audit", str(db)], ["explore", str(db), "--port", "0"]):
        code, _, err = invoke(*command)
        assert_refused(code, err, "newer")
        assert files(tmp_path) == before
