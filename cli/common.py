"""What every command shares: one-line failures, database and port checks."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from auditor.store.schema import SchemaError, check_traffic_db

console = Console()
err_console = Console(stderr=True)

# Exit codes, the same for every command (DESIGN.md, CLI).
EXIT_FINDINGS = 1  # findings at or above --fail-on
EXIT_BAD_INPUT = 2  # bad input or environment: missing/corrupt file, busy port, bad option


def error_line(message: str) -> None:
    """Print one line on stderr in the one error style every command uses."""
    err_console.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one clear line on stderr and exit non-zero (no traceback)."""
    error_line(" ".join(message.split()))
    raise typer.Exit(code=code)


def require_traffic_db(path: Path) -> Path:
    """Return the path when it is a usable traffic database, else fail with the reason."""
    try:
        check_traffic_db(path)
    except SchemaError as exc:
        fail(str(exc))
    return path


def require_free_port(host: str, port: int) -> None:
    """Fail before any work when ``host:port`` cannot be listened on (busy, not ours).

    Binds and closes a socket the way uvicorn does (SO_REUSEADDR), so a port this
    passes is one uvicorn can bind a moment later. Port 0 (any free port) always can.
    """
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        fail(f"cannot listen on {host}:{port} ({exc.strerror or exc})")
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port} ({exc.strerror or exc})")
