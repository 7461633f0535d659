"""The temp subset of ``requests`` that linking, chains and every rule read.

Nothing after the first scan rereads the million rows of ``requests``:
``copy_responses`` copies, in one scan, the rows an audit step can be about (every
redirect, anything with a Location, bodies where none may be, DELETEs answered 200)
into ``temp.audit_responses``. After linking, ``copy_follow_ups`` copies the linked
follow-up requests into ``temp.audit_follow_ups`` and marks each redirect
``followed``. Each rule is then a quick grouped query over the subset.
"""

from __future__ import annotations

import sqlite3

from auditor.analysis.rules.base import AuditContext
from auditor.analysis.sampled import fill_weights
from auditor.store import schema

RESPONSES = "audit_responses"
TEMPLATES = "audit_templates"  # path -> inferred route template
FOLLOW_UPS = "audit_follow_ups"
_BUILT = f"{RESPONSES}_of"  # the newest request id the subset holds, once complete

# The columns each table copies from ``requests``; ``id`` becomes the table's rowid.
RESPONSE_COLUMNS = (
    "id, started_at, duration_ms, method, scheme, host, path, query, url, route, status, "
    "location, location_url, locations, request_body_size, request_body_chunked, "
    "response_body_size, response_complete, cache_control, expires, "
    "x_forwarded_proto, x_forwarded_host, forwarded, "
    "server_scheme, server_host, server_addr, user_agent, client_key, connection_key, "
    "request_content_type, has_authorization, has_cookie, forwarded_for_key, request_id"
)
FOLLOW_UP_COLUMNS = (
    "id, follow_up_of, started_at, method, url, status, location_url, client_key, route, "
    "user_agent, request_body_size, request_body_chunked, link_confidence, "
    "has_authorization, has_cookie"
)

# The rows an audit step can be about (SQL that SQLite and DuckDB both read).
RESPONSE_ROWS_SQL = """(location is not null
       or location_url is not null
       or (status between 300 and 399 and status != 304)
       or (status in (204, 304) and response_body_size > 0)
       or (method = 'DELETE' and status = 200))"""
# A table of (path, template) inferred over more traffic than this file holds (a fleet
# report keeps the rows the audit reads, sometimes of a sample of clients): when it
# exists, ``source`` takes its templates, which are those of the whole traffic.
PATH_TEMPLATES = "path_templates"

RESPONSES_SQL = f"""
insert into {RESPONSES}
select {RESPONSE_COLUMNS}, 0 as followed, null as source
from requests
where id <= ?
  and {RESPONSE_ROWS_SQL}
order by id
"""

FOLLOW_UPS_SQL = f"""
insert into {FOLLOW_UPS}
select {FOLLOW_UP_COLUMNS}
from requests
where id in (select id from requests {{indexed}} where follow_up_of is not null) and id <= ?
order by id
"""

_AFFINITY = {int: "INT", float: "REAL", str: "TEXT"}


def _create(conn: sqlite3.Connection, table: str, columns: str, *extra: str) -> None:
    """An empty temp table of ``requests`` columns (their types), ``id`` its rowid."""
    types = {name: _AFFINITY[kind] for name, kind in schema.REQUEST_COLUMNS.items()}
    names = [name.strip() for name in columns.split(",")]
    ddl = ", ".join(
        "id integer primary key" if name == "id" else f'"{name}" {types[name]}' for name in names
    )
    conn.execute(f"create temp table {table} ({ddl}{''.join(f', {e}' for e in extra)})")


def _newest(conn: sqlite3.Connection) -> int:
    return int(conn.execute("select coalesce(max(id), 0) from requests").fetchone()[0])


def copy_responses(conn: sqlite3.Connection) -> int:
    """(Re)build ``audit_responses`` (not yet ``followed``); return the newest id it covers."""
    newest = _newest(conn)
    for table in (RESPONSES, FOLLOW_UPS, _BUILT):
        conn.execute(f"drop table if exists temp.{table}")
    _create(conn, RESPONSES, RESPONSE_COLUMNS, "followed", "source text")
    in_transaction = conn.in_transaction
    conn.execute(RESPONSES_SQL, (newest,))
    _fill_sources(conn)
    fill_weights(conn, RESPONSES)
    if not in_transaction:  # our insert began one: end it (linking reads in fresh ones)
        conn.commit()
    return newest


def _fill_sources(conn: sqlite3.Connection) -> None:
    """``source``: the recorded route template, else the template inferred from every
    path the subset holds (``templates.infer_templates``; ``path_templates`` when the
    file has it), kept in ``audit_templates``."""
    from auditor.analysis.templates import infer_templates

    conn.execute(f"drop table if exists temp.{TEMPLATES}")
    conn.execute(f"create temp table {TEMPLATES} (path text primary key, template text)")
    if schema.has_table(conn, PATH_TEMPLATES):
        conn.execute(f"insert into {TEMPLATES} select path, template from main.{PATH_TEMPLATES}")
    else:
        paths = [p for (p,) in conn.execute(f"select distinct path from {RESPONSES}")]
        conn.executemany(
            f"insert into {TEMPLATES} values (?, ?)", sorted(infer_templates(paths).items())
        )
    conn.execute(
        f"""update {RESPONSES} set source = coalesce(
              route, (select template from {TEMPLATES} t where t.path = {RESPONSES}.path), path)"""
    )


def copy_follow_ups(conn: sqlite3.Connection, newest: int) -> None:
    """After linking: copy the follow-ups, mark the followed redirects, mark it complete."""
    conn.execute(f"drop table if exists temp.{FOLLOW_UPS}")
    _create(conn, FOLLOW_UPS, FOLLOW_UP_COLUMNS)
    has_index = conn.execute(
        "select 1 from sqlite_master where type = 'index' and name = 'idx_requests_follow_up_of'"
    ).fetchone()
    indexed = "indexed by idx_requests_follow_up_of" if has_index else ""
    conn.execute(FOLLOW_UPS_SQL.format(indexed=indexed), (newest,))
    conn.execute(f"create index temp.{FOLLOW_UPS}_of on {FOLLOW_UPS}(follow_up_of)")
    conn.execute(
        f"update {RESPONSES} set followed = 1 where id in (select follow_up_of from {FOLLOW_UPS})"
    )
    conn.execute(f"drop table if exists temp.{_BUILT}")
    conn.execute(f"create temp table {_BUILT} as select ? as max_id", (newest,))


def ensure_responses(ctx: AuditContext) -> None:
    """Build the subset unless it is complete and no request was added since."""
    if ctx.responses_only:  # linking still runs: the rules then read responses only
        return
    conn = ctx.conn
    built = schema.has_table(conn, _BUILT, schema="temp")
    if built and conn.execute(f"select max_id from temp.{_BUILT}").fetchone()[0] == _newest(conn):
        return
    copy_follow_ups(conn, copy_responses(conn))
