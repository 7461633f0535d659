"""What the recorder costs, over HTTP, in one run: bare, no-op, reference, ours in each mode.

Every variant (``benchmarks/apps.py``) runs in its own uvicorn (uvloop + httptools),
pinned to one CPU, and is loaded by ``wrk -c32`` pinned to the other; one request in
ten goes to a redirect route. Rounds rotate the order. For each run the CPU time of
the server's whole process tree (server, its threads, any process it starts) is read from
/proc before the run and again once the tree is idle, so work drained later is charged.
Reported per variant, medians over rounds: req/s and its ratio to bare in the same
round, CPU us per request and what it adds over bare (and how much of that the event
loop's own thread spends: the rest is the writer thread's), p50/p99 latency; and after the
servers stopped (lifespan shutdown flushes), rows written against requests served
(``record="redirects"``: rows + rows skipped against requests served, rows against
redirects served). On these VMs throughput follows CPU, so CPU per request is the figure.

Usage: ``python -m benchmarks.overhead [--rounds 3] [--duration 6] [--variants a,b] [--json OUT]``
``--baseline DIR`` (a checkout of another commit, e.g. ``git worktree add /tmp/base HEAD~1``)
also runs each of the recorder's variants from that code, as ``VARIANT@base``, in the same
rounds: an A/B in one run. ``--browser-headers`` sends 11 browser-like request headers
besides Host. Installs ``wrk`` with apt-get when missing (as root).
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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.store.journal import recorded_rows
from benchmarks import apps

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
REDIRECT_EVERY = 10
# --browser-headers: what a browser sends beside Host (wrk sends only Host): each header
# is a tuple a queued capture keeps alive until the writer takes it.
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9",
    "Accept-Encoding: gzip, deflate, br",
    "Cookie: session=abc123def456; theme=dark",
    "Referer: http://127.0.0.1/home",
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-Site: same-origin",
    "Upgrade-Insecure-Requests: 1",
    "Cache-Control: max-age=0",
)
WRK_SCRIPT = f"""
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, i % {REDIRECT_EVERY} == 0 and "/old" or "/")
end
"""


def ensure_wrk() -> str:
    """The wrk binary, installing it with apt-get when missing and root; else exit."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(
            "overhead.py: wrk is not installed and cannot be installed here (needs root and "
            "apt-get): run `sudo apt-get install wrk`, or pass --skip-http"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq"]
    install += ["--no-install-recommends", "wrk"]
    print("installing wrk with apt-get ...", file=sys.stderr)
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], env=env)
        subprocess.run(install, env=env, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("overhead.py: `apt-get install wrk` failed: install wrk, or pass --skip-http")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Wrk:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: str
    text: str


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        return float("nan")
    return float(match.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[match.group(2)]


def run_wrk(
    wrk: str,
    url: str,
    seconds: float,
    connections: int,
    script: Path,
    cpu: str = "",
    headers: tuple[str, ...] = (),
) -> Wrk:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for header in headers:
        cmd += ["-H", header]
    cmd += ["-s", str(script), url]
    out = subprocess.run(
        pinned(cpu, cmd), capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not done or not rps:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    dur = _ms(done.group(2) + done.group(3)) / 1000
    p50 = re.search(r"^\s+50%\s+(\S+)$", out, re.MULTILINE)  # the Latency Distribution
    p99 = re.search(r"^\s+99%\s+(\S+)$", out, re.MULTILINE)
    errors = [m.group(0).strip() for m in re.finditer(r"(Socket errors|Non-2xx).*", out)]
    return Wrk(
        requests=int(done.group(1)),
        seconds=dur,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)) if p50 else float("nan"),
        p99_ms=_ms(p99.group(1)) if p99 else float("nan"),
        errors="; ".join(errors),
        text=out,
    )


def stat_cpu(stat: Path) -> float:
    """CPU seconds (user + system) a ``/proc`` stat file reports (0 once it is gone)."""
    with contextlib.suppress(OSError):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    return 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(
                    int(entry.name)
                )
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, ()))
        total += stat_cpu(Path(f"/proc/{p}/stat"))
    return total


