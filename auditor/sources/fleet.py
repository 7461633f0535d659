"""Parquet shards of many hosts (made by ``export``) as one traffic database to audit.

DuckDB reads every shard and picks the rows the audit reads (``fleet_select``: about
one in four, and past a size those of a sample of clients); they go into a new SQLite
traffic database (the schema of ``auditor.store.schema``) with the whole traffic's totals
and route templates beside them, and the ordinary ``audit()`` runs on it. So linking
across hosts and every problem of the finding model have one implementation, the
SQLite path's. After the audit, ``compact_report`` keeps in it only what the
findings cite: the report that ``explore`` opens (findings, chains, and the requests
they cite).
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.analysis.rules._subset import PATH_TEMPLATES
from auditor.analysis.sampled import SAMPLED_PLACES, TRAFFIC_REDIRECTS, TRAFFIC_ROWS
from auditor.sources.export import SHARD_NAME, STATS_DIR, require_fleet
from auditor.sources.fleet_select import (
    DEFAULT_MAX_ROWS,
    DEFAULT_PER_PLACE,
    Selection,
    select_rows,
)
from auditor.store.requests import INSERT_SQL, ROW_COLUMNS
from auditor.store.schema import (
    META_TABLE,
    RECORDER_STATS_COLUMNS,
    SchemaError,
    check_traffic_db,
    create_private_file,
    ensure_schema,
    has_meta_key,
    remove_database_files,
)

REPORT_NAME = "report.db"
REPORT_MARKER_KEY = "fleet_report"  # auditor_meta row: a report this module made
BATCH_ROWS = 50_000
DUCKDB_MEMORY = "1536MB"
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
    return _static_root(Path(source)) / REPORT_NAME


def _static_root(path: Path) -> Path:
    """A directory itself; for a glob (or a file), its last directory with no pattern."""
    if path.is_dir():
        return path
    parts: list[str] = []
    for part in path.parent.parts:
        if any(c in _GLOB_CHARS for c in part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _hidden(path: Path, root: Path) -> bool:
    """Under a name that starts with "_" or "." below ``root`` (Hive's convention):
    ``_recorder_stats``, temporary files."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = path.parts
    return any(part[:1] in ("_", ".") for part in parts)


def recorder_stats(con: Any, duckdb: Any, source: str | Path) -> list[tuple[Any, ...]]:
    """Every exported database's ``recorder_stats`` rows under ``source``'s root, as
    ``RECORDER_STATS_COLUMNS`` values, each worker named by its server and database."""
    files = sorted(str(p) for p in (_static_root(Path(source)) / STATS_DIR).glob("*.parquet"))
    if not files:
        return []
    try:
        con.read_parquet(files, union_by_name=True).create_view("stats_in")
        names = {r[0] for r in con.execute("describe stats_in").fetchall()}
        values = [
            "server || '/' || source_id || ':' || worker_id"
            if c == "worker_id"
            else _column_or_null(c, names)
            for c in RECORDER_STATS_COLUMNS
        ]
        return list(con.execute(f"select {', '.join(values)} from stats_in").fetchall())
    except duckdb.Error as exc:
        raise SchemaError(f"{files[0]}: recorder stats unreadable ({_first_line(exc)})") from None


def find_shards(source: str | Path) -> list[Path]:
    """The Parquet files of a directory (recursively) or a glob, sorted; ``SchemaError``
    naming the argument when there are none."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        shards = sorted(p for p in path.rglob("*.parquet") if p.is_file() and not _hidden(p, path))
    elif path.is_file():
        shards = [path]
    elif any(c in _GLOB_CHARS for c in text):
        shards = []
        root = _static_root(path)
        for match in sorted(glob.glob(text, recursive=True)):
            found = Path(match)
            if _hidden(found, root):
                continue
            if found.is_dir():
                shards.extend(
                    sorted(
                        p for p in found.rglob("*.parquet") if p.is_file() and not _hidden(p, root)
                    )
                )
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


@dataclass
class Loaded:
    """What ``load_shards`` wrote into the report."""

    report: Path
    shards: int
    selection: Selection


def load_shards(
    source: str | Path,
    report: str | Path,
    *,
    progress: Progress | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    per_place: int = DEFAULT_PER_PLACE,
) -> Loaded:
    """Write the shard rows the audit reads (``fleet_select``) into a fresh traffic
    database at ``report``, with the whole traffic's totals and templates beside them.

    Every shard is checked before anything is written (``SchemaError`` naming the first
    unreadable one); the report is built under a temporary name and replaces an earlier
    report only when complete. A file at ``report`` that is not such a report is never
    overwritten.
    """
    duckdb, _ = require_fleet()
    out = Path(report)
    shards = find_shards(source)
    if out.exists():
        _require_report(out)
    elif not out.absolute().parent.is_dir():
        raise SchemaError(f"{out}: directory {out.absolute().parent} does not exist")

    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    spill = tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".spill", dir=out.absolute().parent)
    # DuckDB would take most of the machine's memory; past this it spills to disk.
    con = duckdb.connect(
        config={
            "threads": os.cpu_count() or 1,
            "memory_limit": DUCKDB_MEMORY,
            "temp_directory": spill,
            "preserve_insertion_order": False,
        }
    )
    try:
        all_names: set[str] = set()
        for shard in shards:  # footers first: a bad shard is named before any work
            all_names |= _shard_columns(con, duckdb, shard)
        # In hour order (then host), as the files list them.
        files = [str(s) for s in sorted(shards, key=_hour_first)]
        try:
            shard_rows = con.read_parquet(
                files, hive_partitioning=False, union_by_name=True, filename=True
            )
            shard_rows.create_view("shards")
            selection = select_rows(con, max_rows=max_rows, per_place=per_place)
            stats = recorder_stats(con, duckdb, source)
            select = ", ".join(_column_or_null(c, all_names) for c in ROW_COLUMNS)
            cursor = con.execute(
                f"""select {select} from shards q
                    semi join keep k on k.fh = hash(q.filename) and k.id = q.id
                    order by q.started_at, q.filename, q.id"""
            )
            remove_database_files(tmp)
            create_private_file(tmp)
            _write_report(tmp, cursor, selection, stats, progress)
        except duckdb.Error as exc:
            raise SchemaError(f"reading the shards failed: {_first_line(exc)}") from None
        remove_database_files(out, main=False)  # an old report's, never the new one's
        os.replace(tmp, out)
    except BaseException:
        remove_database_files(tmp)
        raise
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)
    return Loaded(out, len(shards), selection)


def _shard_columns(con: Any, duckdb: Any, shard: Path) -> set[str]:
    """The columns of a shard's footer; ``SchemaError`` naming it if unreadable."""
    try:
        names = {
            r[0] for r in con.execute("select name from parquet_schema(?)", [str(shard)]).fetchall()
        }
    except duckdb.Error as exc:
        raise SchemaError(f"{shard}: not a readable Parquet shard ({_first_line(exc)})") from None
    missing = {"id", "started_at", "method", "url"} - names
    if missing:
        raise SchemaError(f"{shard}: not a traffic shard (no column {', '.join(sorted(missing))})")
    return names


def _write_report(
    path: Path,
    cursor: Any,
    selection: Selection,
    stats: list[tuple[Any, ...]],
    progress: Progress | None,
) -> None:
    """The selected rows, then the recorders' stats, the templates, totals and sampled
    places beside them."""
    conn = sqlite3.connect(path)
    try:
        ensure_schema(conn)
        # A new file, made whole or removed: no journal while loading, WAL again after.
        conn.execute("pragma journal_mode = off")
        conn.execute("pragma synchronous = off")
        loaded = 0
        with conn:
            while batch := cursor.fetchmany(BATCH_ROWS):
                conn.executemany(INSERT_SQL, batch)
                loaded += len(batch)
                if progress is not None:
                    progress(loaded)
            meta = {
                REPORT_MARKER_KEY: "1",
                TRAFFIC_ROWS: str(selection.rows_total),
                TRAFFIC_REDIRECTS: str(selection.redirects_total),
            }
            conn.executemany(
                f"insert or replace into {META_TABLE} (key, value) values (?, ?)",
                meta.items(),
            )
            if stats:
                columns = ", ".join(RECORDER_STATS_COLUMNS)
                conn.executemany(
                    f"insert or replace into recorder_stats ({columns}) "
                    f"values ({', '.join('?' for _ in RECORDER_STATS_COLUMNS)})",
                    stats,
                )
            conn.execute(
                f"create table {PATH_TEMPLATES} (path text primary key, template text not null)"
            )
            conn.executemany(
                f"insert into {PATH_TEMPLATES} values (?, ?)", selection.templates.items()
            )
            if selection.sampled:
                conn.execute(
                    f"""create table {SAMPLED_PLACES} (source text, method text,
                        status integer, requests integer)"""
                )
                conn.executemany(
                    f"insert into {SAMPLED_PLACES} values (?, ?, ?, ?)", selection.places
                )
        conn.execute("pragma journal_mode = wal")
    finally:
        conn.close()


def is_fleet_report(path: str | Path) -> bool:
    """A report this module made (its rows are a selection of some shards')."""
    return has_meta_key(path, REPORT_MARKER_KEY)


def compact_report(path: str | Path) -> tuple[int, int]:
    """After the audit: keep only the requests and chains the findings cite (each
    example request, every hop of each example chain, and the hops they are linked
    to), then VACUUM. Returns (requests, chains) kept."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("create temp table cited (id integer primary key)")
        with conn:
            conn.execute(
                """insert or ignore into temp.cited select example_request_id from findings
                   where example_request_id is not null"""
            )
            conn.execute(
                """insert or ignore into temp.cited
                   select json_extract(h.value, '$.request_id')
                   from chains c, json_each(c.hops) h
                   where c.id in (select example_chain_id from findings)"""
            )
            conn.execute(
                """insert or ignore into temp.cited select follow_up_of from requests
                   where id in (select id from temp.cited) and follow_up_of is not null"""
            )
            conn.execute(
                """insert or ignore into temp.cited select id from requests
                   where follow_up_of in (select id from temp.cited)"""
            )
            conn.execute(
                """delete from chains where id not in (
                     select example_chain_id from findings where example_chain_id is not null)"""
            )
            conn.execute("delete from requests where id not in (select id from temp.cited)")
            conn.execute(
                """update requests set follow_up_of = null, link_confidence = null
                   where follow_up_of not in (select id from requests)"""
            )
        conn.execute("vacuum")
        kept = conn.execute(
            "select (select count(*) from requests), (select count(*) from chains)"
        ).fetchone()
        return int(kept[0]), int(kept[1])
    finally:
        conn.close()


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
    if not is_fleet_report(path):
        raise SchemaError(
            f"{path}: exists and is not a fleet audit report; refusing to replace it "
            "(name another file with --report)"
        )
