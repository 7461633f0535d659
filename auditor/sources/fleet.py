"""Parquet shards of many hosts (made by ``export``) as one traffic database to audit.

DuckDB reads every shard; the rows go into a new SQLite traffic database (the schema
of ``auditor.schema``), on which the ordinary ``audit()`` runs. So linking across
hosts and every problem of the finding model have one implementation, the SQLite
path's; this module only gathers the rows. The database stays as the report that
``explore`` opens (findings, chains, and the requests they cite).
"""

from __future__ import annotations

import glob
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from auditor.record.rows import INSERT_SQL, ROW_COLUMNS
from auditor.schema import (
    META_TABLE,
    SchemaError,
    check_traffic_db,
    connect_read_only,
    create_private_file,
    ensure_schema,
)
from auditor.sources.export import SHARD_NAME, require_fleet

REPORT_NAME = "report.db"
REPORT_MARKER_KEY = "fleet_report"  # auditor_meta row: a report this module made
BATCH_ROWS = 50_000
_GLOB_CHARS = frozenset("*?[")

Progress = Callable[[int], None]  # rows loaded so far


def is_fleet_source(arg: str | Path) -> bool:
    """A directory, a glob, or a ``.parquet`` file: shards rather than one database."""
    text = str(arg)
    path = Path(text)
    if path.is_dir() or path.suffix == ".parquet":
        return True
    return not path.exists() and any(c in _GLOB_CHARS for c in text)


def default_report(source: str | Path) -> Path:
    """``DIR/report.db`` for a directory; for a glob, in its last directory without one."""
    path = Path(source)
    if path.is_dir():
        return path / REPORT_NAME
    parts: list[str] = []
    for part in path.parent.parts:
        if any(c in _GLOB_CHARS for c in part):
            break
        parts.append(part)
    return Path(*parts) / REPORT_NAME if parts else Path(REPORT_NAME)


def find_shards(source: str | Path) -> list[Path]:
    """The Parquet files of a directory (recursively) or a glob, sorted; ``SchemaError``
    naming the argument when there are none."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        shards = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    elif path.is_file():
        shards = [path]
    elif any(c in _GLOB_CHARS for c in text):
        shards = []
        for match in sorted(glob.glob(text, recursive=True)):
            found = Path(match)
            if found.is_dir():
                shards.extend(sorted(p for p in found.rglob("*.parquet") if p.is_file()))
            elif found.suffix == ".parquet":
                shards.append(found)
    else:
        raise SchemaError(f"{source}: no such file or directory")
    if not shards and path.is_dir():
        raise SchemaError(
            f"{source}: is a directory with no Parquet shards (*.parquet) in it; audit takes "
            "a traffic database, or a directory of shards made by export"
        )
    if not shards:
        raise SchemaError(f"{source}: no Parquet shards (*.parquet) found")
    return shards


def load_shards(
    source: str | Path, report: str | Path, *, progress: Progress | None = None
) -> tuple[Path, int, int]:
    """Write every shard's rows into a fresh traffic database at ``report``.

    Returns (report, shards, rows). Every shard is checked before anything is written
    (``SchemaError`` naming the first unreadable one); the report is built under a
    temporary name and replaces an earlier report only when complete. A file at
    ``report`` that is not such a report is never overwritten.
    """
    duckdb, _ = require_fleet()
    out = Path(report)
    shards = find_shards(source)
    if out.exists():
        _require_report(out)
    elif not out.absolute().parent.is_dir():
        raise SchemaError(f"{out}: directory {out.absolute().parent} does not exist")

    con = duckdb.connect()
    all_names: set[str] = set()
    try:
        rows_in_shards = 0
        for shard in shards:  # footers first: a bad shard is named before any work
            try:
                found = con.execute(
                    "select coalesce(sum(num_rows), 0) from parquet_file_metadata(?)",
                    [str(shard)],
                ).fetchone()
                names = {
                    r[0]
                    for r in con.execute(
                        "select name from parquet_schema(?)", [str(shard)]
                    ).fetchall()
                }
            except duckdb.Error as exc:
                raise SchemaError(
                    f"{shard}: not a readable Parquet shard ({_first_line(exc)})"
                ) from None
            missing = {"id", "started_at", "method", "url"} - names
            if missing:
                raise SchemaError(
                    f"{shard}: not a traffic shard (no column {', '.join(sorted(missing))})"
                )
            rows_in_shards += int(found[0]) if found else 0
            all_names |= names

        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        create_private_file(tmp)
        conn = sqlite3.connect(tmp)
        try:
            ensure_schema(conn)
            # A new file, made whole or removed: no journal while loading, WAL again after.
            conn.execute("pragma journal_mode = off")
            conn.execute("pragma synchronous = off")
            with conn:
                conn.execute(
                    f"insert or replace into {META_TABLE} (key, value) values (?, '1')",
                    (REPORT_MARKER_KEY,),
                )
            select = ", ".join(_column_or_null(c, all_names) for c in ROW_COLUMNS)
            # In hour order (then host), as the files list them: rows come out in that
            # order with no sort in memory, and ids in the report follow time roughly.
            files = [str(s) for s in sorted(shards, key=_hour_first)]
            try:
                cursor = con.execute(
                    f"select {select} from read_parquet(?, hive_partitioning = false, "
                    "union_by_name = true)",
                    [files],
                )
                loaded = 0
                while batch := cursor.fetchmany(BATCH_ROWS):
                    conn.executemany(INSERT_SQL, batch)
                    loaded += len(batch)
                    if progress is not None:
                        progress(loaded)
            except duckdb.Error as exc:
                raise SchemaError(f"reading the shards failed: {_first_line(exc)}") from None
            conn.commit()
            conn.execute("pragma journal_mode = wal")
        finally:
            conn.close()
        for suffix in ("-wal", "-shm", "-journal"):  # an old report's, never the new one's
            Path(f"{out}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, out)
    except BaseException:
        if "tmp" in locals():
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        raise
    finally:
        con.close()
    return out, len(shards), loaded


def _hour_first(shard: Path) -> tuple[str, str]:
    match = SHARD_NAME.match(shard.name)
    return (match["slice"] if match else "", str(shard))


def _column_or_null(column: str, names: set[str]) -> str:
    return f'"{column}"' if column in names else f'null as "{column}"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _require_report(path: Path) -> None:
    check_traffic_db(path)
    try:
        conn = connect_read_only(path)
        try:
            marked = conn.execute(
                f"select 1 from {META_TABLE} where key = ?", (REPORT_MARKER_KEY,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        marked = None
    if marked is None:
        raise SchemaError(
            f"{path}: exists and is not a fleet audit report; refusing to replace it "
            "(name another file with --report)"
        )
