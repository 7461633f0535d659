"""Follow-up hop linking and redirect chains.

The linking rule (DESIGN.md, "Hop linking"): request Q is the follow-up of redirect R when

1. Q comes from the same client: the same client key, user agent and forwarded-for
   hint (the keyed first X-Forwarded-For hop, trusted or not: a hint, no verdict);
2. Q starts after R's response ended, at most ``window`` seconds later;
3. Q's URL equals R's resolved Location: the whole normalized URL when the
   Location is absolute, only path and query when it is relative;
4. Q's method is one that client sends after R's method and status
   (``redirects.next_hop``, client-behaviour.md): urllib never follows a 307 POST,
   nobody turns a 307 POST into a GET;
5. a redirect links one follow-up and a request follows one redirect, chosen in
   three steps, each on what the steps before left:

   - **exact**: exactly one such R carries Q's request id (X-Request-ID...);
   - **connection**: R is the latest such redirect still free on Q's own connection
     (requests taken in time order; clients follow on their keep-alive connection).
     Not behind a proxy (a forwarded-for hint): its upstream connections are pooled;
   - **client**: per client and target, a global assignment of the follow-ups to the
     redirects: follow-ups in time order each take the earliest free redirect, one
     whose method that client sends after it first (FIFO: concurrent clients follow
     in the order their redirects ended), then augmenting paths make it a maximum
     matching. The link is ``sure`` when every maximum matching (every way to explain
     as many hops as the traffic allows) has it, else ``ambiguous``: another pairing,
     or another request, explains the hop as well.

A redirect with no such Q stays unlinked: a client that never follows (urllib on a
307 POST) is not mislinked. ``requests.link_confidence`` says which: ``exact``,
``sure`` (connection, or the only pairing) or ``ambiguous``. Chains are the linked
runs that start at a redirect which is not itself a follow-up.

Scale: one SQL scan with an index probe per row picks the candidate requests (whose
path is some redirect's target for that client; on a large table two connections
scan half each, at once), then sorted passes in Python match them; a client and
target with one redirect and one candidate (the common case) skips the assignment.
The links are written in one statement; ``link_and_build_chains`` (what ``audit``
runs) builds the chains from the rows it read, in another thread, meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from auditor.cycles import strongly_connected
from auditor.redirects import (
    MEASURED_CLIENTS,
    REDIRECT_SQL,
    SAFE_METHODS,
    client_family,
    follow_up_method,
    next_hop,
)
from auditor.urls import is_absolute_location

# duration_ms is rounded to the microsecond; allow that much clock slack.
CLOCK_SLACK = 2e-6
# The path and query of a normalized http(s) URL, as ``split_url`` cuts it.
PATH_SQL = "substr(q.url, instr(substr(q.url, 9), '/') + 8)"
# requests.link_confidence
EXACT, SURE, AMBIGUOUS = "exact", "sure", "ambiguous"


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


# --- which methods follow a redirect -----------------------------------------------

# Families whose redirect behaviour is known: measured, or a browser like Chromium.
_KNOWN_FAMILIES = frozenset(MEASURED_CLIENTS) | {"Edge", "Firefox", "Safari"}


def _follow_up_methods(family: str, method: str, status: int) -> tuple[str | None, frozenset[str]]:
    """(the method ``family`` sends after ``method`` got ``status``, None when it does not
    follow; every method its follow-up can have): ``redirects.next_hop``, plus the quirk
    that ``curl -L -X METHOD`` (or ``--post30x``) keeps any method. A family nobody
    measured may do what any measured one does."""
    if family not in _KNOWN_FAMILIES:
        possible = set().union(
            *(_follow_up_methods(c, method, status)[1] for c in MEASURED_CLIENTS)
        )
        return next_hop(family, method, status).method, frozenset(possible)
    expected = next_hop(family, method, status).method
    if expected is None:
        return None, frozenset()
    if family == "curl" and method not in SAFE_METHODS:
        return expected, frozenset((expected, method))
    return expected, frozenset((expected,))


# --- linking ------------------------------------------------------------------------


@dataclass(slots=True)
class _Redirect:
    id: int
    method: str
    ended_at: float
    connection_key: str | None  # None behind a proxy: pooled connections are no evidence
    target_url: str | None  # the follow-up's whole URL when the Location is absolute
    expected: str | None  # the method the client sends next
    possible: frozenset[str]  # every method the client's follow-up can have
    request_id: str | None


# A possible follow-up: (started_at, id, method, client_key, user_agent, connection_key,
# url, path, status, location_url, route, request_body_size, request_body_chunked,
# forwarded_for_key, request_id), ordered by time.
_Candidate = tuple[Any, ...]
# (client key, user agent, forwarded-for key, path and query of the target)
_Key = tuple[Any, Any, Any, str]


def _fits(r: _Redirect, q: _Candidate) -> bool:
    """Q may follow R, but for the time: its method, its URL, not R itself."""
    return q[2] in r.possible and r.id != q[1] and (r.target_url is None or r.target_url == q[6])


def _in_window(queue: list[_Redirect], started_at: float, window: float) -> list[_Redirect]:
    """The redirects of ``queue`` (ordered by end) that ended by ``started_at``, at most
    ``window`` earlier."""
    if len(queue) == 1:
        r = queue[0]
        fits = r.ended_at <= started_at + CLOCK_SLACK and started_at <= r.ended_at + window
        return queue if fits else []
    key = attrgetter("ended_at")
    low = bisect_left(queue, started_at - window, key=key)
    return queue[low : bisect_right(queue, started_at + CLOCK_SLACK, key=key)]


# Every redirect as read once: a hop of a chain (``_HOP_COLUMNS`` first) and what
# linking needs.
_REDIRECT_COLUMNS = (
    "id, started_at, method, url, status, location_url, client_key, "
    "started_at + coalesce(duration_ms, 0) / 1000.0, user_agent, connection_key, location"
)
# Read from ``requests`` by id when the redirects' table has no copy of them.
_HINT_COLUMNS = ("forwarded_for_key", "request_id")


def _read_redirects(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """``_REDIRECT_COLUMNS`` and ``_HINT_COLUMNS`` of every redirect of ``table``."""
    cursor = conn.execute(f"select * from {table} as t limit 0")
    has = {column[0] for column in cursor.description}
    hints = ", ".join(
        name if name in has else f"(select q.{name} from main.requests q where q.id = t.id)"
        for name in _HINT_COLUMNS
    )
    sql = f"select {_REDIRECT_COLUMNS}, {hints} from {table} as t where {REDIRECT_SQL}"
    return list(_rows(conn, sql))


def _link_redirects(rows: list[tuple[Any, ...]]) -> dict[_Key, list[_Redirect]]:
    """The redirects a request can follow (with a client and an http(s) target), by
    client and target, each list in order of their end."""
    by_key: dict[_Key, list[_Redirect]] = {}
    methods: dict[tuple[str | None, str, int], tuple[str | None, frozenset[str]]] = {}
    families: dict[str | None, str] = {}
    for row in rows:
        rid, _, method, _, status, location_url, client_key, ended, agent, conn_key = row[:10]
        location, forwarded_for, request_id = row[10:13]
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
        follows = methods.get((agent, method, status))
        if follows is None:
            family = families.get(agent) or families.setdefault(agent, client_family(agent))
            follows = methods.setdefault(
                (agent, method, status), _follow_up_methods(family, method, status)
            )
        if not follows[1]:
            continue  # this client does not follow it
        if forwarded_for is not None:
            conn_key = None
        key = (client_key, agent, forwarded_for, split_url(location_url)[1])
        redirect = _Redirect(
            rid,
            method,
            ended,
            conn_key,
            location_url if absolute else None,
            follows[0],
            follows[1],
            request_id,
        )
        queue = by_key.get(key)
        if queue is None:
            by_key[key] = [redirect]
        else:
            queue.append(redirect)
    for queue in by_key.values():
        if len(queue) > 1:
            queue.sort(key=attrgetter("ended_at", "id"))
    return by_key


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
             request_body_chunked, forwarded_for_key, request_id)"""
    )


