"""Redirects of one place with what each client did next: the evidence of a finding.

``redirect_hops`` reads the redirects matching a condition together with their linked
follow-up (if any); ``places`` groups them by (route template, method, status), and
``client_evidence`` counts, per client family, what the follow-ups did — the
``clients`` list of a finding's evidence (docs/problems.md, "Evidence").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from auditor.analysis.rules._groups import Group, plural
from auditor.analysis.rules._subset import FOLLOW_UPS, RESPONSES, ensure_responses
from auditor.analysis.rules.base import AuditContext
from auditor.analysis.templates import template_of_url
from auditor.redirects import client_family


@dataclass
class Hop:
    """One redirect and its linked follow-up (``f_*`` None when none was linked)."""

    id: int
    source: str
    method: str
    status: int
    url: str
    target: str | None
    started_at: float
    user_agent: str | None
    body: bool  # the redirected request carried a body
    content_type: str | None
    has_authorization: bool
    f_method: str | None
    f_status: int | None
    f_body: bool
    f_confidence: str | None
    f_has_authorization: bool
    f_has_cookie: bool
    has_cookie: bool

    @property
    def client(self) -> str:
        return client_family(self.user_agent)

    @property
    def followed(self) -> bool:
        return self.f_method is not None

    @property
    def sure(self) -> bool:
        """Followed, and the link is not one of several equally likely ones."""
        return self.f_method is not None and self.f_confidence != "ambiguous"

    @property
    def method_changed(self) -> bool:
        return self.f_method is not None and self.f_method != self.method

    @property
    def body_lost(self) -> bool:
        """The request had a body and its follow-up did not re-send it."""
        return self.body and self.f_method is not None and not self.f_body


_COLUMNS = """r.id, r.source, r.method, r.status, r.url, r.location_url, r.started_at,
    r.user_agent, (coalesce(r.request_body_size, 0) > 0 or r.request_body_chunked = 1),
    r.request_content_type, coalesce(r.has_authorization, 0),
    f.method, f.status,
    (coalesce(f.request_body_size, 0) > 0 or coalesce(f.request_body_chunked, 0) = 1),
    f.link_confidence, coalesce(f.has_authorization, 0), coalesce(f.has_cookie, 0),
    coalesce(r.has_cookie, 0)"""


def redirect_hops(ctx: AuditContext, where_sql: str, params: Iterable[Any] = ()) -> list[Hop]:
    """The redirects (``r``) matching ``where_sql``, each with its follow-up (``f``)."""
    ensure_responses(ctx)
    cursor = ctx.conn.cursor()
    cursor.row_factory = None
    rows = cursor.execute(
        f"""select {_COLUMNS}
            from {RESPONSES} r left join {FOLLOW_UPS} f on f.follow_up_of = r.id
            where {where_sql}
            order by r.id""",
        tuple(params),
    ).fetchall()
    return [Hop(*row) for row in rows]


@dataclass
class Place:
    """The redirects of one (route template, method, status)."""

    source: str
    method: str
    status: int
    hops: list[Hop] = field(default_factory=list)

    def group(self, target: str | None = None) -> Group:
        """The finding group of these hops (example: the first request)."""
        first = self.hops[0]
        targets = Counter(h.target for h in self.hops)
        example = targets.most_common(1)[0][0]
        shapes = {template_of_url(t) for t in targets}
        if len(shapes) == 1:  # /v1/items/7 -> /v2/items/7 for every id: one target shape
            targets = Counter({shapes.pop(): len(self.hops)})
            example = next(iter(targets))
        group = Group(
            self.source,
            self.method,
            self.status,
            target if target is not None else example,
            hits=len(self.hops),
            first_seen=min(h.started_at for h in self.hops),
            last_seen=max(h.started_at for h in self.hops),
            example_request_id=first.id,
            example_url=first.url,
            user_agent=first.user_agent,
        )
        group.targets = len(targets)
        for hop in self.hops:
            group.agents[hop.client] += 1
        return group


def places(hops: Iterable[Hop]) -> list[Place]:
    """Hops grouped by (source, method, status), most requests first."""
    found: dict[tuple[str, str, int], Place] = {}
    for hop in hops:
        key = (hop.source, hop.method, hop.status)
        place = found.get(key)
        if place is None:
            place = found[key] = Place(*key)
        place.hops.append(hop)
    return sorted(found.values(), key=lambda p: (-len(p.hops), p.source, p.method, p.status))


def _body_word(hop: Hop) -> str:
    if not hop.body:
        return "none"
    return "kept" if hop.f_body else "dropped"


def client_evidence(hops: Iterable[Hop]) -> list[dict[str, Any]]:
    """Per client family: requests, followed, not followed, ambiguous links, and the
    follow-ups' (method, body, status) outcomes, most requests first."""
    per_client: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, Counter[tuple[str, str, int | None]]] = {}
    for hop in hops:
        entry = per_client.get(hop.client)
        if entry is None:
            entry = per_client[hop.client] = {
                "client": hop.client,
                "requests": 0,
                "followed": 0,
                "not_followed": 0,
                "ambiguous": 0,
            }
            outcomes[hop.client] = Counter()
        entry["requests"] += 1
        if hop.f_method is None:
            entry["not_followed"] += 1
            continue
        entry["followed"] += 1
        if hop.f_confidence == "ambiguous":
            entry["ambiguous"] += 1
        outcomes[hop.client][(hop.f_method, _body_word(hop), hop.f_status)] += 1
    result = []
    for client, entry in sorted(per_client.items(), key=lambda kv: (-kv[1]["requests"], kv[0])):
        entry["outcomes"] = [
            {"method": m, "body": b, "status": s, "count": n}
            for (m, b, s), n in outcomes[client].most_common()
        ]
        result.append(entry)
    return result


