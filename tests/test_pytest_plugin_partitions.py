"""`--redirect-audit` keeps each test's and each app instance's traffic apart (issue 17,
case 2).

Every TestClient app is served as ``testserver``. Joined by URL, unrelated redirects of
different tests became a redirect chain, a redirect loop and a permanent redirect whose
target changed. Here those stay apart, while a chain inside one test's app is still
found and names its test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.servers import fetch_rows

pytest_plugins = ["pytester"]

APPS = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route


def redirecting(routes, pages=()):
    # routes: path -> (status, Location); pages answer 200 with their path.
    def redirect(status, location):
        async def endpoint(request):
            return RedirectResponse(location, status_code=status)

        return endpoint

    async def page(request):
        return PlainTextResponse(request.url.path)

    return Starlette(
        routes=[Route(p, redirect(s, loc)) for p, (s, loc) in routes.items()]
        + [Route(p, page) for p in pages]
    )
"""

LEFT = """
from starlette.testclient import TestClient

from apps import redirecting


def test_a_to_b():
    client = TestClient(redirecting({"/a": (307, "/b")}))
    assert client.get("/a", follow_redirects=False).status_code == 307


def test_p_to_q():
    client = TestClient(redirecting({"/p": (307, "/q")}))
    assert client.get("/p", follow_redirects=False).status_code == 307


def test_old_goes_to_new():
    client = TestClient(redirecting({"/old": (301, "/new")}, pages=["/new"]))
    assert client.get("/old").text == "/new"


def test_two_apps_in_one_test():
    one = TestClient(redirecting({"/m": (307, "/n")}))
    two = TestClient(redirecting({"/n": (307, "/o")}, pages=["/o"]))
    assert one.get("/m", follow_redirects=False).status_code == 307
    assert two.get("/n").text == "/o"
"""

RIGHT = """
from starlette.testclient import TestClient

from apps import redirecting


def test_b_to_c():
    client = TestClient(redirecting({"/b": (307, "/c")}, pages=["/c"]))
    assert client.get("/b").text == "/c"


def test_q_to_p():
    client = TestClient(redirecting({"/q": (307, "/p")}))
    assert client.get("/q", follow_redirects=False).status_code == 307


def test_old_goes_elsewhere():
    client = TestClient(redirecting({"/old": (301, "/elsewhere")}, pages=["/elsewhere"]))
    assert client.get("/old").text == "/elsewhere"
"""

ONE_APP_CHAIN = """
from starlette.testclient import TestClient

from apps import redirecting

app = redirecting({"/x": (307, "/y"), "/y": (307, "/z")}, pages=["/z"])


def test_a_real_chain():
    assert TestClient(app).get("/x").text == "/z"


def test_one_app_two_clients():
    # One app instance: what one client was told and another walked is one site's graph.
    first, second = TestClient(app), TestClient(app)
    assert first.get("/x", follow_redirects=False).status_code == 307
    assert second.get("/y").text == "/z"
"""

SUMMARY = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)")


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Test node id -> outcome, from the ``-rA`` short summary."""
    found = (SUMMARY.match(line) for line in result.outlines)
    return {m.group(2): m.group(1) for m in found if m}


def findings(result: pytest.RunResult) -> list[str]:
    return [
        line
        for line in result.outlines
        if re.match(r"^(ERROR|WARNING|INFO) +[a-z-]+: ", line) and "(" in line
    ]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(apps=APPS)
    pytester.syspathinsert()
    return pytester


def test_unrelated_tests_at_the_same_host_are_never_joined(
    project: pytest.Pytester, tmp_path: Path
) -> None:
    project.makepyfile(test_left=LEFT, test_right=RIGHT)
    db = tmp_path / "suite.db"
    plain = project.runpytest("-rA", "-p", "no:randomly")
    audited = project.runpytest(
        "-rA", "-p", "no:randomly", f"--redirect-audit={db}", "--redirect-audit-fail-on=warning"
    )
    assert outcomes(audited) == outcomes(plain)
    assert len(outcomes(plain)) == 7 and set(outcomes(plain).values()) == {"PASSED"}
    # Joined, these made an ERROR redirect-loop (/p -> /q -> /p), WARNING redirect-chains
    # (/a -> /b -> /c, /m -> /n -> /o) and a WARNING permanent-target-changed (/old).
    assert findings(audited) == [
        "INFO    permanent-without-cache-control: GET /old 301 -> http://testserver/new (2 hit(s))"
    ]
    audited.stdout.fnmatch_lines(
        [
            "*; seen in test_left.py::test_old_goes_to_new, test_right.py::test_old_goes_elsewhere",
            "*0 errors, 0 warnings, 1 info*",
        ]
    )
    assert audited.ret == pytest.ExitCode.OK
    # Each (test, app instance) is a client and a site of its own; the same host name
    # in two of them is two hosts to the analysis.
    rows = fetch_rows(db, "select id, client_ip, host, url, follow_up_of from requests order by id")
    sites: dict[str, set[str]] = {}
    for row in rows:
        sites.setdefault(row["client_ip"], set()).add(row["host"])
    assert len(sites) == 8  # 7 tests, one of them with two apps
    assert all(len(hosts) == 1 for hosts in sites.values())
    assert len({h for hosts in sites.values() for h in hosts}) == 8
    assert {row["client_ip"].partition(":")[2] for row in rows} == set(outcomes(plain))
    two_apps = [r for r in rows if r["client_ip"].endswith("::test_two_apps_in_one_test")]
    # /m -> /n was not followed; /n -> /o was, by the other app's client.
    assert [r["url"].rsplit("/", 1)[1] for r in two_apps] == ["m", "n", "o"]
    assert [r["follow_up_of"] for r in two_apps] == [None, None, two_apps[1]["id"]]


def test_a_chain_inside_one_tests_app_is_still_found(project: pytest.Pytester) -> None:
    project.makepyfile(test_chain=ONE_APP_CHAIN)
    result = project.runpytest("-rA", "-p", "no:randomly", "--redirect-audit")
    result.assert_outcomes(passed=2)
    lines = findings(result)
    chains = [line for line in lines if "redirect-chain" in line]
    assert chains == ["WARNING redirect-chain: GET /x 307 -> http://testserver/z (2 hit(s))"]
    result.stdout.fnmatch_lines(
        [
            "WARNING redirect-chain: GET /x 307*",
            "*; seen in test_chain.py::test_a_real_chain, test_chain.py::test_one_app_two_clients",
        ]
    )
