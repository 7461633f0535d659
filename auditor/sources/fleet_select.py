"""Which shard rows a fleet audit reads, chosen in DuckDB before a row reaches Python.

Two steps, over every shard at once:

1. **The rows the audit reads** (exact). The audit reads the responses an audit step
   can be about (``_subset.RESPONSE_ROWS_SQL``: redirects, Locations, bodies where none
   may be...) and, to link, the requests whose (client key, path and query) is some
   redirect's target (``linking``'s candidate scan). Every other row (about three in
   four) can change no finding: it is counted, not loaded. One real row per recorded
   host is kept too, since chains ask which hosts the traffic reached.
2. **A sample** (only past ``max_rows``), made of *link units*: one client's hops to
   one path, i.e. the redirects pointing there and every request to it. Linking pairs
   only within a unit, so a unit kept whole links as in the whole traffic. Kept:

   - for every place (source, method, status), client family and target, the units
     of ``per_place`` of its responses, smallest units first, then in hash order;
   - the units of each place's first and last response (the span it was seen over);
   - one unit for every distinct redirect that is a hop of a static chain or loop
     (the graph's chains run through concrete URLs);
   - the units a kept follow-up redirects into, along chains.

   Every place, family and target is audited, rare ones whole. Count thresholds
   (``unfollowed_min_hits``, ``temporary_min_hits``) compare counts weighted by place,
   and hits are scaled back afterwards (``analysis/sampled.py``).

Templates are inferred here over every response path of the fleet (the same set the
audit of one combined file would infer from) and handed to the audit as a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from auditor.analysis.linking import PATH_SQL
from auditor.analysis.rules._subset import RESPONSE_ROWS_SQL
from auditor.analysis.templates import infer_templates
from auditor.redirects import client_family

DEFAULT_MAX_ROWS = 1_000_000  # rows the audit reads (about 2 KB of memory each) before it samples
DEFAULT_PER_PLACE = 5  # responses audited per place, client family and target, at least
MAX_CHAIN_STEPS = 8  # hops a kept chain is followed, each way


def target_path_sql(column: str) -> str:
    """SQL for the path and query of a normalized absolute Location in ``column``, as
    ``linking.split_url`` cuts it."""
    return f"""case
        when instr({column}, '://') = 0 then {column}
        when instr(substr({column}, 9), '/') = 0 then '/'
        else substr({column}, instr(substr({column}, 9), '/') + 8) end"""


# A redirect's target with its all-digit segments as one: finer than its template
# (never two places' targets as one), coarse enough that /a/{id} -> /b/{id} is one.
TARGET_SQL = r"regexp_replace(q.location_url, '/[0-9]+(/|$|\?)', '/{id}\1', 'g')"
RESPONSE_SQL = RESPONSE_ROWS_SQL.replace("\n", " ")
REDIRECT_TOTAL_SQL = "status between 300 and 399"  # as the audit's totals count them


@dataclass
class Selection:
    """What ``select_rows`` chose; the rows themselves are in DuckDB's ``keep`` table."""

    rows_total: int = 0
    redirects_total: int = 0
    rows_read: int = 0  # the rows the audit reads (step 1)
    rows_kept: int = 0  # after sampling (step 2); = rows_read when not sampled
    sampled: bool = False
    templates: dict[str, str] = field(default_factory=dict)  # path -> template
    # (source, method, status, responses in the whole traffic), when sampled
    places: list[tuple[Any, ...]] = field(default_factory=list)


