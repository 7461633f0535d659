"""Fleet-scale traffic as Parquet shards, made fast: one generated base, replicated.

Used by ``benchmarks/fleet_scale.py``. Steps:

1. ``base_traffic``: ``generate_traffic.generate`` writes a base database once (cached in
   the work directory with its planted places, see ``GeneratedTraffic.planted_places``).
2. ``export_base``: ``redirect-auditor export`` turns it into Parquet (timed: the export's
   cost per million rows).
3. ``replicate``: K = size / base copies of the exported rows, written as ``--hosts``
   hosts' shards in the layout ``export`` writes
   (``DIR/server=<host>/date=<YYYY-MM-DD>/<source id>_<YYYYMMDDTHH>_<lo>-<hi>.parquet``),
   one file per host and hour, rows in id order as export writes them.

How a copy differs from the base, so that every copy is traffic of its own clients and
the audit must find the same places with K times the hits:

* every per-client or per-connection value gets a copy suffix ``~k`` (``client_key``,
  ``connection_key``, ``forwarded_for_key``, ``request_id``; ``client_ip`` too when a
  base recorded one, though it is then no longer an address), so no hop links across
  copies and the four NAT offices of the base become 4 K offices;
* copies are interleaved in time, not laid end to end: copy k starts ``k`` ms after the
  base and keeps its internal timing, so every link stays within the window and the
  whole dataset spans the base's ~2 hours, like a fleet serving K times the traffic
  (100M rows ~ 12k requests/s, the issue's 10^9 a day). Laying copies a day apart
  instead would stretch the span past ``temporary_min_span_days`` (7) at 10M and add
  findings that are not in the base;
* ids are ``(id - 1) * K + k + 1``: unique, and in time order as a recorder's ids are;
* each row goes to host ``splitmix64(id) % hosts`` (a load balancer per request: a
  redirect and its follow-up land on different hosts 95% of the time at 20 hosts);
  ``worker_id`` is prefixed with the host; each host has its own 16-hex source id.

Why pyarrow and not a DuckDB ``COPY ... PARTITION_BY``: measured here, the COPY wrote
4.3 s per million rows to one file and 6.6 s partitioned (2 cores), rows within a
partition come out in no order, and a partition column named ``host`` would be written
as the directory instead of the recorded Host column (and reading the shards with
``hive_partitioning`` on, as DuckDB does by default, gives the directory's value in place
of the Host column). Here a chunk of rows is made with pyarrow.compute while the one
before it is written (zstd level 1), about 2 to 3 s per million rows on 2 busy cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.sources.export import SLICE_S, SliceFile
from auditor.sources.fleet import find_shards

COPY_OFFSET_S = 0.001  # copy k starts k * this after the base
# Per-client and per-connection columns: a copy suffix makes each copy's clients its own.
CLIENT_COLUMNS = ("client_key", "connection_key", "forwarded_for_key", "request_id", "client_ip")
EXPORT_UNTIL = 4_000_000_000.0  # "now" for export: every generated hour is closed
MANIFEST = ".fleet-bench.json"
RECIPE = 4  # bump when replicate() writes other rows: cached datasets are then remade


def auditor_command() -> str:
    """The ``redirect-auditor`` next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / "redirect-auditor"
    found = str(candidate) if candidate.exists() else shutil.which("redirect-auditor")
    if not found:
        raise SystemExit("redirect-auditor is not installed in this environment")
    return found


def host_name(index: int) -> str:
    return f"web-{index + 1:02d}"


def source_id(host: str) -> str:
    """A fixed 16-hex export id per host (``export`` keeps a random one per database)."""
    return hashlib.sha256(f"fleet-bench/{host}".encode()).hexdigest()[:16]


@dataclass
class Run:
    """A finished (or killed) child process: exit code, wall and CPU time, peak memory."""

    returncode: int
    seconds: float
    cpu_s: float
    peak_mb: float  # the larger of the two below
    maxrss_mb: float  # wait4: the largest single process of the tree
    tree_mb: float  # the tree's RSS summed, sampled every 0.2 s
    timed_out: bool
    stdout: str
    stderr: str


