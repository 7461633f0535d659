"""What the report, finding and graph pages read from a traffic database (read-only SQL
through Datasette's ``Database.execute``, so its time limit and permissions apply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from auditor.explore.pictures import Graph
from auditor.redirects import REDIRECT_SQL

REPORT_LIMIT = 100
MAX_GRAPH_EDGES = 40
MAX_GRAPH_DEPTH = 8
FINDING_COLUMNS = (
    "id, rule, severity, title, message, recommendation, spec, method, status, source, "
    "target, hits, first_seen, last_seen, example_request_id, example_chain_id, evidence"
)


async def is_traffic_db(db: Any) -> bool:
    """A database the recorder wrote: it has ``requests`` and ``auditor_meta``."""
    return bool(await db.table_exists("requests") and await db.table_exists("auditor_meta"))


async def traffic_databases(datasette: Any) -> list[str]:
    names = []
    for name, db in datasette.databases.items():
        if not name.startswith("_") and await is_traffic_db(db):
            names.append(name)
    return names


@dataclass
class Report:
    """A traffic database's findings, worst first, and what was audited."""

    audited: bool
    counts: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    requests: int | None = None
    last_run: dict[str, Any] | None = None


async def _rows(db: Any, sql: str, params: Any = None) -> list[dict[str, Any]]:
    return [dict(row) for row in await db.execute(sql, params)]


async def build_report(db: Any, limit: int = REPORT_LIMIT) -> Report:
    if not await db.table_exists("findings"):
        return Report(audited=False)
    runs = (
        await _rows(db, "select * from audit_runs order by id desc limit 1")
        if (await db.table_exists("audit_runs"))
        else []
    )
    counts = {
        row["severity"]: row["n"]
        for row in await _rows(db, "select severity, count(*) as n from findings group by severity")
    }
    findings = await _rows(
        db,
        f"select {FINDING_COLUMNS} from findings "
        "order by severity_rank, hits desc, id limit :limit",
        {"limit": limit},
    )
    return Report(
        audited=bool(runs) or bool(counts),
        counts=counts,
        findings=findings,
        total=sum(counts.values()),
        requests=runs[0]["rows_scanned"] if runs else None,
        last_run=runs[0] if runs else None,
    )


async def finding(db: Any, finding_id: int) -> dict[str, Any] | None:
    if not await db.table_exists("findings"):
        return None
    rows = await _rows(
        db, f"select {FINDING_COLUMNS} from findings where id = :id", {"id": finding_id}
    )
    return rows[0] if rows else None


async def example_url(db: Any, request_id: Any) -> str | None:
    if not isinstance(request_id, int):
        return None
    rows = await _rows(db, "select url from requests where id = :id", {"id": request_id})
    return rows[0]["url"] if rows else None


async def chain_hops(db: Any, chain_id: Any) -> tuple[str, str] | None:
    """``(hops JSON, path_text)`` of a chain."""
    if not isinstance(chain_id, int) or not await db.table_exists("chains"):
        return None
    rows = await _rows(db, "select hops, path_text from chains where id = :id", {"id": chain_id})
    return (rows[0]["hops"], rows[0]["path_text"]) if rows else None


EDGES = (
    "select url, method, status, location_url, count(*) as hits from requests "
    f"where {REDIRECT_SQL} and location_url is not null and {{where}} "
    "group by url, method, status, location_url order by hits desc limit {limit}"
)


async def build_graph(
    db: Any,
    route: str | None = None,
    *,
    method: str | None = None,
    status: int | None = None,
    urls: list[str] | None = None,
    max_edges: int = MAX_GRAPH_EDGES,
) -> Graph:
    """Every redirect recorded from ``route`` (a route template or path; only ``method``
    and ``status`` when given), or from ``urls``, followed breadth first to where it leads."""
    graph = Graph()
    params: dict[str, Any] | list[str]
    if route is not None:
        where = "(route = :route or path = :route)"
        named: dict[str, Any] = {"route": route}
        if method:
            where, named = where + " and method = :method", {**named, "method": method}
        if status is not None:
            where, named = where + " and status = :status", {**named, "status": status}
        params = named
    elif urls:
        where, params = "url in ({})".format(", ".join("?" for _ in urls)), list(urls)
    else:
        return graph
    rows = await db.execute(EDGES.format(where=where, limit=max_edges), params)
    seen: set[str] = set()
    for depth in range(MAX_GRAPH_DEPTH):
        frontier: list[str] = []
        for url, hop_method, hop_status, target, hits in rows:
            if len(graph.edges) >= max_edges:
                break
            graph.edges.append((url, target, hop_method, hop_status, hits))
            if depth == 0 and url not in graph.sources:
                graph.sources.append(url)
            seen.add(url)
            frontier.append(target)
        frontier = [url for url in dict.fromkeys(frontier) if url not in seen]
        if not frontier or len(graph.edges) >= max_edges:
            break
        seen.update(frontier)
        marks = ", ".join("?" for _ in frontier)
        rows = await db.execute(
            EDGES.format(where=f"url in ({marks})", limit=max_edges - len(graph.edges)),
            frontier,
        )
    redirecting = {edge[0] for edge in graph.edges}
    ends = list(dict.fromkeys(edge[1] for edge in graph.edges if edge[1] not in redirecting))
    if ends:
        marks = ", ".join("?" for _ in ends)
        finals = await db.execute(
            f"select url, status, count(*) as n from requests where url in ({marks}) "
            "group by url, status order by n",
            ends,
        )
        for url, final, _ in finals:
            graph.final_status[url] = final  # the most common status wins (ordered last)
        graph.unfollowed = {url for url in ends if url not in graph.final_status}
    return graph


async def redirect_sources(db: Any, limit: int = 50) -> list[tuple[str, int]]:
    rows = await db.execute(
        "select coalesce(route, path) as source, count(*) as hits from requests "
        f"where {REDIRECT_SQL} group by source order by hits desc limit {int(limit)}"
    )
    return [(source, hits) for source, hits in rows]
