"""The command line reads right: --version, help without type noise after flags or
braces in usage lines, choices for --format/--fail-on, and one error style (exit 2,
one line) whether a command or Typer's parser found the mistake."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from redirect_auditor_cli.main import app

COMMANDS = ("run", "audit", "explore", "demo", "import-har", "probe", "prune", "merge", "unpack")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


def test_version_on_the_root_command() -> None:
    code, out, _ = invoke("--version")
    assert code == 0
    assert out == f"redirect-auditor {version('redirect-auditor')}\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_usage_line_names_arguments_in_capitals(command: str) -> None:
    code, out, _ = invoke(command, "--help")
    assert code == 0
    [usage] = [line.strip() for line in out.splitlines() if "Usage:" in line]
    assert usage.startswith(f"Usage: redirect-auditor {command} [OPTIONS]")
    assert "{" not in usage and "}" not in usage
    arguments = usage.split("[OPTIONS]", 1)[1].split()
    assert all(re.fullmatch(r"\[?[A-Z][A-Z.]*(\.\.\.)?\]?", a) for a in arguments), usage


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_flags_show_no_type(command: str) -> None:
    _, out, _ = invoke(*([command] if command else []), "--help")
    assert "<bool>" not in out


def test_format_and_fail_on_list_their_choices() -> None:
    _, out, _ = invoke("audit", "--help")
    # The option's own help line, whatever frames the help (rich panels or plain click).
    lines = {
        match.group(1): line
        for line in out.splitlines()
        if (match := re.match(r"^\W*(--[a-z-]+)", line))
    }
    for choice in ("text", "table", "json", "markdown"):
        assert choice in lines["--format"]
    assert "error" in lines["--fail-on"] and "warning" in lines["--fail-on"]
    assert "<str>" not in lines["--format"] and "<str>" not in lines["--fail-on"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["audit", "x.db", "--format", "yaml"], "--format"),
        (["audit", "x.db", "--fail-on", "info"], "--fail-on"),
        (["audit", "x.db", "--frmat", "json"], "--frmat"),
        (["audit"], "DB"),
        (["audit", "x.db", "--limit", "-1"], "--limit"),
        (["no-such-command"], "no-such-command"),
        (["run", "tests.apps.site:app", "--port", "70000"], "--port"),
        (["probe", "http://x/", "--as", "netscape"], "--as"),
    ],
)
def test_command_line_mistakes_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    code, out, err = invoke(*args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("Error: "), err
    assert needle in err and "--help" in err