def loop_thread_cpu(pid: int) -> float:
    """CPU seconds of the server's main thread (uvicorn's event loop) alone."""
    return stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat"))


def wait_idle(pid: int, window: float = 0.3, timeout: float = 30.0) -> None:
    """Until the tree used at most two clock ticks in ``window`` seconds."""
    deadline = time.monotonic() + timeout
    before = tree_cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = tree_cpu(pid)
        if (now - before) * CLK_TCK <= 2:
            return
        before = now


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") and cpu else cmd


BASE_SUFFIX = "@base"


@contextlib.contextmanager
def server(
    variant: str, db: Path, log: Path, cpu: str, root: Path = ROOT
) -> Iterator[tuple[int, int]]:
    """A uvicorn subprocess serving one variant (``VARIANT@base``: the code in ``root``);
    stopped with SIGINT (lifespan shutdown)."""
    port = free_port()
    factory = apps.FACTORIES[variant.removesuffix(BASE_SUFFIX)]
    cmd = [sys.executable, "-m", "uvicorn", f"benchmarks.apps:{factory}"]
    cmd += ["--factory", "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop"]
    cmd += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
    cmd += ["--lifespan", "on"]
    env = {**os.environ, apps.DB_ENV: str(db), "PYTHONPATH": str(root)}
    with log.open("ab") as out:
        proc = subprocess.Popen(pinned(cpu, cmd), cwd=root, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}; see {log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start within 30 s; see {log}")
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Run:
    variant: str
    round: int
    rps: float
    requests: int
    cpu_us: float
    loop_us: float  # of cpu_us, the event loop's thread
    p50_ms: float
    p99_ms: float
    errors: str


def check_rows(variant: str, db: Path, served: int, slack: int) -> str:
    """Rows written against requests served (wrk may stop with one request per
    connection answered but not counted)."""
    variant = variant.removesuffix(BASE_SUFFIX)
    if variant in ("bare", "noop"):
        return ""
    conn = sqlite3.connect(db)
    try:
        rows = recorded_rows(conn)  # unpacked or still in the recorder's batches
        stats = (
            conn.execute(
                "select sum(rows_skipped), sum(dropped_queue_full + dropped_locked + "
                "dropped_disk_full + dropped_read_only + dropped_other) from recorder_stats"
            ).fetchone()
            if variant != "reference"
            else (0, 0)
        )
    finally:
        conn.close()
    skipped, dropped = (stats[0] or 0), (stats[1] or 0)
    extra = rows + skipped - served
    verdict = "ok" if 0 <= extra <= slack and not dropped else "MISMATCH"
    text = f"{verdict}: {rows} rows"
    if skipped:
        text += f" + {skipped} skipped"
    text += f" for {served} served"
    if dropped:
        text += f", {dropped} dropped"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variants", default=",".join(apps.VARIANTS))
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--wrk-cpu", default="1")
    parser.add_argument("--json", type=Path, metavar="OUT")
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR", help="also run the recorder from this checkout"
    )
    parser.add_argument(
        "--browser-headers", action="store_true", help="send 11 browser-like headers too"
    )
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if variants[0] != "bare":
        variants.insert(0, "bare")
    if args.baseline:
        recorders = [v for v in variants if v.startswith("recorder")]
        variants += [v + BASE_SUFFIX for v in recorders]
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    script = tmp / "mix.lua"
    script.write_text(WRK_SCRIPT)
    runs: list[Run] = []

    headers = BROWSER_HEADERS if args.browser_headers else ()

    served = dict.fromkeys(variants, 0)
    checks: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        servers = {
            v: stack.enter_context(
                server(
                    v,
                    tmp / f"{i}.db",
                    tmp / "uvicorn.log",
                    args.server_cpu,
                    args.baseline.resolve() if v.endswith(BASE_SUFFIX) else ROOT,
                )
            )
            for i, v in enumerate(variants)
        }
        for v, (port, pid) in servers.items():  # warm-up, not measured
            wait_idle(pid)
            served[v] += run_wrk(
                wrk, f"http://127.0.0.1:{port}/", 1, args.connections, script, args.wrk_cpu, headers
            ).requests
        for r in range(args.rounds):
            for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
                port, pid = servers[v]
                wait_idle(pid)
                before, loop_before = tree_cpu(pid), loop_thread_cpu(pid)
                w = run_wrk(
                    wrk,
                    f"http://127.0.0.1:{port}/",
                    args.duration,
                    args.connections,
                    script,
                    args.wrk_cpu,
                    headers,
                )
                wait_idle(pid)
                cpu_us = 1e6 * (tree_cpu(pid) - before) / w.requests
                loop_us = 1e6 * (loop_thread_cpu(pid) - loop_before) / w.requests
                served[v] += w.requests
                runs.append(
                    Run(v, r, w.rps, w.requests, cpu_us, loop_us, w.p50_ms, w.p99_ms, w.errors)
                )
                print(f"round {r + 1} {v:<28} {w.rps:8.0f} req/s {cpu_us:6.1f} us/req "
                      f"(loop {loop_us:5.1f}) p99 {w.p99_ms:6.2f} ms {w.errors}",
                      flush=True)  # fmt: skip
    for i, v in enumerate(variants):
        slack = args.connections * (args.rounds + 1)
        checks[v] = check_rows(v, tmp / f"{i}.db", served[v], slack)
    table = summarize(runs, variants, checks)
    print_table(table, args)
    if args.json:
        args.json.write_text(
            json.dumps({"runs": [asdict(r) for r in runs], "table": table}, indent=2)
        )
    return 0 if all(not c.startswith("MISMATCH") for c in checks.values()) else 1


