"""`redirect-auditor run` refuses bad input with one line on stderr, no traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.store.schema import META_TABLE, connect, create_private_file, ensure_schema
from redirect_auditor_cli.main import app


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["run", *args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.stderr


def assert_one_clear_line(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error:")
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0]


def test_unimportable_module_fails_with_one_line(tmp_path: Path) -> None:
    code, stderr = run_cli("no_such_module_xyz:app", "--db", str(tmp_path / "t.db"))
    assert code != 0
    assert_one_clear_line(stderr, "no_such_module_xyz")
    assert not (tmp_path / "t.db").exists()


def test_missing_attribute_fails_with_one_line(tmp_path: Path) -> None:
    code, stderr = run_cli("tests.apps.site:no_app", "--db", str(tmp_path / "t.db"))
    assert code != 0
    assert_one_clear_line(stderr, "no_app")


def test_app_string_without_colon_fails_with_one_line(tmp_path: Path) -> None:
    code, stderr = run_cli("tests.apps.site", "--db", str(tmp_path / "t.db"))
    assert code != 0
    assert_one_clear_line(stderr, "module:attribute")


def test_module_that_raises_on_import_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_app_mod.py").write_text("raise KeyError('config missing')\n")
    code, stderr = run_cli(
        "broken_app_mod:app", "--app-dir", str(tmp_path), "--db", str(tmp_path / "t.db")
    )
    assert code != 0
    assert_one_clear_line(stderr, "KeyError")


def test_missing_db_directory_fails_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "missing" / "traffic.db"
    code, stderr = run_cli("tests.apps.site:app", "--db", str(db))
    assert code != 0
    assert_one_clear_line(stderr, "does not exist")
    assert not db.parent.exists()


def test_db_that_is_a_directory_fails_with_one_line(tmp_path: Path) -> None:
    code, stderr = run_cli("tests.apps.site:app", "--db", str(tmp_path))
    assert code != 0
    assert_one_clear_line(stderr, "directory")


def test_non_sqlite_db_file_fails_and_is_left_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database\n" * 10)
    code, stderr = run_cli("tests.apps.site:app", "--db", str(db))
    assert code != 0
    assert_one_clear_line(stderr, "not a SQLite database")
    assert db.read_bytes() == b"these are my notes, not a database\n" * 10


def test_db_with_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    create_private_file(db)
    conn = connect(db)
    ensure_schema(conn)
    conn.execute(f"update {META_TABLE} set value = '99' where key = 'schema_version'")
    conn.commit()
    conn.close()
    code, stderr = run_cli("tests.apps.site:app", "--db", str(db))
    assert code != 0
    assert_one_clear_line(stderr, "newer than this release supports")
    version = sqlite3.connect(db).execute(f"select value from {META_TABLE}").fetchone()
    assert version == ("99",)


@pytest.mark.parametrize(
    "option", [["--record", "everything"], ["--sample-rate", "2"], ["--lifespan", "sometimes"]]
)
def test_bad_option_value_fails_without_traceback(tmp_path: Path, option: list[str]) -> None:
    code, stderr = run_cli("tests.apps.site:app", "--db", str(tmp_path / "t.db"), *option)
    assert code == 2
    assert "Traceback" not in stderr and option[0] in stderr
