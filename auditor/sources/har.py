"""Import a HAR 1.2 file (browser DevTools, mitmproxy, Charles...) as recorded requests.

Every entry becomes one ``requests`` row built the way the recorder builds its
rows: normalized effective URL, redacted query, resolved ``Location``, no bodies,
cookies or Authorization values. All entries of one file share one keyed client
hash, so the audit's normal hop linking (same client, URL == Location, within the
window) links the redirect hops the browser followed.

The whole file is validated before anything is written, then inserted in one
transaction: a malformed HAR imports nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from auditor.record.rows import RowBuilder
from auditor.record.writer import load_secret
from auditor.redaction import redacted_path
from auditor.store.journal import unpack
from auditor.store.requests import INSERT_SQL, ROW_COLUMNS
from auditor.store.schema import (
    SchemaError,
    check_traffic_db,
    connect,
    create_private_file,
    ensure_schema,
)
from auditor.urls import DEFAULT_PORTS, TrustedProxies, build_url, resolve_location

DEFAULT_LINK_WINDOW = 30.0  # seconds; the audit's default linking window
_REQUEST_ID_HEADERS = ("x-request-id", "x-correlation-id", "request-id")


class HarError(Exception):
    """The HAR file cannot be imported; the message is one line naming the entry."""


@dataclass
class HarImport:
    """What an import wrote and what it noticed."""

    rows: int
    skipped: list[str]  # one line per entry left out (no response, not http(s))
    ambiguous: list[str]  # redirects with more than one candidate follow-up
    client_key: str
    worker_id: str


def _headers(message: dict[str, Any], where: str) -> list[tuple[str, str]]:
    headers = message.get("headers", [])
    if not isinstance(headers, list):
        raise HarError(f"{where}: headers is not a list")
    pairs = []
    for header in headers:
        if (
            not isinstance(header, dict)
            or not isinstance(header.get("name"), str)
            or not isinstance(header.get("value"), str)
        ):
            raise HarError(f"{where}: a header is not a {{name, value}} pair of strings")
        pairs.append((header["name"].lower(), header["value"]))
    return pairs


def _first(headers: list[tuple[str, str]], *names: str) -> str | None:
    return next((value for name, value in headers if name in names), None)


def parse_har_time(value: Any) -> float:
    """``startedDateTime`` (ISO 8601) as unix epoch seconds; a naive time is taken as UTC."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"startedDateTime {value!r} is not an ISO 8601 date")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"startedDateTime {value!r} is not an ISO 8601 date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _resolution_ms(value: str) -> float:
    """The precision of a ``startedDateTime``: 1 ms for "...T10:00:00.123Z"."""
    seconds = value.partition("T")[2]
    digits = len(re.split(r"[^0-9]", seconds.partition(".")[2], maxsplit=1)[0])
    return 1000.0 / 10**digits


# Browsers stamp ``startedDateTime`` from the wall clock and measure ``time`` on a
# monotonic one; within a redirect chain the two disagree by some hundredths of a
# millisecond (measured with Chromium under load: within ±0.03 ms).
CLOCK_DRIFT_MS = 0.5


def _duration_ms(elapsed: float | None, slack_ms: float) -> float | None:
    """The entry's ``time``; a redirect's less ``slack_ms``.

    HAR writers truncate ``startedDateTime`` (Chromium and Firefox to the
    millisecond) while ``time`` is measured exactly, so a browser's follow-up
    hop can appear to start up to one tick, plus the drift between the two
    clocks, before the redirect it follows ended. Linking requires the follow-up
    to start after the redirect ended; shortening each redirect by one tick plus
    ``CLOCK_DRIFT_MS`` keeps that true for real follow-ups.
    """
    if elapsed is None or elapsed < 0:
        return None
    return round(max(0.0, float(elapsed) - slack_ms), 3)