def _scan(conn: sqlite3.Connection, first_id: int, last_id: int) -> None:
    conn.execute(
        f"""insert into temp.link_candidates
            select q.started_at, q.id, q.method, q.client_key, q.user_agent,
                   q.connection_key, q.url, {PATH_SQL}, q.status, q.location_url,
                   q.route, q.request_body_size, q.request_body_chunked,
                   q.forwarded_for_key, q.request_id
            from requests q
            where q.id between ? and ?
              and exists (select 1 from temp.link_targets t
                          where t.client_key = q.client_key and t.path = {PATH_SQL})""",
        (first_id, last_id),
    )


def _load_candidates(
    conn: sqlite3.Connection,
    by_key: dict[_Key, list[_Redirect]],
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
    targets = json.dumps(sorted({(key[0], key[3]) for key in by_key}), ensure_ascii=False)
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
    by_key: dict[_Key, list[_Redirect]], candidates: list[_Candidate], window: float
) -> tuple[dict[int, int], dict[int, str]]:
    """(follow-up id -> redirect id, follow-up id -> ``exact`` or ``ambiguous`` for the
    links that are not ``sure``), by the rule in the module docstring."""
    follow_ups: dict[int, int] = {}
    confidence: dict[int, str] = {}
    linked: set[int] = set()
    get = by_key.get

    # 1. exact: the one redirect that fits and carries the request's id
    request_ids = {
        r.request_id for queue in by_key.values() for r in queue if r.request_id is not None
    }
    if request_ids:
        for q in candidates:
            request_id = q[14]
            if request_id is None or request_id not in request_ids:
                continue
            queue = get((q[3], q[4], q[13], q[7]))
            if queue is None:
                continue
            same = [
                r
                for r in _in_window(queue, q[0], window)
                if r.request_id == request_id and _fits(r, q)
            ]
            if len(same) == 1 and same[0].id not in linked:
                linked.add(same[0].id)
                follow_ups[q[1]] = same[0].id
                confidence[q[1]] = EXACT

    # 2. connection: the latest free redirect on the request's own connection
    by_connection: dict[tuple[Any, ...], list[_Redirect]] = {}
    for key, queue in by_key.items():
        for r in queue:  # in order of their end
            if r.connection_key is not None:
                connection = by_connection.get((r.connection_key, *key))
                if connection is None:
                    by_connection[(r.connection_key, *key)] = [r]
                else:
                    connection.append(r)
    on_connection = by_connection.get
    for q in candidates:
        if q[5] is None or q[13] is not None or q[1] in follow_ups:
            continue  # no connection, behind a proxy (pooled connections), or exact
        queue = on_connection((q[5], q[3], q[4], None, q[7]))
        if queue is None:
            continue
        window_queue = _in_window(queue, q[0], window)
        for i in range(len(window_queue) - 1, -1, -1):
            r = window_queue[i]
            if r.id not in linked and _fits(r, q):
                linked.add(r.id)
                follow_ups[q[1]] = r.id
                break

    # 3. client: per client and target, an assignment of what is left
    waiting: dict[_Key, list[_Candidate]] = {}
    for q in candidates:
        if q[1] in follow_ups:
            continue
        key = (q[3], q[4], q[13], q[7])
        if key in by_key:
            bucket = waiting.get(key)
            if bucket is None:
                waiting[key] = [q]
            else:
                bucket.append(q)
    for key, follow_up_candidates in waiting.items():
        queue = [r for r in by_key[key] if r.id not in linked]
        if len(queue) == 1 and len(follow_up_candidates) == 1:  # the common case
            r, q = queue[0], follow_up_candidates[0]
            if _in_window(queue, q[0], window) and _fits(r, q):
                linked.add(r.id)
                follow_ups[q[1]] = r.id
        elif queue:
            _assign(queue, follow_up_candidates, window, follow_ups, confidence)
            if key[2] is None and _several_connections(queue, follow_up_candidates):
                # One address and user agent on several connections, nothing else to
                # tell them apart: maybe several clients (NAT, an untrusted proxy), and a
                # request to the target may be no follow-up at all.
                for q in follow_up_candidates:
                    if q[1] in follow_ups:
                        confidence[q[1]] = AMBIGUOUS
    return follow_ups, confidence


