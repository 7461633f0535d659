"""The plugin's rendering: readable paths, SVG pictures, and escaping of hostile values."""

from __future__ import annotations

import json

from markupsafe import Markup

from auditor.datasette_plugin import (
    Graph,
    chain_svg,
    graph_svg,
    parse_hops,
    parse_path_text,
    render_path,
)

HOSTILE = '/<script>alert(1)</script>"><img src=x onerror=alert(2)>'


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
    tail = parse_path_text("GET /go —302→ https://evil.example/ (not followed)")
    assert tail is not None and tail[-1].url == "https://evil.example/ (not followed)"
    assert "(not followed)" in render_path(tail)
    assert parse_path_text("just text") is None


def test_hostile_values_are_escaped_in_the_path() -> None:
    hops = parse_hops(hostile_hops())
    assert hops is not None
    assert_inert(render_path(hops, lambda request_id: f"/db/requests/{request_id}"))
    text_hops = parse_path_text(f"GET {HOSTILE} —302→ GET {HOSTILE} —200")
    assert text_hops is not None
    assert_inert(render_path(text_hops))


def test_hostile_values_are_escaped_in_pictures() -> None:
    hops = parse_hops(hostile_hops())
    assert hops is not None
    assert_inert(chain_svg(hops))
    graph = Graph(
        edges=[(f"http://s{HOSTILE}", f"http://s{HOSTILE}2", "<b>GET", 302, 1)],
        final_status={f"http://s{HOSTILE}2": 404},
        sources=[f"http://s{HOSTILE}"],
    )
    assert_inert(graph_svg(graph))


def test_malformed_hops_fall_back_to_datasette() -> None:
    assert parse_hops("not json") is None
    assert parse_hops(json.dumps({"a": 1})) is None
    assert parse_hops(json.dumps([1, 2])) is None
