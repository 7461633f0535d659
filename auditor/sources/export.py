"""Export a traffic database's closed time slices as Parquet shards for a fleet audit.

Layout (Hive-style partitions, one file per source database and slice)::

    DIR/server=<host>/date=<YYYY-MM-DD>/<source id>_<YYYYMMDDTHH>_<first id>-<last id>.parquet

* ``server`` is the machine that recorded (``--host``, default this machine's name), not
  the requests' Host header (the ``host`` column), which clients choose: a partition
  named ``host`` would replace that column in any engine that reads partitions as
  columns (Spark, Trino, DuckDB by default). ``date`` is the slice's UTC date. Files
  written under ``host=`` by an earlier version are still found.
* A slice is one UTC hour of ``started_at``. It is *closed*, and exported, once its
  end is older than the linking window (``until - window``): hops that start in it
  have had time to be followed and recorded.
* ``source id`` is a random id kept in the database's ``auditor_meta`` (written on the
  first export, the only write export ever makes to the database): it names this
  database wherever the file is moved, and never repeats for another database.
* **Idempotence.** A file holds the rows of its slice with ids in ``first..last``.
  Before writing, export reads the names already in ``DIR`` (under any host) for its
  source id: a slice's rows up to the highest id already exported are skipped. Rowids
  only grow and a writer commits in id order, so a second run (or one with an
  overlapping range) writes nothing, and a row that arrives late in an exported slice
  (a long request) goes to a new file of that slice, never into a duplicate. A file
  is written under a temporary name and renamed when complete; exports of one
  database into one ``DIR`` take a lock, so two at once never write the same rows.

A run scans from the id the last run noted in ``DIR/_export_state/<source id>.json``
(the first row of a slice still open then, else past the newest row): from cron, it
reads the new rows, not the table. Each export also replaces
``DIR/_recorder_stats/<source id>.parquet`` with the
database's ``recorder_stats`` (rows written and dropped per worker, the framework), so
the fleet audit counts what the hosts lost and names the framework in its fixes.

Rows are copied as stored (privacy as in the database: client keys, no raw IP unless
the recorder stored one); linking output (``follow_up_of``, ``link_confidence``) is
not copied, since the fleet audit links again across hosts.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor.store.journal import unpack_file
from auditor.store.requests import LINKING_COLUMNS
from auditor.store.schema import (
    BUSY_TIMEOUT_MS,
    META_TABLE,
    RECORDER_STATS_COLUMNS,
    REQUEST_COLUMNS,
    SchemaError,
    check_traffic_db,
    connect_read_only,
)

SLICE_S = 3600  # one file per source database and UTC hour
# Each database's recorder_stats, beside the partitions: Spark and Hive skip names
# that start with "_", and so does ``fleet.find_shards``.
STATS_DIR = "_recorder_stats"
# Per database, the id its next export scans from (rows below are all exported), so a
# run from cron reads the new rows, not the whole table.
STATE_DIR = "_export_state"
DEFAULT_WINDOW_S = 30.0  # the audit's default link window
BATCH_ROWS = 50_000
EXPORT_ID_KEY = "export_id"
FLEET_HINT = "install redirect-auditor[fleet] (pip install 'redirect-auditor[fleet]')"
# Exported columns: what is recorded, not what linking computed.
EXPORT_COLUMNS = tuple(c for c in REQUEST_COLUMNS if c not in LINKING_COLUMNS)
SHARD_NAME = re.compile(
    r"^(?P<source>[0-9a-f]{16})_(?P<slice>\d{8}T\d{2})_(?P<lo>\d+)-(?P<hi>\d+)\.parquet$"
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

Progress = Callable[[int], None]  # rows written so far


class FleetMissing(RuntimeError):
    """DuckDB or pyarrow (the ``fleet`` extra) is not installed."""


def require_fleet() -> tuple[Any, Any]:
    """``(duckdb, pyarrow)``, or ``FleetMissing`` naming the extra to install."""
    try:
        import duckdb
        import pyarrow
    except ImportError:
        raise FleetMissing(FLEET_HINT) from None
    return duckdb, pyarrow


@dataclass
class ExportResult:
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    source_id: str = ""
    closed_before: float = 0.0  # rows starting before this were eligible


def safe_host(name: str) -> str:
    """A partition value that is one path segment (no ``/``, no ``..``)."""
    cleaned = _UNSAFE.sub("_", name).strip(".") or "unknown"
    return cleaned[:100]


def slice_label(slice_no: int) -> str:
    return datetime.fromtimestamp(slice_no * SLICE_S, UTC).strftime("%Y%m%dT%H")


def source_id(db_path: Path) -> str:
    """This database's export id, created (in ``auditor_meta``) on first use."""
    conn = connect_read_only(db_path)
    try:
        row = conn.execute(f"select value from {META_TABLE} where key = ?", (EXPORT_ID_KEY,))
        found = row.fetchone()
    finally:
        conn.close()
    if found:
        return str(found[0])
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        with conn:  # insert or ignore: a concurrent first export keeps the first id
            conn.execute(
                f"insert or ignore into {META_TABLE} (key, value) values (?, ?)",
                (EXPORT_ID_KEY, uuid.uuid4().hex[:16]),
            )
        value = conn.execute(
            f"select value from {META_TABLE} where key = ?", (EXPORT_ID_KEY,)
        ).fetchone()[0]
    except sqlite3.Error as exc:
        raise SchemaError(f"{db_path}: cannot note its export id ({exc})") from None
    finally:
        conn.close()
    return str(value)


