"""What every command shares: one-line failures and database checks."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from auditor.schema import SchemaError, check_traffic_db

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line on stderr and exit non-zero (no traceback)."""
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def require_traffic_db(path: Path) -> Path:
    """Return the path when it is a usable traffic database, else fail with the reason."""
    try:
        check_traffic_db(path)
    except SchemaError as exc:
        fail(str(exc))
    return path