def summarize(runs: list[Run], variants: list[str], checks: dict[str, str]) -> list[dict[str, Any]]:
    bare = {r.round: r for r in runs if r.variant == "bare"}
    table = []
    for v in variants:
        mine = [r for r in runs if r.variant == v]
        table.append({
            "variant": v,
            "rps": statistics.median(r.rps for r in mine),
            "x_bare": statistics.median(r.rps / bare[r.round].rps for r in mine),
            "cpu_us": statistics.median(r.cpu_us for r in mine),
            "over_bare_us": statistics.median(r.cpu_us - bare[r.round].cpu_us for r in mine),
            "loop_over_bare_us": statistics.median(
                r.loop_us - bare[r.round].loop_us for r in mine
            ),
            "p50_ms": statistics.median(r.p50_ms for r in mine),
            "p99_ms": statistics.median(r.p99_ms for r in mine),
            "rows": checks[v],
        })  # fmt: skip
    return table


def print_table(table: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nuvicorn uvloop+httptools on CPU {args.server_cpu}, wrk -c{args.connections} on CPU "
          f"{args.wrk_cpu}, {args.rounds} rounds x {args.duration} s, 1 request in "
          f"{REDIRECT_EVERY} a redirect{', browser headers' if args.browser_headers else ''}; "
          "medians")  # fmt: skip
    print("| stack | req/s | x bare | CPU us/req | over bare | of it, loop thread | p50 ms | "
          "p99 ms | rows |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for t in table:
        bare = t["variant"] == "bare"
        over = "—" if bare else f"{t['over_bare_us']:+.1f}"
        loop = "—" if bare else f"{t['loop_over_bare_us']:+.1f}"
        print(f"| {t['variant']} | {t['rps']:.0f} | {t['x_bare']:.2f} | {t['cpu_us']:.1f} | "
              f"{over} | {loop} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | "
              f"{t['rows']} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
