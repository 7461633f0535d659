"""Tables, indexes, views and migrations of a traffic database.

One SQLite file holds what the recorder writes (``request_batches``, unpacked into
``requests`` by readers; ``recorder_stats``)
and what ``audit`` derives from it (``chains``, ``findings``, ``audit_runs``).
The schema version lives in ``auditor_meta`` so a later release can migrate an
existing database in place without losing rows.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import sqlite_utils

SCHEMA_VERSION = 3  # 3: request_batches, the recorder's journal
META_TABLE = "auditor_meta"
BUSY_TIMEOUT_MS = 5000

# Column order is the order Datasette shows; types are SQLite affinities.
REQUEST_COLUMNS: dict[str, Any] = {
    "id": int,
    "started_at": float,  # unix epoch seconds
    "duration_ms": float,  # to the last response body message
    "method": str,
    "scheme": str,  # effective scheme (forwarded headers only when trusted)
    "host": str,  # effective host[:port]
    "path": str,
    "query": str,  # secret-looking parameter values redacted
    "url": str,  # effective absolute URL, normalized for hop linking
    "route": str,  # route template where the framework exposes it
    "status": int,
    "location": str,  # raw first Location header
    "location_url": str,  # Location resolved against the request URL
    "locations": str,  # JSON list of every Location value when sent more than once
    "request_body_size": int,  # declared Content-Length
    "request_body_chunked": int,  # 1 when Transfer-Encoding: chunked (size unknown)
    "request_content_type": str,
    "response_body_size": int,
    "response_complete": int,  # 1 when the final body message was sent
    "cache_control": str,  # response Cache-Control on redirects
    "expires": str,  # response Expires on redirects
    "x_forwarded_proto": str,
    "x_forwarded_host": str,
    "forwarded": str,
    "server_scheme": str,  # scheme the ASGI server saw
    "server_host": str,  # Host header the server saw
    "server_addr": str,  # address the server listens on (ASGI scope "server")
    "client_key": str,  # keyed hash of the client address
    "connection_key": str,  # keyed hash of address and port: one TCP connection
    "client_ip": str,  # only with store_client_ip=True
    "user_agent": str,
    "request_id": str,  # X-Request-ID / X-Correlation-ID when present
    "http_version": str,
    "error": str,  # exception class raised by the app, if any
    "worker_id": str,
    "has_authorization": int,  # 1 when the request carried Authorization (never its value)
    "has_cookie": int,  # 1 when the request carried Cookie (never its value)
    "forwarded_for_key": str,  # keyed hash of X-Forwarded-For's first hop: a linking hint only
    "follow_up_of": int,  # id of the redirect this request followed (linking)
    "link_confidence": str,  # linking: exact (request id) | sure | ambiguous
}

CHAIN_COLUMNS: dict[str, Any] = {
    "id": int,
    "first_request_id": int,
    "last_request_id": int,
    "length": int,  # number of redirect responses in the chain
    "path_text": str,  # "POST /a -301-> GET /b -200"
    "hops": str,  # JSON list of {request_id, method, url, status}
    "start_url": str,
    "final_url": str,
    "final_status": int,
    "outcome": str,  # completed | loop | unfollowed | external | error
    "client_key": str,
    "started_at": float,
}

FINDING_COLUMNS: dict[str, Any] = {
    "id": int,
    "rule": str,
    "severity": str,  # error | warning | info
    "severity_rank": int,  # 0 error, 1 warning, 2 info: for sorting
    "title": str,
    "message": str,
    "recommendation": str,
    "spec": str,
    "method": str,
    "status": int,
    "source": str,  # route template when known, else URL
    "target": str,
    "hits": int,
    "first_seen": float,
    "last_seen": float,
    "example_request_id": int,
    "example_chain_id": int,
    "evidence": str,  # JSON: per-client evidence, parameter, targets (docs/problems.md)
    "audit_run_id": int,
}

AUDIT_RUN_COLUMNS: dict[str, Any] = {
    "id": int,
    "started_at": float,
    "duration_s": float,
    "options": str,  # JSON
    "databases": str,  # JSON list of files audited together
    "rows_scanned": int,
    "redirects_scanned": int,
    "chains": int,
    "errors": int,
    "warnings": int,
    "infos": int,
    "rows_dropped": int,  # recorder drops known at audit time
    "version": str,
}

# The recorder's journal (``store/journal.py``): rows not unpacked into requests yet.
BATCHES_TABLE = "request_batches"
BATCH_COLUMNS: dict[str, Any] = {
    "id": int,
    "worker_id": str,
    "first_started_at": float,
    "last_started_at": float,
    "rows": int,
    "data": bytes,  # pickle (protocol 5) of a list of row tuples, SHORT_ or ROW_COLUMNS
}

RECORDER_STATS_COLUMNS: dict[str, Any] = {
    "worker_id": str,
    "started_at": float,
    "updated_at": float,
    "rows_written": int,
    "rows_skipped": int,  # not kept by record="redirects" (not a loss)
    "dropped_queue_full": int,
    "dropped_locked": int,
    "dropped_disk_full": int,
    "dropped_read_only": int,
    "dropped_other": int,
    "last_error": str,
    "framework": str,  # the app's framework, noted once per process (fastapi, django, ...)
}

# recorder_stats.framework: the values the recorder notes, and how people write them.
FRAMEWORKS = {
    "fastapi": "FastAPI",
    "starlette": "Starlette",
    "django": "Django",
    "litestar": "Litestar",
    "quart": "Quart",
    "datasette": "Datasette",
}

DROP_REASONS = ("queue_full", "locked", "disk_full", "read_only", "other")
SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}

REDIRECTS_VIEW = """
select
  coalesce(route, path) as source,
  method,
  status,
  location_url as target,
  count(*) as hits,
  min(started_at) as first_seen,
  max(started_at) as last_seen,
  min(id) as example_request_id
