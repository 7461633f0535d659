"""Real headless Chromium on Datasette served by uvicorn: the report, a finding's page,
Graphviz pictures (measured in the rendered DOM), chains and escaping.

Screenshots go to a pytest tmp dir and ``artifacts/``; the demo's report becomes the
README's ``docs/img/report.png`` when that is missing or UPDATE_SCREENSHOTS=1 is set.
"""

# ruff: noqa: F811 - the shared fixtures are imported, then requested by name

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.explore import build_datasette
from tests.browser import ARTIFACTS, Page, dump_dom, open_page, require_chromium
from tests.servers import ROOT, cli_command, serve_in_thread
from tests.test_datasette_fixture import XSS_PATH, audited_db, recorded_db  # noqa: F401

pytestmark = pytest.mark.browser
DB = "shop-2026"
WIDTH, HEIGHT = 1400, 1000
HOSTILE = '/x"];evil[label="<img src=x onerror=window.pwned=1>\\N&lt;b&gt;'

# Every label box in the first drawn picture: a node's shape, the text of an edge or
# loop-frame label (lines of one label joined); whether each node's text fits its shape.
MEASURE = """(() => {
  const svg = document.querySelector('.ra-graph svg');
  const box = (r) => ({left: r.left, top: r.top, right: r.right, bottom: r.bottom});
  const union = (rects) => box({left: Math.min(...rects.map(r => r.left)),
    top: Math.min(...rects.map(r => r.top)), right: Math.max(...rects.map(r => r.right)),
    bottom: Math.max(...rects.map(r => r.bottom))});
  const labels = [];
  for (const g of svg.querySelectorAll('g.node, g.edge, g.cluster')) {
    const texts = [...g.querySelectorAll('text')];
    if (!texts.length) continue;
    const textBox = union(texts.map(t => t.getBoundingClientRect()));
    const shape = g.querySelector('polygon, path');
    const kind = g.classList.contains('node') ? 'node'
      : g.classList.contains('edge') ? 'edge' : 'cluster';
    labels.push({kind, text: texts.map(t => t.textContent).join(' / '), textBox,
      box: kind === 'node' ? box(shape.getBoundingClientRect()) : textBox});
  }
  return {labels, svg: box(svg.getBoundingClientRect()),
    loops: [...svg.querySelectorAll('g.cluster.ra-loop text')].map(t => t.textContent),
    loopEdges: svg.querySelectorAll('g.edge.ra-loop-edge').length,
    page: {width: document.documentElement.scrollWidth, viewport: innerWidth}};
})()"""


@pytest.fixture(scope="module")
def served(audited_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_chromium()
    hostile = tmp_path_factory.mktemp("hostile") / "hostile.db"
    shutil.copy(audited_db, hostile)
    with sqlite3.connect(hostile) as conn:  # a redirect whose URLs are DOT and HTML tricks
        conn.execute(
            "insert into requests (started_at, method, path, url, route, status, location_url)"
            " values (1, 'GET', '/trick', 'http://shop/trick', '/trick', 302, ?),"
            " (2, 'GET', ?, ?, null, 302, 'http://shop/trick')",
            (f"http://shop{HOSTILE}", HOSTILE, f"http://shop{HOSTILE}"),
        )
    with serve_in_thread(build_datasette([audited_db, hostile]).app()) as base:
        yield base


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def save(page: Page, shots: Path, name: str) -> Path:
    """A screenshot in the pytest tmp dir, copied to artifacts/ for CI."""
    path = page.screenshot(shots / f"{name}.png")
    assert path.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path


def finding(db: Path, rule: str | None = None) -> dict[str, Any]:
    """A finding by rule, or the worst one (the report's order)."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        where = "where rule = ?" if rule else ""
        row = conn.execute(
            f"select * from findings {where} order by severity_rank, hits desc, id limit 1",
            (rule,) if rule else (),
        ).fetchone()
    return dict(row)


def drawn(page: Page) -> None:
    page.wait_for("document.documentElement.dataset.raPictures === 'done'", what="pictures")
    assert page.evaluate("document.querySelectorAll('.ra-graph-error').length") == 0


def in_view(page: Page, selector: str) -> dict[str, Any]:
    """The element's box, asserted to be whole inside the viewport, page not scrolled."""
    box = page.evaluate(
        f"(() => {{ const e = document.querySelector({selector!r}); if (!e) return null;"
        " const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom,"
        " left: r.left, right: r.right, text: e.textContent, y: scrollY}; })()"
    )
    assert box is not None, f"nothing matches {selector}"
    assert box["y"] == 0
    assert 0 <= box["top"] < box["bottom"] <= HEIGHT, (selector, box)
    assert 0 <= box["left"] < box["right"] <= WIDTH, (selector, box)
    return dict(box)


def overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return min(a["right"], b["right"]) - max(a["left"], b["left"]) > 0.5 and (
        min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > 0.5
    )


def assert_readable(picture: dict[str, Any]) -> None:
    """No two label boxes overlap, node text fits its box, nothing is clipped."""
    labels = picture["labels"]
    assert labels
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            assert not overlaps(a["box"], b["box"]), (a["text"], b["text"])
        inner, outer = a["textBox"], (a["box"] if a["kind"] == "node" else picture["svg"])
        assert outer["left"] - 1 <= inner["left"] and inner["right"] <= outer["right"] + 1, a
        assert outer["top"] - 1 <= inner["top"] and inner["bottom"] <= outer["bottom"] + 1, a
    assert picture["page"]["width"] <= picture["page"]["viewport"]  # fits: no sideways scroll


def test_report_shows_the_worst_problem_above_the_fold(
    served: str, audited_db: Path, shots: Path
) -> None:
    worst = finding(audited_db)
    with open_page(f"{served}/-/redirect-report/{DB}", WIDTH, HEIGHT) as page:
        drawn(page)
        title = in_view(page, ".ra-worst .ra-title")
        assert title["text"].strip() == worst["title"]
        fix = in_view(page, ".ra-worst .ra-fix")
        assert " ".join(worst["recommendation"].replace("`", "").split()[:6]) in " ".join(
            fix["text"].split()
        )
        in_view(page, ".ra-worst .ra-graph svg")
        rows = page.evaluate(
            "[...document.querySelectorAll('.ra-problems tbody tr')].map(r => r.className)"
        )
        ranks = ["error", "warning", "info"]
        assert [ranks.index(r.removeprefix("ra-row-")) for r in rows] == sorted(
            ranks.index(r.removeprefix("ra-row-")) for r in rows
        )
        save(page, shots, "report")


def test_demo_report_reads_in_one_screen(shots: Path, tmp_path: Path) -> None:
    """The demo's traffic (what the README shows): its report screenshot is the README's."""
    require_chromium()
    db = tmp_path / "demo.db"
    subprocess.run(
        cli_command("demo", "--no-serve", "--db", str(db)),
        check=True,
        capture_output=True,
        timeout=120,
    )
    worst = finding(db)
    with (
        serve_in_thread(build_datasette([db]).app()) as base,
        open_page(f"{base}/demo", WIDTH, HEIGHT) as page,
    ):
        drawn(page)
        assert in_view(page, ".ra-worst .ra-title")["text"].strip() == worst["title"]
        in_view(page, ".ra-worst .ra-fix")
        in_view(page, ".ra-worst .ra-graph svg")
        assert_readable(page.evaluate(MEASURE))
        shot = save(page, shots, "demo-report")
    readme_image = ROOT / "docs" / "img" / "report.png"
    if os.environ.get("UPDATE_SCREENSHOTS") or not readme_image.exists():
        readme_image.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, readme_image)


