"""Record each framework app's traffic once per test session and audit it once.

Every app is served by real uvicorn on 127.0.0.1 behind the real RedirectRecorder
(FastAPI through ``app.add_middleware``, Litestar and Quart wrapped, Django under the
``redirect-auditor run`` CLI in its own process) and driven by real clients: httpx,
requests, curl and headless Chromium submitting a real HTML form. No client ever
follows a redirect off loopback: the open-redirect probes never follow.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import requests

from auditor import RedirectRecorder
from tests.browser import dump_dom
from tests.servers import ROOT, cli_command, fetch_rows, free_port, serve_in_process, wait_for
from tests.servers import serve_in_thread as _serve_in_thread

if TYPE_CHECKING:
    from auditor.analysis.audit import AuditResult
    from auditor.analysis.rules.base import Finding

# The method-and-body family of docs/problems.md.
METHOD_FAMILY = frozenset(
    {
        "method-change-on-move",
        "post-redirect-get-302",
        "form-reposted-by-307",
        "redirect-target-fails",
    }
)

# What names each framework's redirect API in a fix: a finding of one framework's app
# names its own and none of the others'.
API_PATTERNS: dict[str, tuple[str, ...]] = {
    "fastapi": (r"\bRedirectResponse\b", r"\bredirect_slashes\b", r"\bStarlette\b", r"\bFastAPI\b"),
    "django": (
        r"\bHttpResponse\w*Redirect\b",
        r"\bHttpResponseSeeOther\b",
        r"\bAPPEND_SLASH\b",
        r"\bDjango\b",
    ),
    "litestar": (r"\bRedirect\(path=", r"\bLitestar\b"),
    "quart": (r"\bQuart\b", r"\bFlask\b", r"\bredirect\([^)]*(?<!status_)\bcode="),
}

# Off-site targets the open-redirect probe sends in ?next= (never followed).
ATTACKER_TARGETS = (
    "https://evil.example/login",
    "https://attacker.example.net/phish?step=1",
    "//evil.example.org/steal",
    "https://evil.example/session/renew",
)
ATTACKER_HOSTS = frozenset({"evil.example", "attacker.example.net", "evil.example.org"})

TIMEOUT = 10.0


def foreign_api_names(framework: str, text: str) -> list[str]:
    """The other frameworks' API names that ``text`` mentions."""
    return [
        pattern
        for other, patterns in API_PATTERNS.items()
        if other != framework
        for pattern in patterns
        if re.search(pattern, text)
    ]


def curl(*args: str) -> None:
    """curl -s on loopback, the body discarded."""
    subprocess.run(["curl", "-s", "-o", "/dev/null", *args], check=True, timeout=30)


def clients(base: str) -> tuple[httpx.Client, requests.Session]:
    """An httpx client that follows redirects (it does not by default) and a requests
    session (it follows by default)."""
    return httpx.Client(base_url=base, follow_redirects=True, timeout=TIMEOUT), requests.Session()


# --- drivers: what each app's users do ------------------------------------------------


def drive_fastapi(base: str) -> None:
    web, session = clients(base)
    with web, session:
        for path, fields in (
            ("/feedback", {"message": "great"}),
            ("/login", {"username": "ada", "password": "hunter2"}),
            ("/subscribe", {"email": "ada@example.com"}),
            ("/contact", {"message": "hi"}),
        ):
            web.post(path, data=fields)
            session.post(base + path, data=fields, timeout=TIMEOUT)
        web.get("/catalog")
        session.get(base + "/catalog", timeout=TIMEOUT)
        curl("-L", f"{base}/catalog")
        web.post("/api/notes", json={"name": "first"})
        session.post(base + "/api/notes", json={"name": "second"}, timeout=TIMEOUT)
        # requests keeps PUT and drops the body on a 301 (v2 answers 422); httpx keeps both
        for item_id in (1, 2, 3):
            session.put(f"{base}/v1/items/{item_id}", json={"name": "x"}, timeout=TIMEOUT)
            session.put(f"{base}/v1/orders/{item_id}", json={"name": "x"}, timeout=TIMEOUT)
        for item_id in (4, 5, 6):
            web.put(f"/v1/items/{item_id}", json={"name": "x"})
            web.put(f"/v1/orders/{item_id}", json={"name": "x"})