def run_measured(command: list[str], *, timeout: float, stdout: Path | None = None) -> Run:
    """Run ``command`` in a session of its own; wall time, CPU and peak RSS of its whole
    process tree (``wait4``'s maxrss, and the tree's RSS summed every 0.2 s). On timeout
    the session is killed."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = stdout or Path(tmp) / "stdout"
        err_path = Path(tmp) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            began = time.perf_counter()
            proc = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
            tree_peak = 0
            timed_out = False
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                tree_peak = max(tree_peak, _tree_rss(proc.pid))
                if time.perf_counter() - began > timeout:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGKILL)  # the session this call started
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.2)
            seconds = time.perf_counter() - began
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        text = "" if stdout else out_path.read_text(errors="replace")
        return Run(
            proc.returncode,
            seconds,
            usage.ru_utime + usage.ru_stime,
            max(usage.ru_maxrss * 1024, tree_peak) / 2**20,
            usage.ru_maxrss / 1024,
            tree_peak / 2**20,
            timed_out,
            text,
            err_path.read_text(errors="replace"),
        )


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all its descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total


@dataclass
class Base:
    db: Path
    requests: int
    planted: set[tuple[str, str, int, str]]
    generate_s: float  # 0.0 when cached
    cached: bool


def base_traffic(work: Path, requests: int, seed: int) -> Base:
    """The base database and its planted places, generated once per (requests, seed)."""
    db = work / f"base-{requests}-seed{seed}.db"
    planted_json = work / f"base-{requests}-seed{seed}.planted.json"
    if db.exists() and planted_json.exists():
        planted = {tuple(p) for p in json.loads(planted_json.read_text())}
        return Base(db, requests, planted, 0.0, True)
    from benchmarks.generate_traffic import generate

    planted_json.unlink(missing_ok=True)
    began = time.perf_counter()
    traffic = generate(db, requests, seed=seed)
    seconds = time.perf_counter() - began
    planted_json.write_text(json.dumps(sorted(traffic.planted_places)))
    return Base(db, traffic.requests, set(traffic.planted_places), seconds, False)


@dataclass
class Export:
    out: Path
    rows: int
    files: int
    seconds: float
    peak_mb: float


def export_base(base: Base, out: Path) -> Export:
    """``redirect-auditor export`` of the whole base into a fresh ``out``, timed."""
    shutil.rmtree(out, ignore_errors=True)
    run = run_measured(
        [
            auditor_command(),
            "export",
            str(base.db),
            "--to",
            str(out),
            "--host",
            "base",
            "--until",
            str(EXPORT_UNTIL),
        ],
        timeout=3600,
    )
    if run.returncode != 0:
        raise SystemExit(f"export failed (exit {run.returncode}): {run.stderr.strip()}")
    files = find_shards(out)
    rows = _count_rows(files)
    if rows != base.requests:
        raise SystemExit(f"export wrote {rows} rows of {base.requests}")
    return Export(out, rows, len(files), run.seconds, run.peak_mb)


def _count_rows(files: list[Path]) -> int:
    import duckdb

    if not files:
        return 0
    con = duckdb.connect()
    try:
        found = con.execute(
            "select coalesce(sum(num_rows), 0) from parquet_file_metadata(?)",
            [[str(f) for f in files]],
        ).fetchone()
    finally:
        con.close()
    return int(found[0]) if found else 0


@dataclass
class Dataset:
    out: Path
    rows: int
    copies: int
    hosts: int
    files: int
    bytes: int
    seconds: float
    cached: bool


def replicate(base_dir: Path, out: Path, copies: int, hosts: int, *, threads: int = 2) -> Dataset:
    """Write ``copies`` copies of the shards under ``base_dir`` as ``hosts`` hosts' shards
    in ``out`` (replaced). Reuses ``out`` when its manifest says it holds just that."""
    wanted = {
        "recipe": RECIPE,
        "base": str(base_dir),
        "copies": copies,
        "hosts": hosts,
        "offset": COPY_OFFSET_S,
    }
    manifest = out / MANIFEST
    if manifest.exists():
        noted = json.loads(manifest.read_text())
        if noted.get("made") == wanted:
            return Dataset(
                out, noted["rows"], copies, hosts, noted["files"], noted["bytes"], 0.0, True
            )
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    began = time.perf_counter()
    base = _read_base(base_dir)
    shards: dict[int, SliceFile] = {}  # slice * hosts + host -> its open file
    step = max(1, CHUNK_ROWS // copies)  # base rows per chunk
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            # one chunk is made while the one before it is written
            starts = range(0, base.num_rows, step)
            ahead = pool.submit(_prepare, base.slice(0, step), copies, hosts)
            for first in starts:
                runs = ahead.result()
                if first + step < base.num_rows:
                    ahead = pool.submit(_prepare, base.slice(first + step, step), copies, hosts)
                list(pool.map(lambda run: _write_run(run, out, hosts, shards), runs))
        rows = n_files = size = 0
        for shard in shards.values():
            path = shard.close()
            rows += shard.rows
            n_files += 1
            size += path.stat().st_size
    except BaseException:
        for shard in shards.values():
            shard.abandon()
        raise
    seconds = time.perf_counter() - began
    manifest.write_text(
        json.dumps({"made": wanted, "rows": rows, "files": n_files, "bytes": size}, indent=1)
    )
    return Dataset(out, rows, copies, hosts, n_files, size, seconds, False)


CHUNK_ROWS = 2_000_000  # rows made at a time (two chunks are held at once)
ZSTD_LEVEL = 1  # as fast as snappy here, files as small as export's


def _read_base(base_dir: Path) -> Any:
    """The base rows in id order. Each file is read as a file, not as a dataset: its
    partition directories would otherwise become columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.ParquetFile(p).read() for p in find_shards(base_dir)]
    if not tables:
        raise SystemExit(f"{base_dir}: no Parquet files")
    return pa.concat_tables(tables, promote_options="default").sort_by("id")


