"""The plugin's pages: the report (what's wrong, what to do), one page per finding, the
redirect graph of a route, and the vendored static files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from datasette.database import QueryInterrupted
from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import NotFound, Response, asgi_static
from markupsafe import Markup

from auditor.explore import cells, queries
from auditor.explore.pictures import chain_dot, graph_dot, origin_of, parse_hops, short_url

STATIC = Path(__file__).with_name("static")
STATIC_PATH = "/-/static-plugins/redirect-auditor/"
REPORT_PATH = "/-/redirect-report"
GRAPH_PATH = "/-/redirect-graph"

static_files = asgi_static(STATIC, chunk_size=65536)


def report_url(datasette: Any, database: str, finding_id: Any = None) -> str:
    path = f"{REPORT_PATH}/{tilde_encode(database)}"
    return str(datasette.urls.path(path if finding_id is None else f"{path}/{finding_id}"))


def graph_url(datasette: Any, database: str, route: str) -> str:
    query = urlencode({"database": database, "route": route})
    return str(datasette.urls.path(GRAPH_PATH)) + "?" + query


def when(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _database(datasette: Any, request: Any, name: str | None, table: str | None) -> Any:
    """The traffic database ``name`` (the first one when None) if the actor may see it."""
    names = await queries.traffic_databases(datasette)
    name = name if name is not None else (names[0] if names else "")
    if name not in names:
        raise NotFound(f"No traffic database named {name!r}")
    checks: list[Any] = [("view-database", name), "view-instance"]
    if table:
        checks.insert(0, ("view-table", (name, table)))
    await datasette.ensure_permissions(request.actor, checks)
    return datasette.get_database(name)


# --- pictures ---------------------------------------------------------------------------


async def finding_picture(db: Any, row: dict[str, Any]) -> tuple[str, str] | None:
    """``(DOT, caption)``: the redirects recorded from the finding's place, followed to
    where they lead; else from its example request; else its example chain. None when
    there is nothing to draw, or the queries ran past Datasette's time limit."""
    try:
        return await _finding_picture(db, row)
    except QueryInterrupted:
        return None


async def _finding_picture(db: Any, row: dict[str, Any]) -> tuple[str, str] | None:
    place = cells.place_text(row)
    graph = await queries.build_graph(
        db, row.get("source") or "", method=row.get("method"), status=row.get("status")
    )
    if not graph.edges:
        url = await queries.example_url(db, row.get("example_request_id"))
        graph = await queries.build_graph(db, urls=[url] if url else None)
    if graph.edges:
        return graph_dot(graph), f"Redirects recorded from {place}: method, status and hits"
    chain = await queries.chain_hops(db, row.get("example_chain_id"))
    hops = parse_hops(chain[0]) if chain else None
    if hops and len(hops) > 1:
        return chain_dot(hops), "The example chain"
    return None


def picture_markup(drawn: tuple[str, str] | None, fallback: Markup | str = "") -> Markup | None:
    return cells.picture(drawn[0], drawn[1], fallback) if drawn else None


# --- the report -------------------------------------------------------------------------


def report_item(datasette: Any, database: str, row: dict[str, Any]) -> dict[str, Any]:
    evidence = cells.parse_evidence(row.get("evidence"))
    return {
        **row,
        "badge": cells.severity_badge(row.get("severity")),
        "place": cells.place_text(row),
        "clients": cells.clients_text(evidence),
        "fix": cells.inline_code(cells.one_line_fix(row.get("recommendation"))),
        "url": report_url(datasette, database, row["id"]),
    }


async def report_context(datasette: Any, database: str, *, picture: bool = True) -> dict[str, Any]:
    """What ``_redirect_report.html`` shows for one traffic database."""
    db = datasette.get_database(database)
    report = await queries.build_report(db)
    items = [report_item(datasette, database, row) for row in report.findings]
    worst = items[0] if items else None
    drawn = await finding_picture(db, worst) if worst and picture else None
    return {
        "database": database,
        "report": report,
        "url": report_url(datasette, database),
        "counts": [(s, report.counts.get(s, 0)) for s in cells.SEVERITIES],
        "badges": {s: cells.severity_badge(s) for s in cells.SEVERITIES},
        "problems": items,
        "worst": worst,
        "worst_fix": cells.inline_code(str(worst.get("recommendation") or "")) if worst else "",
        "worst_picture": picture_markup(drawn),
        "more": report.total - len(items),
        "findings_url": datasette.urls.table(database, "findings"),
        "audited_at": when(report.last_run.get("started_at")) if report.last_run else "",
    }


