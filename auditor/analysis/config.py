"""Audit options from ``[tool.redirect-auditor]`` in pyproject.toml, merged with the CLI's.

Keys may be spelled with hyphens or underscores (``chain-threshold`` or
``chain_threshold``); they are the fields of ``AuditOptions``. Options given on
the command line win over the file. Unknown keys and bad values raise
``ConfigError`` with a one-line reason.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditor.analysis.rules.base import AuditOptions, all_rules

TABLE = "redirect-auditor"


class ConfigError(ValueError):
    """An audit option is unknown or has a value it cannot take."""


FIELDS = {f.name: f for f in dataclasses.fields(AuditOptions)}


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml in ``start`` (default: the cwd) or its parents."""
    here = (start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_file_options(path: Path) -> dict[str, Any]:
    """The ``[tool.redirect-auditor]`` table of one pyproject.toml, keys normalized."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    table = data.get("tool", {}).get(TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.{TABLE}] must be a table")
    return {_key(name, f"{path} [tool.{TABLE}]"): value for name, value in table.items()}


def _key(name: str, where: str) -> str:
    key = name.replace("-", "_")
    if key not in FIELDS:
        known = ", ".join(n.replace("_", "-") for n in FIELDS)
        raise ConfigError(f"{where}: unknown key {name!r} (known: {known})")
    return key


def _coerce(key: str, value: Any, where: str) -> Any:
    default = FIELDS[key].default
    name = key.replace("_", "-")
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {name} must be a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(default, bool) or isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{where}: {name} must be a whole number, got {value!r}")
        return value
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
    return float(value)


def validate(options: AuditOptions) -> AuditOptions:
    """Check ranges and rule ids; return the options unchanged when they are usable."""
    checks = (
        (options.link_window > 0, "link-window must be more than 0 seconds"),
        (options.chain_threshold >= 2, "chain-threshold must be 2 or more"),
        (0 < options.unfollowed_ratio <= 1, "unfollowed-ratio must be in (0, 1]"),
        (options.unfollowed_min_hits >= 1, "unfollowed-min-hits must be 1 or more"),
        (options.temporary_min_hits >= 1, "temporary-min-hits must be 1 or more"),
        (options.temporary_min_span_days >= 0, "temporary-min-span-days must be 0 or more"),
        (options.long_cache_seconds >= 0, "long-cache-seconds must be 0 or more"),
    )
    for ok, reason in checks:
        if not ok:
            raise ConfigError(reason)
    unknown = sorted(set(options.ignore_rules) - set(all_rules()))
    if unknown:
        raise ConfigError(
            f"unknown rule id(s) to ignore: {', '.join(unknown)} "
            "(see `redirect-auditor audit --help` for the list)"
        )
    return options


def build_options(
    overrides: Mapping[str, Any] | None = None,
    *,
    start: Path | None = None,
    use_pyproject: bool = True,
) -> AuditOptions:
    """AuditOptions from pyproject.toml (nearest to ``start``) with ``overrides`` on top.

    ``None`` values in ``overrides`` mean "not given" and leave the file's value.
    """
    values: dict[str, Any] = {}
    if use_pyproject:
        path = find_pyproject(start)
        if path is not None:
            for key, value in load_file_options(path).items():
                values[key] = _coerce(key, value, f"{path} [tool.{TABLE}]")
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        key = _key(name, "audit options")
        values[key] = _coerce(key, value, "audit options")
    return validate(AuditOptions(**values))