ARTICLE_IDS = (42, 7, 1001, 3, 99, 2024)


def drive_django(base: str) -> None:
    # A real <form method=post> submitted by headless Chromium, which then shows the page
    # the 302 led to.
    dom = dump_dom(f"{base}/contact/")
    assert "thanks" in dom, dom
    web, session = clients(base)
    with web, session:
        session.post(f"{base}/contact/", data={"message": "hello"}, timeout=TIMEOUT)
        web.post("/contact/", data={"message": "hello again"})
        session.post(f"{base}/newsletter/", data={"email": "ada@example.com"}, timeout=TIMEOUT)
        web.post("/newsletter/", data={"email": "bob@example.com"})
        # APPEND_SLASH on GET: several articles, several clients
        for pk in ARTICLE_IDS[:2]:
            web.get(f"/articles/{pk}")
        for pk in ARTICLE_IDS[2:4]:
            session.get(f"{base}/articles/{pk}", timeout=TIMEOUT)
        for pk in ARTICLE_IDS[4:]:
            curl("-L", f"{base}/articles/{pk}")
        # APPEND_SLASH on POST with DEBUG=False: 301, and the form arrives as a bodiless GET
        web.post("/comments/", data={"text": "direct"})  # the slashed URL takes POST
        web.post("/comments", data={"text": "first"})
        session.post(f"{base}/comments", data={"text": "second"}, timeout=TIMEOUT)


USER_IDS = (1, 2, 3, 4, 5)


def drive_litestar(base: str) -> None:
    web, session = clients(base)
    with web, session:
        web.post("/feedback", data={"message": "great"})
        session.post(f"{base}/feedback", data={"message": "fine"}, timeout=TIMEOUT)
        for user_id in USER_IDS[:3]:
            web.get(f"/users/{user_id}/profile-old")
        for user_id in USER_IDS[3:]:
            session.get(f"{base}/users/{user_id}/profile-old", timeout=TIMEOUT)
        # Litestar's trailing-slash handling: the slashed path is the same route, no redirect
        web.get(f"/users/{USER_IDS[0]}/profile/")


def drive_quart(base: str) -> None:
    web, session = clients(base)
    with web, session:
        web.post("/subscribe", data={"email": "ada@example.com"})
        session.post(f"{base}/subscribe", data={"email": "bob@example.com"}, timeout=TIMEOUT)
        # the open redirect: four attacker URLs, four clients, none followed off loopback
        first, second, third, fourth = ATTACKER_TARGETS
        web.get("/go", params={"next": first}, follow_redirects=False)
        session.get(f"{base}/go", params={"next": second}, allow_redirects=False, timeout=TIMEOUT)
        curl("-G", "--data-urlencode", f"next={third}", f"{base}/go")
        with httpx.Client(base_url=base, timeout=TIMEOUT) as plain:  # httpx's default: no follow
            plain.get("/go", params={"next": fourth})
        web.get("/library")  # Werkzeug's strict_slashes redirect


# --- recording ---------------------------------------------------------------------------


@dataclass
class Traffic:
    """One framework's recorded traffic and (once asked for) its audit."""

    framework: str
    db: Path
    notes: dict[str, Any] = field(default_factory=dict)
    _result: AuditResult | None = None

    def audit(self) -> AuditResult:
        if self._result is None:
            import auditor

            self._result = auditor.audit(self.db)
        return self._result

    def rows(self, sql: str = "select * from requests order by id") -> list[dict[str, Any]]:
        return fetch_rows(self.db, sql)


def _wait_for_rows(db: Path, count: int) -> None:
    wait_for(
        lambda: len(fetch_rows(db, "select id from requests")) >= count,
        timeout=20,
        what=f"{count} recorded rows in {db}",
    )


