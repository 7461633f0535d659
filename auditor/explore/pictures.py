"""Redirect pictures as Graphviz DOT text, laid out in the browser by the vendored viz.js.

``static/viz.js`` is ``dist/viz.js`` of the npm package ``@viz-js/viz`` (Graphviz compiled
to WebAssembly; licences in ``static/viz.LICENSE.txt``). To update it: ``npm pack
@viz-js/viz`` in a scratch folder, copy ``package/dist/viz.js`` here and the version into
``VIZ_VERSION`` and the licence file's header.

Every URL, method and label comes from recorded traffic, which an attacker controls.
Node ids are generated (``n0``, ``n1``...), never taken from the data; every label and
tooltip goes through ``dot_string``; no ``href``, ``image`` or HTML-like label is ever
built from recorded values. Graphviz escapes text in its SVG output, and the DOT itself
reaches the page as an HTML-escaped attribute value.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

from auditor.cycles import cycles
from auditor.redirects import is_redirect

VIZ_VERSION = "3.31.0"
LABEL_WIDTH = 34  # characters per line of a node label
LABEL_LINES = 3
MONO = "Courier"  # Graphviz estimates its widths exactly (0.6 em): SVG says "Courier,monospace"
LOOP_COLOUR = "#cf222e"
TIMES = "\u00d7"  # the multiplication sign, as in "GET 302, 2 times"


def status_colour(status: Any) -> str:
    """Green 2xx, blue 3xx, orange 4xx, red 5xx, grey otherwise."""
    try:
        family = int(status) // 100
    except (TypeError, ValueError):
        return "#57606a"
    return {2: "#1a7f37", 3: "#0550ae", 4: "#bc4c00", 5: "#cf222e"}.get(family, "#57606a")


# --- hops of one chain ------------------------------------------------------------------


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


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def short_url(url: str, origin: str) -> str:
    """``/path?query`` when ``url`` is on ``origin`` (scheme://host), else the whole URL."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != origin or not parts.scheme:
        return url
    return f"{parts.path or '/'}?{parts.query}" if parts.query else (parts.path or "/")


# --- DOT text ---------------------------------------------------------------------------


def printable(text: str) -> str:
    """Control and format characters (newlines, bidi overrides...) shown as U+FFFD."""
    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


def dot_escape(text: str) -> str:
    """``text`` as the inside of a DOT quoted string, shown literally by Graphviz.

    Backslashes are doubled (Graphviz reads ``\\N``, ``\\n``, ``\\l`` in labels as
    escapes), quotes escaped, ``&`` written as ``&amp;`` (Graphviz reads entities in
    labels), and control characters replaced.
    """
    text = printable(text)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")


def dot_string(*lines: str) -> str:
    """A DOT quoted string of ``lines`` joined by Graphviz line breaks (``\\n``)."""
    return '"' + "\\n".join(dot_escape(line) for line in lines) + '"'


def wrap(text: str, width: int = LABEL_WIDTH, lines: int = LABEL_LINES) -> list[str]:
    """``text`` cut into lines of ``width`` characters; past ``lines`` it ends in ``…``."""
    pieces = [text[i : i + width] for i in range(0, len(text), width)] or [""]
    if len(pieces) > lines:
        pieces = [*pieces[: lines - 1], pieces[lines - 1][: width - 1] + "…"]
    return pieces


def hits_text(hits: int) -> str:
    return f"{hits} hit" if hits == 1 else f"{hits} hits"


@dataclass
class Graph:
    """Redirect edges between URLs: (from, to, method, status, hits); the status where a
    URL stopped redirecting; the URLs the picture starts from."""

    edges: list[tuple[str, str, str, Any, int]] = field(default_factory=list)
    final_status: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    unfollowed: set[str] = field(default_factory=set)  # targets no recorded client requested
    one_chain: bool = False  # edge counts are times one chain took the redirect, not hits


def loop_components(edges: Iterable[tuple[str, str]]) -> list[set[str]]:
    """The redirect loops: strongly connected sets of more than one URL, or a URL that
    redirects to itself."""
    following: dict[str, list[str]] = {}
    for source, target in edges:
        following.setdefault(source, []).append(target)
        following.setdefault(target, [])
    return [set(component) for component in cycles(following)]


def _header(name: str) -> list[str]:
    return [
        f"digraph {name} {{",
        '  graph [rankdir=LR, bgcolor="transparent", nodesep=0.3, ranksep=0.55, pad=0.15,'
        f' fontname="{MONO}", fontsize=11];',
        f'  node [shape=box, style="rounded,filled", fillcolor="#f6f8fa", fontname="{MONO}",'
        ' fontsize=11, margin="0.12,0.06", penwidth=1.5];',
        f'  edge [fontname="{MONO}", fontsize=10, penwidth=1.3, arrowsize=0.8];',
    ]


def graph_dot(graph: Graph) -> str:
    """The redirect graph: one box per URL (with its final status), one arrow per redirect
    labelled ``METHOD status`` and its hits. Loops sit in a red dashed frame labelled
    ``redirect loop``, their arrows red and marked ``↻``."""
    origin = origin_of(graph.sources[0]) if graph.sources else ""
    ids: dict[str, str] = {}
    for url in [*graph.sources, *(u for edge in graph.edges for u in edge[:2])]:
        ids.setdefault(url, f"n{len(ids)}")
    loops = loop_components((source, target) for source, target, *_ in graph.edges)
    in_loop = {url: number for number, members in enumerate(loops) for url in members}
    lines = _header("redirects")
    for url, node in ids.items():
        final = graph.final_status.get(url)
        text = wrap(short_url(url, origin))
        if url in graph.unfollowed:
            text.append("(not followed)")
        elif final is not None:
            text.append(f"→ {final}")
        style = '"rounded,filled,dashed"' if url in graph.unfollowed else '"rounded,filled"'
        border = LOOP_COLOUR if url in in_loop else status_colour(final)
        bold = ", penwidth=2.5" if url in graph.sources else ""
        lines.append(
            f"  {node} [label={dot_string(*text)}, tooltip={dot_string(url)}, "
            f'color="{border}", style={style}{bold}];'
        )
    for number, members in enumerate(loops):
        names = " ".join(ids[url] for url in sorted(members, key=lambda u: ids[u]))
        lines.append(
            f"  subgraph cluster_loop{number} {{ "
            f'label="↻ redirect loop"; class="ra-loop"; style="dashed,rounded"; '
            f'color="{LOOP_COLOUR}"; fontcolor="{LOOP_COLOUR}"; penwidth=1.5; {names} }}'
        )
    for source, target, method, status, hits in graph.edges:
        looped = source in in_loop and in_loop.get(target) == in_loop[source]
        mark = "↻ " if looped else ""
        colour = LOOP_COLOUR if looped else status_colour(status)
        first = f"{mark}{method} {status}"
        if graph.one_chain:
            label = dot_string(f"{first} {TIMES}{hits}" if hits > 1 else first)
        else:
            label = dot_string(first, hits_text(hits))
        css = "ra-edge ra-loop-edge" if looped else "ra-edge"
        lines.append(
            f'  {ids[source]} -> {ids[target]} [label={label}, color="{colour}", '
            f'fontcolor="{colour}", class="{css}"{", penwidth=2" if looped else ""}];'
        )
    lines.append("}")
    return "\n".join(lines)


def chain_graph(hops: list[Hop]) -> Graph:
    """One chain as a graph: each URL once, so a chain that comes back is drawn as a loop;
    an arrow's hits count how often the chain took it."""
    graph = Graph(sources=[hops[0].url], one_chain=True)
    taken: Counter[tuple[str, str, str, Any]] = Counter()
    for hop, after in pairwise(hops):
        taken[(hop.url, after.url, hop.method, hop.status)] += 1
    last = hops[-1]
    if not last.method and last.status is None:  # where the last redirect pointed, unvisited
        if last.url not in {hop.url for hop in hops[:-1]}:
            graph.unfollowed.add(last.url)
    elif not (isinstance(last.status, int) and is_redirect(last.status)):
        graph.final_status[last.url] = last.status
    graph.edges = [(s, t, m, status, n) for (s, t, m, status), n in taken.items()]
    return graph


def chain_dot(hops: list[Hop]) -> str:
    return graph_dot(chain_graph(hops))