def test_explore_lands_on_the_report(served: str, audited_db: Path) -> None:
    with open_page(f"{served}/{DB}", WIDTH, HEIGHT) as page:
        drawn(page)
        assert in_view(page, ".ra-worst .ra-title")["text"].strip() == finding(audited_db)["title"]


def test_finding_page_shows_title_fix_and_picture_above_the_fold(
    served: str, audited_db: Path, shots: Path
) -> None:
    worst = finding(audited_db)
    with open_page(f"{served}/-/redirect-report/{DB}/{worst['id']}", WIDTH, HEIGHT) as page:
        drawn(page)
        assert in_view(page, "h1.ra-title")["text"].strip() == worst["title"]
        in_view(page, ".ra-detail .ra-fix")
        in_view(page, ".ra-detail .ra-graph svg")
        links = page.evaluate("[...document.querySelectorAll('.ra-links a')].map(a => a.href)")
        assert f"{served}/{DB}/requests/{worst['example_request_id']}" in links
        assert f"{served}/{DB}/chains/{worst['example_chain_id']}" in links
        save(page, shots, "finding")


def test_loop_is_framed_and_labelled_and_no_labels_overlap(
    served: str, audited_db: Path, shots: Path
) -> None:
    loop = finding(audited_db, "redirect-loop")
    with open_page(f"{served}/-/redirect-report/{DB}/{loop['id']}", WIDTH, HEIGHT) as page:
        drawn(page)
        picture = page.evaluate(MEASURE)
        assert any("redirect loop" in text for text in picture["loops"])
        assert picture["loopEdges"] == 2  # /loop/1 -> /loop/2 -> /loop/1
        texts = " ".join(label["text"] for label in picture["labels"])
        assert "/loop/1" in texts and "/loop/2" in texts and "hit" in texts
        assert_readable(picture)
        save(page, shots, "loop")


def test_chain_row_draws_the_chain_and_its_loop(served: str, audited_db: Path) -> None:
    chain = finding(audited_db, "redirect-loop")["example_chain_id"]
    with open_page(f"{served}/{DB}/chains/{chain}", WIDTH, HEIGHT) as page:
        drawn(page)
        picture = page.evaluate(MEASURE)
        assert picture["loops"] and picture["loopEdges"] == 2
        assert_readable(picture)
        path = page.evaluate("document.querySelector('.ra-path').textContent")
        assert " ".join(path.split()).startswith("GET /loop/1 —302→ GET /loop/2 —302→")


def test_hostile_urls_are_drawn_as_text(served: str, shots: Path) -> None:
    with open_page(f"{served}/-/redirect-graph?database=hostile&route=/trick") as page:
        drawn(page)
        assert page.evaluate("document.querySelectorAll('.ra-graph svg img').length") == 0
        assert page.evaluate("window.pwned") is None
        texts = page.evaluate(
            "[...document.querySelectorAll('.ra-graph svg g.node text')].map(t => t.textContent)"
        )
        assert HOSTILE in "".join(texts)  # shown exactly as recorded
        picture = page.evaluate(MEASURE)
        assert picture["loops"]  # /trick -> hostile -> /trick
        save(page, shots, "hostile-graph")


def test_recorded_script_path_renders_as_text(served: str) -> None:
    dom = dump_dom(f"{served}/{DB}/requests?status=404")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)</script>" not in dom
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", dom, re.S)
    assert not [s for s in scripts if "alert(1)" in s]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    assert XSS_PATH in text.replace("&lt;", "<").replace("&gt;", ">")
