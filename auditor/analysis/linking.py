"""Follow-up hop linking and redirect chains.

The linking rule (DESIGN.md, "Hop linking"): request Q is the follow-up of redirect R when

1. Q comes from the same client: the same client key and the same user agent;
2. Q starts after R's response ended, at most ``window`` seconds later;
3. Q's URL equals R's resolved Location: the whole normalized URL when the
   Location is absolute, only path and query when it is relative;
4. Q's method is R's or GET: no client follows a redirect with another method;
5. R is the latest such redirect still unlinked: requests are taken in time order,
   first matched on their own connection (clients follow on their keep-alive
   connection), then on any connection of the client. A redirect links one
   follow-up (its earliest) and a request follows one redirect.

A redirect with no such Q stays unlinked: a client that never follows (urllib on a
307 POST) is not mislinked, and an unfollowed redirect does not take the follow-up
of a later redirect to the same URL. Chains are the linked runs that start at a
redirect which is not itself a follow-up.

Scale: one SQL scan with an index probe per row picks the candidate requests (whose
path is some redirect's target for that client; on a large table two connections
scan half each, at once), then one sorted pass in Python matches them. The links are
written in one statement; ``link_and_build_chains`` (what ``audit`` runs) builds the
chains from the rows it read, in another thread, meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from auditor.urls import is_absolute_location

# A redirect is any 3xx response but 304 Not Modified.
REDIRECT_SQL = "status between 300 and 399 and status != 304"
# duration_ms is rounded to the microsecond; allow that much clock slack.
CLOCK_SLACK = 2e-6
# The path and query of a normalized http(s) URL, as ``split_url`` cuts it.
PATH_SQL = "substr(q.url, instr(substr(q.url, 9), '/') + 8)"


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
    method: str
    ended_at: float
    client_key: str
    user_agent: str | None
    connection_key: str | None
    target: str  # location_url when the Location is absolute, else its path and query


# A possible follow-up: (started_at, id, method, client_key, user_agent, connection_key,
# url, path, status, location_url, route, request_body_size, request_body_chunked),
# ordered by time.
_Candidate = tuple[Any, ...]


def _latest_of(
    by_url: list[_Redirect] | None,
    by_path: list[_Redirect] | None,
    started_at: float,
    method: str,
    request_id: int,
    window: float,
    linked: set[int],
) -> _Redirect | None:
    """The later of the latest free redirects to the request's URL and to its path."""
    latest = by_url and _latest_free(by_url, started_at, method, request_id, window, linked)
    found = by_path and _latest_free(by_path, started_at, method, request_id, window, linked)
    if found and (not latest or found.ended_at > latest.ended_at):
        return found
    return latest or None


def _latest_free(
    queue: list[_Redirect],
    started_at: float,
    method: str,
    request_id: int,
    window: float,
    linked: set[int],
) -> _Redirect | None:
    """The latest redirect of ``queue`` (ordered by end) that ended by ``started_at``, at
    most ``window`` earlier, is not linked yet, is not the request itself, and that a
    request with ``method`` can follow (the same method, or GET after any)."""
    latest_end = started_at + CLOCK_SLACK
    if len(queue) == 1:  # the most common case, as the loop below would take it
        r = queue[0]
        if (
            r.ended_at <= latest_end
            and r.ended_at + window >= started_at
            and r.id not in linked
            and r.id != request_id
            and method in ("GET", r.method)
        ):
            return r
        return None
    if len(queue) > 8:
        i = bisect_right(queue, latest_end, key=attrgetter("ended_at")) - 1
    else:  # most queues hold one or two redirects: walk back from the end
        i = len(queue) - 1
        while i >= 0 and queue[i].ended_at > latest_end:
            i -= 1
    while i >= 0 and queue[i].ended_at + window >= started_at:
        r = queue[i]
        if r.id not in linked and r.id != request_id and method in ("GET", r.method):
            return r
        i -= 1
    return None


# Every redirect as read once: a hop of a chain (``_Hop``'s columns first) and what
# linking needs.
_REDIRECT_COLUMNS = (
    "id, started_at, method, url, status, location_url, client_key, "
    "started_at + coalesce(duration_ms, 0) / 1000.0, user_agent, connection_key, location"
)


