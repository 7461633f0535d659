"""Follow-up hop linking and redirect chains.

The linking rule (DESIGN.md, "Hop linking"): request Q is the follow-up of redirect R when

1. Q comes from the same client: the same client key and the same user agent;
2. Q starts after R's response ended, at most ``window`` seconds later;
3. Q's URL equals R's resolved Location: the whole normalized URL when the
   Location is absolute, only path and query when it is relative;
4. Q is the earliest such request on R's own connection (clients follow on their
   keep-alive connection), else the earliest on any connection of the client;
5. no other redirect claimed Q: redirects are served in time order, same-connection
   matches before cross-connection ones, and one request follows one redirect.

A redirect with no such Q stays unlinked: a client that never follows (urllib on a
307 POST) is never mislinked to a later request of another client behind its IP.
Chains are the linked runs that start at a redirect which is not itself a follow-up.

Scale: one indexed SQL pass picks the candidate rows (requests whose URL or path is
some redirect's target for that client), then one sorted pass in Python matches them.
"""

from __future__ import annotations

import json
import sqlite3
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from auditor.urls import is_absolute_location

# A redirect is any 3xx response but 304 Not Modified.
REDIRECT_SQL = "status between 300 and 399 and status != 304"
# duration_ms is rounded to the microsecond; allow that much clock slack.
CLOCK_SLACK = 2e-6
# The path and query of a normalized http(s) URL, as ``split_url`` cuts it.
PATH_SQL = "substr(q.url, instr(substr(q.url, 9), '/') + 8)"
ARROW = " —{status}→ "


def is_redirect(status: int | None) -> bool:
    """True for the responses a chain continues through: 3xx except 304."""
    return status is not None and 300 <= status <= 399 and status != 304


def split_url(url: str) -> tuple[str, str]:
    """(origin, path and query) of a normalized absolute URL: fast, no parsing."""
    if "://" not in url:
        return "", url
    slash = url.find("/", 8)
    return (url[:slash], url[slash:]) if slash >= 0 else (url, "/")


def _rows(conn: sqlite3.Connection, sql: str, params: Iterable[Any] = ()) -> Iterator[Any]:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples whatever the connection's factory
    return iter(cursor.execute(sql, tuple(params)))


# --- linking ------------------------------------------------------------------------


@dataclass(slots=True)
class _Redirect:
    id: int
    started_at: float
    ended_at: float
    client: tuple[str, str | None]  # client key, user agent
    connection_key: str | None
    target: str  # location_url when the Location is absolute, else its path and query


