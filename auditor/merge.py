"""Combine per-host traffic databases (shards) into one, for a cross-host audit.

Each instance records into its own file; ``merge`` copies their recorded requests
and recorder stats into one database. A request is identified by its worker id,
start time, method and URL, so merging the same shard twice adds nothing. Linking
output (``follow_up_of``), chains and findings are not copied: ``audit`` on the
merged file recomputes them, now seeing hops that crossed hosts. Hops link across
hosts only when every host hashed clients with the same ``REDIRECT_AUDITOR_SECRET``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from auditor.rows import ROW_COLUMNS
from auditor.schema import (
    BUSY_TIMEOUT_MS,
    RECORDER_STATS_COLUMNS,
    check_traffic_db,
    create_private_file,
    ensure_schema,
)

# Only merged files carry it: it makes the duplicate check an index seek.
MERGE_KEY_INDEX = (
    "create index if not exists idx_requests_merge_key "
    "on requests(worker_id, started_at, method, url)"
)


@dataclass
class MergeResult:
    """Rows each shard added (0 for a shard merged before)."""

    added: dict[str, int]
    total: int


def merge(out_path: str | Path, shard_paths: list[str | Path]) -> MergeResult:
    """Merge ``shard_paths`` into ``out_path`` (created when missing).

    Every shard is checked first (``SchemaError`` for one that is not a traffic
    database), so a bad argument changes nothing; each shard is then copied in
    its own transaction.
    """
    out = Path(out_path)
    shards = [Path(p) for p in shard_paths]
    for shard in shards:
        check_traffic_db(shard)
        if shard.resolve() == out.resolve():
            raise ValueError(f"{shard}: is the output file; name another file to merge into")
    if out.exists():
        check_traffic_db(out)
    create_private_file(out)
    # URI filenames, so each shard can be attached read-only: a read-write attach
    # would checkpoint the shard's WAL on detach and change its bytes.
    conn = sqlite3.connect(out.resolve().as_uri(), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        ensure_schema(conn)
        conn.execute(MERGE_KEY_INDEX)
        added = {str(shard): _merge_one(conn, shard) for shard in shards}
        total = conn.execute("select count(*) from requests").fetchone()[0]
    finally:
        conn.close()
    return MergeResult(added, total)


def _merge_one(conn: sqlite3.Connection, shard: Path) -> int:
    columns = ", ".join(ROW_COLUMNS)
    stats = ", ".join(RECORDER_STATS_COLUMNS)
    conn.execute("attach database ? as shard", (f"{shard.resolve().as_uri()}?mode=ro",))
    try:
        with conn:
            before = conn.total_changes
            conn.execute(
                f"""insert into main.requests ({columns})
                    select {columns} from shard.requests s
                    where not exists (
                      select 1 from main.requests m
                      where m.worker_id is s.worker_id and m.started_at = s.started_at
                        and m.method is s.method and m.url is s.url)
                    order by s.started_at, s.id"""
            )
            added = conn.total_changes - before
            # A worker records into one file only: its stats row is copied as it stands.
            conn.execute(
                f"insert or replace into main.recorder_stats ({stats}) "
                f"select {stats} from shard.recorder_stats"
            )
    finally:
        conn.execute("detach database shard")
    return added
