"""`redirect-auditor audit` through typer's CliRunner on recorded scenario traffic."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from redirect_auditor_cli.main import app
from tests.traffic import scenario_db

SCHEMA = json.loads((Path(__file__).parent.parent / "docs/audit-json-schema.json").read_text())
runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario_db(tmp_path_factory)


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["audit", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_output_matches_the_documented_schema(db: Path) -> None:
    code, out, _ = run(str(db), "--format", "json", "--no-config")
    assert code == 0
    document = json.loads(out)
    jsonschema.validate(document, SCHEMA)
    [database] = document["databases"]
    assert database["path"] == str(db)
    rules = {f["rule"] for f in database["findings"]}
    assert {"method-change-on-move", "redirect-loop", "slash-redirect"} <= rules
    assert all("evidence" in f for f in database["findings"])
    assert document["counts"] == database["counts"]


def test_fail_on_error_exits_1_when_errors_were_found(db: Path) -> None:
    code, out, _ = run(str(db), "--format", "json", "--fail-on", "error", "--no-config")
    assert code == 1 and json.loads(out)["failed"] is True


def test_fail_on_is_0_when_only_lower_findings_remain(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        ids = [r[0] for r in conn.execute("select distinct rule from findings")]
    conn.close()
    errors = [
        r
        for r in ids
        if r
        in {
            "method-change-on-move",
            "form-reposted-by-307",
            "redirect-target-fails",
            "redirect-loop",
            "self-redirect",
        }
    ]
    args = [a for rule in errors for a in ("--ignore-rule", rule)]
    code, out, _ = run(str(db), "--format", "json", "--fail-on", "error", "--no-config", *args)
    document = json.loads(out)
    assert code == (1 if document["counts"]["error"] else 0)
    code, out, _ = run(
        str(db),
        "--fail-on",
        "error",
        "--no-config",
        "--ignore-path",
        "*",
    )
    assert code == 0


def test_table_output_groups_by_severity_with_a_summary(db: Path) -> None:
    code, out, _ = run(str(db), "--no-config", "--format", "table", "--limit", "0")
    assert code == 0
    assert "Errors (" in out and "Warnings (" in out
    assert out.index("Errors (") < out.index("Warnings (")
    assert f"{db}: " in out.replace("\n", "") and "requests" in out


def test_markdown_output_is_a_pull_request_comment(db: Path) -> None:
    code, out, _ = run(str(db), "--format", "markdown", "--fail-on", "warning", "--no-config")
    assert code == 1
    assert out.startswith("## redirect-auditor: ")
    assert "| `method-change-on-move` |" in out
    assert out.rstrip().endswith("at or above `--fail-on warning`._")
    assert "_Check failed: " in out


def test_several_databases_are_audited_in_turn(db: Path, tmp_path: Path) -> None:
    other = tmp_path / "second.db"
    other.write_bytes(db.read_bytes())
    code, out, _ = run(str(db), str(other), "--format", "json", "--no-config")
    assert code == 0
    document = json.loads(out)
    assert [d["path"] for d in document["databases"]] == [str(db), str(other)]


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("Error: ")
    for needle in needles:
        assert needle in err


def test_bad_input_is_one_line_and_leaves_files_untouched(db: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("create table t (x)").connection.close()
    for path, reason in ((text, "not a SQLite database"), (plain, "no recorder tables")):
        before = snapshot(path)
        code, _, err = run(str(path))
        one_line_error(code, err, reason)
        assert snapshot(path) == before
    code, _, err = run(str(tmp_path / "missing.db"))
    one_line_error(code, err, "no such file")
    assert not (tmp_path / "missing.db").exists()
    code, _, err = run(str(tmp_path))
    one_line_error(code, err, "directory")


def test_good_file_is_not_written_when_another_is_bad(db: Path, tmp_path: Path) -> None:
    before = snapshot(db)
    code, _, err = run(str(db), str(tmp_path / "missing.db"))
    one_line_error(code, err, "missing.db")
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--format", "yaml"], "--format"),
        (["--fail-on", "info"], "--fail-on"),
        (["--ignore-rule", "no-such-rule"], "no-such-rule"),
        (["--chain-threshold", "1"], "chain-threshold"),
    ],
)
def test_unknown_option_values_are_one_line_errors(db: Path, args: list[str], needle: str) -> None:
    before = snapshot(db)
    code, _, err = run(str(db), "--no-config", *args)
    one_line_error(code, err, needle)
    assert snapshot(db) == before


def test_help_has_an_example() -> None:
    result = runner.invoke(app, ["audit", "--help"])
    assert result.exit_code == 0 and "Example: redirect-auditor audit" in result.stdout


def test_help_names_the_pyproject_table_and_gives_an_example() -> None:
    result = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "[tool.redirect-auditor]" in result.output
    assert "Example: redirect-auditor audit" in result.output