def record_fastapi(db: Path) -> Traffic:
    from tests.frameworks import fastapi_app

    app = fastapi_app.build_app()
    app.add_middleware(RedirectRecorder, db_path=db)  # the documented FastAPI way
    try:
        with _serve_in_thread(app) as base:
            drive_fastapi(base)
    finally:
        # lifespan shutdown flushed the rows; stop this recorder's writer too
        layer: Any = app.middleware_stack
        while layer is not None and not isinstance(layer, RedirectRecorder):
            layer = getattr(layer, "app", None)
        assert layer is not None, "no RedirectRecorder in the middleware stack"
        layer.writer.close()
    return Traffic("fastapi", db)


def _record_wrapped(framework: str, app: Any, db: Path, drive: Callable[[str], None]) -> Traffic:
    recorder = RedirectRecorder(app, db_path=db)
    try:
        with _serve_in_thread(recorder) as base:
            drive(base)
    finally:
        recorder.writer.close()
    return Traffic(framework, db)


def record_litestar(db: Path) -> Traffic:
    from tests.frameworks import litestar_app

    traffic = _record_wrapped("litestar", litestar_app.app, db, drive_litestar)
    traffic.notes["path_templates"] = set(litestar_app.SEEN_TEMPLATES)
    return traffic


def record_quart(db: Path) -> Traffic:
    from tests.frameworks import quart_app

    return _record_wrapped("quart", quart_app.app, db, drive_quart)


def record_django(db: Path) -> Traffic:
    """Django under ``redirect-auditor run`` (its own process: Django's settings are
    process-global); the process is stopped before the audit reads the file."""
    port = free_port()
    args = cli_command(
        "run", "tests.frameworks.django_app:application", "--db", str(db),
        "--port", str(port), "--log-level", "warning",
    )  # fmt: skip
    with serve_in_process(args, port, cwd=ROOT) as base:
        drive_django(base)
    return Traffic("django", db)


RECORDERS: dict[str, Callable[[Path], Traffic]] = {
    "fastapi": record_fastapi,
    "django": record_django,
    "litestar": record_litestar,
    "quart": record_quart,
}
_recorded: dict[str, Traffic] = {}


def recorded(framework: str, tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    """The framework app's traffic, recorded on first use in this session."""
    if framework not in _recorded:
        folder = tmp_path_factory.mktemp(f"{framework}-traffic")
        _recorded[framework] = RECORDERS[framework](folder / "traffic.db")
    return _recorded[framework]


# --- reading findings ----------------------------------------------------------------------


def select(
    findings: Iterable[Finding],
    rule: str | None = None,
    source: str | None = None,
    rules: Iterable[str] | None = None,
) -> list[Finding]:
    """The findings of one rule (or a set of rules) at one place, either filter optional."""
    wanted = set(rules) if rules is not None else None
    return [
        f
        for f in findings
        if (rule is None or f.rule == rule)
        and (source is None or f.source == source)
        and (wanted is None or f.rule in wanted)
    ]


def counts(findings: Iterable[Finding]) -> dict[tuple[str, str], int]:
    """How many findings per (rule, source)."""
    result: dict[tuple[str, str], int] = {}
    for finding in findings:
        key = (finding.rule, finding.source)
        result[key] = result.get(key, 0) + 1
    return result


def describe(findings: Iterable[Finding]) -> str:
    """One line per finding, for assertion messages."""
    return (
        "\n".join(
            f"{f.severity:7} {f.rule:28} {f.method or '-':6} {f.status or '-'} {f.source}"
            for f in findings
        )
        or "(no findings)"
    )


def client_outcomes(finding: Finding) -> dict[str, list[dict[str, Any]]]:
    """evidence["clients"] as client family -> its outcomes."""
    return {
        entry["client"]: list(entry.get("outcomes", []))
        for entry in finding.evidence.get("clients", [])
    }
