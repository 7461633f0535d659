"""What moving the recorder's batches into ``requests`` costs a reader, per row.

    python -m benchmarks.unpack_scale [1000000]

Generates traffic (``generate_traffic``), moves its rows into journal batches of
``--batch`` rows as the writer stores them, then times ``unpack_file`` (CPU and wall)
in a fresh child process, so its peak RSS (VmHWM) is the unpack's own. Checks every row came
back, in order.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from auditor.store import journal
from auditor.store.requests import ROW_COLUMNS
from benchmarks.generate_traffic import generate


def to_batches(db: Path, batch: int) -> int:
    """Move every row of ``requests`` into batches of ``batch`` rows; returns the rows."""
    conn = sqlite3.connect(db)
    rows = conn.execute(f"select {', '.join(ROW_COLUMNS)} from requests order by id").fetchall()
    with conn:
        conn.execute("delete from requests")
        for start in range(0, len(rows), batch):
            journal.append(conn, "bench:1", [journal.encode(rows[start : start + batch])])
    conn.execute("vacuum")
    conn.close()
    return len(rows)


def _peak_rss_mb() -> int:
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child started by a
    # parent that generated 1M rows would report the parent's peak.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


def measure(db: Path) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    moved = journal.unpack_file(db)
    return {
        "rows": moved,
        "cpu_s": round(time.process_time() - cpu, 2),
        "wall_s": round(time.perf_counter() - wall, 2),
        "peak_rss_mb": _peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000_000])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            db = Path(tmp) / f"traffic-{n}.db"
            generate(db, n, seed=1)
            total = to_batches(db, args.batch)
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.unpack_scale", "--child", str(db)],
                check=True,
                capture_output=True,
                text=True,
            )
            result = json.loads(out.stdout)
            with sqlite3.connect(db) as conn:
                back = conn.execute("select count(*) from requests").fetchone()[0]
            ok = "OK" if result["rows"] == total == back else "MISMATCH"
            per_row = result["cpu_s"] / max(result["rows"], 1) * 1e6
            print(
                f"{n:>9,} rows: unpack {result['wall_s']} s wall, {result['cpu_s']} s CPU "
                f"({per_row:.1f} us a row), peak RSS {result['peak_rss_mb']} MB, {ok}"
            )


if __name__ == "__main__":
    main()