def _mix(values: Any) -> Any:
    """splitmix64's finalizer of int64s (as uint64): a well-spread hash that no library
    version changes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    u64 = pa.uint64()

    def xor_shift(z: Any, bits: int) -> Any:
        return pc.bit_wise_xor(z, pc.shift_right(z, pa.scalar(bits, u64)))

    z = pc.add(values.cast(u64), pa.scalar(0x9E3779B97F4A7C15, u64))  # wraps: unchecked
    z = pc.multiply(xor_shift(z, 30), pa.scalar(0xBF58476D1CE4E5B9, u64))
    z = pc.multiply(xor_shift(z, 27), pa.scalar(0x94D049BB133111EB, u64))
    return xor_shift(z, 31)


def _prepare(chunk: Any, copies: int, hosts: int) -> list[tuple[int, Any]]:
    """Each base row of ``chunk`` ``copies`` times (copy k = 0..K-1), altered as the
    module says, as runs of one shard key (slice * hosts + host) each in id order. The
    order is found on the narrow columns first, so the wide rows are gathered once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = chunk.num_rows
    position = pa.array(range(n * copies), pa.int64())
    source = pc.divide(position, copies)  # integer division: the base row of each new row
    k = pc.subtract(position, pc.multiply(source, copies))
    ids = pc.add(pc.multiply(pc.subtract(pc.take(chunk.column("id"), source), 1), copies), k)
    ids = pc.add(ids, 1)
    offset = pc.multiply(k.cast(pa.float64()), COPY_OFFSET_S)
    started = pc.add(pc.take(chunk.column("started_at"), source), offset)
    mixed = _mix(ids)
    u_hosts = pa.scalar(hosts, pa.uint64())
    host = pc.subtract(mixed, pc.multiply(pc.divide(mixed, u_hosts), u_hosts)).cast(pa.int64())
    slices = pc.floor(pc.divide(started, float(SLICE_S))).cast(pa.int64())
    keys = pc.add(pc.multiply(slices, hosts), host)
    narrow = pa.table({"key": keys, "id": ids, "started_at": started, "k": k, "source": source})
    narrow = narrow.take(
        pc.sort_indices(narrow, sort_keys=[("key", "ascending"), ("id", "ascending")])
    )
    rows = chunk.take(narrow.column("source"))
    suffix = pc.take(pa.array([""] + [f"~{i}" for i in range(1, copies)]), narrow.column("k"))
    for name in rows.column_names:
        if name in ("id", "started_at"):
            column = narrow.column(name)
        elif name in CLIENT_COLUMNS:
            column = pc.binary_join_element_wise(rows.column(name), suffix, "")
        else:
            continue
        rows = rows.set_column(rows.schema.get_field_index(name), name, column)
    runs = pc.run_end_encode(narrow.column("key").combine_chunks())
    out, start = [], 0
    for end, key in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
        out.append((int(key), rows.slice(start, end - start)))
        start = end
    return out