def _several_connections(redirects: list[_Redirect], candidates: list[_Candidate]) -> bool:
    keys = {r.connection_key for r in redirects} | {q[5] for q in candidates}
    keys.discard(None)
    return len(keys) > 1


# A client and target whose candidates could follow more redirects than this in all (a
# very busy address behind which nothing tells the clients apart) is linked in one
# time-ordered pass, every link ambiguous: the full assignment would cost too much.
ASSIGNMENT_EDGES = 20_000


def _assign(
    redirects: list[_Redirect],
    candidates: list[_Candidate],
    window: float,
    follow_ups: dict[int, int],
    confidence: dict[int, str],
) -> None:
    """Link the ``candidates`` (in time order) to the free ``redirects`` (by end) of one
    client and target: a maximum matching that prefers, per follow-up, a redirect whose
    method that client sends next, then the earliest (FIFO). Links every maximum matching
    has are ``sure``, the others ``ambiguous``."""
    ends = [r.ended_at for r in redirects]
    bounds = [
        (bisect_left(ends, q[0] - window), bisect_right(ends, q[0] + CLOCK_SLACK))
        for q in candidates
    ]
    if sum(high - low for low, high in bounds) > ASSIGNMENT_EDGES:
        _assign_in_order(redirects, candidates, bounds, follow_ups, confidence)
        return
    edges: list[list[int]] = []  # per candidate: the redirects it may follow, preferred first
    for q, (low, high) in zip(candidates, bounds, strict=True):
        fitting = [i for i in range(low, high) if _fits(redirects[i], q)]
        method = q[2]
        if any(redirects[i].expected != method for i in fitting):
            fitting.sort(key=lambda i: redirects[i].expected != method)  # stable: FIFO
        edges.append(fitting)
    follower = [-1] * len(redirects)  # redirect -> candidate
    followed = [-1] * len(candidates)  # candidate -> redirect
    for qi, fitting in enumerate(edges):
        if not fitting:
            continue
        free = next((ri for ri in fitting if follower[ri] < 0), -1)
        if free >= 0:
            follower[free], followed[qi] = qi, free
        else:
            _augment(qi, edges, follower, followed)
    unsure = _unforced(edges, follower, followed)
    for qi, ri in enumerate(followed):
        if ri >= 0:
            qid = candidates[qi][1]
            follow_ups[qid] = redirects[ri].id
            if qi in unsure:
                confidence[qid] = AMBIGUOUS


