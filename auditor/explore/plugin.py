"""The Datasette plugin (entry point ``redirect_auditor``): a report of what's wrong in any
traffic database, whatever its file is called, and readable cells and pictures.

- ``get_metadata`` / ``canned_queries``: titles, descriptions, facets and canned queries
  (``database.json``) for every database the recorder wrote, by whatever name.
- ``register_routes``: ``/-/redirect-report[/DB[/ID]]`` (the report and one page per
  finding), ``/-/redirect-graph`` and the vendored static files.
- ``extra_template_vars`` + ``templates/``: the database page opens with the report; the
  findings table shows the columns a person reads first.
- ``render_cell``: hop paths, chain pictures, severity badges, evidence, UTC times.
- ``handle_exception``: lets Datasette's own error pages render (see there).
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import sys
import weakref
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from datasette import hookimpl
from jinja2 import ChoiceLoader, FileSystemLoader
from markupsafe import Markup

from auditor.explore import cells, pages, queries
from auditor.explore.pictures import chain_dot, parse_hops

TEMPLATES = Path(__file__).with_name("templates")


@hookimpl
def handle_exception(datasette: Any, request: Any, exception: Exception) -> None:
    """Let Datasette's own error page through (this returns none of its own).

    Datasette 0.65's default handler prints every error, a 404 too, with rich when rich
    is installed (it is: our CLI uses it): a traceback with every local variable (SQL,
    parameters, rows) on the console, and a failed page where rich finds no exception
    to print. The default reads its module's ``rich`` when its page is made, after
    every plugin's hook has run: set to None here, it prints nothing for a 4xx.
    """
    module = sys.modules.get("datasette.handle_exception")
    if module is not None and getattr(module, "rich", None) is not None:
        vars(module)["rich"] = None


TIMESTAMP_COLUMNS = {
    "requests": {"started_at"},
    "chains": {"started_at"},
    "findings": {"first_seen", "last_seen"},
    "audit_runs": {"started_at"},
    "recorder_stats": {"started_at", "updated_at"},
}
# The findings table: what a person reads first, then the rest; severity_rank (severity
# again, as a number) and audit_run_id (plumbing) only when asked for with ?_col=.
FINDINGS_FIRST = ("id", "severity", "rule", "method", "source", "status", "target", "hits")
FINDINGS_NEXT = ("title", "example_request_id", "example_chain_id", "last_seen")
FINDINGS_HIDDEN = ("severity_rank", "audit_run_id")

EXAMPLE_LINKS = {
    "example_request_id": ("requests", "request"),
    "example_chain_id": ("chains", "chain"),
}

_traffic: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


@cache
def database_metadata() -> dict[str, Any]:
    """``database.json``: the metadata every traffic database gets (tables and queries)."""
    text = importlib.resources.files("auditor.explore").joinpath("database.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


async def _refresh(datasette: Any) -> set[str]:
    names = set(await queries.traffic_databases(datasette))
    _traffic[datasette] = names
    return names


@hookimpl
def startup(datasette: Any) -> Any:
    async def inner() -> None:
        await _refresh(datasette)

    return inner


@hookimpl
def prepare_jinja2_environment(env: Any) -> None:
    """Our templates ahead of Datasette's defaults, behind a --template-dir's. (Datasette
    finds a plugin's templates/ by itself only when the plugin module is a package.)"""
    mine = str(TEMPLATES)
    loader = env.loader
    first = loader.loaders[0] if isinstance(loader, ChoiceLoader) else None
    if isinstance(first, FileSystemLoader):
        if mine not in first.searchpath:
            first.searchpath.insert(max(len(first.searchpath) - 1, 0), mine)
    else:
        env.loader = ChoiceLoader([FileSystemLoader(mine), loader])


@hookimpl
def get_metadata(datasette: Any) -> dict[str, Any]:
    template = {k: v for k, v in database_metadata().items() if k != "queries"}
    return {"databases": {name: template for name in _traffic.get(datasette, ())}}


QUERY_TABLES = re.compile(r"\b(?:from|join)\s+(findings|chains)\b")


@hookimpl
def canned_queries(datasette: Any, database: str) -> Any:
    async def inner() -> dict[str, Any]:
        if database.startswith("_") or database not in datasette.databases:
            return {}
        db = datasette.get_database(database)
        if not await queries.is_traffic_db(db):
            return {}
        tables = set(await db.table_names())
        chosen = {}
        for name, query in database_metadata()["queries"].items():
            if set(QUERY_TABLES.findall(query["sql"])) <= tables:
                chosen[name] = copy.deepcopy(query)
        return chosen

    return inner


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    return [
        (r"^/-/redirect-report$", pages.report_page),
        (r"^/-/redirect-report/(?P<database>[^/]+)$", pages.report_page),
        (r"^/-/redirect-report/(?P<database>[^/]+)/(?P<finding_id>\d+)$", pages.finding_page),
        (r"^/-/redirect-graph$", pages.graph_page),
        (r"^/-/static-plugins/redirect-auditor/(?P<path>.*)$", pages.static_files),
    ]


@hookimpl
def extra_css_urls(datasette: Any) -> list[str]:
    return [datasette.urls.path(pages.STATIC_PATH + "redirect-auditor.css")]


@hookimpl
def extra_js_urls(datasette: Any) -> list[dict[str, Any]]:
    return [{"url": datasette.urls.path(pages.STATIC_PATH + "redirect-auditor.js"), "module": True}]


def reorder_findings(request: Any) -> Any:
    """``(columns, rows) -> (columns, rows)`` in FINDINGS_FIRST order, hidden ones dropped
    unless ``?_col=`` asked for them."""
    asked = set(request.args.getlist("_col")) if request is not None else set()
    hidden = set(FINDINGS_HIDDEN) - asked
    wanted = [*FINDINGS_FIRST, *FINDINGS_NEXT]

    def rank(name: str) -> int:
        return wanted.index(name) if name in wanted else len(wanted)

    def reorder(columns: list[Any], rows: list[Any]) -> tuple[list[Any], list[Any]]:
        names = [column["name"] for column in columns]
        order = sorted(
            (i for i, name in enumerate(names) if name not in hidden),
            key=lambda i: (rank(names[i]), i),
        )
        kept = [names[i] for i in order]
        reordered = []
        for row in rows:  # Datasette's Row: an iterable of cells, each with its "column"
            by_name = {cell["column"]: cell for cell in row}
            cells_in_order = [by_name[name] for name in kept if name in by_name]
            reordered.append(type(row)(cells_in_order) if hasattr(row, "cells") else cells_in_order)
        return [columns[i] for i in order], reordered

    return reorder


@hookimpl
def extra_template_vars(
    datasette: Any, database: str | None, table: str | None, view_name: str, request: Any
) -> Any:
    async def inner() -> dict[str, Any]:
        if view_name == "index":
            names = await _refresh(datasette)
            return {
                "ra_reports": [
                    await pages.report_context(datasette, name, picture=False)
                    for name in datasette.databases
                    if name in names
                ]
            }
        if not database or view_name not in ("database", "table", "row"):
            return {}
        if database not in _traffic.get(datasette, set()) and database not in await _refresh(
            datasette
        ):
            return {}
        extra: dict[str, Any] = {"ra_traffic": True}
        if view_name == "database":
            extra["ra"] = await pages.report_context(datasette, database)
        if table == "findings" and view_name in ("table", "row"):
            extra["ra_reorder"] = reorder_findings(request)
            extra["ra_report_url"] = pages.report_url(datasette, database)
        if table == "findings" and view_name == "row":
            finding_id = request.url_vars.get("pks", "") if request is not None else ""
            if finding_id.isdigit():
                extra["ra_finding_url"] = pages.report_url(datasette, database, finding_id)
        return extra

    return inner


def _row_value(row: Any, key: str) -> Any:
    try:
        return row[key]
    except (IndexError, KeyError):
        return None


@hookimpl
def render_cell(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
) -> Markup | None:
    if table == "findings":
        if column == "severity" and isinstance(value, str):
            return cells.severity_badge(value)
        if column == "title" and isinstance(value, str) and isinstance(_row_value(row, "id"), int):
            href = pages.report_url(datasette, database, _row_value(row, "id"))
            return Markup('<a href="{}">{}</a>').format(href, value)
        if column == "evidence":
            return cells.evidence_summary(value)
        if column == "recommendation" and isinstance(value, str):
            return cells.inline_code(value)
        if column in EXAMPLE_LINKS:
            target = value.get("value") if isinstance(value, dict) else value  # expanded label
            if isinstance(target, int):
                table_name, word = EXAMPLE_LINKS[column]
                href = datasette.urls.row(database, table_name, str(target))
                return Markup('<a href="{}">{} {}</a>').format(href, word, target)
    if column == "path_text" and isinstance(value, str) and table in ("chains", None):
        hops = parse_hops(_row_value(row, "hops")) if table == "chains" else None
        from_text = cells.parse_path_text(value, hops[-1].url if hops else "")
        if hops is None:
            return cells.render_path(from_text) if from_text else None
        if from_text and from_text[-1].status is None:  # "(not followed)" tail
            hops.append(from_text[-1])

        def row_url(request_id: int) -> str:
            return str(datasette.urls.row(database, "requests", str(request_id)))

        return cells.render_path(hops, row_url)
    if column == "hops" and table == "chains":
        hops = parse_hops(value)
        if not hops:
            return None
        tail = cells.parse_path_text(str(_row_value(row, "path_text") or ""), hops[-1].url)
        if tail and tail[-1].status is None:
            hops.append(tail[-1])
        return cells.picture(
            chain_dot(hops), "The chain, each URL once", cells.render_path(hops), shown=False
        )
    if column == "source" and table in ("findings", "redirects") and isinstance(value, str):
        href = pages.graph_url(datasette, database, value)
        return Markup('{} <a href="{}" title="redirect graph of this source">graph</a>').format(
            value, href
        )
    if column in TIMESTAMP_COLUMNS.get(table or "", ()) and isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
        return Markup('<time datetime="{}" title="{}">{}</time>').format(
            moment.isoformat(), value, moment.strftime("%Y-%m-%d %H:%M:%S UTC")
        )
    return None
