"""Fleet scale: three hosts export Parquet shards; `audit DIR` links the hop that crossed
hosts and reports what `audit --combined` reports on the three SQLite files."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor.record.writer import SECRET_ENV
from auditor.sources.export import safe_host
from auditor.store.journal import recorded_rows
from tests.servers import ROOT, cli_command, free_port, serve_processes, wait_for

duckdb = pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

LATER = str(time.time() + 2 * 3600)  # every hour recorded so far is closed by then


def count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    with closing(sqlite3.connect(db)) as conn:
        return recorded_rows(conn)


@pytest.fixture(scope="module")
def three_hosts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three uvicorn processes, three files, one shared key file content: host A
    answers POST /checkout with a 301 to host B's absolute URL; host C is visited
    directly. One httpx client (one IP) follows the redirect."""
    tmp = tmp_path_factory.mktemp("fleet")
    dbs = [tmp / "web1.db", tmp / "web2.db", tmp / "web3.db"]
    for db in dbs:  # the same key on every host: client keys match across hosts
        key = db.with_name(db.name + ".key")
        key.write_text("one-key-copied-to-every-host")
        key.chmod(0o600)
    ports = [free_port() for _ in dbs]
    env = {SECRET_ENV: "", "LANDING_HOST": f"http://127.0.0.1:{ports[1]}"}
    apps = ["checkout_host", "landing_host", "landing_host"]
    commands = [
        (
            cli_command(
                "run",
                f"tests.apps.hosts:{app}",
                "--db",
                str(db),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ),
            port,
        )
        for app, db, port in zip(apps, dbs, ports, strict=True)
    ]
    with serve_processes(commands, env=env, cwd=ROOT) as urls:
        with httpx.Client() as client:
            response = client.post(f"{urls[0]}/checkout", content=b"cart=1", follow_redirects=True)
            assert response.status_code == 200 and response.text == "landed"
            assert client.get(f"{urls[2]}/landing").status_code == 200
            for _ in range(3):  # rows no audit step reads: counted, not loaded
                client.get(f"{urls[2]}/about")
        # Readiness probes (GET /) are recorded too.
        for db, count in zip(dbs, (2, 2, 5), strict=True):
            wait_for(lambda db=db, count=count: count_rows(db) >= count, timeout=20, what=db.name)
    return dbs


def run_cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code, *args] if code else cli_command(*args)
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def export_all(dbs: list[Path], out: Path, until: str = LATER) -> list[str]:
    lines = []
    for i, db in enumerate(dbs, 1):
        result = run_cli("export", str(db), "--to", str(out), "--host", f"web{i}", "--until", until)
        assert result.returncode == 0, result.stderr
        lines.append(result.stdout.strip())
    return lines


def parquet_rows(out: Path) -> list[tuple[Any, ...]]:
    return duckdb.sql(
        f"select id, started_at, worker_id, url from read_parquet('{out}/server=*/**/*.parquet', "
        "hive_partitioning = false) order by all"
    ).fetchall()


def findings(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "select rule, severity, method, status, source, target, hits from findings "
            "order by rule, source, method, status"
        ).fetchall()


