"""The temp subset of ``requests`` every rule reads, copied once per audit connection.

Rules never rescan the million rows of ``requests``: ``ensure_responses`` copies, in
one scan, the rows a rule can be about (a Location or a redirect code, bodies where
none may be, DELETEs answered 200) into ``temp.audit_responses``, with ``followed``
saying whether some request followed the redirect, and the follow-up requests into
``temp.audit_follow_ups``. Each rule is then a quick grouped query over the subset.
"""

from __future__ import annotations

from auditor.rules.base import AuditContext

RESPONSES = "audit_responses"
FOLLOW_UPS = "audit_follow_ups"

RESPONSES_SQL = f"""
create temp table {RESPONSES} as
select id, started_at, method, scheme, host, path, query, url, route, status,
       location, location_url, locations, request_body_size, request_body_chunked,
       response_body_size, response_complete, cache_control, expires,
       x_forwarded_proto, x_forwarded_host, forwarded,
       server_scheme, server_host, server_addr, user_agent,
       0 as followed
from requests
where location is not null
   or location_url is not null
   or status in (300, 301, 302, 303, 305, 306, 307, 308)
   or (status in (204, 304) and response_body_size > 0)
   or (method = 'DELETE' and status = 200)
order by id
"""

FOLLOW_UPS_SQL = f"""
create temp table {FOLLOW_UPS} as
select id, follow_up_of, method, status, route, user_agent,
       request_body_size, request_body_chunked
from requests indexed by idx_requests_follow_up_of
where follow_up_of is not null
"""


def ensure_responses(ctx: AuditContext) -> None:
    """Build (or rebuild, when requests were added since) the temp subset tables."""
    conn = ctx.conn
    newest = conn.execute("select coalesce(max(id), 0) from requests").fetchone()[0]
    built = conn.execute(
        "select 1 from temp.sqlite_master where type = 'table' and name = ?", (f"{RESPONSES}_of",)
    ).fetchone()
    if built and conn.execute(f"select max_id from temp.{RESPONSES}_of").fetchone()[0] == newest:
        return
    for table in (RESPONSES, FOLLOW_UPS, f"{RESPONSES}_of"):
        conn.execute(f"drop table if exists temp.{table}")
    conn.execute(RESPONSES_SQL)
    conn.execute(f"create unique index temp.{RESPONSES}_id on {RESPONSES}(id)")
    has_index = conn.execute(
        "select 1 from sqlite_master where type = 'index' and name = 'idx_requests_follow_up_of'"
    ).fetchone()
    sql = (
        FOLLOW_UPS_SQL
        if has_index
        else FOLLOW_UPS_SQL.replace("indexed by idx_requests_follow_up_of", "")
    )
    conn.execute(sql)
    conn.execute(f"create index temp.{FOLLOW_UPS}_of on {FOLLOW_UPS}(follow_up_of)")
    conn.execute(
        f"update {RESPONSES} set followed = 1 where id in (select follow_up_of from {FOLLOW_UPS})"
    )
    conn.execute(f"create temp table {RESPONSES}_of as select ? as max_id", (newest,))
