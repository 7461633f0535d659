"""The plugin's pieces: DOT pictures (escaping, loops), hop paths, fixes, specs, evidence."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup

from auditor.explore.cells import (
    evidence_summary,
    inline_code,
    one_line_fix,
    parse_path_text,
    picture,
    render_path,
    spec_links,
)
from auditor.explore.pictures import (
    Graph,
    Hop,
    chain_dot,
    chain_graph,
    dot_string,
    graph_dot,
    loop_components,
    parse_hops,
)

HOSTILE = '/<script>alert(1)</script>"><img src=x onerror=alert(2)>\\N"];x[label="&lt;'
QUOTED = r'"(?:[^"\\]|\\.)*"'


def hostile_hops() -> str:
    return json.dumps(
        [
            {"request_id": 1, "method": "POST", "url": f"http://shop{HOSTILE}", "status": 301},
            {
                "request_id": 2,
                "method": "<b>GET",
                "url": f"http://shop{HOSTILE}?x=<i>",
                "status": 200,
            },
        ]
    )


def assert_inert(html: Markup) -> None:
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def outside_strings(dot: str) -> str:
    """The DOT text with every quoted string removed: what Graphviz reads as syntax."""
    return re.sub(QUOTED, '""', dot)


@given(st.text())
def test_dot_string_is_always_one_quoted_string(text: str) -> None:
    quoted = dot_string(text, text)
    assert re.fullmatch(QUOTED, quoted)
    assert "\n" not in quoted and "\r" not in quoted


def test_dot_string_shows_backslashes_quotes_and_entities_literally() -> None:
    assert dot_string('a\\Nb"c&lt;') == '"a\\\\Nb\\"c&amp;lt;"'
    assert dot_string("one", "two") == '"one\\ntwo"'
    assert dot_string("a\nb\u202ec") == '"a\ufffdb\ufffdc"'


def test_hostile_urls_stay_inside_dot_strings() -> None:
    graph = Graph(
        edges=[
            (f"http://s{HOSTILE}", f"http://s{HOSTILE}2", '<b>GET"]', 302, 1),
            (f"http://s{HOSTILE}2", f"http://s{HOSTILE}", "GET", 302, 1),
        ],
        sources=[f"http://s{HOSTILE}"],
    )
    syntax = outside_strings(graph_dot(graph))
    assert "script" not in syntax and "img" not in syntax and 'label=""' in syntax
    assert re.findall(r"^\s+(n\d+) \[", syntax, re.M) == ["n0", "n1"]  # generated ids only


def test_a_two_url_cycle_is_one_loop_framed_and_marked() -> None:
    graph = Graph(
        edges=[
            ("http://s/1", "http://s/2", "GET", 302, 3),
            ("http://s/2", "http://s/1", "GET", 302, 3),
        ],
        sources=["http://s/1"],
    )
    dot = graph_dot(graph)
    assert dot.count("subgraph cluster_loop") == 1
    assert 'label="↻ redirect loop"' in dot and 'class="ra-loop"' in dot
    assert dot.count("ra-loop-edge") == 2
    assert '"↻ GET 302\\n3 hits"' in dot


def test_loops_are_cycles_and_self_redirects_only() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "b"), ("c", "d"), ("e", "e"), ("d", "f")]
    assert sorted(map(sorted, loop_components(edges))) == [["b", "c"], ["e"]]
    assert loop_components([("a", "b"), ("b", "c")]) == []


def test_a_chain_that_comes_back_is_drawn_as_a_loop() -> None:
    hops = [Hop("GET", f"http://s/loop/{n}", 302) for n in (1, 2, 1, 2)]
    hops.append(Hop("", "http://s/loop/1", None))  # the unfollowed tail
    graph = chain_graph(hops)
    assert sorted(graph.edges) == [
        ("http://s/loop/1", "http://s/loop/2", "GET", 302, 2),
        ("http://s/loop/2", "http://s/loop/1", "GET", 302, 2),
    ]
    assert not graph.unfollowed
    dot = chain_dot(hops)
    assert "cluster_loop0" in dot and '"↻ GET 302 \u00d72"' in dot


def test_a_completed_chain_shows_its_final_status_and_an_unvisited_target() -> None:
    done = chain_graph([Hop("GET", "http://s/a", 302), Hop("GET", "http://s/b", 200)])
    assert done.final_status == {"http://s/b": 200} and not loop_components(
        (s, t) for s, t, *_ in done.edges
    )
    left = chain_graph([Hop("GET", "http://s/go", 302), Hop("", "https://evil.example/", None)])
    assert left.unfollowed == {"https://evil.example/"}
    assert "(not followed)" in graph_dot(left)


def test_path_renders_hops_with_coloured_statuses_and_links() -> None:
    hops = parse_hops(
        json.dumps(
            [
                {"request_id": 7, "method": "POST", "url": "http://s/a", "status": 301},
                {"request_id": 8, "method": "GET", "url": "http://s/b", "status": 200},
            ]
        )
    )
    assert hops is not None
    html = render_path(hops, lambda request_id: f"/db/requests/{request_id}")
    assert 'href="/db/requests/7"' in html and 'href="/db/requests/8"' in html
    assert "<strong>POST</strong> /a" in html
    assert 'color:#0550ae;font-weight:bold">—301→' in html
    assert 'color:#1a7f37;font-weight:bold">—200<' in html


def test_path_text_parses_the_audit_format_and_unfollowed_tails() -> None:
    hops = parse_path_text("POST /a —301→ GET /b —200")
    assert hops is not None
    assert [(h.method, h.url, h.status) for h in hops] == [("POST", "/a", 301), ("GET", "/b", 200)]
    tail = parse_path_text("GET /go —302→ https://evil.example/ (not followed)", "http://s/go")
    assert tail is not None and (tail[-1].url, tail[-1].status) == ("https://evil.example/", None)
    assert "(not followed)" in render_path(tail)
    relative = parse_path_text("GET /loop/2 —302→ /loop/1 (not followed)", "http://s/loop/2")
    assert relative is not None and relative[-1].url == "http://s/loop/1"
    assert parse_path_text("just text") is None


def test_hostile_values_are_escaped_in_the_path_and_figures() -> None:
    hops = parse_hops(hostile_hops())
    assert hops is not None
    assert_inert(render_path(hops, lambda request_id: f"/db/requests/{request_id}"))
    text_hops = parse_path_text(f"GET {HOSTILE} —302→ GET {HOSTILE} —200")
    assert text_hops is not None
    assert_inert(render_path(text_hops))
    figure = picture(chain_dot(hops), HOSTILE, render_path(hops))
    assert "<img" not in figure and "<script" not in figure
    assert 'data-ra-dot="digraph' in figure and "&#34;" in figure  # an escaped attribute


def test_malformed_hops_fall_back_to_datasette() -> None:
    assert parse_hops("not json") is None
    assert parse_hops(json.dumps({"a": 1})) is None
    assert parse_hops(json.dumps([1, 2])) is None


def test_one_line_fix_is_the_first_sentence() -> None:
    assert one_line_fix("Say 303. Not 307.") == "Say 303"
    assert one_line_fix("Cache it: max-age=<s> (e.g. 86400). More.") == (
        "Cache it: max-age=<s> (e.g. 86400)"
    )
    long = "Redirect only to this site: " + "x" * 300
    assert one_line_fix(long) == "Redirect only to this site"
    assert len(one_line_fix("y" * 500)) == 160


def test_fixes_specs_and_evidence_are_escaped_and_linked() -> None:
    assert inline_code("use `redirect(<to>)` now") == ("use <code>redirect(&lt;to&gt;)</code> now")
    assert inline_code("odd ` tick <b>") == "odd ` tick &lt;b&gt;"
    spec = spec_links("RFC 9110 §15.4.2, §15.5.6; CWE-601 <i>")
    assert 'href="https://www.rfc-editor.org/rfc/rfc9110#section-15.4.2"' in spec
    assert 'href="https://www.rfc-editor.org/rfc/rfc9110#section-15.5.6"' in spec
    assert 'href="https://cwe.mitre.org/data/definitions/601.html"' in spec
    assert "&lt;i&gt;" in spec
    summary = evidence_summary(
        json.dumps(
            {
                "clients": [
                    {
                        "client": "<b>curl",
                        "requests": 2,
                        "followed": 2,
                        "outcomes": [
                            {"method": "GET", "body": "dropped", "status": 405, "count": 2}
                        ],
                    }
                ],
                "targets": ["https://evil.example/<script>"],
            }
        )
    )
    assert summary is not None
    assert (
        "<strong>&lt;b&gt;curl</strong>: 2 requests, 2 followed; GET, body dropped → 405 \u00d72"
        in summary
    )
    assert "targets: https://evil.example/&lt;script&gt;" in summary
    assert evidence_summary("not json") is None