def _assign_in_order(
    redirects: list[_Redirect],
    candidates: list[_Candidate],
    bounds: list[tuple[int, int]],
    follow_ups: dict[int, int],
    confidence: dict[int, str],
) -> None:
    """Each candidate in time order takes the earliest free redirect it may follow
    (``bounds``: the redirects that ended in its window); every link ambiguous."""
    taken = [False] * len(redirects)
    first_free = 0  # every redirect before it is taken
    for q, (low, high) in zip(candidates, bounds, strict=True):
        while first_free < len(taken) and taken[first_free]:
            first_free += 1
        for i in range(max(low, first_free), high):
            if not taken[i] and _fits(redirects[i], q):
                taken[i] = True
                follow_ups[q[1]] = redirects[i].id
                confidence[q[1]] = AMBIGUOUS
                break


def _augment(start: int, edges: list[list[int]], follower: list[int], followed: list[int]) -> None:
    """Link candidate ``start`` along a shortest augmenting path, if there is one: each
    candidate on it moves to another redirect it may follow (breadth first, preferred
    redirects first)."""
    reached_from = {}  # redirect -> the candidate that reached it
    frontier = [start]
    while frontier:
        following = []
        for qi in frontier:
            for ri in edges[qi]:
                if ri in reached_from:
                    continue
                reached_from[ri] = qi
                holder = follower[ri]
                if holder < 0:  # free: shift every link along the path
                    while True:
                        qi = reached_from[ri]
                        previous = followed[qi]
                        follower[ri], followed[qi] = qi, ri
                        if qi == start:
                            return
                        ri = previous
                following.append(holder)
        frontier = following


def _unforced(edges: list[list[int]], follower: list[int], followed: list[int]) -> set[int]:
    """The linked candidates whose link some other maximum matching does not have: on an
    alternating path from an unlinked candidate or a free redirect, or on an alternating
    cycle (Dulmage-Mendelsohn)."""
    unsure: set[int] = set()
    # From unlinked candidates: candidate -(may follow)-> redirect -(linked to)-> candidate.
    seen: set[int] = set()
    stack = [qi for qi, fitting in enumerate(edges) if fitting and followed[qi] < 0]
    while stack:
        for ri in edges[stack.pop()]:
            holder = follower[ri]
            if ri not in seen and holder >= 0:
                seen.add(ri)
                unsure.add(holder)
                stack.append(holder)
    # From free redirects: redirect -(may be followed by)-> candidate -(links)-> redirect.
    followers: list[list[int]] = [[] for _ in follower]
    for qi, fitting in enumerate(edges):
        for ri in fitting:
            followers[ri].append(qi)
    seen = set()
    stack = [ri for ri, holder in enumerate(follower) if holder < 0 and followers[ri]]
    while stack:
        for qi in followers[stack.pop()]:
            if qi not in seen and followed[qi] >= 0:
                seen.add(qi)
                unsure.add(qi)
                stack.append(followed[qi])
    # Alternating cycles: linked candidate -> the holder of another redirect it may follow.
    after = {
        qi: [follower[ri] for ri in edges[qi] if ri != ri_linked]
        for qi, ri_linked in enumerate(followed)
        if ri_linked >= 0 and qi not in unsure and len(edges[qi]) > 1
    }
    unsure.update(_on_cycles(after))
    return unsure