def _write_run(run: tuple[int, Any], out: Path, hosts: int, shards: dict[int, SliceFile]) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    key, rows = run
    host = host_name(key % hosts)
    shard = shards.get(key)
    if shard is None:  # keys are distinct within a chunk: one thread per shard at a time
        shard = shards[key] = SliceFile(
            out, host, source_id(host), key // hosts, rows.schema, pq, ZSTD_LEVEL
        )
    index = rows.schema.get_field_index("worker_id")
    if index >= 0:  # each host's workers are its own
        worker = pc.binary_join_element_wise(host, rows.column(index), "/")
        rows = rows.set_column(index, "worker_id", worker)
    ids = rows.column("id")
    shard.write(rows, ids[0].as_py(), ids[-1].as_py())


def unfollowed_hits(base_dir: Path) -> dict[str, dict[str, int]]:
    """Per route, per client family: the base's POST 307s (the generator's unfollowed
    walks, never followed), to tell which places reach ``unfollowed_min_hits`` when
    each is K times as frequent."""
    import duckdb

    from auditor.redirects import client_family

    con = duckdb.connect()
    try:
        found = con.execute(
            "select route, user_agent, count(*) from read_parquet(?, hive_partitioning = false) "
            "where method = 'POST' and status = 307 group by all",
            [[str(p) for p in find_shards(base_dir)]],
        ).fetchall()
    finally:
        con.close()
    hits: dict[str, dict[str, int]] = {}
    for route, agent, count in found:
        family = client_family(agent)
        per_family = hits.setdefault(route, {})
        per_family[family] = per_family.get(family, 0) + int(count)
    return hits


def expected_places(
    planted: set[tuple[str, str, int, str]], unfollowed: dict[str, dict[str, int]], copies: int
) -> set[tuple[str, str, int, str]]:
    """The base's planted places, plus the unfollowed-redirect places that K copies lift
    over ``unfollowed_min_hits`` (the only count threshold the copies cross: the span,
    for ``temporary_min_span_days``, stays the base's)."""
    from benchmarks.generate_traffic import UNFOLLOWED_MIN_HITS, without_info_at_errors

    places: set[Any] = set(planted)
    for route, families in unfollowed.items():
        if any(
            family != "urllib" and hits * copies >= UNFOLLOWED_MIN_HITS
            for family, hits in families.items()
        ):
            places.add((route, "POST", 307, "unfollowed-redirect"))
    return without_info_at_errors(places)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_shards(out: Path) -> None:
    """Every file under ``out`` named as ``export`` names it (fails loudly otherwise)."""
    from auditor.sources.export import SHARD_NAME

    bad = [p for p in find_shards(out) if not SHARD_NAME.match(p.name)]
    if bad:
        raise SystemExit(f"{bad[0]}: not a shard name export would write")