class _Queue:
    """One key's candidate requests in time order: finds the earliest unclaimed one."""

    __slots__ = ("ids", "next", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.ids: list[int] = []
        self.next: list[int] = []  # skip pointers over claimed entries

    def add(self, started_at: float, request_id: int) -> None:
        self.next.append(len(self.ids) + 1)
        self.times.append(started_at)
        self.ids.append(request_id)

    def earliest_free(
        self, start: float, end: float, claimed: set[int], exclude: int
    ) -> int | None:
        """The first request id in [start, end] not in ``claimed`` (and not ``exclude``)."""
        i = bisect_left(self.times, start)
        n = len(self.ids)
        while i < n and self.times[i] <= end:
            j, skipped = i, []
            while j < n and self.ids[j] in claimed:
                skipped.append(j)
                j = self.next[j]
            for k in skipped:  # claims are permanent: compress the path
                self.next[k] = j
            if j >= n or self.times[j] > end:
                return None
            if self.ids[j] != exclude:
                return self.ids[j]
            i = j + 1
        return None


def _load_redirects(conn: sqlite3.Connection) -> list[_Redirect]:
    redirects = []
    for rid, started, duration_ms, client_key, agent, conn_key, location, location_url in _rows(
        conn,
        f"""select id, started_at, duration_ms, client_key, user_agent, connection_key,
                   location, location_url
            from requests
            where {REDIRECT_SQL} and location_url is not null and client_key is not null""",
    ):
        absolute = location is None or is_absolute_location(location)
        if absolute and not location_url.startswith(("http://", "https://")):
            continue  # mailto:, javascript: ... never reach this app
        target = location_url if absolute else split_url(location_url)[1]
        ended = started + (duration_ms or 0.0) / 1000
        redirects.append(_Redirect(rid, started, ended, (client_key, agent), conn_key, target))
    redirects.sort(key=lambda r: (r.started_at, r.id))
    return redirects


def _load_candidates(
    conn: sqlite3.Connection, redirects: list[_Redirect]
) -> tuple[dict[tuple[Any, ...], _Queue], dict[tuple[Any, ...], _Queue]]:
    """Queues of possible follow-ups, by (client, target) and by (connection, target).

    One scan of ``requests`` with one index probe per row: is this (client key, path)
    some redirect's target path? Full URLs are compared in Python.
    """
    conn.execute("create temp table if not exists link_targets (client_key text, path text)")
    conn.execute("delete from temp.link_targets")
    conn.executemany(
        "insert into temp.link_targets values (?, ?)",
        {(r.client[0], split_url(r.target)[1]) for r in redirects},
    )
    conn.execute(
        "create index if not exists temp.link_targets_key on link_targets (client_key, path)"
    )
    try:
        rows = sorted(
            _rows(
                conn,
                f"""select q.started_at, q.id, q.client_key, q.user_agent, q.connection_key,
                           q.url, {PATH_SQL}
                    from requests q
                    where exists (select 1 from temp.link_targets t
                                  where t.client_key = q.client_key and t.path = {PATH_SQL})""",
            )
        )
    finally:
        conn.execute("drop table temp.link_targets")
    # Only the keys some redirect will look up get a queue.
    by_client = {(*r.client, r.target): _Queue() for r in redirects}
    by_connection = {(*r.client, r.connection_key, r.target): _Queue() for r in redirects}
    for started, qid, client_key, agent, conn_key, url, path in rows:
        for target in (url, path):
            if (queue := by_client.get((client_key, agent, target))) is not None:
                queue.add(started, qid)
            # behind a proxy one connection carries many clients: the key keeps both
            if (queue := by_connection.get((client_key, agent, conn_key, target))) is not None:
                queue.add(started, qid)
    return by_client, by_connection


def _match(
    redirects: list[_Redirect],
    by_client: dict[tuple[Any, ...], _Queue],
    by_connection: dict[tuple[Any, ...], _Queue],
    window: float,
) -> dict[int, int]:
    """Follow-up id -> redirect id, by the rule in the module docstring."""
    claimed: set[int] = set()
    follow_ups: dict[int, int] = {}

    def claim(r: _Redirect, queue: _Queue | None) -> bool:
        if queue is None:
            return False
        q = queue.earliest_free(r.ended_at - CLOCK_SLACK, r.ended_at + window, claimed, r.id)
        if q is None:
            return False
        claimed.add(q)
        follow_ups[q] = r.id
        return True

    # First on the redirect's own connection, redirects in time order...
    unlinked = [
        r
        for r in redirects
        if r.connection_key is None
        or not claim(r, by_connection.get((*r.client, r.connection_key, r.target)))
    ]
    # ...then on any connection of the same client.
    for r in unlinked:
        claim(r, by_client.get((*r.client, r.target)))
    return follow_ups


def link_requests(conn: sqlite3.Connection, *, window: float = 30.0) -> int:
    """Recompute ``requests.follow_up_of`` for every row; return the number of links.

    Runs inside the caller's transaction and updates only that column. While
    recorders may be writing, the caller should hold ``begin immediate``: a deferred
    transaction that has read cannot upgrade to a write after their commits.
    """
    redirects = _load_redirects(conn)
    by_client, by_connection = _load_candidates(conn, redirects) if redirects else ({}, {})
    follow_ups = _match(redirects, by_client, by_connection, window)
    # Clear then set, writing only the rows whose link changed (re-runs touch few pages).
    current = dict(
        _rows(conn, "select id, follow_up_of from requests where follow_up_of is not null")
    )
    stale = [(q,) for q in current if q not in follow_ups]
    conn.executemany("update requests set follow_up_of = null where id = ?", stale)
    changed = [(follow_ups[q], q) for q in sorted(follow_ups) if current.get(q) != follow_ups[q]]
    conn.executemany("update requests set follow_up_of = ? where id = ?", changed)
    return len(follow_ups)


# --- chains -------------------------------------------------------------------------


@dataclass(slots=True)
class _Hop:
    id: int
    started_at: float
    method: str
    url: str
    status: int
    location_url: str | None
    client_key: str | None


def follow_up_method(method: str, status: int) -> str:
    """The method most clients use to follow: GET after 303, and after 301/302 to a POST."""
    if method != "HEAD" and (status == 303 or (status in (301, 302) and method == "POST")):
        return "GET"
    return method


def chain_outcome(hops: list[_Hop], known_hosts: KnownHosts) -> str:
    """loop (revisits a method and URL), error (ends in 4xx/5xx), completed, external
    (the last Location names a host never recorded) or unfollowed."""
    seen: set[tuple[str, str]] = set()
    for hop in hops:
        if (hop.method, hop.url) in seen:
            return "loop"
        seen.add((hop.method, hop.url))
    last = hops[-1]
    if not is_redirect(last.status):
        return "error" if last.status >= 400 else "completed"
    target = last.location_url
    if target is None:
        return "unfollowed"
    if (follow_up_method(last.method, last.status), target) in seen:
        return "loop"
    host = _hostname(target)
    if (
        host is not None
        and host not in {_hostname(h.url) for h in hops}
        and (host not in known_hosts)
    ):
        return "external"
    return "unfollowed"


class KnownHosts:
    """Host names of every recorded request, read on first use only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._hosts: set[str | None] | None = None

    def __contains__(self, host: object) -> bool:
        if self._hosts is None:
            self._hosts = {
                _hostname(f"//{h}")
                for (h,) in _rows(self.conn, "select distinct host from requests")
            }
        return host in self._hosts


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def path_text(hops: list[_Hop]) -> str:
    """``POST /a —301→ GET /b —200``; other origins than the first hop's in full."""
    origin = split_url(hops[0].url)[0]

    def shown(url: str) -> str:
        url_origin, path = split_url(url)
        return path if url_origin == origin else url

    text = "".join(f"{h.method} {shown(h.url)}{ARROW.format(status=h.status)}" for h in hops)
    last = hops[-1]
    if not is_redirect(last.status):
        return text[: -len(ARROW.format(status=last.status))] + f" —{last.status}"
    target = shown(last.location_url) if last.location_url else "(no Location)"
    return f"{text}{target} (not followed)"


def build_chains(conn: sqlite3.Connection) -> int:
    """Delete and rebuild ``chains`` from ``follow_up_of``; return the number of chains.

    One chain per redirect that is not itself a follow-up, walking its links.
    """
    roots: list[_Hop] = []
    next_hop: dict[int, _Hop] = {}
    for row in _rows(
        conn,
        f"""select id, started_at, method, url, status, location_url, client_key, follow_up_of
            from requests where ({REDIRECT_SQL}) or follow_up_of is not null""",
    ):
        hop = _Hop(*row[:7])
        if row[7] is not None:
            next_hop[row[7]] = hop
        elif is_redirect(hop.status):
            roots.append(hop)
    roots.sort(key=lambda hop: (hop.started_at, hop.id))
    known_hosts = KnownHosts(conn)
    chains = []
    for root in roots:
        chain, visited = [root], {root.id}
        while (follower := next_hop.get(chain[-1].id)) is not None:
            if follower.id in visited:
                break
            chain.append(follower)
            visited.add(follower.id)
        last = chain[-1]
        chains.append(
            (
                root.id,
                last.id,
                sum(1 for h in chain if is_redirect(h.status)),
                path_text(chain),
                json.dumps(
                    [
                        {"request_id": h.id, "method": h.method, "url": h.url, "status": h.status}
                        for h in chain
                    ]
                ),
                root.url,
                last.url,
                last.status,
                chain_outcome(chain, known_hosts),
                root.client_key,
                root.started_at,
            )
        )
    conn.execute("delete from chains")
    conn.executemany(
        """insert into chains (first_request_id, last_request_id, length, path_text, hops,
             start_url, final_url, final_status, outcome, client_key, started_at)
           values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        chains,
    )
    return len(chains)
