"""`redirect-auditor run` in real worker processes, several of them on one database file."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    ROOT,
    cli_command,
    fetch_rows,
    free_port,
    serve_in_process,
    serve_processes,
    wait_for,
)

LOAD_REQUESTS = 240


def run_args(db: Path, port: int, *extra: str) -> list[str]:
    return cli_command(
        "run", "tests.apps.site:app", "--db", str(db), "--port", str(port), "--log-level",
        "warning", *extra,
    )  # fmt: skip


async def concurrent_load(url: str, count: int, concurrency: int = 24) -> int:
    """GET ``count`` distinct URLs over ``concurrency`` connections; return how many got 200."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=20) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> int:
            async with gate:
                response = await client.get(f"/landing/load-{i}?token=t{i}")
                return response.status_code

        statuses = await asyncio.gather(*(one(i) for i in range(count)))
    return statuses.count(200)


def count_rows(db: Path, where: str) -> int:
    return int(fetch_rows(db, f"select count(*) as n from requests where {where}")[0]["n"])


def writer_processes(db: Path) -> int:
    """How many (retired) ``writer_process`` processes write ``db`` right now."""
    count = 0
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            count += b"writer_process" in cmdline and str(db).encode() in cmdline
    return count


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_two_workers_under_concurrent_load_record_every_request(
    tmp_path: Path, writer: str
) -> None:
    db = tmp_path / "traffic.db"
    port = free_port()
    args = run_args(db, port, "--workers", "2", "--writer", writer)
    with serve_in_process(args, port, cwd=ROOT) as url:
        served = asyncio.run(concurrent_load(url, LOAD_REQUESTS))
        assert writer_processes(db) == 0  # the writer is a thread of each worker
    assert served == LOAD_REQUESTS
    load = "path like '/landing/load-%'"
    wait_for(lambda: count_rows(db, load) == served, timeout=20, what="every served row")
    assert count_rows(db, f"{load} and query like 'token=REDACTED'") == served
    distinct = fetch_rows(db, "select count(distinct path) as n from requests where " + load)
    assert distinct == [{"n": served}]
    stats = fetch_rows(db, "select * from recorder_stats")
    assert sum(s["rows_written"] for s in stats) == count_rows(db, "1")
    assert all(s[f"dropped_{r}"] == 0 for s in stats for r in ("queue_full", "locked", "other"))
    workers = {r["worker_id"] for r in fetch_rows(db, "select distinct worker_id from requests")}
    assert workers <= {s["worker_id"] for s in stats}


def test_redirects_mode_keeps_follow_ups_served_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    port_a, port_b = free_port(), free_port()
    args = ("--record", "redirects")
    commands = [(run_args(db, port_a, *args), port_a), (run_args(db, port_b, *args), port_b)]
    with serve_processes(commands, cwd=ROOT) as (a, b):
        redirect = httpx.get(f"{a}/redirect/302?to=/landing/followed")
        assert redirect.status_code == 302
        assert httpx.get(f"{b}/landing/followed").status_code == 200
        assert httpx.get(f"{b}/landing/unrelated-b").status_code == 200
        assert httpx.get(f"{a}/landing/unrelated-a").status_code == 200
        # The follow-up's process decides from the targets table the other one noted in.
        wait_for(lambda: count_rows(db, "status = 302"), what="the redirect row")
    # Stopping flushed both processes; poll anyway in case a file system is slow to show it.
    wait_for(lambda: count_rows(db, "status = 200"), timeout=20, what="the follow-up row")
    # Each worker writes its own rows: ids follow write order, not time, across workers.
    rows = fetch_rows(db, "select path, status, worker_id from requests order by started_at")
    assert [(r["path"], r["status"]) for r in rows] == [
        ("/redirect/302", 302),
        ("/landing/followed", 200),
    ]
    assert rows[0]["worker_id"] != rows[1]["worker_id"]
    stats = fetch_rows(db, "select * from recorder_stats")
    assert len(stats) == 2
    # The two unrelated requests (and each server's readiness probe) are skipped, not lost.
    assert sum(s["rows_skipped"] for s in stats) >= 2
    assert sum(s["dropped_other"] + s["dropped_locked"] for s in stats) == 0