def test_the_hop_across_hosts_links_from_parquet_as_from_combined(
    three_hosts: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    export_all(three_hosts, out)
    hosts = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name[0] != "_")
    assert hosts == ["server=web1", "server=web2", "server=web3"]
    assert all(p.parent.name.startswith("date=") for p in out.glob("server=*/**/*.parquet"))
    # An engine that reads partitions as columns still sees the recorded Host header.
    seen = duckdb.sql(
        f"select distinct host from read_parquet('{out}/server=*/**/*.parquet')"
    ).fetchall()
    assert {h.split(":")[0] for (h,) in seen} == {"127.0.0.1"}

    result = run_cli("audit", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = out / "report.db"
    assert f"report: {report}" in result.stderr
    with closing(sqlite3.connect(report)) as conn:
        links = conn.execute(
            """select r.method, r.status, r.server_addr, q.method, q.path, q.server_addr
               from requests q join requests r on q.follow_up_of = r.id"""
        ).fetchall()
    assert [(m, s, qm, qp) for m, s, _, qm, qp, _ in links] == [("POST", 301, "GET", "/landing")]
    assert links[0][2] != links[0][5]  # redirect on host A, follow-up on host B
    fleet = findings(report)
    assert [f[0] for f in fleet].count("post-redirect-get-302") == 1  # reported once
    assert '"post-redirect-get-302"' in result.stdout
    audited = result

    combined = tmp_path / "all.db"
    result = run_cli("audit", *map(str, three_hosts), "--combined", str(combined))
    assert result.returncode == 0, result.stderr
    assert fleet == findings(combined)
    # The report keeps what its findings cite; auditing it alone would judge a part.
    again = run_cli("audit", str(report))
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "report of a fleet audit" in again.stderr
    assert run_cli("audit", str(report), "--stored").returncode == 0
    # The report keeps the rows the audit reads (the redirect, its follow-up, one row per
    # host), and counts every row.
    total = sum(map(count_rows, three_hosts))
    assert count_rows(report) < count_rows(combined) == total
    # Each host's recorder_stats crossed over too: rows written, and the framework.
    stats = sorted((out / "_recorder_stats").glob("*.parquet"))
    assert len(stats) == 3
    with closing(sqlite3.connect(report)) as conn:
        workers = conn.execute("select worker_id, rows_written, framework from recorder_stats")
        rows = workers.fetchall()
    assert {w.split("/")[0] for w, _, _ in rows} == {"web1", "web2", "web3"}
    assert sum(n or 0 for _, n, _ in rows) == total
    assert {f for _, _, f in rows} == {"starlette"}
    assert f"{total:,} request(s) from" in audited.stderr
    assert json.loads(audited.stdout)["databases"][0]["rows_scanned"] == total


def test_exporting_again_adds_no_duplicate_rows(three_hosts: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "shards"
    # Nothing is closed an hour ago; then everything; then again, and once more.
    assert all(" 0 new request(s)" in line for line in export_all(three_hosts, out, "0"))
    export_all(three_hosts, out)
    first = parquet_rows(out)
    files = sorted(out.rglob("*.parquet"))
    # A later run reads from past the newest exported row, not the whole table.
    states = sorted((out / "_export_state").glob("*.json"))
    resume = sorted(json.loads(p.read_text())["resume_id"] for p in states)
    assert resume == sorted(count_rows(db) + 1 for db in three_hosts)
    again = export_all(three_hosts, out)
    assert all(" 0 new request(s) in 0 file(s)" in line for line in again)
    assert parquet_rows(out) == first and sorted(out.rglob("*.parquet")) == files
    assert len(first) == len(set(first)) == sum(map(count_rows, three_hosts))

    # A row that lands late in an exported hour (a long request) goes to a new file.
    copy = tmp_path / "web1.db"
    shutil.copy(three_hosts[0], copy)
    shutil.copy(three_hosts[0].with_name("web1.db.key"), tmp_path / "web1.db.key")
    with closing(sqlite3.connect(copy)) as conn, conn:
        columns = [r[1] for r in conn.execute("pragma table_info(requests)") if r[1] != "id"]
        listed = ", ".join(columns)
        conn.execute(
            f"insert into requests ({listed}) select {listed} from requests order by id limit 1"
        )
    result = run_cli("export", str(copy), "--to", str(out), "--host", "web1", "--until", LATER)
    assert result.returncode == 0, result.stderr
    assert "1 new request(s) in 1 file(s)" in result.stdout
    assert len(parquet_rows(out)) == len(first) + 1


def test_a_corrupt_or_missing_shard_is_one_line_and_exit_2(
    three_hosts: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    export_all(three_hosts, out)
    shard = sorted(out.glob("server=*/**/*.parquet"))[0]
    shard.write_bytes(b"PAR1 not really parquet")
    result = run_cli("audit", str(out))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(shard) in result.stderr
    assert "Traceback" not in result.stderr and not (out / "report.db").exists()

    for missing in (tmp_path / "empty", f"{tmp_path}/nowhere/*/date=*"):
        Path(tmp_path / "empty").mkdir(exist_ok=True)
        result = run_cli("audit", str(missing))
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and str(missing) in result.stderr


def test_without_duckdb_fleet_commands_say_what_to_install(
    three_hosts: list[Path], tmp_path: Path
) -> None:
    code = (
        "import sys; sys.modules['duckdb'] = None; "
        "from redirect_auditor_cli.main import main; "
        "sys.argv = ['redirect-auditor', *sys.argv[1:]]; main()"
    )
    out = tmp_path / "shards"
    out.mkdir()
    for args in (("export", str(three_hosts[0]), "--to", str(out)), ("audit", str(out))):
        result = run_cli(*args, code=code)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1
        assert "install redirect-auditor[fleet]" in result.stderr
    assert list(out.iterdir()) == []


def test_a_host_name_is_one_path_segment() -> None:
    assert safe_host("../../etc") == "_.._etc"
    assert "/" not in safe_host("a/b") and safe_host("") == "unknown"


def test_rows_a_host_lost_are_counted_by_the_fleet_audit(
    three_hosts: list[Path], tmp_path: Path
) -> None:
    copy = tmp_path / "web1.db"
    with closing(sqlite3.connect(three_hosts[0])) as source, closing(sqlite3.connect(copy)) as to:
        source.backup(to)  # with what is still in the WAL
    with closing(sqlite3.connect(copy)) as conn, conn:  # as a full queue would have left it
        conn.execute("update recorder_stats set dropped_queue_full = 7")
    out = tmp_path / "shards"
    export_all([copy, *three_hosts[1:]], out)
    result = run_cli("audit", str(out), "--format", "json")
    assert result.returncode == 0, result.stderr
    (database,) = json.loads(result.stdout)["databases"]
    assert database["rows_dropped"] == 7