def _on_cycles(graph: dict[int, list[int]]) -> set[int]:
    """The nodes of ``graph`` in a strongly connected component of two or more nodes;
    edges to nodes outside ``graph`` are ignored."""
    return {
        node for component in strongly_connected(graph) if len(component) > 1 for node in component
    }


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
) -> tuple[list[tuple[Any, ...]], list[_Candidate], dict[int, int], dict[int, str]]:
    """(redirect rows, candidate rows, follow-up id -> redirect id, follow-up id ->
    confidence where not ``sure``)."""
    rows = _read_redirects(conn, redirects_from)
    by_key = _link_redirects(rows)
    work = (lambda: meanwhile(rows)) if meanwhile is not None else None
    if by_key:
        candidates = _load_candidates(conn, by_key, work, alongside)
    else:
        candidates = []
        for task in (work, alongside):
            if task is not None:
                task()
    return rows, candidates, *_match(by_key, candidates, window)


def _stage_links(
    conn: sqlite3.Connection, follow_ups: dict[int, int], confidence: dict[int, str]
) -> None:
    """Put the links that change (stale ones as null) into ``temp.link_changes``."""
    current = {
        q: (r, level)
        for q, r, level in _rows(
            conn,
            "select id, follow_up_of, link_confidence from requests where follow_up_of is not null",
        )
    }
    conn.execute(
        """create temp table if not exists link_changes
             (id integer primary key, follow_up_of int, link_confidence text)"""
    )
    conn.execute("delete from temp.link_changes")
    level_of = confidence.get
    conn.executemany(
        "insert into temp.link_changes values (?, ?, ?)",
        sorted(
            [(q, None, None) for q in current if q not in follow_ups]
            + [
                (q, r, level)
                for q, r in follow_ups.items()
                if current.get(q) != (r, level := level_of(q, SURE))
            ]
        ),
    )


def _apply_links(conn: sqlite3.Connection, in_callers_transaction: bool) -> None:
    """Write the staged links: one statement, which SQLite runs without Python (so another
    thread may compute meanwhile); re-runs touch few pages."""
    with _writing(conn, in_callers_transaction):
        conn.execute(
            """update requests
               set (follow_up_of, link_confidence) =
                   (select c.follow_up_of, c.link_confidence from temp.link_changes as c
                    where c.id = requests.id)
               where id in (select id from temp.link_changes)"""
        )
        conn.execute("delete from temp.link_changes")


def link_requests(
    conn: sqlite3.Connection, *, window: float = 30.0, redirects_from: str = "requests"
) -> int:
    """Recompute ``requests.follow_up_of`` and ``link_confidence`` for every row; return
    the number of links.

    Updates only those columns, inside the caller's transaction if one is open, else
    in a short BEGIN IMMEDIATE transaction of its own that it commits.
    ``redirects_from`` may name a (temp) copy of the rows of ``requests`` holding at
    least every redirect, read instead of scanning ``requests`` for them.
    """
    in_callers_transaction = conn.in_transaction
    _, _, follow_ups, confidence = _compute_links(conn, window, redirects_from)
    _stage_links(conn, follow_ups, confidence)
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
    request_body_chunked); their ``link_confidence`` is in ``requests`` once this returns.
    ``alongside`` runs on this thread, and may read with ``conn``, while another
    connection scans for the candidates.
    """
    in_callers_transaction = conn.in_transaction
    rows, candidates, follow_ups, confidence = _compute_links(
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
    _stage_links(conn, follow_ups, confidence)
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


_json_string = json.encoder.encode_basestring_ascii  # what json.dumps uses for a str


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
