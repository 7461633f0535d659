"""Datasette on traffic databases: the launcher ``explore`` uses (here) and the plugin
(``plugin.py``, entry point ``redirect_auditor``) with its pages, templates, metadata
and vendored Graphviz (``static/``). Importing this package does not import Datasette."""

from auditor.explore.launch import (
    bind,
    build_datasette,
    database_names,
    is_loopback,
    load_metadata,
    needs_audit,
    serve,
)

__all__ = [
    "bind",
    "build_datasette",
    "database_names",
    "is_loopback",
    "load_metadata",
    "needs_audit",
    "serve",
]
