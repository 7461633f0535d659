"""The plugin's pages through Datasette's own test client, and plain `datasette` with the
shipped metadata on a file of any name."""

# ruff: noqa: F811 - the shared fixtures are imported, then requested by name

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor.explore import build_datasette
from tests.servers import ROOT, free_port, wait_for
from tests.test_datasette_fixture import audited_db, recorded_db  # noqa: F401

DB = "shop-2026"
SCRIPT = "<script>alert('pwned')</script>"


def get(files: list[Path], path: str, status: int = 200) -> str:
    """GET ``path`` from a fresh in-process Datasette built like `explore` builds it."""

    async def go() -> str:
        response = await build_datasette(files).client.get(path)
        assert response.status_code == status, (path, response.text[:500])
        return str(response.text)

    return asyncio.run(go())


def findings(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("select * from findings order by severity_rank, hits desc, id")
        return [dict(row) for row in rows]


def test_report_lists_every_problem_worst_first_with_its_place_and_fix(audited_db: Path) -> None:
    page = get([audited_db], f"/-/redirect-report/{DB}")
    rows = findings(audited_db)
    links = re.findall(rf'<td><a href="/-/redirect-report/{DB}/(\d+)">', page)
    assert [int(i) for i in links] == [row["id"] for row in rows]
    counts = {s: sum(r["severity"] == s for r in rows) for s in ("error", "warning", "info")}
    for severity, n in counts.items():
        assert f'<span class="ra-sev ra-sev-{severity}">{severity}</span> {n}</span>' in page
    login = next(r for r in rows if r["rule"] == "post-redirect-get-302")
    assert "<code>POST /login → 302</code>" in page
    assert "fixture-browser 2, curl 1" in page  # clients from evidence.clients
    assert "Answer POST /login with 303" in page  # the one-line fix
    assert f'href="/-/redirect-report/{DB}/{login["id"]}"' in page
    assert get([audited_db], "/-/redirect-report") == page  # the only traffic database


def test_the_database_page_opens_on_the_report(audited_db: Path) -> None:
    page = get([audited_db], f"/{DB}")
    assert page.index('class="ra-report"') < page.index("Tables and queries")
    assert 'class="ra-worst' in page and "data-ra-dot=" in page
    index = get([audited_db], "/")
    assert f'href="/-/redirect-report/{DB}"' in index


def test_a_finding_page_has_evidence_fix_spec_and_examples(audited_db: Path) -> None:
    login = next(r for r in findings(audited_db) if r["rule"] == "post-redirect-get-302")
    page = get([audited_db], f"/-/redirect-report/{DB}/{login['id']}")
    assert f'<h1 class="ra-title">{login["title"]}</h1>' in page
    assert "<h2>Fix (Starlette)</h2>" in page
    assert "<code>RedirectResponse(url, status_code=303)</code>" in page
    clients = re.findall(r"<tr><td><strong>([^<]+)</strong></td>", page)
    assert clients == ["fixture-browser", "curl"]
    assert "GET, body dropped → 200 \u00d72" in page  # what the browser's follow-ups did
    assert 'href="https://www.rfc-editor.org/rfc/rfc9110' in page
    assert f'href="/{DB}/requests/{login["example_request_id"]}"' in page
    assert f'href="/{DB}/chains/{login["example_chain_id"]}"' in page
    assert "data-ra-dot=" in page and "1 hit" not in page  # 3 hits: /login -> /home
    assert "3 hits" in page
    get([audited_db], f"/-/redirect-report/{DB}/9999", status=404)
    get([audited_db], "/-/redirect-report/nope/1", status=404)


def test_findings_table_reads_severity_first_without_duplicates(audited_db: Path) -> None:
    page = get([audited_db], f"/{DB}/findings")
    columns = re.findall(r'<th [^>]*data-column="([^"]+)"', page)
    assert columns[:8] == ["id", "severity", "rule", "method", "source", "status", "target", "hits"]
    assert len(columns) == len(set(columns))
    assert "severity_rank" not in columns and "audit_run_id" not in columns
    assert '<span class="ra-sev ra-sev-error">error</span>' in page
    assert '<details class="ra-columns">' in page and "ra-traffic" in page
    asked = get([audited_db], f"/{DB}/findings?_col=severity&_col=severity_rank")
    assert "severity_rank" in re.findall(r'<th [^>]*data-column="([^"]+)"', asked)
    row = get([audited_db], f"/{DB}/findings/1")
    assert f'href="/-/redirect-report/{DB}/1"' in row


def test_recorded_markup_is_escaped_on_every_page(audited_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "hostile.db"
    shutil.copy(audited_db, db)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "update findings set title = ?, message = ?, recommendation = ?, source = ?, "
            "evidence = ?, spec = ? where id = 1",
            (
                SCRIPT,
                SCRIPT,
                f"`{SCRIPT}` then {SCRIPT}",
                f"/go{SCRIPT}",
                json.dumps({"clients": [{"client": SCRIPT, "requests": 1}], "x": SCRIPT}),
                f"RFC 9110 {SCRIPT}",
            ),
        )
    for path in ["/-/redirect-report/hostile", "/-/redirect-report/hostile/1", "/hostile",
                 "/hostile/findings", "/hostile/findings/1", "/"]:  # fmt: skip
        page = get([db], path)
        assert SCRIPT not in page, path
        assert "&lt;script&gt;" in page, path


def test_plain_datasette_with_the_shipped_metadata_works_for_any_file_name(
    audited_db: Path, tmp_path: Path
) -> None:
    db = tmp_path / "prod_shop.2026.db"
    shutil.copy(audited_db, db)
    port = free_port()
    datasette = Path(sys.executable).with_name("datasette")
    metadata = ROOT / "datasette_metadata.json"
    process = subprocess.Popen(
        [str(datasette), str(db), "-m", str(metadata), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def databases() -> list[dict[str, Any]] | None:
            try:
                return list(httpx.get(f"{base}/-/databases.json", timeout=2).json())
            except httpx.TransportError:
                return None

        (name,) = [d["name"] for d in wait_for(databases, timeout=30, what="datasette")]
        encoded = name.replace(".", "~2E")  # Datasette's tilde encoding
        queries = httpx.get(f"{base}/{encoded}/findings_by_severity.json?rule=&_shape=objects")
        assert queries.status_code == 200
        assert len(queries.json()["rows"]) == len(findings(audited_db))
        report = httpx.get(f"{base}/-/redirect-report/{encoded}")
        assert report.status_code == 200 and findings(audited_db)[0]["title"] in report.text
        table = httpx.get(f"{base}/{encoded}/findings").text
        assert "One row per redirect problem" in table  # the plugin's table description
        static = httpx.get(f"{base}/-/static-plugins/redirect-auditor/viz.js")
        assert static.status_code == 200 and "javascript" in static.headers["content-type"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read().decode(errors="replace")
        process.stderr.close()


@pytest.mark.parametrize("path", ["/-/static-plugins/redirect-auditor/viz.LICENSE.txt"])
def test_the_vendored_graph_engine_ships_with_its_licences(audited_db: Path, path: str) -> None:
    text = get([audited_db], path)
    assert "MIT License" in text and "Eclipse Public License" in text
