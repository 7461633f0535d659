"""Real headless Chromium on Datasette served by uvicorn: findings, chains, escaping."""

# ruff: noqa: F811 - the shared fixtures are imported, then requested by name

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.explore import build_datasette
from tests.browser import dump_dom, require_chromium, screenshot
from tests.servers import serve_in_thread
from tests.test_datasette_fixture import XSS_PATH, audited_db, recorded_db  # noqa: F401

pytestmark = pytest.mark.browser
DB = "shop-2026"


@pytest.fixture(scope="module")
def served(audited_db: Path) -> Iterator[str]:
    require_chromium()
    with serve_in_thread(build_datasette([audited_db]).app()) as base:
        yield base


def chain_id(db: Path, rule: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute(
                "select example_chain_id from findings where rule = ?", (rule,)
            ).fetchone()[0]
        )


def text_of(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_findings_page_shows_titles_and_links(served: str, audited_db: Path) -> None:
    dom = dump_dom(f"{served}/{DB}/findings")
    text = text_of(dom)
    assert "Post/redirect/get with 301/302: say 303 See Other" in text
    assert "Open redirect: off-site target taken from the request" in text
    assert re.search(rf'href="/{DB}/chains/\d+"', dom)
    assert re.search(rf'href="/{DB}/requests/\d+"', dom)
    shot = screenshot(f"{served}/{DB}/findings", "findings", size="1280,1800")
    assert shot.stat().st_size > 20_000


def test_chain_page_renders_the_hop_path_and_picture(served: str, audited_db: Path) -> None:
    url = f"{served}/{DB}/chains/{chain_id(audited_db, 'redirect-chain')}"
    dom = dump_dom(url)
    path = re.search(r'<span class="ra-path">(.*?)</span>\s*</td>', dom, re.S)
    assert path, "no rendered hop path"
    assert " ".join(text_of(path.group(1)).split()) == "GET /a —302→ GET /b —307→ GET /c —200"
    assert 'style="color:#0550ae' in path.group(1)  # 3xx in blue
    assert 'style="color:#1a7f37' in path.group(1)  # 2xx in green
    assert '<svg class="ra-svg"' in dom
    screenshot(url, "chain")


def test_recorded_script_path_renders_as_text(served: str) -> None:
    dom = dump_dom(f"{served}/{DB}/requests?status=404")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert "<script>alert(1)</script>" not in dom
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", dom, re.S)
    assert not [s for s in scripts if "alert(1)" in s]
    assert XSS_PATH in text_of(dom).replace("&lt;", "<").replace("&gt;", ">")


def test_redirect_graph_page_draws_the_loop(served: str) -> None:
    url = f"{served}/-/redirect-graph?database={DB}&route=/loop/{{n:int}}"
    dom = dump_dom(url)
    assert dom.count('<svg class="ra-svg"') == 1
    assert "/loop/1" in dom and "/loop/2" in dom
    screenshot(url, "redirect-graph")