async def report_page(datasette: Any, request: Any) -> Response:
    encoded = request.url_vars.get("database")
    db = await _database(datasette, request, tilde_decode(encoded) if encoded else None, "findings")
    context = {"ra": await report_context(datasette, db.name)}
    html = await datasette.render_template(
        "redirect_report.html", context, request=request, view_name="redirect_report"
    )
    return Response.html(html)


# --- one finding ------------------------------------------------------------------------


def client_rows(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for client in cells.client_entries(evidence):
        outcomes = client.get("outcomes")
        outcomes = outcomes if isinstance(outcomes, list) else []
        rows.append({**client, "did": "; ".join(cells.outcome_text(o) for o in outcomes)})
    return rows


async def finding_page(datasette: Any, request: Any) -> Response:
    name = tilde_decode(request.url_vars["database"])
    db = await _database(datasette, request, name, "findings")
    row = await queries.finding(db, int(request.url_vars["finding_id"]))
    if row is None:
        raise NotFound("No such finding")
    evidence = cells.parse_evidence(row.get("evidence"))
    chain = await queries.chain_hops(db, row.get("example_chain_id"))
    path = None
    if chain:
        hops = parse_hops(chain[0])
        if hops:

            def row_url(request_id: int) -> str:
                return str(datasette.urls.row(name, "requests", str(request_id)))

            text_hops = cells.parse_path_text(chain[1] or "", hops[-1].url) or []
            if text_hops and text_hops[-1].status is None:
                hops.append(text_hops[-1])
            path = cells.render_path(hops, row_url)
    drawn = await finding_picture(db, row)
    target = str(row.get("target") or "")
    here = await queries.example_url(db, row.get("example_request_id"))
    others = {k: v for k, v in evidence.items() if k not in ("clients", "framework")}
    ra = {
        "database": name,
        "row": row,
        "badge": cells.severity_badge(row.get("severity")),
        "place": cells.place_text(row),
        "target": short_url(target, origin_of(here)) if here else target,
        "framework": cells.framework_name(evidence),
        "fix": cells.inline_code(str(row.get("recommendation") or "")),
        "message": cells.inline_code(str(row.get("message") or "")),
        "spec": cells.spec_links(row.get("spec")),
        "picture": picture_markup(drawn, path or ""),
        "clients": client_rows(evidence),
        "evidence": {
            k: ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in others.items()
        },
        "path": path,
        "first_seen": when(row.get("first_seen")),
        "last_seen": when(row.get("last_seen")),
        "report_url": report_url(datasette, name),
        "row_url": datasette.urls.row(name, "findings", str(row["id"])),
        "rule_url": datasette.urls.table(name, "findings") + "?" + urlencode({"rule": row["rule"]}),
        "request_url": datasette.urls.row(name, "requests", str(row["example_request_id"]))
        if isinstance(row.get("example_request_id"), int)
        else None,
        "chain_url": datasette.urls.row(name, "chains", str(row["example_chain_id"]))
        if isinstance(row.get("example_chain_id"), int)
        else None,
        "graph_url": graph_url(datasette, name, str(row.get("source") or "")),
    }
    html = await datasette.render_template(
        "redirect_finding.html", {"ra": ra}, request=request, view_name="redirect_finding"
    )
    return Response.html(html)


# --- the redirect graph of one route ----------------------------------------------------


async def graph_page(datasette: Any, request: Any) -> Response:
    names = await queries.traffic_databases(datasette)
    db = await _database(datasette, request, request.args.get("database"), None)
    route = request.args.get("route") or ""
    graph = await queries.build_graph(db, route) if route else None
    sources = [
        (source, hits, graph_url(datasette, db.name, source))
        for source, hits in await queries.redirect_sources(db)
    ]
    picture = None
    if graph and graph.edges:
        picture = cells.picture(
            graph_dot(graph), f"Redirects recorded from {route}: method, status and hits"
        )
    html = await datasette.render_template(
        "redirect_graph.html",
        {
            "database": db.name,
            "databases": names,
            "route": route,
            "picture": picture,
            "edges": graph.edges if graph else [],
            "sources": sources,
        },
        request=request,
        view_name="redirect_graph",
    )
    return Response.html(html)
