"""What the recorder costs: in-process, in the writer, and over HTTP.

Measures, in one run, the bare Starlette app (``apps.bare_app``), the same app
behind a no-op pure ASGI middleware, behind ``RedirectRecorder(record="all")``
with its default writer process (``writer="process"``) and, for comparison,
behind the recorder with its in-process writer thread (``writer="thread"``):

(a) in-process: the ASGI app awaited directly in a loop (no server, no sockets):
    wall and event-loop-thread CPU per request, and what the recorder adds; the
    CPU per row of the shipper thread and of the writer process (or of the
    writer thread); the cost per row of shipping (``to_portable`` + marshal),
    of row building and inserts, and of the ``Writer`` (what runs in the writer
    process) and the whole ``ProcessWriter`` pipeline end to end; and a paced
    30k requests/s push through each kind of writer that shows the queue and
    memory stay bounded and every request is written or counted as dropped.
(b) over HTTP: uvicorn on 127.0.0.1 (uvloop+httptools and asyncio+h11), loaded
    by ``wrk``, variants interleaved in every round; requests/s as a ratio to the
    bare app of the same round; CPU per request of the server's event-loop
    thread and of everything the recorder adds beside it (other threads of the
    server plus its child processes, i.e. the writer process); and, for both
    recorder variants, rows in the database == requests wrk completed.

Usage: ``python -m benchmarks.overhead [--quick] [--rounds N] [--duration S] [--json OUT]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.record import registry
from benchmarks import apps

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
REDIRECT_EVERY = 10  # one request in ten goes to the redirect route, in (a) and (b)
SERVERS = {"uvloop+httptools": ("uvloop", "httptools"), "asyncio+h11": ("asyncio", "h11")}
TARGETS = {"uvloop+httptools": 0.95, "asyncio+h11": 0.98}
TARGET_LOOP_US = 1.0
SUSTAIN_RATE = 30_000

WRK_SCRIPT = f"""
local reqs = {{}}
local i = 0
init = function(args)
  for n = 1, {REDIRECT_EVERY} do
    reqs[n] = wrk.format(nil, n == {REDIRECT_EVERY} and "/old" or "/")
  end
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
"""


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rotated(items: tuple[str, ...], by: int) -> list[str]:
    by %= len(items)
    return list(items[by:] + items[:by])


def thread_cpu(pid: int | str = "self") -> dict[int, float]:
    """CPU seconds (user + system) per thread id of a process, from /proc."""
    result = {}
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            result[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return result


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all its threads) of a process; 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(pid: int) -> set[int]:
    """Direct children of a process: /proc/PID/task/*/children, else a scan of /proc."""
    found: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.update(int(c) for c in (task / "children").read_text().split())
        return found
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN
        found.clear()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.add(int(entry.name))
    return found


def children_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per child process of ``pid`` (the recorder's writer process)."""
    return {child: process_cpu(child) for child in child_pids(pid)}


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings, over the ids of the second (new ones from 0)."""
    return sum(v - before.get(k, 0.0) for k, v in after.items())


def rss_mb(pid: int | str = "self") -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def writer_thread(writer: Any) -> threading.Thread:
    """The writer's thread in this process: for the process writer its shipper
    ("redirect-auditor-shipper"), for the thread writer the writer itself
    ("redirect-auditor-writer")."""
    thread: threading.Thread = writer._thread
    assert thread in threading.enumerate(), f"{thread.name} is not running"
    return thread


def own_thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds of a thread of this process, to the nanosecond (/proc counts ticks)."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def writer_pid(writer: Any) -> int | None:
    """The pid of the process writer's writer process (None for the thread writer).
    Call after a flush: it starts with the first batch shipped."""
    process = getattr(writer, "_process", None)
    return process.pid if process is not None else None


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------------------
# (a) in-process


def scope_templates() -> list[dict[str, Any]]:
    """What uvicorn hands the app for wrk's requests: nine ``/`` then one ``/old``."""

    def scope(path: str) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50312),
            "scheme": "http",
            "method": "GET",
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000")],
            "state": {},
        }

    return [scope("/old" if n == REDIRECT_EVERY - 1 else "/") for n in range(REDIRECT_EVERY)]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: MutableMapping[str, Any]) -> None:
    return None


async def drive(
    app: Any,
    n: int,
    templates: list[dict[str, Any]],
    every: int = 0,
    between: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Await the app ``n`` times; (wall ns, this thread's CPU ns) per request.

    With ``between``, it is called untimed after every ``every`` requests.
    """
    k = len(templates)
    wall = cpu = 0
    chunk = every if between else n
    for start in range(0, n, chunk):
        wall0, cpu0 = time.perf_counter_ns(), time.thread_time_ns()
        for i in range(start, min(start + chunk, n)):
            await app(dict(templates[i % k]), _receive, _send)
        wall += time.perf_counter_ns() - wall0
        cpu += time.thread_time_ns() - cpu0
        if between:
            between()
    return wall / n, cpu / n


@dataclass
class InProcess:
    requests_per_round: int
    rounds: int
    wall_us: dict[str, list[float]] = field(default_factory=dict)
    loop_cpu_us: dict[str, list[float]] = field(default_factory=dict)
    # CPU per row off the event loop: "shipper_thread" and "writer_process" for the
    # recorder+writer variant, "writer_thread" for recorder+writer(thread).
    off_loop_cpu_us: dict[str, list[float]] = field(default_factory=dict)

    def added(self, variant: str, base: str, kind: str = "wall") -> float:
        data = self.wall_us if kind == "wall" else self.loop_cpu_us
        return median([a - b for a, b in zip(data[variant], data[base], strict=True)])

    def summary(self) -> dict[str, Any]:
        variants = list(self.wall_us)
        return {
            "requests_per_round": self.requests_per_round,
            "rounds": self.rounds,
            "us_per_request": {v: median(self.wall_us[v]) for v in variants},
            "loop_cpu_us_per_request": {v: median(self.loop_cpu_us[v]) for v in variants},
            "us_added_vs_bare": {v: self.added(v, "bare") for v in variants},
            "us_added_vs_noop": {v: self.added(v, "noop") for v in variants},
            "loop_cpu_us_added_vs_bare": {v: self.added(v, "bare", "cpu") for v in variants},
            "off_loop_cpu_us_per_row": {k: median(v) for k, v in self.off_loop_cpu_us.items()},
        }


def run_inprocess(tmp: Path, rounds: int, n: int) -> InProcess:
    """bare / noop / recorder (the hot path alone: its writer flushed untimed every 500
    requests) / recorder+writer (the default process writer live: its shipper thread
    ships every 50 ms, competing for the GIL; its writer process competes for the CPU) /
    recorder+writer(thread) (the in-process writer thread live, every 50 ms)."""
    idle = apps.recorder_app(str(tmp / "inproc-idle.db"), flush_interval=3600, queue_size=n + 1)
    queue_size = max(20_000, n + 1)
    live = apps.recorder_app(str(tmp / "inproc-live.db"), queue_size=queue_size)
    live_thread = apps.recorder_thread_app(str(tmp / "inproc-thread.db"), queue_size=queue_size)
    variants: dict[str, Any] = {
        "bare": apps.bare_app(),
        "noop": apps.noop_app(),
        "recorder": idle,
        "recorder+writer": live,
        "recorder+writer(thread)": live_thread,
    }
    templates = scope_templates()
    result = InProcess(n, rounds, {v: [] for v in variants}, {v: [] for v in variants})
    result.off_loop_cpu_us = {"shipper_thread": [], "writer_process": [], "writer_thread": []}

    async def main() -> None:
        for app in variants.values():  # warm-up, also opens the databases
            await drive(app, min(n, 2000), templates)
        for app in (idle, live, live_thread):
            app.writer.flush()
        shipper, writer = writer_thread(live.writer), writer_thread(live_thread.writer)
        child_pid = writer_pid(live.writer)
        assert child_pid is not None, "the process writer has no writer process"
        for r in range(rounds):
            for name in rotated(tuple(variants), r):
                app = variants[name]
                gc.collect()
                shipper0, writer0 = own_thread_cpu(shipper), own_thread_cpu(writer)
                child0 = process_cpu(child_pid)
                if name == "recorder":  # ship + write untimed every 500 (50 ms at 10k/s)
                    wall, cpu = await drive(app, n, templates, 500, idle.writer.flush)
                else:
                    wall, cpu = await drive(app, n, templates)
                if name.startswith("recorder+writer"):
                    await asyncio.to_thread(app.writer.flush)
                    off = result.off_loop_cpu_us
                    if name == "recorder+writer":
                        spent = own_thread_cpu(shipper) - shipper0
                        off["shipper_thread"].append(spent / n * 1e6)
                        off["writer_process"].append((process_cpu(child_pid) - child0) / n * 1e6)
                    else:
                        spent = own_thread_cpu(writer) - writer0
                        off["writer_thread"].append(spent / n * 1e6)
                result.wall_us[name].append(wall / 1000)
                result.loop_cpu_us[name].append(cpu / 1000)

    try:
        asyncio.run(main())
    finally:
        for app in (idle, live, live_thread):
            app.writer.close()
    return result


# ---------------------------------------------------------------------------
# (a) the writer's own cost


class Collector:
    """Stands in for the writer: keeps the captured exchanges."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def submit(self, exchange: Any) -> None:
        self.items.append(exchange)


def capture(tmp: Path, n: int) -> list[Any]:
    """``n`` real captured exchanges (nine 200s, one 302 in ten) from the recorder."""
    rec = apps.recorder_app(str(tmp / "capture.db"), flush_interval=3600)
    collector = Collector()
    rec.writer = collector  # type: ignore[assignment]

    async def main() -> None:
        await drive(rec, n, scope_templates())

    asyncio.run(main())
    return collector.items


def _options(n: int, **overrides: Any) -> Any:
    from auditor.record.options import RecorderOptions

    settings: dict[str, Any] = {
        "record": "all",
        "sample_rate": 0.0,
        "trusted_proxies": (),
        "store_client_ip": False,
        "queue_size": n + 1,
        "flush_interval": 3600,
        "follow_up_delay": 2.0,
        "follow_up_window": 30.0,
    }
    return RecorderOptions.build(**{**settings, **overrides})


def run_writer_cost(tmp: Path, n: int) -> dict[str, Any]:
    """Per-row shipping, build and insert cost, by batch size; the Writer (what runs in
    the writer process) end to end; and the whole ProcessWriter pipeline end to end."""
    from auditor.record.frames import encode, read_frame
    from auditor.record.process_writer import SHIP_BATCH, ProcessWriter
    from auditor.record.rows import INSERT_SQL, RowBuilder, to_portable
    from auditor.record.writer import Writer
    from auditor.record.writer_process import _bind_none_directly
    from auditor.schema import connect, ensure_schema
    from auditor.urls import TrustedProxies

    captures = capture(tmp, n)

    # Shipping, in the serving process's shipper thread: flat tuples, marshalled into
    # frames of SHIP_BATCH exchanges. Then what the writer process does to read them.
    for c in captures[:1000]:
        to_portable(c)
    t0 = time.thread_time_ns()
    frames = [
        encode(("rows", [to_portable(c) for c in captures[i : i + SHIP_BATCH]]))
        for i in range(0, n, SHIP_BATCH)
    ]
    ship_us = (time.thread_time_ns() - t0) / n / 1000
    stream = io.BytesIO(b"".join(frames))
    t0 = time.thread_time_ns()
    shipped: list[Any] = []
    while (message := read_frame(stream)) is not None:
        shipped.extend(message[1])
    receive_us = (time.thread_time_ns() - t0) / n / 1000

    builder = RowBuilder(b"k" * 32, "bench:1", TrustedProxies(()), False)
    for c in captures[:1000]:
        builder.build(c)
    t0 = time.perf_counter_ns()
    rows = [builder.build(c) for c in captures]
    build_us = (time.perf_counter_ns() - t0) / n / 1000
    t0 = time.perf_counter_ns()
    for item in shipped:
        builder.build_portable(item)
    build_shipped_us = (time.perf_counter_ns() - t0) / n / 1000

    insert: dict[str, float] = {}
    for name, batch in (("50", 50), ("500", 500), ("5000", 5000), ("5000_direct_null", 5000)):
        if name.endswith("direct_null"):
            _bind_none_directly()  # as the writer process does; undone below
        conn = connect(tmp / f"insert-{name}.db")
        ensure_schema(conn)
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for i in range(0, n, batch):
            with conn:
                conn.executemany(INSERT_SQL, rows[i : i + batch])
        wall, cpu = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
        insert[f"batch_{name}_us_per_row"] = wall / n / 1000
        insert[f"batch_{name}_cpu_us_per_row"] = cpu / n / 1000
        conn.close()

    # The Writer, as the writer process runs it: frames of shipped tuples handed to
    # write_now, NULLs bound directly.
    writer = Writer(tmp / "writer.db", _options(n))
    writer.write_now(shipped[:1])  # opens the database and schema outside the timing
    t0 = time.perf_counter_ns()
    for i in range(0, n, SHIP_BATCH):
        writer.write_now(shipped[i : i + SHIP_BATCH])
    flush_s = (time.perf_counter_ns() - t0) / 1e9
    ok = writer.rows_written == n + 1
    writer.close()
    sqlite3.adapters.pop((type(None), sqlite3.PrepareProtocol), None)

    # The whole pipeline: queue n captures in a ProcessWriter, time one flush (ships in
    # this thread while the writer process reads, builds and inserts; waits for its ack).
    pipeline = ProcessWriter(tmp / "pipeline.db", _options(n))
    try:
        pipeline.submit(captures[0])
        pipeline.flush()  # starts the writer process, opens the database
        for c in captures:
            pipeline.submit(c)
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        pipeline.flush()
        pipeline_s = (time.perf_counter_ns() - t0) / 1e9
        pipeline_ship_us = (time.thread_time_ns() - c0) / n / 1000
        pipeline_ok = pipeline.rows_written == n + 1
    finally:
        pipeline.close()
    return {
        "rows": n,
        "ship_us_per_row": ship_us,
        "frame_bytes_per_row": sum(len(f) for f in frames) / n,
        "receive_us_per_row": receive_us,
        "build_us_per_row": build_us,
        "build_shipped_us_per_row": build_shipped_us,
        **insert,
        "writer_flush_us_per_row": flush_s / n * 1e6,
        "writer_rows_per_s": n / flush_s,
        "writer_rows_written_ok": ok,
        "pipeline_flush_us_per_row": pipeline_s / n * 1e6,
        "pipeline_rows_per_s": n / pipeline_s,
        "pipeline_caller_cpu_us_per_row": pipeline_ship_us,
        "pipeline_rows_written_ok": pipeline_ok,
    }


async def _raw_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"y")]})
    await send({"type": "http.response.body", "body": b"hello, world"})


def run_sustain(
    tmp: Path, seconds: float, kind: Literal["process", "thread"], rate: int = SUSTAIN_RATE
) -> dict[str, Any]:
    """Push ``rate`` captures/s through a live recorder (default options, ``writer=kind``)
    around a trivial raw ASGI app; sample queue length and RSS (of this process and of
    the writer process), then flush until every request is written or counted dropped."""
    from auditor import RedirectRecorder

    rec = RedirectRecorder(_raw_app, db_path=tmp / f"sustain-{kind}.db", writer=kind)
    writer: Any = rec.writer
    templates = scope_templates()
    samples: list[tuple[float, int, float, float]] = []
    thread = writer_thread(writer)
    child_pid: int | None = None
    child0 = thread0 = 0.0

    async def main() -> tuple[int, float]:
        nonlocal child_pid, child0, thread0
        await rec(dict(templates[0]), _receive, _send)
        await asyncio.to_thread(writer.flush)  # starts the writer process, opens the file
        child_pid = writer_pid(writer)
        # the push alone, not the start-up of the writer process
        child0 = process_cpu(child_pid) if child_pid else 0.0
        thread0 = own_thread_cpu(thread)
        start = time.perf_counter()
        done = 0
        next_sample = 0.0
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(rate * elapsed)
            while done < due:
                await rec(dict(templates[done % len(templates)]), _receive, _send)
                done += 1
            if elapsed >= next_sample:
                child_rss = rss_mb(child_pid) if child_pid else float("nan")
                samples.append((elapsed, len(writer._queue), rss_mb(), child_rss))
                next_sample += 0.1
            await asyncio.sleep(0.001)
        return done, time.perf_counter() - start

    rss0 = rss_mb()
    submitted, produce_s = asyncio.run(main())
    drain0 = time.perf_counter()

    # rows_written and dropped are the writer's figures as of its last flush (for the
    # process writer, the last acknowledgement): flush until they account for every
    # request. After a flush, dropped["queue_full"] includes the queue-full count of
    # the serving side (dropped_queue_full) for both kinds of writer: not added again.
    def accounted() -> int:
        return writer.rows_written + sum(writer.dropped.values())

    deadline = drain0 + 60
    while True:
        writer.flush()
        if accounted() >= submitted + 1 or time.perf_counter() > deadline:
            break
        time.sleep(0.05)
    drain_s = time.perf_counter() - drain0
    thread_s = own_thread_cpu(thread) - thread0
    child_cpu = process_cpu(child_pid) - child0 if child_pid else 0.0
    child_rss_end = rss_mb(child_pid) if child_pid else float("nan")
    dropped = dict(writer.dropped)
    written = writer.rows_written - 1
    writer.close()
    per_row = 1e6 / max(written, 1)
    return {
        "writer": kind,
        "target_rate": rate,
        "seconds": seconds,
        "achieved_rate": submitted / produce_s,
        "submitted": submitted,
        "rows_written": written,
        "dropped": sum(dropped.values()),
        "dropped_by_reason": {k: v for k, v in dropped.items() if v},
        "accounted_ok": written + sum(dropped.values()) == submitted,
        "queue_limit": writer.options.queue_size,
        "queue_max": max((s[1] for s in samples), default=0),
        "queue_median": median([s[1] for s in samples]),
        "drain_after_stop_s": drain_s,
        "rss_start_mb": rss0,
        "rss_max_mb": max((s[2] for s in samples), default=rss0),
        "rss_end_mb": rss_mb(),
        "writer_process_rss_max_mb": max((s[3] for s in samples), default=float("nan")),
        "writer_process_rss_end_mb": child_rss_end,
        # kind "process": the shipper thread; kind "thread": the writer thread
        "thread_cpu_us_per_row": thread_s * per_row,
        "writer_process_cpu_us_per_row": child_cpu * per_row,
        "samples": [
            {"t": round(t, 2), "queued": q, "rss_mb": round(m, 1), "child_rss_mb": round(c, 1)}
            for t, q, m, c in samples
        ],
    }


# ---------------------------------------------------------------------------
# (b) over HTTP


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


def run_wrk(wrk: str, url: str, seconds: float, connections: int, script: Path) -> Wrk:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    cmd += ["-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
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


@contextlib.contextmanager
def server(variant: str, loop: str, http: str, db: Path, log: Path) -> Iterator[tuple[int, int]]:
    """A uvicorn subprocess serving one variant; stopped with SIGINT (lifespan shutdown)."""
    port = free_port()
    factory = f"benchmarks.apps:{apps.FACTORIES[variant]}"
    cmd = [sys.executable, "-m", "uvicorn", factory, "--factory"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--loop", loop, "--http", http]
    cmd += ["--no-access-log", "--log-level", "warning", "--lifespan", "on"]
    env = {**os.environ, apps.DB_ENV: str(db), "PYTHONPATH": str(ROOT)}
    with log.open("ab") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=log_file)
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
                print(f"!! uvicorn pid {proc.pid} ignored SIGINT for 60 s; killing it")
                proc.kill()
                proc.wait()


@dataclass
class HttpRun:
    server: str
    variant: str
    round: int
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    loop_cpu_us: float  # server main thread CPU per request during the measured run
    other_cpu_us: float  # all other server threads (writer thread, or shipper) per request
    child_cpu_us: float  # the server's child processes (the writer process) per request
    errors: str
    rows: int | None = None
    expected_rows: int | None = None
    rows_check: str | None = None
    recorder_stats: dict[str, Any] | None = None


def check_rows(db: Path, completed: int, connections: int) -> tuple[int, str, dict[str, Any]]:
    """Rows in the database vs requests wrk completed (warm-up + measured run).

    wrk stops with at most one request in flight per connection (the server may
    have answered, and the recorder recorded, what wrk no longer counted)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("select count(*) from requests").fetchone()[0]
        cur = conn.execute("select * from recorder_stats")
        names = [d[0] for d in cur.description]
        stats = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()
    stat: dict[str, Any] = stats[0] if len(stats) == 1 else {"workers": stats}
    dropped = sum(v for k, v in stat.items() if k.startswith("dropped_") and v)
    extra = rows - completed
    if dropped:
        verdict = f"MISMATCH: {dropped} rows dropped by the recorder"
    elif extra == 0:
        verdict = "exact"
    elif 0 < extra <= 2 * connections:
        verdict = f"ok (+{extra}: in flight when wrk stopped, <= {2 * connections})"
    else:
        verdict = f"MISMATCH: {rows} rows for {completed} completed requests ({extra:+d})"
    return rows, verdict, stat


SETTLE_S = 0.3  # after each wrk run: the writer finishes what it was handed


def is_recorder(variant: str) -> bool:
    return variant.startswith("recorder")


def run_http(
    tmp: Path,
    rounds: int,
    seconds: float,
    warmup: float,
    connections: int,
    servers: list[str],
) -> list[HttpRun]:
    wrk = ensure_wrk()
    script = tmp / "mix.lua"
    script.write_text(WRK_SCRIPT)
    log = tmp / "uvicorn.log"
    runs: list[HttpRun] = []
    for r in range(rounds):
        for server_name in servers:
            loop, http = SERVERS[server_name]
            for variant in rotated(apps.VARIANTS, r):
                db = tmp / f"http-{server_name}-{apps.FACTORIES[variant]}-{r}.db"
                with server(variant, loop, http, db, log) as (port, pid):
                    url = f"http://127.0.0.1:{port}/"
                    warm = run_wrk(wrk, url, warmup, connections, script)
                    # The writer's work for a run's requests lands up to a flush interval
                    # (50 ms) after it, the writer process's later still if it is behind:
                    # let it settle so each run is charged for its own rows.
                    time.sleep(SETTLE_S)
                    cpu0, kids0 = thread_cpu(pid), children_cpu(pid)
                    res = run_wrk(wrk, url, seconds, connections, script)
                    time.sleep(SETTLE_S)
                    cpu1, kids1 = thread_cpu(pid), children_cpu(pid)
                main_cpu = cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0)
                other_cpu = sum(v - cpu0.get(t, 0.0) for t, v in cpu1.items() if t != pid)
                run = HttpRun(
                    server=server_name,
                    variant=variant,
                    round=r,
                    rps=res.rps,
                    requests=res.requests,
                    p50_ms=res.p50_ms,
                    p99_ms=res.p99_ms,
                    loop_cpu_us=main_cpu / res.requests * 1e6,
                    other_cpu_us=other_cpu / res.requests * 1e6,
                    child_cpu_us=cpu_since(kids0, kids1) / res.requests * 1e6,
                    errors="; ".join(e for e in (warm.errors, res.errors) if e),
                )
                if is_recorder(variant):
                    completed = warm.requests + res.requests
                    rows, verdict, stats = check_rows(db, completed, connections)
                    run.rows, run.expected_rows = rows, completed
                    run.rows_check, run.recorder_stats = verdict, stats
                    if verdict.startswith("MISMATCH"):
                        print(f"!! {server_name} {variant} round {r}: {verdict}", flush=True)
                for suffix in ("", "-wal", "-shm", ".key"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                print(
                    f"  round {r + 1}/{rounds} {server_name:17} {variant:16} "
                    f"{res.rps:9.0f} req/s  p99 {res.p99_ms:6.2f} ms"
                    + (f"  rows: {run.rows_check}" if run.rows_check else "")
                    + (f"  [{run.errors}]" if run.errors else ""),
                    flush=True,
                )
                runs.append(run)
    return runs


def summarize_http(runs: list[HttpRun], servers: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in servers:
        mine = [x for x in runs if x.server == s]
        bare = {x.round: x.rps for x in mine if x.variant == "bare"}
        per: dict[str, Any] = {}
        for v in apps.VARIANTS:
            vs = [x for x in mine if x.variant == v]
            per[v] = {
                "rps": median([x.rps for x in vs]),
                "ratio_to_bare": median([x.rps / bare[x.round] for x in vs]),
                "ratios": [round(x.rps / bare[x.round], 4) for x in vs],
                "p50_ms": median([x.p50_ms for x in vs]),
                "p99_ms": median([x.p99_ms for x in vs]),
                "loop_cpu_us_per_request": median([x.loop_cpu_us for x in vs]),
                # everything beside the event loop: other threads + the writer process
                "writer_cpu_us_per_request": median([x.other_cpu_us + x.child_cpu_us for x in vs]),
                "other_threads_cpu_us_per_request": median([x.other_cpu_us for x in vs]),
                "child_processes_cpu_us_per_request": median([x.child_cpu_us for x in vs]),
            }
            if is_recorder(v):
                per[v]["rows_checks"] = [x.rows_check for x in vs]
                per[v]["target_ratio"] = TARGETS[s]
                per[v]["meets_target"] = per[v]["ratio_to_bare"] >= TARGETS[s]
        out[s] = per
    return out


# ---------------------------------------------------------------------------
# output


def print_report(report: dict[str, Any]) -> None:
    meta = report["meta"]
    print()
    print(f"== redirect-auditor overhead ({meta['when']}, {meta['cpus']} CPUs, ", end="")
    print(f"load avg {meta['loadavg_start']} -> {meta['loadavg_end']}) ==")
    ip = report.get("inprocess")
    if ip:
        print()
        print(
            f"(a) in-process: {ip['requests_per_round']} requests x {ip['rounds']} rounds, "
            f"1 in {REDIRECT_EVERY} a 302; medians"
        )
        print(f"  {'variant':24} {'us/req':>8} {'+vs bare':>9} {'+vs noop':>9} {'loop CPU':>9}")
        for v, us in ip["us_per_request"].items():
            print(
                f"  {v:24} {us:8.2f} {ip['us_added_vs_bare'][v]:+9.2f} "
                f"{ip['us_added_vs_noop'][v]:+9.2f} {ip['loop_cpu_us_per_request'][v]:9.2f}"
            )
        added = ip["us_added_vs_bare"]["recorder"]
        verdict = "meets" if added <= TARGET_LOOP_US else "MISSES"
        print(f"  recorder hot path adds {added:.2f} us/request on the loop: ", end="")
        print(f"{verdict} the <= {TARGET_LOOP_US:g} us target")
        off = ip["off_loop_cpu_us_per_row"]
        print(
            f"  CPU per row off the loop: recorder+writer: shipper thread "
            f"{off['shipper_thread']:.1f} us + writer process {off['writer_process']:.1f} us; "
            f"recorder+writer(thread): writer thread {off['writer_thread']:.1f} us"
        )
    wc = report.get("writer")
    if wc:
        print()
        print(f"(a) writer cost, {wc['rows']} rows:")

        def line(label: str, figures: str) -> None:
            print(f"  {label:52} {figures}")

        line(
            "ship (to_portable + marshal, shipper thread)",
            f"{wc['ship_us_per_row']:6.1f} us/row CPU ({wc['frame_bytes_per_row']:.0f} bytes/row)",
        )
        line("receive (read_frame: unmarshal)", f"{wc['receive_us_per_row']:6.1f} us/row CPU")
        line(
            "build (rows.py RowBuilder.build)",
            f"{wc['build_us_per_row']:6.1f} us/row "
            f"({wc['build_shipped_us_per_row']:.1f} us on shipped tuples: build_portable)",
        )
        for b in ("50", "500", "5000", "5000_direct_null"):
            direct = ", NULLs bound directly" if "_" in b else ""
            line(
                f"insert, {b[:4]:>4} rows/transaction{direct}",
                f"{wc[f'batch_{b}_us_per_row']:6.1f} us/row "
                f"({wc[f'batch_{b}_cpu_us_per_row']:.1f} us CPU)",
            )
        line(
            "Writer.write_now end to end (writer process)",
            f"{wc['writer_flush_us_per_row']:6.1f} us/row = {wc['writer_rows_per_s']:,.0f} rows/s "
            f"(ok={wc['writer_rows_written_ok']})",
        )
        line(
            "ProcessWriter.flush (ship + process)",
            f"{wc['pipeline_flush_us_per_row']:6.1f} us/row = {wc['pipeline_rows_per_s']:,.0f} "
            f"rows/s, caller CPU {wc['pipeline_caller_cpu_us_per_row']:.1f} us/row "
            f"(ok={wc['pipeline_rows_written_ok']})",
        )
    for su in report.get("sustain", {}).values():
        print()
        print(
            f"(a) sustained push, writer={su['writer']}: target {su['target_rate']:,}/s for "
            f"{su['seconds']:g} s, achieved {su['achieved_rate']:,.0f}/s"
        )
        by_reason = ", ".join(f"{k} {v}" for k, v in su["dropped_by_reason"].items())
        print(
            f"  queue (this process) max {su['queue_max']:,} / limit {su['queue_limit']:,} "
            f"(median {su['queue_median']:,.0f}); dropped {su['dropped']}"
            + (f" ({by_reason})" if by_reason else "")
            + f"; rows {su['rows_written']:,} of {su['submitted']:,} "
            f"(accounted: {'ok' if su['accounted_ok'] else 'NO'}); "
            f"drained {su['drain_after_stop_s']:.2f} s after stop"
        )
        rss = (
            f"  RSS {su['rss_start_mb']:.0f} -> max {su['rss_max_mb']:.0f} -> "
            f"{su['rss_end_mb']:.0f} MB"
        )
        if su["writer"] == "process":
            print(
                f"{rss}, writer process max {su['writer_process_rss_max_mb']:.0f} MB; CPU per "
                f"row: shipper thread {su['thread_cpu_us_per_row']:.1f} us + writer process "
                f"{su['writer_process_cpu_us_per_row']:.1f} us"
            )
        else:
            print(f"{rss}; writer thread CPU {su['thread_cpu_us_per_row']:.1f} us/row")
    http = report.get("http")
    if http:
        print()
        print(
            f"(b) over HTTP: wrk -t1 -c{meta['connections']} -d{meta['duration']:g}s, "
            f"{meta['rounds']} round(s), 1 in {REDIRECT_EVERY} a 302; medians"
        )
        print(
            f"  {'server':17} {'variant':16} {'req/s':>9} {'x bare':>7} {'p99 ms':>7} "
            f"{'loop us':>8} {'writer us':>9} {'(process)':>9}  rows == requests"
        )
        for s, per in http.items():
            for v in apps.VARIANTS:
                d = per[v]
                check = "; ".join(d.get("rows_checks", []))
                print(
                    f"  {s:17} {v:16} {d['rps']:9.0f} {d['ratio_to_bare']:7.3f} "
                    f"{d['p99_ms']:7.2f} {d['loop_cpu_us_per_request']:8.1f} "
                    f"{d['writer_cpu_us_per_request']:9.1f} "
                    f"{d['child_processes_cpu_us_per_request']:9.1f}  {check}"
                )
            for v in apps.VARIANTS:
                if is_recorder(v):
                    rec = per[v]
                    verdict = "meets" if rec["meets_target"] else "MISSES"
                    print(
                        f"  {s}: {v} {rec['ratio_to_bare']:.3f}x bare ({verdict} the "
                        f">= {rec['target_ratio']}x target; per round {rec['ratios']})"
                    )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of a few seconds")
    parser.add_argument("--rounds", type=int, default=3, help="HTTP rounds (default 3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval(S) in every server (GIL hand-off experiment)",
    )
    parser.add_argument(
        "--decompose",
        action="store_true",
        help="also run 'hot path only' and 'shipping only' over HTTP (no rows check)",
    )
    parser.add_argument("--skip-http", action="store_true", help="only the in-process part")
    parser.add_argument("--skip-inprocess", action="store_true", help="only the HTTP part")
    parser.add_argument(
        "--server", choices=sorted(SERVERS), action="append", help="HTTP server(s) (default both)"
    )
    args = parser.parse_args(argv)
    if args.decompose:
        apps.VARIANTS = apps.VARIANTS + apps.DECOMPOSITION
    if args.quick:
        rounds, duration, warmup = 1, min(args.duration, 2.0), 1.0
        ip_rounds, ip_n, writer_n, sustain_s = 3, 5_000, 20_000, 2.0
    else:
        rounds, duration, warmup = args.rounds, args.duration, 2.0
        ip_rounds, ip_n, writer_n, sustain_s = max(5, 2 * args.rounds + 1), 20_000, 100_000, 5.0
    servers = args.server or list(SERVERS)
    if args.switch_interval:
        os.environ[apps.SWITCH_ENV] = str(args.switch_interval)
    if not args.skip_http:
        ensure_wrk()  # fail early, before the in-process part
    report: dict[str, Any] = {
        "meta": {
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "cpus": os.cpu_count(),
            "loadavg_start": loadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "rounds": rounds,
            "duration": duration,
            "connections": args.connections,
            "switch_interval": args.switch_interval or sys.getswitchinterval(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="ra-bench-") as tmp_name:
        tmp = Path(tmp_name)
        steps: list[tuple[str, Callable[[], Any]]] = []
        if not args.skip_inprocess:
            steps += [
                ("inprocess", lambda: run_inprocess(tmp, ip_rounds, ip_n).summary()),
                ("writer", lambda: run_writer_cost(tmp, writer_n)),
                (
                    "sustain",
                    lambda: {
                        kind: run_sustain(tmp, sustain_s, kind) for kind in ("process", "thread")
                    },
                ),
            ]
        if not args.skip_http:
            steps.append(
                (
                    "http",
                    lambda: summarize_http(
                        run_http(tmp, rounds, duration, warmup, args.connections, servers),
                        servers,
                    ),
                )
            )
        try:
            for name, step in steps:
                print(f"-- {name} ...", flush=True)
                t0 = time.perf_counter()
                report[name] = step()
                print(f"   {name} took {time.perf_counter() - t0:.1f} s", flush=True)
        finally:
            # Close this process's writers while their databases still exist (else the
            # atexit flush would recreate files in the removed directory).
            registry.flush_all()
    report["meta"]["loadavg_end"] = loadavg()
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    http = report.get("http", {})
    mismatches = [
        c
        for per in http.values()
        for v in apps.VARIANTS
        if is_recorder(v)
        for c in per[v]["rows_checks"]
        if "MISMATCH" in c
    ]
    if mismatches:
        print(f"!! ROWS MISMATCH in {len(mismatches)} recorder run(s): {mismatches}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
