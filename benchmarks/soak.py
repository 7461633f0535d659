"""Soak: the recorder at full load while its database has the worst day.

`redirect-auditor run benchmarks.soak_app:app --workers 2` serves a tiny app
from a database on its own small tmpfs, while `wrk` loads it for the whole run
and, in turn:

1. one worker is killed with SIGKILL (uvicorn starts a new one);
2. another process holds an exclusive lock on the database for 10 s;
3. the disk fills (a filler file takes the tmpfs's free space) for 10 s;
4. the database file becomes read-only (mode 0444) for 10 s, and both workers
   are killed so that their replacements meet the read-only file. (The server runs
   as root without CAP_DAC_OVERRIDE so file modes apply; a worker that already
   has the file open keeps writing, as any Unix process would.)

Then it reports requests served, error responses, rows written, rows counted as
dropped per reason, rows lost uncounted (only the killed worker's in-memory
queue may be), peak worker memory, and `PRAGMA integrity_check`.

Needs root (mount), Linux, and `wrk` (installed with apt-get when missing).

    python benchmarks/soak.py               # ~75 s
    python benchmarks/soak.py --phase 5     # shorter phases, for a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from auditor.store.journal import unpack_file

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("soak: wrk is missing; install it with: sudo apt-get install wrk")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or sys.exit("soak: wrk did not install")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def workers(server_pid: int) -> list[int]:
    """uvicorn's live worker processes (not multiprocessing's resource tracker)."""
    found = []
    for pid in children(server_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if b"spawn_main" in cmdline and state != "Z":
            found.append(pid)
    return found


def peak_rss_kib(pids: list[int]) -> int:
    peak = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        if match:
            peak = max(peak, int(match.group(1)))
    return peak


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"soak: timed out waiting for {what}")
        time.sleep(0.05)


def answering(url: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=0.5):
            return True
    except OSError:
        return False


def parse_wrk(output: str) -> dict[str, int]:
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests": total,
        "non_2xx_3xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def hold_lock(db: Path, seconds: float) -> subprocess.Popen[bytes]:
    code = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(db)!r}, timeout=30, isolation_level=None)\n"
        "c.execute('begin exclusive')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "c.execute('rollback')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # returns once the lock is held
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", type=float, default=10.0, help="seconds per fault phase")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--tmpfs-mb", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak: needs root to mount a small tmpfs for the disk-full and read-only phases")
    wrk = ensure_wrk()
    phase = args.phase
    duration = int(phase * 6.5)

    mount = Path(tempfile.mkdtemp(prefix="soak-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_mb}m", "tmpfs", str(mount)], check=True
    )
    db = mount / "soak.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Root without CAP_DAC_OVERRIDE, so the read-only phase's file mode applies to it.
    drop_override = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    server = subprocess.Popen(
        [
            *(drop_override if shutil.which("setpriv") else []),
            str(Path(sys.executable).with_name("redirect-auditor")),
            "run",
            "benchmarks.soak_app:app",
            "--db",
            str(db),
            "--workers",
            "2",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--app-dir",
            str(ROOT),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    report: dict[str, object] = {"phase_seconds": phase, "load_seconds": duration}
    events: list[str] = []
    try:
        wait_until(lambda: answering(url), 30, "the server")
        wait_until(lambda: len(workers(server.pid)) >= 2, 30, "two workers")
        load = subprocess.Popen(
            [wrk, "-t2", f"-c{args.connections}", f"-d{duration}s", f"{url}/page"],
            stdout=subprocess.PIPE,
            text=True,
        )
        peak = 0
        stop_sampling = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop_sampling.wait(0.25):
                pids = [c for p in children(server.pid) for c in [p, *children(p)]]
                peak = max(peak, peak_rss_kib(pids))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        time.sleep(phase / 2)  # steady load first
        victim = workers(server.pid)[0]
        os.kill(victim, signal.SIGKILL)
        events.append(f"SIGKILL worker {victim}")
        time.sleep(phase / 2)

        locker = hold_lock(db, phase)
        events.append(f"exclusive lock held {phase:.0f} s")
        locker.wait()

        free = shutil.disk_usage(mount).free
        filler = mount / "filler"
        with filler.open("wb") as fh, contextlib.suppress(OSError):
            fh.write(b"\0" * max(free - 4096, 0))
        events.append(f"disk filled ({free // 1024} KiB taken)")
        time.sleep(phase)
        filler.unlink()

        db.chmod(0o444)
        wait_until(lambda: len(workers(server.pid)) >= 2, 30, "the replacement worker")
        victims = workers(server.pid)
        for victim in victims:  # both replacements must open the read-only file
            os.kill(victim, signal.SIGKILL)
        events.append(f"database file mode 0444, SIGKILL workers {victims}")
        time.sleep(phase)
        db.chmod(0o600)
        events.append("database file writable again")

        out, _ = load.communicate(timeout=duration + 60)
        stop_sampling.set()
        sampler.join()
        report["wrk"] = parse_wrk(out)
        report["events"] = events
        report["peak_worker_rss_mib"] = round(peak / 1024, 1)
    finally:
        server.send_signal(signal.SIGINT)  # lifespan shutdown flushes every worker
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        db.chmod(0o600)

    unpack_file(db)  # every batch read back into requests: counted there
    conn = sqlite3.connect(db)
    written = conn.execute("select count(*) from requests").fetchone()[0]
    stats = conn.execute(
        """select count(*), sum(rows_written), sum(dropped_queue_full), sum(dropped_locked),
                  sum(dropped_disk_full), sum(dropped_read_only), sum(dropped_other)
           from recorder_stats"""
    ).fetchone()
    per_worker = conn.execute(
        """select worker_id, rows_written, dropped_queue_full, dropped_locked,
                  dropped_disk_full, dropped_read_only, dropped_other, last_error
           from recorder_stats"""
    ).fetchall()
    integrity = conn.execute("pragma integrity_check").fetchone()[0]
    conn.close()
    db_mib = round(db.stat().st_size / 2**20, 1)
    subprocess.run(["umount", str(mount)], check=False)
    wrk_stats = report["wrk"]
    assert isinstance(wrk_stats, dict)
    dropped = dict(
        zip(("queue_full", "locked", "disk_full", "read_only", "other"), stats[2:], strict=True)
    )
    counted = sum(v or 0 for v in dropped.values())
    served = wrk_stats["requests"]
    report.update(
        {
            "requests_served": served,
            "error_responses": wrk_stats["non_2xx_3xx"],
            "socket_errors": wrk_stats["socket_errors"],
            "rows_written": written,
            "rows_dropped_counted": counted,
            "dropped_by_reason": dropped,
            "worker_processes_seen": stats[0],
            "per_worker": [
                dict(
                    zip(
                        (
                            "worker",
                            "written",
                            "queue_full",
                            "locked",
                            "disk_full",
                            "read_only",
                            "other",
                            "last_error",
                        ),
                        row,
                        strict=True,
                    )
                )
                for row in per_worker
            ],
            "database_mib": db_mib,
            "uncounted": served - written - counted,
            "integrity_check": integrity,
        }
    )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