def select_rows(
    con: Any,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    per_place: int = DEFAULT_PER_PLACE,
) -> Selection:
    """Fill DuckDB's temp table ``keep (fh, id)`` (``fh`` = hash(filename)) with the rows
    of the view ``shards`` that the audit reads; return the counts."""
    import pyarrow as pa

    chosen = Selection()
    chosen.rows_total, chosen.redirects_total = con.execute(
        f"select count(*), count(*) filter (where {REDIRECT_TOTAL_SQL}) from shards"
    ).fetchone()

    paths = [
        p
        for (p,) in con.execute(
            f"select distinct path from shards where path is not null and {RESPONSE_SQL}"
        ).fetchall()
    ]
    chosen.templates = infer_templates(paths)
    con.register(
        "path_templates_in",
        pa.table({"path": list(chosen.templates), "template": list(chosen.templates.values())}),
    )
    agents = [a for (a,) in con.execute("select distinct user_agent from shards").fetchall()]
    con.register(
        "agent_families",
        pa.table(
            {
                "user_agent": pa.array(agents, pa.string()),
                "family": pa.array([client_family(a) for a in agents], pa.string()),
            }
        ),
    )

    # Linking's candidates: (client key, path and query) is some redirect's target. As
    # hashes: a collision only keeps a row that linking then leaves alone.
    con.execute(
        f"""create temp table link_targets as
            select distinct hash(client_key, {target_path_sql("location_url")}) as unit
            from shards
            where status between 300 and 399 and status != 304
              and location_url is not null and client_key is not null"""
    )
    # The URLs that redirect and the URLs redirected to: a redirect from one of the
    # second or to one of the first is a hop of a static chain or loop (``graph``).
    con.execute(
        """create temp table redirect_urls as
           select distinct hash(url) as h from shards
           where status between 300 and 399 and status != 304"""
    )
    con.execute(
        """create temp table redirect_targets as
           select distinct hash(location_url) as h from shards
           where status between 300 and 399 and status != 304 and location_url is not null"""
    )
    # Step 1, with what step 2 needs: each response's stratum (place, client family,
    # target) and place as hashes, and the link units the row belongs to (below).
    place = "coalesce(q.route, t.template, q.path), q.method, q.status"
    con.execute(
        f"""create temp table reduced as
            select hash(q.filename) as fh, q.id, q.started_at,
                   case when q.response then hash({place}) end as place,
                   case when q.response
                        then hash({place}, coalesce(f.family, ''), {TARGET_SQL})
                   end as stratum,
                   q.as_follow_up,
                   case when q.redirect and q.location_url is not null
                        then hash(q.client_key, {target_path_sql("q.location_url")})
                   end as as_redirect,
                   case when q.redirect
                         and (hash(q.location_url) in (select h from redirect_urls)
                              or hash(q.url) in (select h from redirect_targets))
                        then hash(q.method, q.url, q.status, q.location_url)
                   end as edge,
                   false as always
            from (select *, {RESPONSE_SQL} as response,
                         status between 300 and 399 and status != 304 as redirect,
                         hash(client_key, {PATH_SQL}) as as_follow_up
                  from shards q) q
            left join path_templates_in t on t.path = q.path
            left join agent_families f on f.user_agent is not distinct from q.user_agent
            where q.response or q.as_follow_up in (select unit from link_targets)"""
    )
    con.execute(
        """insert into reduced
           select first.fh, first.id, first.started_at, null, null, null, null, null, true
           from (
             select arg_min({'fh': hash(filename), 'id': id, 'started_at': started_at},
                            started_at) as first
             from shards where host is not null group by host)"""
    )
    chosen.rows_read = chosen.rows_kept = con.execute("select count(*) from reduced").fetchone()[0]

    if chosen.rows_read <= max_rows:
        con.execute("create temp table keep as select fh, id from reduced")
        return chosen

    # Step 2. A unit is one client's hops to one path: the redirects whose target it is
    # (as_redirect) and the requests to it (as_follow_up). Linking pairs within a unit
    # only, so a unit kept whole links as in the whole traffic. Units joined by a
    # redirect (a follow-up that redirects again) are kept together: chains stay whole.
    # The smallest units first (a client behind a shared address may have thousands of
    # hops to one path), then in hash order.
    chosen.sampled = True
    con.execute(
        """create temp table unit_rows as
           select unit, count(*) as n from (
             select as_follow_up as unit from reduced
             union all select as_redirect from reduced where as_redirect is not null)
           group by unit"""
    )
    con.execute(
        f"""create temp table units as
            select distinct unit from (
              select r.unit,
                     row_number() over (partition by r.stratum
                                        order by u.n, hash(r.unit), r.started_at) as nth,
                     r.started_at = min(r.started_at) over (partition by r.place)
                       or r.started_at = max(r.started_at) over (partition by r.place) as edge
              from (select coalesce(as_redirect, as_follow_up) as unit, stratum, place,
                           started_at
                    from reduced where stratum is not null) r
              join unit_rows u on u.unit = r.unit)
            where nth <= {int(per_place)} or edge"""
    )
    # Every distinct redirect (method, URL, status, Location) that is a hop of a static
    # chain or loop, once: the graph's chains run through concrete URLs.
    con.execute(
        """insert into units
           select distinct unit from (
             select r.unit, row_number() over (partition by r.edge
                                               order by u.n, hash(r.unit)) as nth
             from (select as_redirect as unit, edge from reduced
                   where edge is not null and as_redirect is not null) r
             join unit_rows u on u.unit = r.unit)
           where nth = 1 and unit not in (select unit from units)"""
    )
    for _ in range(MAX_CHAIN_STEPS):
        added = con.execute(
            """insert into units
               select distinct u from (
                 select as_redirect as u from reduced
                 where as_redirect is not null and as_follow_up in (select unit from units))
               where u not in (select unit from units)"""
        ).fetchone()[0]
        if not added:
            break
    con.execute(
        """create temp table keep as
           select fh, id, stratum is not null as response from reduced
           where always or as_follow_up in (select unit from units)
              or as_redirect in (select unit from units)"""
    )
    chosen.rows_kept = con.execute("select count(*) from keep").fetchone()[0]
    chosen.places = con.execute(
        f"""select coalesce(q.route, t.template, q.path) as source, q.method, q.status,
                   count(*) as requests
            from shards q left join path_templates_in t on t.path = q.path
            where {RESPONSE_SQL}
            group by all"""
    ).fetchall()
    return chosen