from requests
where status between 300 and 399
group by source, method, status, target
order by hits desc
"""

REQUESTS_READABLE_VIEW = """
select
  id,
  strftime('%Y-%m-%d %H:%M:%f', started_at, 'unixepoch') as time,
  method, status, url, route, location_url, follow_up_of,
  duration_ms, client_key, user_agent, worker_id
from requests
"""


class SchemaError(Exception):
    """The file is not a traffic database this release can use."""


def connect(db_path: str | Path, *, timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """Open a connection with WAL, a busy timeout and autocommit off."""
    conn = sqlite3.connect(str(db_path), timeout=timeout_ms / 1000, check_same_thread=False)
    conn.execute(f"pragma busy_timeout = {int(timeout_ms)}")
    return conn


def create_private_file(db_path: str | Path) -> None:
    """Create an empty database file readable by its owner only (SQLite's -wal and
    -shm files inherit these permissions). An existing file is left as it is."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def restore_sidecar_modes(db_path: str | Path) -> bool:
    """Give our -wal/-shm files the database file's permissions again; True if any changed.

    SQLite creates them with the database's mode. One created while the database was
    read-only stays read-only after the database is writable again, and then every
    write fails with "readonly database" until someone notices.
    """
    try:
        mode = stat.S_IMODE(os.stat(db_path).st_mode)
    except OSError:
        return False
    if not mode & stat.S_IWUSR:
        return False
    changed = False
    for suffix in ("-wal", "-shm"):
        sidecar = f"{db_path}{suffix}"
        try:
            info = os.stat(sidecar)
            if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != mode:
                os.chmod(sidecar, mode)
                changed = True
        except OSError:
            continue
    return changed


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create or migrate every table, index and view; safe for concurrent workers."""
    db = sqlite_utils.Database(conn)
    version = _stored_version(db)
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {version} is newer than this release supports "
            f"({SCHEMA_VERSION}); upgrade redirect-auditor"
        )
    if version is None and (foreign := _foreign_tables(db)):
        # Someone else's database (the app's own, say): refuse before changing anything.
        raise SchemaError(
            f"this SQLite database belongs to something else (tables: {', '.join(foreign)}); "
            "record traffic into a file of its own"
        )
    if db.journal_mode != "wal":
        db.enable_wal()
    if version == SCHEMA_VERSION:
        return
    # BEGIN IMMEDIATE serializes the first start-up of several workers on one file.
    conn.execute("begin immediate")
    try:
        version = _stored_version(db)
        if version != SCHEMA_VERSION:
            _create_all(db)
            _add_missing_columns(db)
            db.table(META_TABLE).upsert(
                {"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key"
            )
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise


def _foreign_tables(db: sqlite_utils.Database) -> list[str]:
    names = db.execute(
        "select name from sqlite_master where type in ('table', 'view') "
        "and name not like 'sqlite_%' order by name limit 5"
    ).fetchall()
    return [name for (name,) in names]


def _stored_version(db: sqlite_utils.Database) -> int | None:
    if not db.table(META_TABLE).exists():
        return None
    row = db.execute(f"select value from {META_TABLE} where key = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def _create_all(db: sqlite_utils.Database) -> None:
    db.table(META_TABLE).create({"key": str, "value": str}, pk="key", if_not_exists=True)
    db.table("requests").create(REQUEST_COLUMNS, pk="id", if_not_exists=True)
    # Every index on requests costs each recorded row CPU in the serving process, so
    # there is one only: partial, so the recorder's rows (follow_up_of still null) skip
    # it. Analysis scans the table once or builds temp indexes of its own.
    db.execute(
        "create index if not exists idx_requests_follow_up_of on requests(follow_up_of) "
        "where follow_up_of is not null"
    )
    db.table(BATCHES_TABLE).create(BATCH_COLUMNS, pk="id", if_not_exists=True)
    db.table("recorder_stats").create(RECORDER_STATS_COLUMNS, pk="worker_id", if_not_exists=True)
    db.table("audit_runs").create(AUDIT_RUN_COLUMNS, pk="id", if_not_exists=True)
    db.table("chains").create(
        CHAIN_COLUMNS,
        pk="id",
        foreign_keys=[
            ("first_request_id", "requests", "id"),
            ("last_request_id", "requests", "id"),
        ],
        if_not_exists=True,
    )
    db.table("findings").create(
        FINDING_COLUMNS,
        pk="id",
        foreign_keys=[
            ("example_request_id", "requests", "id"),
            ("example_chain_id", "chains", "id"),
            ("audit_run_id", "audit_runs", "id"),
        ],
        if_not_exists=True,
    )
    db.table("findings").create_index(["severity_rank", "hits"], if_not_exists=True)
    db.table("findings").create_index(["rule"], if_not_exists=True)
    db.create_view("redirects", REDIRECTS_VIEW, ignore=True)
    db.create_view("requests_readable", REQUESTS_READABLE_VIEW, ignore=True)


def _add_missing_columns(db: sqlite_utils.Database) -> None:
    """Migrate an older database in place: add the columns later versions defined.
    Every existing row stays (a new column is NULL in old rows)."""
    for table, columns in (
        ("requests", REQUEST_COLUMNS),
        ("findings", FINDING_COLUMNS),
        ("recorder_stats", RECORDER_STATS_COLUMNS),
        (BATCHES_TABLE, BATCH_COLUMNS),
        ("chains", CHAIN_COLUMNS),
        ("audit_runs", AUDIT_RUN_COLUMNS),
    ):
        existing = set(db.table(table).columns_dict)
        for name, kind in columns.items():
            if name not in existing:
                db.table(table).add_column(name, kind)


def connect_read_only(db_path: str | Path) -> sqlite3.Connection:
    """A read-only connection that leaves no file behind.

    SQLite gives even a read-only connection to a WAL database its own -wal and -shm
    files. Where there is no -wal file (no connection has the database open), the
    file alone is the whole database and ``immutable=1`` reads it without them;
    otherwise the sidecars exist already and a plain read-only connection shares them.
    """
    path = Path(db_path)
    uri = f"{path.resolve().as_uri()}?mode=ro"
    if not any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-journal")):
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True)


SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")


def remove_database_files(db_path: str | Path, *, main: bool = True) -> None:
    """Delete a database file (unless ``main`` is False) and its -wal, -shm and -journal
    files, those that exist: a stale sidecar beside a new file would be read as its own."""
    for suffix in ("", *SIDECAR_SUFFIXES) if main else SIDECAR_SUFFIXES:
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)


def has_table(conn: sqlite3.Connection, name: str, *, schema: str = "main") -> bool:
    """True when ``schema`` (``main``, ``temp`` or an attached one) has table ``name``."""
    row = conn.execute(
        f"select 1 from {schema}.sqlite_master where type = 'table' and name = ?", (name,)
    ).fetchone()
    return row is not None


def has_meta_key(db_path: str | Path, key: str) -> bool:
    """True when ``auditor_meta`` of the file holds ``key`` (a read-only look; False for
    a file that cannot be read as such)."""
    try:
        conn = connect_read_only(db_path)
        try:
            row = conn.execute(f"select 1 from {META_TABLE} where key = ?", (key,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return row is not None


def check_sqlite_file(db_path: str | Path) -> None:
    """Raise SchemaError with a one-line reason unless the file is a readable, intact
    SQLite database (header, then ``pragma quick_check``: about 0.1 s per 100 MB).

    Read-only and leaves no -wal/-shm behind, so a refused file is left as it was.
    """
    path = Path(db_path)
    if not path.exists():
        raise SchemaError(f"{path}: no such file")
    if path.is_dir():
        raise SchemaError(f"{path}: is a directory, not a SQLite database")
    try:
        with path.open("rb") as fh:
            header = fh.read(16)
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read ({exc.strerror})") from None
    if header != b"SQLite format 3\x00":
        raise SchemaError(f"{path}: not a SQLite database")
    try:
        conn = connect_read_only(path)
        try:
            problems = conn.execute("pragma quick_check(1)").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{path}: damaged or unreadable SQLite database ({exc})") from None
    if problems is None or problems[0] != "ok":
        detail = " ".join(str(problems[0] if problems else "no result").split())
        detail = detail.removeprefix("*** in database main *** ")
        raise SchemaError(f"{path}: damaged SQLite database (quick_check: {detail})")


def check_traffic_db(db_path: str | Path) -> None:
    """Raise SchemaError with a one-line reason unless the file is a usable traffic database.

    Opens read-only, so a wrong file is never created, touched or migrated, and leaves
    no -wal/-shm files beside it.
    """
    path = Path(db_path)
    check_sqlite_file(path)
    try:
        conn = connect_read_only(path)
        try:
            db = sqlite_utils.Database(conn)
            if not db.table("requests").exists() or not db.table(META_TABLE).exists():
                raise SchemaError(
                    f"{path}: no recorder tables here; record traffic with RedirectRecorder "
                    "or `redirect-auditor run` first"
                )
            version = _stored_version(db)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{path}: not a usable SQLite database ({exc})") from None
    if version is None or version > SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: schema version {version} is newer than this release supports "
            f"({SCHEMA_VERSION}); upgrade redirect-auditor"
        )