def describe_evidence(clients: list[dict[str, Any]], limit: int = 4) -> str:
    """``requests: 5 followed as GET without the body → 405; urllib: 2 not followed``."""
    parts = []
    for entry in clients[:limit]:
        bits = []
        for outcome in entry["outcomes"][:2]:
            body = {"dropped": " without the body", "kept": " with the body"}.get(
                outcome["body"], ""
            )
            bits.append(
                f"{outcome['count']} followed as {outcome['method']}{body} → {outcome['status']}"
            )
        if entry["not_followed"]:
            bits.append(f"{entry['not_followed']} not followed")
        if entry["ambiguous"]:
            bits.append(f"{entry['ambiguous']} linked ambiguously")
        parts.append(f"{entry['client']}: {', '.join(bits)}")
    more = len(clients) - limit
    return "; ".join(parts) + (f"; and {plural(more, 'more client')}" if more > 0 else "")


_VERSION = re.compile(r"v\d+(?:\.\d+)*|\d+(?:\.\d+)+|api|legacy|old|new", re.I)


def move_kind(url: str | None, target: str | None) -> str | None:
    """How ``target`` is the same resource as ``url`` moved, else None.

    ``slash`` (only a trailing slash added or removed), ``host`` (the same path on
    another origin: another host, or https), ``version`` (the path with a version or
    prefix segment changed, added or removed: /v1/users/42 → /v2/users/42). A redirect
    to another page — the same path answering GET, a parent, a child, another name —
    is not a move: that is post/redirect/get.
    """
    if not url or not target:
        return None
    source, dest = urlsplit(url), urlsplit(target)
    if source.query != dest.query and source.path == dest.path:
        return None
    a, b = source.path, dest.path
    if a != b and a.rstrip("/") == b.rstrip("/"):
        return "slash"
    if (source.scheme, source.netloc) != (dest.scheme, dest.netloc) and dest.netloc:
        return "host" if a.rstrip("/") == b.rstrip("/") else None
    a_parts = [p for p in a.split("/") if p]
    b_parts = [p for p in b.split("/") if p]
    if a_parts == b_parts or not a_parts or not b_parts or a_parts[-1] != b_parts[-1]:
        return None
    # Only version or prefix segments differ: /v1/users/1, /api/v2/users/1, /users/1.
    if [p for p in a_parts if not _VERSION.fullmatch(p)] == [
        p for p in b_parts if not _VERSION.fullmatch(p)
    ]:
        return "version"
    return None
