"""The ``requests`` table's column lists and its fast inserts.

The recorder's writer (through the journal), ``unpack``, HAR import, probe and the fleet
report all insert requests rows; they share the column order and the statements here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from itertools import chain
from operator import itemgetter
from typing import Any, cast

from auditor.store.schema import REQUEST_COLUMNS

# Columns a recorded row holds: every requests column but the rowid and linking's.
LINKING_COLUMNS = ("follow_up_of", "link_confidence")
ROW_COLUMNS = tuple(c for c in REQUEST_COLUMNS if c != "id" and c not in LINKING_COLUMNS)
INSERT_SQL = (
    f"insert into requests ({', '.join(ROW_COLUMNS)}) "
    f"values ({', '.join('?' for _ in ROW_COLUMNS)})"
)

# Columns an ordinary request or a plain redirect leaves NULL (no proxy headers, no
# body, no error, at most one Location, no cache headers, client_ip not stored): such
# a row is built and inserted as the other columns only (SHORT_COLUMNS). Binding NULLs
# costs sqlite3 per value: a 23-value row inserted ~0.9 us faster than 37. Location and
# its resolution are in the short shape: a redirect among ordinary rows would otherwise
# split the batch into a statement per run of one shape (1 redirect in 10: 3.48 ->
# 3.03 us a row to insert; two more NULLs cost an ordinary row ~0.1 us).
SHORT_OMITS = (
    "locations",
    "request_body_size",
    "request_content_type",
    "cache_control",
    "expires",
    "x_forwarded_proto",
    "x_forwarded_host",
    "forwarded",
    "client_ip",
    "request_id",
    "error",
    "forwarded_for_key",
)
OMIT_INDEXES = tuple(ROW_COLUMNS.index(c) for c in SHORT_OMITS)
SHORT_INDEXES = tuple(i for i in range(len(ROW_COLUMNS)) if i not in OMIT_INDEXES)
SHORT_COLUMNS = tuple(ROW_COLUMNS[i] for i in SHORT_INDEXES)


def full_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of ``SHORT_COLUMNS`` values as a full one (``ROW_COLUMNS`` order)."""
    if len(row) == len(ROW_COLUMNS):
        return row
    values: list[Any] = [None] * len(ROW_COLUMNS)
    for index, value in zip(SHORT_INDEXES, row, strict=True):
        values[index] = value
    return tuple(values)


def bind_none_directly() -> None:
    """Make ``sqlite3`` bind None without its adapter search (two failed attribute
    lookups per NULL value): about 2.4 of the 6.6 us a row of mostly-NULL columns
    costs to insert. Binding is unchanged (None still binds NULL); process-wide, but an
    adapter for None is one no app registers."""
    null: Callable[[None], None] = cast(Any, {}.get)  # {}.get(None) is None, all in C
    sqlite3.register_adapter(type(None), null)


_omitted = itemgetter(*OMIT_INDEXES)
_short = itemgetter(*SHORT_INDEXES)
_ALL_NULL = (None,) * len(OMIT_INDEXES)
_N_SHORT = len(SHORT_COLUMNS)


def _multi_row_insert(columns: tuple[str, ...], count: int) -> str:
    one = "(" + ", ".join("?" * len(columns)) + ")"
    rows = ", ".join([one] * count)
    return f"insert into requests ({', '.join(columns)}) values {rows}"


# Statement sizes: powers of two up to 512 rows (512 x 38 columns stays under SQLite's
# 32766 variables), for two column lists: at most 20 statements in the cache.
_CHUNK_SIZES = tuple(2**i for i in range(9, -1, -1))
_FULL = {size: _multi_row_insert(ROW_COLUMNS, size) for size in _CHUNK_SIZES}
_SHORT = {size: _multi_row_insert(SHORT_COLUMNS, size) for size in _CHUNK_SIZES}


def insert_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows with multi-row INSERT statements of up to 512 rows each.

    ``executemany`` releases and re-takes the GIL around every row; with the event
    loop busy each re-take waits for the interpreter's switch interval. One statement
    per 512 rows waits 512x less often. Rows of ``SHORT_COLUMNS`` values only
    (``RowBuilder.build_row``'s, most) and full rows whose ``SHORT_OMITS`` columns are
    all NULL go through a statement naming those columns only; each run of rows of one
    shape in its turn, so ids still follow the batch's order (retention and the
    analysis read them as time order).
    """
    run: list[tuple[Any, ...]] = []
    run_short = True
    for row in rows:
        is_short = len(row) == _N_SHORT
        if not is_short and _omitted(row) == _ALL_NULL:
            row, is_short = _short(row), True
        if is_short is not run_short:
            if run:
                _insert(conn, _SHORT if run_short else _FULL, run)
                run = []
            run_short = is_short
        run.append(row)
    if run:
        _insert(conn, _SHORT if run_short else _FULL, run)


def _insert(
    conn: sqlite3.Connection, statements: dict[int, str], rows: list[tuple[Any, ...]]
) -> None:
    """``rows`` (all of one shape) through ``statements``, the largest sizes first. A
    string SQLite cannot take as UTF-8 (a lone surrogate) fails its statement before
    any row of it is inserted; that statement is retried with such strings escaped."""
    start = 0
    for size in _CHUNK_SIZES:
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            params: list[Any] = []
            extend = params.extend  # ~3x faster than list(chain.from_iterable(chunk))
            for row in chunk:
                extend(row)
            try:
                conn.execute(statements[size], params)
            except UnicodeEncodeError:
                encodable = [_encodable(row) for row in chunk]
                conn.execute(statements[size], list(chain.from_iterable(encodable)))
            start += size


def _encodable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v
        for v in row
    )