def _http_version(value: Any) -> str | None:
    # ASGI spells versions "1.1" / "2"; HAR writers say "HTTP/1.1", "h2", "http/2.0", "h3".
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().lower().removeprefix("http/")
    text = {"h2": "2", "h3": "3", "2.0": "2", "3.0": "3", "h2c": "2"}.get(text, text)
    return text or None


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _declared_size(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() else None


def load_entries(text: str) -> list[dict[str, Any]]:
    """``log.entries`` of a HAR document, or HarError for a file that is not a HAR."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarError(
            f"not valid JSON (truncated or corrupt?): {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("log"), dict):
        raise HarError("not a HAR file: no top-level 'log' object")
    entries = document["log"].get("entries")
    if not isinstance(entries, list):
        raise HarError("not a HAR file: 'log.entries' is missing or not a list")
    return entries


class _EntryRows:
    """Validates entries and turns them into rows in ``ROW_COLUMNS`` order."""

    def __init__(self, builder: RowBuilder, identity: str) -> None:
        self.builder = builder
        self.identity = identity
        self.client_key = builder.keyed_hash(identity)

    def build(self, index: int, entry: Any) -> tuple[Any, ...] | str:
        """A row, or a one-line reason the entry is skipped; HarError when it is malformed."""
        where = f"entry {index}"
        if not isinstance(entry, dict):
            raise HarError(f"{where}: not an object")
        request = entry.get("request")
        if not isinstance(request, dict):
            raise HarError(f"{where}: no 'request' object")
        raw_url = request.get("url")
        if not isinstance(raw_url, str) or not raw_url:
            raise HarError(f"{where}: request has no 'url'")
        where = f"entry {index} ({raw_url[:200]})"
        method = request.get("method")
        if not isinstance(method, str) or not method:
            raise HarError(f"{where}: request has no 'method'")
        response = entry.get("response")
        if not isinstance(response, dict):
            raise HarError(f"{where}: no 'response' object")
        status = response.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= 999:
            raise HarError(f"{where}: response status {status!r} is not an HTTP status code")
        try:
            started_at = parse_har_time(entry.get("startedDateTime"))
        except ValueError as exc:
            raise HarError(f"{where}: {exc}") from None
        resolution_ms = _resolution_ms(entry["startedDateTime"])
        elapsed = entry.get("time", None)
        if elapsed is not None and (
            isinstance(elapsed, bool)
            or not isinstance(elapsed, int | float)
            or not math.isfinite(elapsed)
        ):
            raise HarError(f"{where}: time {elapsed!r} is not a number of milliseconds")
        req_headers = _headers(request, f"{where}: request")
        resp_headers = _headers(response, f"{where}: response")
        try:
            parts = urlsplit(raw_url)
            port = parts.port
        except ValueError as exc:
            raise HarError(f"{where}: request url cannot be parsed ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return f"{where}: not an http(s) request"
        if status == 0:  # blocked, cancelled or failed before a response arrived
            reason = response.get("_error") or "no response"
            return f"{where}: {reason}"

        host = parts.hostname.lower()
        if ":" in host:
            host = f"[{host}]"
        if port is not None and port != DEFAULT_PORTS[scheme]:
            host = f"{host}:{port}"
        # Redacted as the recorder does (RowBuilder.build_portable): after normalization,
        # the Location after resolution, so a redirect and its follow-up still link.
        redactor = self.builder.redactor
        query = redactor.query(parts.query)
        sent_url = build_url(scheme, host, parts.path or "/", parts.query)
        url = redactor.url(sent_url)
        path = unquote(parts.path or "/")
        if url is not sent_url:
            path = redacted_path(sent_url, url, path)

        locations = [value for name, value in resp_headers if name == "location"]
        redirect_url = response.get("redirectURL")
        if not locations and isinstance(redirect_url, str) and redirect_url:
            locations = [redirect_url]
        location = location_url = None
        if locations:
            location = redactor.reference(locations[0])
            resolved = resolve_location(sent_url, locations[0], redact=False)
            location_url = None if resolved is None else redactor.url(resolved)
        is_redirect = 300 <= status < 400

        post = request.get("postData")
        content_length = _declared_size(_first(req_headers, "content-length"))
        if content_length is None and isinstance(post, dict) and isinstance(post.get("text"), str):
            content_length = len(post["text"].encode("utf-8")) or None
        if content_length is None:
            content_length = _size(request.get("bodySize")) or None
        content_type = _first(req_headers, "content-type")
        if content_type is None and isinstance(post, dict):
            content_type = post.get("mimeType") or None
        content = response.get("content")
        body_size = _size(response.get("bodySize"))
        if body_size is None and isinstance(content, dict):
            body_size = _size(content.get("size"))
        connection = entry.get("connection")
        error = response.get("_error") or entry.get("_error")
        server_ip = entry.get("serverIPAddress")

        values: dict[str, Any] = {
            "started_at": started_at,
            "duration_ms": _duration_ms(
                elapsed, resolution_ms + CLOCK_DRIFT_MS if is_redirect else 0.0
            ),
            "method": method.upper(),
            "scheme": scheme,
            "host": host,
            "path": path,
            "query": query,
            "url": url,
            "route": None,
            "status": status,
            "location": location,
            "location_url": location_url,
            "locations": json.dumps([redactor.reference(v) for v in locations])
            if len(locations) > 1
            else None,
            "request_body_size": content_length,
            "request_body_chunked": int(
                "chunked" in (_first(req_headers, "transfer-encoding") or "").lower()
            ),
            "request_content_type": content_type,
            "response_body_size": body_size,
            "response_complete": 1,
            "cache_control": _first(resp_headers, "cache-control") if is_redirect else None,
            "expires": _first(resp_headers, "expires") if is_redirect else None,
            "x_forwarded_proto": _first(req_headers, "x-forwarded-proto"),
            "x_forwarded_host": _first(req_headers, "x-forwarded-host"),
            "forwarded": _first(req_headers, "forwarded"),
            "server_scheme": scheme,
            "server_host": host,
            "server_addr": server_ip if isinstance(server_ip, str) and server_ip else None,
            "client_key": self.client_key,
            "connection_key": self.builder.keyed_hash(f"{self.identity}:{connection}")
            if isinstance(connection, str | int) and not isinstance(connection, bool)
            else None,
            "client_ip": None,
            "user_agent": _first(req_headers, "user-agent"),
            "request_id": _first(req_headers, *_REQUEST_ID_HEADERS),
            "http_version": _http_version(request.get("httpVersion")),
            "error": str(error)[:200] if error else None,
            "worker_id": self.builder.worker_id,
            "has_authorization": int(_first(req_headers, "authorization") is not None),
            "has_cookie": int(_first(req_headers, "cookie") is not None),
            "forwarded_for_key": None,
        }
        return tuple(values[c] for c in ROW_COLUMNS)


_STARTED = ROW_COLUMNS.index("started_at")
_STATUS = ROW_COLUMNS.index("status")
_URL = ROW_COLUMNS.index("url")
_LOCATION_URL = ROW_COLUMNS.index("location_url")
_METHOD = ROW_COLUMNS.index("method")


def ambiguous_redirects(rows: Iterable[tuple[Any, ...]], window: float) -> list[str]:
    """Redirects for which linking has more than one candidate follow-up in this file.

    All rows of a HAR share one client key, so when the page requested the
    redirect target again within the window (a second tab, a prefetch, a retry),
    linking takes the earliest candidate, which may not be the hop the browser
    followed.
    """
    ordered = sorted(rows, key=lambda r: r[_STARTED])
    notes = []
    for i, row in enumerate(ordered):
        target = row[_LOCATION_URL]
        if not (300 <= row[_STATUS] < 400) or not target:
            continue
        candidates = [
            other
            for other in ordered[i + 1 :]
            if other[_URL] == target and 0 <= other[_STARTED] - row[_STARTED] <= window
        ]
        if len(candidates) > 1:
            notes.append(
                f"{row[_METHOD]} {row[_URL]} -{row[_STATUS]}-> {target}: "
                f"{len(candidates)} requests to the target within {window:g}s; "
                "linking takes the earliest"
            )
    return notes


def read_har(
    har_path: Path, builder: RowBuilder, identity: str
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """Validate every entry and build its row (sorted by start time); nothing is written."""
    try:
        text = har_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HarError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    entries = load_entries(text)
    converter = _EntryRows(builder, identity)
    rows: list[tuple[int, tuple[Any, ...]]] = []
    skipped = []
    for index, entry in enumerate(entries):
        built = converter.build(index, entry)
        if isinstance(built, str):
            skipped.append(built)
        else:
            rows.append((index, built))
    # Ids follow time order (ties keep file order), which linking relies on.
    rows.sort(key=lambda item: (item[1][_STARTED], item[0]))
    return [row for _, row in rows], skipped


def import_har(
    har_path: str | Path,
    db_path: str | Path,
    *,
    window: float = DEFAULT_LINK_WINDOW,
    allow_reimport: bool = False,
) -> HarImport:
    """Import one HAR file into a traffic database (created when missing).

    Raises HarError for a malformed file or one already imported (unless
    ``allow_reimport``), SchemaError for a file that is not a traffic database;
    in both cases nothing is written.
    """
    har_path, db_path = Path(har_path), Path(db_path)
    try:
        data = har_path.read_bytes()
    except OSError as exc:
        raise HarError(f"cannot read {har_path} ({exc.strerror})") from None
    if db_path.exists():
        check_traffic_db(db_path)
    elif not db_path.absolute().parent.is_dir():
        raise SchemaError(f"{db_path}: directory {db_path.absolute().parent} does not exist")
    # The client identity is the file's content: re-importing it gives the same key.
    identity = "har:" + hashlib.sha256(data).hexdigest()
    worker_id = f"har:{har_path.name}"
    created = not db_path.exists()
    secret_path = db_path.with_name(db_path.name + ".key")
    had_secret = secret_path.exists()
    try:
        secret = load_secret(db_path)
        builder = RowBuilder(secret, worker_id, TrustedProxies(()), store_client_ip=False)
        rows, skipped = read_har(har_path, builder, identity)
        if not rows:  # nothing to import: neither a database nor a key file is made
            reason = f"none of its {len(skipped)} entries can be imported" if skipped else ""
            raise HarError(f"{reason} (first: {skipped[0]})" if skipped else "no entries to import")
    except BaseException:
        if not had_secret:  # leave no key file behind for a database never created
            secret_path.unlink(missing_ok=True)
        raise
    client_key = builder.keyed_hash(identity)
    if created:
        create_private_file(db_path)
    conn = connect(db_path)
    try:
        ensure_schema(conn)
        unpack(conn)  # a live recording's batches first: ids stay in recording order
        with conn:
            conn.execute("begin immediate")
            already = conn.execute(
                "select count(*) from requests where client_key = ? and worker_id = ?",
                (client_key, worker_id),
            ).fetchone()[0]
            if already and not allow_reimport:
                raise HarError(
                    f"already imported into {db_path} ({already} requests); "
                    "nothing imported (use --force to import it again)"
                )
            conn.executemany(INSERT_SQL, rows)
            _count_rows(conn, worker_id, len(rows))
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"{db_path}: cannot write ({exc})") from None
    finally:
        conn.close()
    return HarImport(
        rows=len(rows),
        skipped=skipped,
        ambiguous=ambiguous_redirects(rows, window),
        client_key=client_key,
        worker_id=worker_id,
    )


def _count_rows(conn: sqlite3.Connection, worker_id: str, count: int) -> None:
    now = datetime.now(UTC).timestamp()
    conn.execute(
        """insert into recorder_stats (worker_id, started_at, updated_at, rows_written,
             rows_skipped, dropped_queue_full, dropped_locked, dropped_disk_full,
             dropped_read_only, dropped_other, last_error)
           values (?, ?, ?, ?, 0, 0, 0, 0, 0, 0, null)
           on conflict(worker_id) do update set updated_at = excluded.updated_at,
             rows_written = rows_written + excluded.rows_written""",
        (worker_id, now, now, count),
    )
