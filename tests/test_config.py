"""[tool.redirect-auditor] in pyproject.toml, merged with command-line options."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.analysis.config import ConfigError, build_options, find_pyproject


def write(directory: Path, body: str) -> Path:
    path = directory / "pyproject.toml"
    path.write_text(f'[project]\nname = "app"\n\n[tool.redirect-auditor]\n{body}\n')
    return path


def test_options_come_from_the_nearest_pyproject_in_a_parent(tmp_path: Path) -> None:
    write(tmp_path, 'chain-threshold = 3\nignore_paths = ["/health*"]\nlink-window = 10')
    nested = tmp_path / "src" / "app"
    nested.mkdir(parents=True)
    assert find_pyproject(nested) == tmp_path / "pyproject.toml"
    options = build_options(start=nested)
    assert (options.chain_threshold, options.ignore_paths, options.link_window) == (
        3,
        ("/health*",),
        10.0,
    )


def test_command_line_wins_over_the_file(tmp_path: Path) -> None:
    write(tmp_path, "chain-threshold = 3\nunfollowed-ratio = 0.5")
    options = build_options({"chain_threshold": 4, "link_window": None}, start=tmp_path)
    assert (options.chain_threshold, options.unfollowed_ratio, options.link_window) == (
        4,
        0.5,
        30.0,
    )


def test_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "chain-treshold = 3")
    with pytest.raises(ConfigError, match="unknown key 'chain-treshold'") as info:
        build_options(start=tmp_path)
    assert str(path) in str(info.value) and "chain-threshold" in str(info.value)


@pytest.mark.parametrize(
    "body, reason",
    [
        ('chain-threshold = "two"', "whole number"),
        ("chain-threshold = 1", "2 or more"),
        ("ignore-paths = [1]", "list of strings"),
        ('ignore-rules = ["nope"]', "unknown rule"),
        ("chain-threshold = [", "not valid TOML"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path: Path, body: str, reason: str) -> None:
    write(tmp_path, body)
    with pytest.raises(ConfigError, match=reason):
        build_options(start=tmp_path)


def test_no_pyproject_means_defaults(tmp_path: Path) -> None:
    assert build_options(use_pyproject=False).chain_threshold == 2