def _read_redirects(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return list(_rows(conn, f"select {_REDIRECT_COLUMNS} from {table} where {REDIRECT_SQL}"))


def _link_redirects(rows: list[tuple[Any, ...]]) -> list[_Redirect]:
    """The redirects a request can follow: with a client and an http(s) target, in
    order of their end."""
    redirects = []
    for rid, _, method, _, _, location_url, client_key, ended, agent, conn_key, location in rows:
        if location_url is None or client_key is None:
            continue
        if location is None:
            absolute = True
        elif location[:1] == "/" and location[1:2] != "/":
            absolute = False  # a path, the common case, without the regex
        else:
            absolute = is_absolute_location(location)
        if absolute and not location_url.startswith(("http://", "https://")):
            continue  # mailto:, javascript: ... never reach this app
        target = location_url if absolute else split_url(location_url)[1]
        redirects.append(_Redirect(rid, method, ended, client_key, agent, conn_key, target))
    redirects.sort(key=attrgetter("ended_at", "id"))
    return redirects


# Above this many requests the candidate scan is split in two id ranges, the second
# scanned by another connection in another thread (SQLite runs both without Python).
PARALLEL_SCAN_ROWS = 200_000
SCAN_CHUNKS = 16
BUSY_TIMEOUT_S = 5.0
MAX_ID = 2**63 - 1


def _database_file(conn: sqlite3.Connection) -> str | None:
    """The main database's file, None for an in-memory or temporary database."""
    for _, name, file in _rows(conn, "pragma database_list"):
        if name == "main":
            return str(file) or None
    return None


def _prepare_scan(conn: sqlite3.Connection, targets: str) -> None:
    """The scratch tables of one scanner; ``targets`` a JSON list of (client key, path)
    (one statement inserts them, which SQLite runs without Python)."""
    conn.execute("create temp table if not exists link_targets (client_key text, path text)")
    conn.execute("delete from temp.link_targets")
    conn.execute(
        """insert into temp.link_targets
           select json_extract(value, '$[0]'), json_extract(value, '$[1]') from json_each(?)""",
        (targets,),
    )
    conn.execute(
        "create index if not exists temp.link_targets_key on link_targets (client_key, path)"
    )
    conn.execute("drop table if exists temp.link_candidates")
    conn.execute(
        """create temp table link_candidates (started_at, id, method, client_key, user_agent,
             connection_key, url, path, status, location_url, route, request_body_size,
             request_body_chunked)"""
    )


def _scan(conn: sqlite3.Connection, first_id: int, last_id: int) -> None:
    conn.execute(
        f"""insert into temp.link_candidates
            select q.started_at, q.id, q.method, q.client_key, q.user_agent,
                   q.connection_key, q.url, {PATH_SQL}, q.status, q.location_url,
                   q.route, q.request_body_size, q.request_body_chunked
            from requests q
            where q.id between ? and ?
              and exists (select 1 from temp.link_targets t
                          where t.client_key = q.client_key and t.path = {PATH_SQL})""",
        (first_id, last_id),
    )


def _load_candidates(
    conn: sqlite3.Connection,
    redirects: list[_Redirect],
    meanwhile: Callable[[], object] | None = None,
    alongside: Callable[[], object] | None = None,
) -> list[_Candidate]:
    """Requests whose (client key, path) is some redirect's target, in time order.

    One scan of ``requests`` with one index probe per row, as statements that SQLite
    runs without Python: on a large table over id ranges that two connections, in two
    threads, take in turn. ``meanwhile`` (pure Python, not using ``conn``) runs in
    another thread during the scan. ``alongside`` runs on this thread first and may use
    ``conn``: another connection scans meanwhile. The rest is compared in Python.
    """
    targets = json.dumps(
        sorted({(r.client_key, split_url(r.target)[1]) for r in redirects}), ensure_ascii=False
    )
    # min() and max() in one statement would scan the table: two rowid seeks instead.
    first_id = _rows(conn, "select min(id) from requests").__next__()[0] or 0
    last_id = _rows(conn, "select max(id) from requests").__next__()[0] or 0
    file = _database_file(conn)
    scanners = [conn]
    if file is not None and (alongside is not None or last_id - first_id > PARALLEL_SCAN_ROWS):
        scanners.append(sqlite3.connect(file, timeout=BUSY_TIMEOUT_S, check_same_thread=False))
        scanners[-1].execute("pragma temp_store = memory")
    # Id ranges that the scanners take in turn: one that finishes early (or that started
    # late, after ``alongside``) takes more. The last range is open, so every row is read,
    # even one recorded since max(id) was read.
    step = max((last_id - first_id) // SCAN_CHUNKS + 1, 1) if len(scanners) > 1 else MAX_ID
    bounds = list(range(first_id, last_id + 1, step))[:SCAN_CHUNKS] or [first_id]
    chunks = deque(zip(bounds, [b - 1 for b in bounds[1:]] + [MAX_ID], strict=True))

    scanned: list[sqlite3.Connection] = []  # the scanners that took a range

    def scan_chunks(scanner: sqlite3.Connection) -> None:
        while True:
            try:
                first, last = chunks.popleft()  # atomic: the scanners share the deque
            except IndexError:
                return
            if scanner not in scanned:
                _prepare_scan(scanner, targets)
                scanned.append(scanner)
            _scan(scanner, first, last)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            done = [pool.submit(meanwhile)] if meanwhile is not None else []
            done += [pool.submit(scan_chunks, other) for other in scanners[1:]]
            try:
                if alongside is not None:
                    alongside()
                scan_chunks(conn)
            finally:
                for future in done:  # before reading rows: threads would want the GIL per row
                    future.result()
        candidates: list[_Candidate] = []
        for scanner in scanned:
            candidates.extend(_rows(scanner, "select * from temp.link_candidates"))
        return sorted(candidates)
    finally:
        for scanner in scanners:
            scanner.execute("drop table if exists temp.link_candidates")
            scanner.execute("drop table if exists temp.link_targets")
        for other in scanners[1:]:
            other.close()


def _match(
    redirects: list[_Redirect], candidates: list[_Candidate], window: float
) -> dict[int, int]:
    """Follow-up id -> redirect id, by the rule in the module docstring."""
    by_client: dict[tuple[Any, ...], list[_Redirect]] = {}
    by_connection: dict[tuple[Any, ...], list[_Redirect]] = {}
    for r in redirects:  # in order of their end
        key: tuple[Any, ...] = (r.client_key, r.user_agent, r.target)
        queue = by_client.get(key)
        if queue is None:
            by_client[key] = [r]
        else:
            queue.append(r)
        if r.connection_key is not None:  # proxies share connections: keep the client too
            key = (r.connection_key, r.client_key, r.user_agent, r.target)
            queue = by_connection.get(key)
            if queue is None:
                by_connection[key] = [r]
            else:
                queue.append(r)
    linked: set[int] = set()
    follow_ups: dict[int, int] = {}
    unlinked = []
    # First on the request's own connection, requests in time order, then (below) on any
    # connection of the same client; the latest free redirect to its URL or its path.
    get = by_connection.get
    for q in candidates:
        started_at, qid, method, client_key, agent, conn_key, url, path = q[:8]
        latest = _latest_of(
            get((conn_key, client_key, agent, url)),
            get((conn_key, client_key, agent, path)),
            started_at, method, qid, window, linked,
        )  # fmt: skip
        if latest:
            linked.add(latest.id)
            follow_ups[qid] = latest.id
        else:
            unlinked.append(q)
    get = by_client.get
    for q in unlinked:
        started_at, qid, method, client_key, agent, _, url, path = q[:8]
        latest = _latest_of(
            get((client_key, agent, url)),
            get((client_key, agent, path)),
            started_at, method, qid, window, linked,
        )  # fmt: skip
        if latest:
            linked.add(latest.id)
            follow_ups[qid] = latest.id
    return follow_ups


@contextmanager
def _writing(conn: sqlite3.Connection, in_callers_transaction: bool) -> Iterator[None]:
    """Write inside the caller's transaction, or else in a short one of our own.

    Our own starts with BEGIN IMMEDIATE after the reads (which never block recorders
    writing meanwhile) and commits at the end: a deferred transaction that has read
    could not upgrade to a write once a recorder has committed.
    """
    if in_callers_transaction:
        yield
        return
    if conn.in_transaction:  # implicitly opened by our temp-table writes
        conn.commit()
    conn.execute("begin immediate")
    try:
        yield
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def _compute_links(
    conn: sqlite3.Connection,
    window: float,
    redirects_from: str,
    meanwhile: Callable[[list[tuple[Any, ...]]], object] | None = None,
    alongside: Callable[[], object] | None = None,
) -> tuple[list[tuple[Any, ...]], list[_Candidate], dict[int, int]]:
    """(redirect rows, candidate rows, follow-up id -> redirect id)."""
    rows = _read_redirects(conn, redirects_from)
    redirects = _link_redirects(rows)
    work = (lambda: meanwhile(rows)) if meanwhile is not None else None
    if redirects:
        candidates = _load_candidates(conn, redirects, work, alongside)
    else:
        candidates = []
        for task in (work, alongside):
            if task is not None:
                task()
    return rows, candidates, _match(redirects, candidates, window)


def _stage_links(conn: sqlite3.Connection, follow_ups: dict[int, int]) -> None:
    """Put the links that change (stale ones as null) into ``temp.link_changes``."""
    current = dict(
        _rows(conn, "select id, follow_up_of from requests where follow_up_of is not null")
    )
    conn.execute(
        "create temp table if not exists link_changes (id integer primary key, follow_up_of int)"
    )
    conn.execute("delete from temp.link_changes")
    conn.executemany(
        "insert into temp.link_changes values (?, ?)",
        sorted(
            [(q, None) for q in current if q not in follow_ups]
            + [(q, r) for q, r in follow_ups.items() if current.get(q) != r]
        ),
    )


def _apply_links(conn: sqlite3.Connection, in_callers_transaction: bool) -> None:
    """Write the staged links: one statement, which SQLite runs without Python (so another
    thread may compute meanwhile); re-runs touch few pages."""
    with _writing(conn, in_callers_transaction):
        conn.execute(
            """update requests
               set follow_up_of = (select c.follow_up_of from temp.link_changes as c
                                   where c.id = requests.id)
               where id in (select id from temp.link_changes)"""
        )
        conn.execute("delete from temp.link_changes")


def link_requests(
    conn: sqlite3.Connection, *, window: float = 30.0, redirects_from: str = "requests"
) -> int:
    """Recompute ``requests.follow_up_of`` for every row; return the number of links.

    Updates only that column, inside the caller's transaction if one is open, else
    in a short BEGIN IMMEDIATE transaction of its own that it commits.
    ``redirects_from`` may name a (temp) copy of the rows of ``requests`` holding at
    least every redirect, read instead of scanning ``requests`` for them.
    """
    in_callers_transaction = conn.in_transaction
    _, _, follow_ups = _compute_links(conn, window, redirects_from)
    _stage_links(conn, follow_ups)
    _apply_links(conn, in_callers_transaction)
    return len(follow_ups)


def link_and_build_chains(
    conn: sqlite3.Connection,
    *,
    window: float = 30.0,
    redirects_from: str = "requests",
    meanwhile: Callable[[list[tuple[Any, ...]]], object] | None = None,
    known_hosts: Callable[[], Container[str]] | None = None,
    follow_ups_read: Callable[[list[tuple[Any, ...]]], object] | None = None,
    alongside: Callable[[], object] | None = None,
) -> tuple[int, int]:
    """``link_requests`` then ``build_chains``; return (links, chains).

    The chains come from the rows linking read, not from reading the links back, and
    are computed (pure Python, another thread) while SQLite writes the links.
    ``meanwhile``, pure Python work that does not use ``conn``, runs in another thread
    during the scan for candidate follow-ups, given the redirect rows read: (id,
    started_at, method, url, status, location_url, ...) of every redirect.
    ``known_hosts`` returns ``recorded_hosts`` (say read on another connection
    meanwhile); by default they are read on ``conn``. ``follow_ups_read`` is given the
    linked follow-up requests as read: (id, follow_up_of, started_at, method, url,
    status, location_url, client_key, route, user_agent, request_body_size,
    request_body_chunked). ``alongside`` runs on this thread, and may read with ``conn``,
    while another connection scans for the candidates.
    """
    in_callers_transaction = conn.in_transaction
    rows, candidates, follow_ups = _compute_links(
        conn, window, redirects_from, meanwhile, alongside
    )
    if follow_ups_read is not None:
        follow_ups_read(
            [
                (
                    q[1],
                    follow_ups[q[1]],
                    q[0],
                    q[2],
                    q[6],
                    q[8],
                    q[9],
                    q[3],
                    q[10],
                    q[4],
                    q[11],
                    q[12],
                )
                for q in candidates
                if q[1] in follow_ups
            ]
        )
    # read here: the other thread must not use conn
    hosts = known_hosts() if known_hosts is not None else recorded_hosts(conn)
    _stage_links(conn, follow_ups)
    with ThreadPoolExecutor(max_workers=1) as pool:
        computing = pool.submit(_chains_in_memory, rows, candidates, follow_ups, hosts)
        _apply_links(conn, in_callers_transaction)
        chains = computing.result()
    _write_chains(conn, chains, in_callers_transaction)
    return len(follow_ups), len(chains)


def _chains_in_memory(
    rows: list[tuple[Any, ...]],
    candidates: list[_Candidate],
    follow_ups: dict[int, int],
    known_hosts: Container[str],
) -> list[tuple[Any, ...]]:
    """``_chain_rows`` from the redirect and candidate rows linking read (a redirect
    row starts with a hop's columns)."""
    next_hop = {
        follow_ups[q[1]]: (q[1], q[0], q[2], q[6], q[8], q[9], q[3])
        for q in candidates
        if q[1] in follow_ups
    }
    roots = [row for row in rows if row[0] not in follow_ups]
    return _chain_rows(roots, next_hop, known_hosts)


# --- chains -------------------------------------------------------------------------

# A hop as a plain tuple, in these columns (what ``_chain_rows`` walks).
_HOP_COLUMNS = "id, started_at, method, url, status, location_url, client_key"
_HopRow = tuple[Any, ...]


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


def chain_outcome(hops: list[_Hop], known_hosts: Container[str]) -> str:
    """loop (revisits a method and URL), error (ends in 4xx/5xx), completed, external
    (the last Location names a host never recorded) or unfollowed."""
    seen = {(hop.method, hop.url) for hop in hops}
    if len(seen) < len(hops):
        return "loop"
    last = hops[-1]
    if not is_redirect(last.status):
        return "error" if last.status >= 400 else "completed"
    target = last.location_url
    if target is None:
        return "unfollowed"
    if (follow_up_method(last.method, last.status), target) in seen:
        return "loop"
    host = host_of(target)
    if all(host_of(hop.url) != host for hop in hops) and host not in known_hosts:
        return "external"
    return "unfollowed"


def host_of(url: str) -> str:
    """The host name of a normalized absolute URL, without its port."""
    netloc = split_url(url)[0].partition("://")[2]
    if netloc.startswith("["):  # IPv6 literal
        return netloc[: netloc.find("]") + 1]
    return netloc.partition(":")[0]


class KnownHosts:
    """Host names of every recorded request, read on first use only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._hosts: set[str] | None = None

    def __contains__(self, host: object) -> bool:
        if self._hosts is None:
            self._hosts = recorded_hosts(self.conn)
        return host in self._hosts


def recorded_hosts(conn: sqlite3.Connection) -> set[str]:
    """Every distinct host name (without port) the recorded requests were sent to."""
    return {
        host_of(f"http://{host}/")
        for (host,) in _rows(conn, "select distinct host from requests where host is not null")
    }


def path_text(hops: list[_Hop]) -> str:
    """``POST /a —301→ GET /b —200``; other origins than the first hop's in full."""
    origin = split_url(hops[0].url)[0]

    def shown(url: str) -> str:
        url_origin, path = split_url(url)
        return path if url_origin == origin else url

    steps = [f"{h.method} {shown(h.url)}" for h in hops]
    statuses = [h.status for h in hops]
    pairs = zip(steps[:-1], statuses[:-1], strict=True)
    text = "".join(f"{step} —{status}→ " for step, status in pairs)
    last = hops[-1]
    if not is_redirect(last.status):
        return f"{text}{steps[-1]} —{last.status}"
    target = shown(last.location_url) if last.location_url else "(no Location)"
    return f"{text}{steps[-1]} —{last.status}→ {target} (not followed)"


_json_string = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str


def hops_json(hops: list[_Hop]) -> str:
    """``json.dumps`` of the hops' request_id, method, url and status, built directly."""
    items = ", ".join(
        f'{{"request_id": {h.id}, "method": {_json_string(h.method)}, '
        f'"url": {_json_string(h.url)}, "status": {"null" if h.status is None else h.status}}}'
        for h in hops
    )
    return f"[{items}]"


def build_chains(conn: sqlite3.Connection, *, redirects_from: str = "requests") -> int:
    """Delete and rebuild ``chains`` from ``follow_up_of``; return the number of chains.

    One chain per redirect that is not itself a follow-up, walking its links. Writes
    inside the caller's transaction if one is open, else in its own (see ``_writing``).
    ``redirects_from`` as for ``link_requests``; follow-ups are read through the
    ``follow_up_of`` index.
    """
    in_callers_transaction = conn.in_transaction
    columns = _HOP_COLUMNS
    next_hop: dict[int, _HopRow] = {}
    follow_ups: set[int] = set()
    for row in _rows(
        conn,
        f"select {columns}, follow_up_of from requests where follow_up_of is not null",
    ):
        next_hop[row[7]] = row[:7]
        follow_ups.add(row[0])
    roots = [row for row in _read_redirects(conn, redirects_from) if row[0] not in follow_ups]
    chains = _chain_rows(roots, next_hop, KnownHosts(conn))
    _write_chains(conn, chains, in_callers_transaction)
    return len(chains)


def _chain_rows(
    roots: list[_HopRow], next_hop: dict[int, _HopRow], known_hosts: Container[str]
) -> list[tuple[Any, ...]]:
    """One ``chains`` row per root, walking its links, in the roots' time order.

    ``path_text``, ``hops_json`` and ``chain_outcome`` of each chain, computed in one
    pass over plain tuples (hops: ``_HOP_COLUMNS``, a root may have more columns after),
    each URL split once."""
    roots = sorted(roots, key=itemgetter(1, 0))
    splits: dict[str, tuple[str, str]] = {}
    hosts: dict[str, str] = {}
    get_hop = next_hop.get
    chains = []
    for root in roots:
        chain = [root]
        follower = get_hop(root[0])
        if follower is not None:
            visited = {root[0]}
            while follower is not None and follower[0] not in visited:
                chain.append(follower)
                visited.add(follower[0])
                follower = get_hop(follower[0])
        url = root[3]
        origin = (splits.get(url) or splits.setdefault(url, split_url(url)))[0]
        text: list[str] = []
        items: list[str] = []
        seen: set[tuple[str, str]] = set()
        for hop in chain:
            hid, _, method, url, status = hop[:5]
            url_origin, path = splits.get(url) or splits.setdefault(url, split_url(url))
            text.append(f"{method} {path if url_origin == origin else url} —{status}")
            items.append(
                f'{{"request_id": {hid}, "method": {_json_string(method)}, '
                f'"url": {_json_string(url)}, "status": {"null" if status is None else status}}}'
            )
            seen.add((method, url))
        last = chain[-1]
        _, _, method, url, status, target = last[:6]
        redirect_end = status is not None and 300 <= status <= 399 and status != 304
        if redirect_end:
            if target:
                url_origin, path = splits.get(target) or splits.setdefault(
                    target, split_url(target)
                )
                shown = path if url_origin == origin else target
            else:
                shown = "(no Location)"
            path_text = f"{'→ '.join(text)}→ {shown} (not followed)"
        else:
            path_text = "→ ".join(text)
        # chain_outcome
        if len(seen) < len(chain):
            outcome = "loop"
        elif not redirect_end:
            outcome = "error" if status >= 400 else "completed"
        elif target is None:
            outcome = "unfollowed"
        elif (follow_up_method(method, status), target) in seen:
            outcome = "loop"
        else:
            host = hosts.get(target) or hosts.setdefault(target, host_of(target))
            if host not in known_hosts and all(
                (hosts.get(hop[3]) or hosts.setdefault(hop[3], host_of(hop[3]))) != host
                for hop in chain
            ):
                outcome = "external"
            else:
                outcome = "unfollowed"
        chains.append(
            (
                root[0],
                last[0],
                len(chain) if redirect_end else len(chain) - 1,
                path_text,
                f"[{', '.join(items)}]",
                root[3],
                url,
                status,
                outcome,
                root[6],
                root[1],
            )
        )
    return chains


def _write_chains(
    conn: sqlite3.Connection, chains: list[tuple[Any, ...]], in_callers_transaction: bool
) -> None:
    with _writing(conn, in_callers_transaction):
        conn.execute("delete from chains")
        conn.executemany(
            """insert into chains (first_request_id, last_request_id, length, path_text, hops,
                 start_url, final_url, final_status, outcome, client_key, started_at)
               values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            chains,
        )
