"""The static redirect graph: every recorded redirect as an edge, followed or not.

A node is a request a client would make: (method, normalized URL). Each recorded
redirect is an edge from its request to the request most clients make next: the
resolved Location with ``follow_up_method`` (GET after a 303, or after a 301/302 to a
POST; otherwise the same method). So a POST /form answered 303 to /form is a
post/redirect/get, not a loop, while GET /a -> GET /b -> GET /a is one.

Loops and chains found here need no client to have walked them: the rules report
them for ``redirect-loop`` and ``redirect-chain`` from traffic nobody followed.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple

from auditor.cycles import strongly_connected
from auditor.redirects import REDIRECT_SQL, follow_up_method

MAX_CHAIN_HOPS = 64  # static chains stop here (and at any revisited node)

Node = tuple[str, str]  # (method, url)


class RedirectEdge(NamedTuple):
    """Distinct recorded redirects from one source to one target with one status."""

    method: str
    source: str  # normalized URL of the redirected request
    status: int
    target: str  # resolved, normalized Location
    hits: int
    example_request_id: int
    first_seen: float
    last_seen: float

    @property
    def next_node(self) -> Node:
        """The request a client makes when it follows this redirect."""
        return (follow_up_method(self.method, self.status), self.target)


@dataclass(frozen=True)
class StaticPath:
    """A walk through the redirect graph: ``urls[i]`` redirected with ``statuses[i]``.

    A chain ends at ``urls[-1]``, which does not redirect (or revisits an earlier
    URL); a loop's last URL redirects back to ``urls[0]``.
    """

    methods: list[str]
    urls: list[str]
    statuses: list[int]  # one per redirect: len(urls) - 1 for a chain, len(urls) for a loop
    example_request_ids: list[int]  # one recorded redirect per edge
    hits: int  # the least-recorded edge's hits

    @property
    def length(self) -> int:
        """Number of redirects."""
        return len(self.statuses)


def redirect_edges(conn: sqlite3.Connection, *, table: str = "requests") -> list[RedirectEdge]:
    """Every distinct (method, source URL, status, target URL) redirect, most hit first.

    ``table`` may name a subset of ``requests`` holding at least its redirects."""
    cursor = conn.cursor()
    cursor.row_factory = None
    rows = cursor.execute(
        f"""select method, url, status, location_url, count(*), min(id),
                   min(started_at), max(started_at)
            from {table}
            where {REDIRECT_SQL} and location_url is not null
            group by method, url, status, location_url
            order by count(*) desc, min(id)"""
    )
    return [RedirectEdge(*row) for row in rows]


def edges_from_rows(rows: Iterable[Sequence[Any]]) -> list[RedirectEdge]:
    """``redirect_edges`` from redirect rows already read: (id, started_at, method, url,
    status, location_url, ...) of every redirect (3xx but 304)."""
    grouped: dict[tuple[str, str, int, str], list[Any]] = {}
    get = grouped.get
    for row in rows:
        location_url = row[5]
        if location_url is None:
            continue
        rid, started_at = row[0], row[1]
        key = (row[2], row[3], row[4], location_url)
        group = get(key)
        if group is None:
            grouped[key] = [1, rid, started_at, started_at]
        else:
            group[0] += 1
            if rid < group[1]:
                group[1] = rid
            if started_at < group[2]:
                group[2] = started_at
            if started_at > group[3]:
                group[3] = started_at
    edges = [RedirectEdge(*key, *group) for key, group in grouped.items()]
    # by (-hits, example_request_id): two stable sorts, no key tuple per edge
    edges.sort(key=attrgetter("example_request_id"))
    edges.sort(key=attrgetter("hits"), reverse=True)
    return edges


def _graph(edges: list[RedirectEdge]) -> dict[Node, list[RedirectEdge]]:
    """Out-edges per node, most hit first (edges come sorted that way)."""
    graph: dict[Node, list[RedirectEdge]] = defaultdict(list)
    for edge in edges:
        graph[(edge.method, edge.source)].append(edge)
    return graph


def _path(nodes: list[Node], edges: list[RedirectEdge]) -> StaticPath:
    return StaticPath(
        methods=[m for m, _ in nodes],
        urls=[u for _, u in nodes],
        statuses=[e.status for e in edges],
        example_request_ids=[e.example_request_id for e in edges],
        hits=min(e.hits for e in edges),
    )


def _cyclic_part(graph: dict[Node, list[RedirectEdge]]) -> dict[Node, list[RedirectEdge]]:
    """The graph without the nodes no cycle can pass through: repeatedly drop nodes that
    have no out-edge left or that no remaining edge points to (most redirects lead to a
    page that does not redirect, so little is left for Tarjan)."""
    part = dict(graph)
    while True:
        targets = {edge.next_node for out in part.values() for edge in out}
        kept = {
            node: [edge for edge in out if edge.next_node in part]
            for node, out in part.items()
            if node in targets
        }
        kept = {node: out for node, out in kept.items() if out}
        if len(kept) == len(part):
            return part
        part = kept


def _components(graph: dict[Node, list[RedirectEdge]]) -> list[list[Node]]:
    """Strongly connected components of the redirect graph."""
    return strongly_connected({node: [e.next_node for e in out] for node, out in graph.items()})


def _shortest_cycle(
    graph: dict[Node, list[RedirectEdge]], start: Node, members: set[Node]
) -> StaticPath:
    """The shortest way from ``start`` back to itself inside one component."""
    came_from: dict[Node, tuple[Node, RedirectEdge]] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for edge in graph.get(node, []):
            child = edge.next_node
            if child not in members or child in came_from:
                continue
            came_from[child] = (node, edge)
            if child == start:
                queue.clear()
                break
            queue.append(child)
    nodes: list[Node] = []
    edges: list[RedirectEdge] = []
    node = start
    while True:
        node, edge = came_from[node]
        nodes.append(node)
        edges.append(edge)
        if node == start:
            break
    nodes.reverse()
    edges.reverse()
    return _path(nodes, edges)


def static_loops(
    conn: sqlite3.Connection, *, edges: list[RedirectEdge] | None = None
) -> list[StaticPath]:
    """One loop per cycle of the redirect graph (per strongly connected component,
    including a URL redirecting to itself), starting at its smallest URL.

    Pass ``edges`` from ``redirect_edges`` to reuse them."""
    graph = _graph(redirect_edges(conn) if edges is None else edges)
    loops = []
    for component in _components(_cyclic_part(graph)):
        members = set(component)
        start = min(component, key=lambda n: (n[1], n[0]))
        if len(component) == 1 and all(e.next_node != start for e in graph.get(start, [])):
            continue
        loops.append(_shortest_cycle(graph, start, members))
    loops.sort(key=lambda loop: (-loop.hits, loop.urls))
    return loops


def static_chains(
    conn: sqlite3.Connection, min_length: int = 2, *, edges: list[RedirectEdge] | None = None
) -> list[StaticPath]:
    """Chains of at least ``min_length`` redirects, one per entry point (a redirecting
    request no recorded redirect points to), following each node's most-hit edge.

    Pass ``edges`` from ``redirect_edges`` to reuse them."""
    graph = _graph(redirect_edges(conn) if edges is None else edges)
    targets = {edge.next_node for out in graph.values() for edge in out}
    chains = []
    for start in graph:
        if start in targets:
            continue
        nodes, seen = [start], {start}
        walked: list[RedirectEdge] = []
        node = start
        while node in graph and len(walked) < MAX_CHAIN_HOPS:
            edge = graph[node][0]
            node = edge.next_node
            walked.append(edge)
            nodes.append(node)
            if node in seen:
                break
            seen.add(node)
        if len(walked) >= min_length:
            chains.append(_path(nodes, walked))
    chains.sort(key=lambda chain: (-chain.length, -chain.hits, chain.urls))
    return chains
