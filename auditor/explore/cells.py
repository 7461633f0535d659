"""HTML pieces for recorded values: hop paths, severity badges, fixes, specs, evidence.

Recorded traffic is attacker-controlled, so every value goes into HTML through
``Markup.format`` or ``escape``; nothing here builds markup by string concatenation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

from markupsafe import Markup

from auditor.explore.pictures import Hop, origin_of, short_url, status_colour
from auditor.redirects import is_redirect
from auditor.store.schema import FRAMEWORKS

SEVERITIES = ("error", "warning", "info")
FIX_LENGTH = 160
NOT_FOLLOWED = " (not followed)"
TIMES = "\u00d7"  # the multiplication sign


def severity_badge(severity: Any) -> Markup:
    known = severity if severity in SEVERITIES else "other"
    return Markup('<span class="ra-sev ra-sev-{}">{}</span>').format(known, severity)


def inline_code(text: str) -> Markup:
    """``text`` escaped, with `backticked` parts as ``<code>``."""
    pieces = text.split("`")
    if len(pieces) % 2 == 0:  # an unmatched backtick: show it as it is
        return Markup("{}").format(text)
    return Markup("").join(
        Markup("<code>{}</code>").format(piece) if i % 2 else Markup("{}").format(piece)
        for i, piece in enumerate(pieces)
    )


SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)[.;](?:\s|$)")


def one_line_fix(recommendation: Any, limit: int = FIX_LENGTH) -> str:
    """The first sentence of a recommendation (or its clause before a colon, when the
    sentence is long), at most ``limit`` characters."""
    text = " ".join(str(recommendation or "").split())
    end = SENTENCE_END.search(text)
    first = text[: end.start()] if end else text
    if len(first) > limit and 0 < first.find(": ") < limit:
        first = first[: first.find(": ")]
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


SPEC_TOKEN = re.compile(r"RFC\s?(\d{3,5})|§\s?(\d+(?:\.\d+)*)|CWE-(\d+)")


def spec_links(spec: Any) -> Markup:
    """``RFC 9110 §15.4.2; CWE-601`` with each RFC section and CWE linked."""
    text = str(spec or "")
    parts: list[Markup] = []
    rfc = None
    at = 0
    for match in SPEC_TOKEN.finditer(text):
        parts.append(Markup("{}").format(text[at : match.start()]))
        at = match.end()
        number, section, cwe = match.groups()
        if number:
            rfc = number
            href = f"https://www.rfc-editor.org/rfc/rfc{number}"
        elif section and rfc:
            href = f"https://www.rfc-editor.org/rfc/rfc{rfc}#section-{section}"
        elif cwe:
            href = f"https://cwe.mitre.org/data/definitions/{cwe}.html"
        else:
            parts.append(Markup("{}").format(match.group(0)))
            continue
        parts.append(Markup('<a href="{}">{}</a>').format(href, match.group(0)))
    parts.append(Markup("{}").format(text[at:]))
    return Markup("").join(parts)


# --- evidence ---------------------------------------------------------------------------


def parse_evidence(value: Any) -> dict[str, Any]:
    try:
        evidence = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return {}
    return evidence if isinstance(evidence, dict) else {}


def client_entries(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    clients = evidence.get("clients")
    return [c for c in clients if isinstance(c, dict)] if isinstance(clients, list) else []


def clients_text(evidence: dict[str, Any]) -> str:
    """``Chromium 12, curl 3``: each client family and its requests here."""
    return ", ".join(
        f"{c.get('client', '?')} {c.get('requests', '?')}" for c in client_entries(evidence)
    )


def outcome_text(outcome: Any) -> str:
    """``GET, body dropped → 405 x10`` (a multiplication sign): what some follow-ups did."""
    if not isinstance(outcome, dict):
        return str(outcome)
    body = outcome.get("body")
    body_text = f", body {body}" if body in ("kept", "dropped") else ""
    return (
        f"{outcome.get('method', '?')}{body_text} → {outcome.get('status', '?')} "
        f"{TIMES}{outcome.get('count', '?')}"
    )


def evidence_summary(value: Any) -> Markup | None:
    """The evidence cell: one line per client, the other keys after; None when unreadable."""
    evidence = parse_evidence(value)
    if not evidence:
        return None
    lines = []
    for client in client_entries(evidence):
        outcomes = client.get("outcomes") if isinstance(client.get("outcomes"), list) else []
        lines.append(
            Markup("<li><strong>{}</strong>: {} requests, {} followed{}</li>").format(
                client.get("client", "?"),
                client.get("requests", "?"),
                client.get("followed", "?"),
                ("; " + "; ".join(outcome_text(o) for o in outcomes)) if outcomes else "",
            )
        )
    for key, item in evidence.items():
        if key != "clients":
            shown = ", ".join(map(str, item)) if isinstance(item, list) else str(item)
            lines.append(Markup("<li>{}: {}</li>").format(key, shown))
    return Markup('<ul class="ra-evidence">{}</ul>').format(Markup("").join(lines))


# --- chains as a readable path ---------------------------------------------------------


def render_path(hops: list[Hop], row_url: Callable[[int], str] | None = None) -> Markup:
    """``POST /a —301→ GET /b —200``: hops linked via ``row_url(request_id)``, coloured codes."""
    origin = origin_of(hops[0].url)
    parts: list[Markup] = []
    for index, hop in enumerate(hops):
        text = Markup("<strong>{}</strong> {}").format(hop.method, short_url(hop.url, origin))
        if not hop.method and hop.status is None:  # where an unfollowed redirect pointed
            parts.append(
                Markup('<span class="ra-hop ra-unfollowed">{}{}</span>').format(
                    short_url(hop.url, origin), NOT_FOLLOWED
                )
            )
            break
        if row_url is not None and isinstance(hop.request_id, int):
            text = Markup('<a href="{}" title="{}">{}</a>').format(
                row_url(hop.request_id), hop.url, text
            )
        redirected = isinstance(hop.status, int) and is_redirect(hop.status)
        arrow = "→" if index < len(hops) - 1 or redirected else ""
        status = Markup('<span class="ra-status" style="color:{};font-weight:bold">—{}{}</span>')
        status = status.format(
            status_colour(hop.status), "" if hop.status is None else hop.status, arrow
        )
        parts.append(
            Markup('<span class="ra-hop" style="white-space:nowrap">{} {}</span> ').format(
                text, status
            )
        )
    return Markup('<span class="ra-path">{}</span>').format(Markup("").join(parts).strip())


def parse_path_text(text: str, base: str = "") -> list[Hop] | None:
    """Hops from ``POST /a —301→ GET /b —200`` (or ASCII ``-301->``); an unfollowed chain's
    ``... —302→ /next (not followed)`` tail becomes a hop without method or status, its
    URL resolved against ``base`` when given."""
    pieces = re.split(r"\s+(?:—|-)(\d{3})(?:→|->)?(?=\s|$)", text.strip())
    if len(pieces) < 2:
        return None
    hops = []
    for hop_text, status in zip(pieces[0::2], pieces[1::2], strict=False):
        method, _, url = hop_text.strip().partition(" ")
        hops.append(Hop(method=method, url=url, status=int(status)))
    tail = pieces[-1].strip()
    if tail:
        tail = tail.removesuffix(NOT_FOLLOWED.strip()).strip()
        hops.append(Hop(method="", url=urljoin(base, tail) if base else tail, status=None))
    return hops


def picture(dot: str, caption: str, fallback: Markup | str = "", *, shown: bool = True) -> Markup:
    """A figure the page script draws with Graphviz from ``dot`` (an escaped attribute);
    ``fallback`` shows when scripts are off; the caption is only for screen readers
    unless ``shown``."""
    return Markup(
        '<figure class="ra-picture"><div class="ra-graph" data-ra-dot="{}" role="img" '
        'aria-label="{}"><noscript>{}</noscript></div>{}</figure>'
    ).format(
        dot,
        caption,
        fallback,
        Markup("<figcaption>{}</figcaption>").format(caption) if shown else "",
    )


def framework_name(evidence: dict[str, Any]) -> str | None:
    """The app's framework as the recorder saw it (``evidence.framework``), for people."""
    framework = evidence.get("framework")
    return FRAMEWORKS.get(framework) if isinstance(framework, str) else None


def place_text(row: dict[str, Any]) -> str:
    """``POST /login → 302``: the finding's place."""
    status = "" if row.get("status") is None else f" → {row['status']}"
    return f"{row.get('method') or ''} {row.get('source') or ''}{status}".strip()
