"""Datasette plugin: redirect chains drawn as readable paths and inline SVG pictures.

Hooks:

- ``render_cell``: ``chains.path_text`` becomes ``POST /a —301→ GET /b —200`` with
  status colours and each hop linked to its request; ``chains.hops`` becomes an
  SVG picture of the chain; ``findings.source`` gets a link to its redirect graph;
  epoch-second timestamps read as UTC times.
- ``register_routes``: ``/-/redirect-graph?database=NAME&route=/old`` draws every
  redirect reachable from one route as a server-side SVG graph.

Recorded traffic is attacker-controlled, so every value goes into HTML through
``Markup.format`` or ``escape``; nothing here builds markup by string concatenation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from datasette import hookimpl
from datasette.utils.asgi import Forbidden, NotFound, Response
from markupsafe import Markup

from auditor.redirects import is_redirect

GRAPH_PATH = "/-/redirect-graph"
TEMPLATE = Path(__file__).with_name("templates") / "redirect_graph.html"
TIMESTAMP_COLUMNS = {
    "requests": {"started_at"},
    "chains": {"started_at"},
    "findings": {"first_seen", "last_seen"},
    "audit_runs": {"started_at"},
    "recorder_stats": {"started_at", "updated_at"},
}
MAX_LABEL = 46
MAX_GRAPH_EDGES = 80
MAX_GRAPH_DEPTH = 8
FONT = 'font-family="ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" font-size="12"'


def status_colour(status: Any) -> str:
    """Text colour for a status: green 2xx, blue 3xx, orange 4xx, red 5xx, grey otherwise."""
    try:
        family = int(status) // 100
    except (TypeError, ValueError):
        return "#57606a"
    return {2: "#1a7f37", 3: "#0550ae", 4: "#bc4c00", 5: "#cf222e"}.get(family, "#57606a")


# --- chains as a readable path ---------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    method: str
    url: str
    status: Any
    request_id: Any = None


def parse_hops(value: Any) -> list[Hop] | None:
    """Hops from ``chains.hops`` JSON; None when the value is not a list of hop objects."""
    try:
        items = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return None
    if not isinstance(items, list) or not items:
        return None
    hops = []
    for item in items:
        if not isinstance(item, dict):
            return None
        hops.append(
            Hop(
                method=str(item.get("method") or ""),
                url=str(item.get("url") or ""),
                status=item.get("status"),
                request_id=item.get("request_id"),
            )
        )
    return hops


def short_url(url: str, origin: str) -> str:
    """``/path?query`` when ``url`` is on ``origin`` (scheme://host), else the whole URL."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != origin or not parts.scheme:
        return url
    return f"{parts.path or '/'}?{parts.query}" if parts.query else (parts.path or "/")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def render_path(hops: list[Hop], row_url: Any = None) -> Markup:
    """``POST /a —301→ GET /b —200``: hops linked via ``row_url(request_id)``, coloured codes."""
    origin = origin_of(hops[0].url)
    parts: list[Markup] = []
    for index, hop in enumerate(hops):
        text = Markup("<strong>{}</strong> {}").format(hop.method, short_url(hop.url, origin))
        if not hop.method and hop.status is None:  # where an unfollowed redirect pointed
            parts.append(Markup('<span class="ra-hop ra-unfollowed">{}</span>').format(hop.url))
            break
        if row_url is not None and isinstance(hop.request_id, int):
            text = Markup('<a href="{}" title="{}">{}</a>').format(
                row_url(hop.request_id), hop.url, text
            )
        arrow = "→" if index < len(hops) - 1 or is_redirect(hop.status) else ""
        status = Markup('<span class="ra-status" style="color:{};font-weight:bold">—{}{}</span>')
        status = status.format(
            status_colour(hop.status), "" if hop.status is None else hop.status, arrow
        )
        parts.append(
            Markup('<span class="ra-hop" style="white-space:nowrap">{} {}</span> ').format(
                text, status
            )
        )
    return Markup('<span class="ra-path">{}</span>').format(Markup("").join(parts).strip())


def parse_path_text(text: str) -> list[Hop] | None:
    """Hops from ``POST /a —301→ GET /b —200`` (or ASCII ``-301->``); an unfollowed chain's
    ``... —302→ /next (not followed)`` tail becomes a hop without method or status."""
    pieces = re.split(r"\s+(?:—|-)(\d{3})(?:→|->)?(?=\s|$)", text.strip())
    if len(pieces) < 2:
        return None
    hops = []
    for hop_text, status in zip(pieces[0::2], pieces[1::2], strict=False):
        method, _, url = hop_text.strip().partition(" ")
        hops.append(Hop(method=method, url=url, status=int(status)))
    if pieces[-1].strip():
        hops.append(Hop(method="", url=pieces[-1].strip(), status=None))
    return hops


# --- SVG pictures ----------------------------------------------------------------------


def _clip(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _box(x: float, y: float, width: float, label: str, full: str, colour: str) -> Markup:
    return Markup(
        '<g><title>{full}</title><rect x="{x}" y="{y}" width="{w}" height="28" rx="6" '
        'fill="#f6f8fa" stroke="{c}" stroke-width="1.5"/>'
        '<text x="{tx}" y="{ty}" ' + FONT + ' fill="#24292f">{label}</text></g>'
    ).format(full=full, x=x, y=y, w=width, c=colour, tx=x + 10, ty=y + 18, label=label)


def _svg(width: float, height: float, body: Iterable[Markup], title: str) -> Markup:
    return Markup(
        '<svg class="ra-svg" xmlns="http://www.w3.org/2000/svg" role="img" width="{w}" '
        'height="{h}" viewBox="0 0 {w} {h}"><title>{t}</title>'
        '<defs><marker id="ra-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#57606a"/></marker></defs>{body}</svg>'
    ).format(w=width, h=height, t=title, body=Markup("").join(body))


def chain_svg(hops: list[Hop]) -> Markup:
    """One box per hop, top to bottom, arrows labelled with each redirect's status."""
    origin = origin_of(hops[0].url)
    labels = [_clip(f"{hop.method} {short_url(hop.url, origin)}") for hop in hops]
    width = max(len(label) for label in labels) * 7.4 + 20
    step = 52
    body: list[Markup] = []
    for index, (hop, label) in enumerate(zip(hops, labels, strict=True)):
        y = 4 + index * step
        body.append(_box(4, y, width, label, f"{hop.method} {hop.url}", status_colour(hop.status)))
        colour = status_colour(hop.status)
        if index < len(hops) - 1:
            body.append(
                Markup(
                    '<line x1="24" y1="{y1}" x2="24" y2="{y2}" stroke="#57606a" '
                    'stroke-width="1.5" marker-end="url(#ra-arrow)"/>'
                    '<text x="34" y="{ty}" ' + FONT + ' fill="{c}" font-weight="bold">{s}</text>'
                ).format(y1=y + 28, y2=y + step, ty=y + 44, c=colour, s=hop.status)
            )
        else:
            body.append(
                Markup(
                    '<text x="{x}" y="{y}" ' + FONT + ' fill="{c}" font-weight="bold">{s}</text>'
                ).format(x=width + 12, y=y + 18, c=colour, s=hop.status)
            )
    height = 4 + len(hops) * step - (step - 28) + 4
    return _svg(width + 48, height, body, "redirect chain: " + " → ".join(labels))


@dataclass
class Graph:
    """Redirect edges reachable from one route: url -> target with method, status, hits."""

    edges: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    final_status: dict[str, int] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


def layout(graph: Graph) -> dict[str, tuple[int, int]]:
    """Column (breadth-first depth from the sources) and row of every node."""
    depth: dict[str, int] = {}
    frontier = list(dict.fromkeys(graph.sources))
    for url in frontier:
        depth[url] = 0
    while frontier:
        following = []
        for url in frontier:
            for source, target, *_ in graph.edges:
                if source == url and target not in depth:
                    depth[target] = depth[url] + 1
                    following.append(target)
        frontier = following
    rows: dict[int, int] = {}
    place = {}
    for url, column in depth.items():
        place[url] = (column, rows.get(column, 0))
        rows[column] = rows.get(column, 0) + 1
    return place


def graph_svg(graph: Graph) -> Markup:
    """Nodes in columns by redirect depth; edges labelled ``METHOD status, hits``."""
    place = layout(graph)
    origin = origin_of(graph.sources[0]) if graph.sources else ""
    col_width, box_width, row_height = 380, 300, 70
    body: list[Markup] = []

    def anchor(url: str) -> tuple[float, float]:
        column, row = place[url]
        return 10 + column * col_width, 30 + row * row_height

    for index, (source, target, method, status, hits) in enumerate(graph.edges):
        (x1, y1), (x2, y2) = anchor(source), anchor(target)
        label = f"{method} {status} ({hits})"
        colour = status_colour(status)
        if source == target:
            d = f"M{x1 + 40},{y1} C{x1 + 40},{y1 - 28} {x1 + 90},{y1 - 28} {x1 + 90},{y1}"
            lx, ly = x1 + 100, y1 - 16
        elif place[target][0] > place[source][0]:
            d = f"M{x1 + box_width},{y1 + 14} L{x2},{y2 + 14}"
            lx, ly = (x1 + box_width + x2) / 2 - 30, (y1 + y2) / 2 + 8
        else:  # same column or back edge (a loop): an arc out to the right
            reach = x1 + box_width + 40 + 24 * (index % 4)
            d = (
                f"M{x1 + box_width},{y1 + 10} C{reach},{y1 + 10} {reach},{y2 + 18} "
                f"{x2 + box_width},{y2 + 18}"
            )
            lx, ly = reach - 4, y1 + (28 if y2 >= y1 else 4)  # near its source: labels apart
        body.append(
            Markup(
                '<path d="{d}" fill="none" stroke="{c}" stroke-width="1.5" '
                'marker-end="url(#ra-arrow)"/>'
                '<text x="{x}" y="{y}" ' + FONT + ' fill="{c}" font-weight="bold">{label}</text>'
            ).format(d=d, c=colour, x=lx, y=ly, label=label)
        )
    for url, _ in place.items():
        x, y = anchor(url)
        final = graph.final_status.get(url)
        label = _clip(short_url(url, origin), 38) + (f"  {final}" if final else "")
        body.append(_box(x, y, box_width, label, url, status_colour(final)))
    columns = max((c for c, _ in place.values()), default=0) + 1
    rows = max((r for _, r in place.values()), default=0) + 1
    width = 20 + (columns - 1) * col_width + box_width + 160  # room for loop arcs
    height = 30 + rows * row_height + 60
    return _svg(width, height, body, "redirect graph")


# --- hooks -----------------------------------------------------------------------------


def _row_value(row: Any, key: str) -> Any:
    try:
        return row[key]
    except (IndexError, KeyError):
        return None


@hookimpl
def render_cell(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
) -> Markup | None:
    if column == "path_text" and isinstance(value, str) and table in ("chains", None):
        from_text = parse_path_text(value)
        hops = parse_hops(_row_value(row, "hops")) if table == "chains" else None
        if hops is None:
            return render_path(from_text) if from_text else None
        if from_text and from_text[-1].status is None:  # "(not followed)" tail
            hops.append(from_text[-1])

        def row_url(request_id: int) -> str:
            return str(datasette.urls.row(database, "requests", str(request_id)))

        return render_path(hops, row_url)
    if column == "hops" and table == "chains":
        hops = parse_hops(value)
        return chain_svg(hops) if hops else None
    if column == "source" and table in ("findings", "redirects") and isinstance(value, str):
        query = urlencode({"database": database, "route": value})
        href = datasette.urls.path(GRAPH_PATH) + "?" + query
        return Markup('{} <a href="{}" title="redirect graph of this source">graph</a>').format(
            value, href
        )
    if column in TIMESTAMP_COLUMNS.get(table or "", ()) and isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
        return Markup('<time datetime="{}" title="{}">{}</time>').format(
            moment.isoformat(), value, moment.strftime("%Y-%m-%d %H:%M:%S UTC")
        )
    return None


async def _traffic_databases(datasette: Any) -> list[str]:
    names = []
    for name, db in datasette.databases.items():
        if not name.startswith("_") and await db.table_exists("requests"):
            names.append(name)
    return names


async def build_graph(db: Any, route: str) -> Graph:
    """Follow redirects from requests whose route or path is ``route``, breadth first."""
    graph = Graph()
    select = (
        "select url, method, status, location_url, count(*) as hits from requests "
        "where status between 300 and 399 and location_url is not null and {where} "
        "group by url, method, status, location_url order by hits desc limit {limit}"
    )
    rows = await db.execute(
        select.format(where="(route = :route or path = :route)", limit=MAX_GRAPH_EDGES),
        {"route": route},
    )
    seen: set[str] = set()
    frontier: list[str] = []
    for depth in range(MAX_GRAPH_DEPTH):
        for url, method, status, target, hits in rows:
            if len(graph.edges) >= MAX_GRAPH_EDGES:
                break
            graph.edges.append((url, target, method, status, hits))
            if depth == 0 and url not in graph.sources:
                graph.sources.append(url)
            seen.add(url)
            if target not in seen:
                frontier.append(target)
        frontier = [url for url in dict.fromkeys(frontier) if url not in seen]
        if not frontier or len(graph.edges) >= MAX_GRAPH_EDGES:
            break
        seen.update(frontier)
        marks = ", ".join("?" for _ in frontier)
        rows = await db.execute(
            select.format(where=f"url in ({marks})", limit=MAX_GRAPH_EDGES), frontier
        )
        frontier = []
    redirecting = {edge[0] for edge in graph.edges}
    ends = [edge[1] for edge in graph.edges if edge[1] not in redirecting]
    if ends:
        marks = ", ".join("?" for _ in ends)
        finals = await db.execute(
            f"select url, status, count(*) as n from requests where url in ({marks}) "
            "and status not between 300 and 399 group by url, status order by n",
            ends,
        )
        for url, status, _ in finals:
            graph.final_status[url] = status  # the most common status wins (ordered last)
    return graph


async def redirect_graph_page(datasette: Any, request: Any) -> Response:
    names = await _traffic_databases(datasette)
    name = request.args.get("database") or (names[0] if names else "")
    if name not in names:
        raise NotFound(f"No traffic database named {name!r}")
    if not await datasette.permission_allowed(
        request.actor, "view-database", resource=name, default=True
    ):
        raise Forbidden("You may not view this database")
    db = datasette.get_database(name)
    route = request.args.get("route") or ""
    graph = await build_graph(db, route) if route else Graph()
    sources = await db.execute(
        "select coalesce(route, path) as source, count(*) as hits from requests "
        "where status between 300 and 399 group by source order by hits desc limit 50"
    )
    links = [
        (
            source,
            hits,
            datasette.urls.path(GRAPH_PATH) + "?" + urlencode({"database": name, "route": source}),
        )
        for source, hits in sources
    ]
    template = datasette.jinja_env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    html = await datasette.render_template(
        template,
        {
            "database": name,
            "databases": names,
            "route": route,
            "graph": graph_svg(graph) if graph.edges else None,
            "edges": graph.edges,
            "sources": links,
        },
        request=request,
    )
    return Response.html(html)


@hookimpl
def register_routes(datasette: Any) -> list[tuple[str, Any]]:
    return [(r"^/-/redirect-graph$", redirect_graph_page)]