def exported_up_to(out_dir: Path, source: str) -> dict[str, int]:
    """Per slice label, the highest id of ``source`` already in ``out_dir``."""
    done: dict[str, int] = {}
    for path in out_dir.glob(f"*=*/date=*/{source}_*.parquet"):
        match = SHARD_NAME.match(path.name)
        if match:
            label, hi = match["slice"], int(match["hi"])
            done[label] = max(done.get(label, 0), hi)
    return done


def export(
    db_path: str | Path,
    out_dir: str | Path,
    *,
    host: str | None = None,
    window: float = DEFAULT_WINDOW_S,
    until: float | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the closed slices of ``db_path`` not yet in ``out_dir`` as Parquet files.

    Raises ``SchemaError`` for a file that is not a traffic database and
    ``FleetMissing`` without the ``fleet`` extra, before anything is written.
    """
    _, pa = require_fleet()
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    db = Path(db_path)
    out = Path(out_dir)
    check_traffic_db(db)
    if out.exists() and not out.is_dir():
        raise SchemaError(f"{out}: is not a directory")
    partition_host = safe_host(host or socket.gethostname())
    now = time.time() if until is None else until
    closed_slice = int((now - window) // SLICE_S)  # slices before this one are closed
    result = ExportResult(source_id=source_id(db), closed_before=closed_slice * SLICE_S)
    try:
        unpack_file(db)  # the recorder's batches into requests, where the slices are read
    except sqlite3.Error as exc:
        raise SchemaError(f"{db}: cannot unpack its recorded batches ({exc})") from None
    out.mkdir(parents=True, exist_ok=True)

    schema = pa.schema(
        [
            (name, pa.int64() if kind is int else pa.float64() if kind is float else pa.string())
            for name, kind in REQUEST_COLUMNS.items()
            if name in EXPORT_COLUMNS
        ]
    )
    lock_path = out / f".export-{result.source_id}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = exported_up_to(out, result.source_id)
        resume = [_resume_id(out, result.source_id) if done else 0]
        writers: dict[int, SliceFile] = {}
        try:
            for batch in _new_rows(db, done, closed_slice, resume):
                try:
                    records = pa.record_batch(list(zip(*batch, strict=True)), schema=schema)
                except (pa.ArrowException, TypeError, ValueError) as exc:
                    raise SchemaError(
                        f"{db}: rows {batch[0][0]}..{batch[-1][0]} do not fit the requests "
                        f"schema ({exc})"
                    ) from None
                slices = pc.cast(
                    pc.floor(pc.divide(records.column("started_at"), float(SLICE_S))), pa.int64()
                )
                for slice_no in pc.unique(slices).to_pylist():
                    part = records.filter(pc.equal(slices, slice_no))
                    sink = writers.get(slice_no)
                    if sink is None:
                        sink = writers[slice_no] = SliceFile(
                            out, partition_host, result.source_id, slice_no, schema, pq
                        )
                    ids = part.column("id")
                    sink.write(part, ids[0].as_py(), ids[-1].as_py())
                result.rows += len(batch)
                if progress is not None:
                    progress(result.rows)
            for sink in writers.values():
                result.files.append(sink.close())
        except BaseException:
            for sink in writers.values():
                sink.abandon()
            raise
        _write_stats(db, out, result.source_id, partition_host, pa, pq)
        _save_resume_id(out, result.source_id, resume[0])
    return result


def _resume_id(out: Path, source: str) -> int:
    """Where the last export of ``source`` into ``out`` said the next one may start
    (0, a full scan, when it said nothing readable)."""
    try:
        return int(json.loads((out / STATE_DIR / f"{source}.json").read_text())["resume_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _save_resume_id(out: Path, source: str, value: int) -> None:
    text = json.dumps({"resume_id": value})
    _replace_whole(out / STATE_DIR, f"{source}.json", lambda tmp: tmp.write_text(text))


def _replace_whole(folder: Path, name: str, write: Callable[[Path], object]) -> None:
    """``folder/name`` replaced by what ``write`` puts in a temporary file beside it:
    a reader sees the old file or the new one, never half of one."""
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)


def _write_stats(db: Path, out: Path, source: str, host: str, pa: Any, pq: Any) -> None:
    """The database's ``recorder_stats`` now (rows written, dropped, the framework), as
    ``DIR/_recorder_stats/<source id>.parquet``, replaced whole on every export."""
    conn = connect_read_only(db)
    try:
        names = [r[1] for r in conn.execute("pragma table_info(recorder_stats)")]
        rows = conn.execute("select * from recorder_stats order by worker_id").fetchall()
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{db}: cannot read its recorder_stats ({exc})") from None
    finally:
        conn.close()
    columns = [c for c in RECORDER_STATS_COLUMNS if c in names]
    kinds = {int: pa.int64(), float: pa.float64(), str: pa.string()}
    table = pa.table(
        {
            "server": pa.array([host] * len(rows), pa.string()),
            "source_id": pa.array([source] * len(rows), pa.string()),
            **{
                c: pa.array([row[names.index(c)] for row in rows], kinds[RECORDER_STATS_COLUMNS[c]])
                for c in columns
            },
        }
    )
    _replace_whole(out / STATS_DIR, f"{source}.parquet", lambda tmp: pq.write_table(table, tmp))


class SliceFile:
    """One slice's new rows of one database, in export's layout, written under a
    temporary name and renamed when complete (the id range is known only then)."""

    def __init__(
        self,
        out: Path,
        host: str,
        source: str,
        slice_no: int,
        schema: Any,
        pq: Any,
        compression_level: int | None = None,
    ) -> None:
        self.label = slice_label(slice_no)
        day = datetime.fromtimestamp(slice_no * SLICE_S, UTC).strftime("%Y-%m-%d")
        self.dir = out / f"server={host}" / f"date={day}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.tmp = self.dir / f".{source}_{self.label}.{os.getpid()}.tmp"
        self.writer = pq.ParquetWriter(
            self.tmp, schema, compression="zstd", compression_level=compression_level
        )
        self.lo: int | None = None
        self.hi = 0
        self.rows = 0

    def write(self, batch: Any, first_id: int, last_id: int) -> None:
        """Append a record batch or table whose ids run from ``first_id`` to ``last_id``."""
        self.writer.write(batch)
        self.lo = first_id if self.lo is None else self.lo
        self.hi = last_id
        self.rows += batch.num_rows

    def close(self) -> Path:
        self.writer.close()
        final = self.dir / f"{self.source}_{self.label}_{self.lo}-{self.hi}.parquet"
        os.replace(self.tmp, final)
        return final

    def abandon(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _new_rows(
    db: Path, done: dict[str, int], closed_slice: int, resume: list[int]
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of closed slices above each slice's exported id, in id order, in batches.

    ``resume`` holds the id the scan starts at (every row below it is exported); it is
    set to the next run's: the first row of a slice still open, else past the newest
    row (one read snapshot: a row committed meanwhile has a higher id).
    """
    conn = connect_read_only(db)
    try:
        conn.execute("create temp table exported (slice integer primary key, max_id integer)")
        conn.executemany(
            "insert into temp.exported values (?, ?)",
            [
                (
                    int(datetime.strptime(label, "%Y%m%dT%H").replace(tzinfo=UTC).timestamp())
                    // SLICE_S,
                    hi,
                )
                for label, hi in done.items()
            ],
        )
        conn.commit()
        conn.execute("begin")
        start, boundary = resume[0], closed_slice * SLICE_S
        newest = conn.execute("select coalesce(max(id), 0) from requests").fetchone()[0]
        still_open = conn.execute(
            "select min(id) from requests where id >= ? and started_at >= ?", (start, boundary)
        ).fetchone()[0]
        resume[0] = newest + 1 if still_open is None else still_open
        columns = ", ".join(f"r.{c}" for c in EXPORT_COLUMNS)
        cursor = conn.execute(
            f"""select {columns}
                from requests r
                left join temp.exported e on e.slice = cast(r.started_at / {SLICE_S} as integer)
                where r.id >= ? and r.started_at < ? and r.id > coalesce(e.max_id, 0)
                order by r.id""",
            (start, boundary),
        )
        while batch := cursor.fetchmany(BATCH_ROWS):
            yield batch
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{db}: cannot read it ({exc})") from None
    finally:
        conn.close()
