"""Open traffic databases in Datasette with the auditor's metadata and plugin.

The instance metadata (``metadata.json``, the same as the top-level
``datasette_metadata.json``) names no database: the plugin gives every traffic database
its tables' descriptions and canned queries, whatever the file is called. Datasette
names a database after its file's stem, with ``_2``, ``_3`` ... for repeated stems.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import ipaddress
import json
import socket
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: Datasette costs ~0.7 s, every CLI command would pay it
    from datasette.app import Datasette

METADATA_RESOURCE = "metadata.json"
SETTINGS = {"sql_time_limit_ms": 5000, "facet_time_limit_ms": 500, "truncate_cells_html": 200}


def load_metadata() -> dict[str, Any]:
    """The instance metadata shipped inside the package (identical to the top-level file)."""
    text = (
        importlib.resources.files("auditor.explore").joinpath(METADATA_RESOURCE).read_text("utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def database_names(files: Sequence[str | Path]) -> list[str]:
    """The names Datasette gives ``files``: the stem, de-duplicated with ``_2``, ``_3``..."""
    taken = ["_internal"]
    for file in files:
        stem = Path(file).stem
        name, i = stem, 2
        while name in taken:
            name, i = f"{stem}_{i}", i + 1
        taken.append(name)
    return taken[1:]


def build_datasette(files: Sequence[str | Path], **settings: Any) -> Datasette:
    """A Datasette instance on ``files`` with the auditor metadata; the plugin loads via
    its entry point. The files are opened read-write so a live recording shows up."""
    from datasette.app import Datasette

    paths = [str(Path(file)) for file in files]
    ds = Datasette(paths, metadata=load_metadata(), settings={**SETTINGS, **settings}, cors=False)
    actual = [name for name in ds.databases if name != "_internal"]
    if actual != database_names(paths):  # Datasette changed its naming: fail loudly
        raise RuntimeError(f"unexpected Datasette database names {actual}")
    return ds


def needs_audit(db_path: str | Path) -> bool:
    """True when the database has neither findings nor a recorded audit run (read-only)."""
    conn = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in conn.execute("select name from sqlite_master")}
        for table in ("findings", "audit_runs"):
            if table in tables and conn.execute(f"select 1 from {table} limit 1").fetchone():
                return False
        return True
    finally:
        conn.close()


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so the URL printed before serving has the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(ds: Datasette, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve ``ds`` under uvicorn on an already bound socket until Ctrl-C."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(ds.app(), log_level=log_level, lifespan="auto"))
    # uvicorn shuts down cleanly on Ctrl-C, then re-raises it: a clean stop is exit 0.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
