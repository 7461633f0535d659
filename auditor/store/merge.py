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

from auditor.store.journal import stored_batches
from auditor.store.requests import ROW_COLUMNS, full_row
from auditor.store.schema import (
    BATCHES_TABLE,
    BUSY_TIMEOUT_MS,
    META_TABLE,
    RECORDER_STATS_COLUMNS,
    SchemaError,
    check_traffic_db,
    create_private_file,
    ensure_schema,
    has_meta_key,
    has_table,
    remove_database_files,
)

# auditor_meta row that marks a file made by merge: only such a file is merged into
# again. ``merge a.db b.db all.db``, typed in cp's order, must not write into a.db.
MERGED_MARKER_KEY = "merged"

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

    Every argument is checked first (``SchemaError`` for a shard that is not an
    intact traffic database, or an output that is a recorded traffic database not
    made by ``merge``), so a bad argument changes nothing; each shard is then copied
    in its own transaction.
    """
    out = Path(out_path)
    shards = [Path(p) for p in shard_paths]
    if not shards:
        raise ValueError("name at least one traffic database to merge")
    if out.exists():  # first: in cp's order the output is a shard, and this says so
        check_traffic_db(out)
        if not is_merged_database(out):
            raise SchemaError(
                f"{out}: is a recorded traffic database, not one made by merge; refusing "
                "to write into it (the output comes first: merge OUT SHARD...)"
            )
    elif not out.absolute().parent.is_dir():
        raise SchemaError(f"{out}: directory {out.absolute().parent} does not exist")
    for shard in shards:
        check_traffic_db(shard)
        if out.exists() and shard.resolve() == out.resolve():
            raise ValueError(f"{shard}: is the output file; name another file to merge into")
    created = not out.exists()
    create_private_file(out)
    # URI filenames, so each shard can be attached read-only: a read-write attach
    # would checkpoint the shard's WAL on detach and change its bytes.
    conn = sqlite3.connect(out.resolve().as_uri(), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        ensure_schema(conn)
        with conn:
            conn.execute(MERGE_KEY_INDEX)
            conn.execute(
                f"insert or replace into {META_TABLE} (key, value) values (?, '1')",
                (MERGED_MARKER_KEY,),
            )
        added = {str(shard): _merge_one(conn, shard) for shard in shards}
        total = conn.execute("select count(*) from requests").fetchone()[0]
    except BaseException:
        conn.close()
        if created:  # leave nothing behind for an output that never got made
            remove_database_files(out)
        raise
    conn.close()
    return MergeResult(added, total)


def is_merged_database(path: str | Path) -> bool:
    """True when ``path`` is a traffic database that ``merge`` made (read-only check)."""
    return has_meta_key(path, MERGED_MARKER_KEY)


# Rows of ``source`` not in main.requests yet (a shard merged twice adds nothing).
_NEW_ROWS = """insert into main.requests ({columns})
    select {columns} from {source} s
    where not exists (
      select 1 from main.requests m
      where m.worker_id is s.worker_id and m.started_at = s.started_at
        and m.method is s.method and m.url is s.url)
    order by s.started_at, s.rowid"""


def _merge_one(conn: sqlite3.Connection, shard: Path) -> int:
    columns = ", ".join(ROW_COLUMNS)
    stats = ", ".join(RECORDER_STATS_COLUMNS)
    uri = f"{shard.resolve().as_uri()}?mode=ro"
    if not Path(f"{shard}-wal").exists():  # as connect_read_only: leave no -wal/-shm behind
        uri += "&immutable=1"
    conn.execute("attach database ? as shard", (uri,))
    try:
        with conn:
            added = conn.execute(
                _NEW_ROWS.format(columns=columns, source="shard.requests")
            ).rowcount
            if has_table(conn, BATCHES_TABLE, schema="shard"):
                # The shard's recorded batches, read (the shard is never changed) into a
                # scratch table and added as its unpacked rows are.
                conn.execute(
                    f"create temp table if not exists merge_batch_rows as "
                    f"select {columns} from main.requests where 0"
                )
                conn.execute("delete from temp.merge_batch_rows")
                insert = (
                    f"insert into temp.merge_batch_rows ({columns}) "
                    f"values ({', '.join('?' * len(ROW_COLUMNS))})"
                )
                for _, rows in stored_batches(conn, schema="shard"):
                    conn.executemany(insert, map(full_row, rows))
                new = _NEW_ROWS.format(columns=columns, source="temp.merge_batch_rows")
                added += conn.execute(new).rowcount
            # A worker records into one file only: its stats row is copied as it stands.
            conn.execute(
                f"insert or replace into main.recorder_stats ({stats}) "
                f"select {stats} from shard.recorder_stats"
            )
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{shard}: cannot merge it ({exc})") from None
    finally:
        conn.execute("detach database shard")
    return added
