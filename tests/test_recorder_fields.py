"""Every requests column the recorder fills, checked against real uvicorn traffic."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor import RedirectRecorder
from tests.apps import fastapi_site, site
from tests.servers import fetch_rows, serve_in_thread

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
BODY = b"hello body"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RedirectRecorder]]:
    """One recorded server for the read-only field checks; tests tell rows apart by request id."""
    recorder = RedirectRecorder(site.app, tmp_path_factory.mktemp("fields") / "traffic.db")
    with serve_in_thread(recorder, proxy_headers=False) as url:
        yield url, recorder
    recorder.writer.close()


def row_for(recorder: RedirectRecorder, request_id: str) -> dict[str, Any]:
    recorder.writer.flush()
    rows = fetch_rows(
        recorder.writer.db_path, "select * from requests where request_id = ?", (request_id,)
    )
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE"])
def test_redirect_row_records_request_and_location(
    shared: tuple[str, RedirectRecorder], method: str, code: int
) -> None:
    url, recorder = shared
    request_id = f"{method}-{code}"
    has_body = method in ("POST", "PUT", "DELETE")
    before = time.time()
    response = httpx.request(
        method,
        f"{url}/redirect/{code}?to=/landing/next&token=s3cret&page=2",
        content=BODY if has_body else None,
        headers={"x-request-id": request_id, "user-agent": "field-test/1.0"},
    )
    after = time.time()
    assert response.status_code == code

    row = row_for(recorder, request_id)
    port = url.rsplit(":", 1)[1]
    assert before <= row["started_at"] <= after
    assert 0 <= row["duration_ms"] <= (after - before) * 1000
    assert row["method"] == method
    assert (row["scheme"], row["host"]) == ("http", f"127.0.0.1:{port}")
    assert row["path"] == f"/redirect/{code}"
    assert row["query"] == "to=/landing/next&token=REDACTED&page=2"
    assert (
        row["url"]
        == f"http://127.0.0.1:{port}/redirect/{code}?to=/landing/next&token=REDACTED&page=2"
    )
    assert row["route"] == "/redirect/{code:int}"
    assert row["status"] == code
    assert row["location"] == "/landing/next"
    assert row["location_url"] == f"http://127.0.0.1:{port}/landing/next"
    assert row["locations"] is None
    assert row["request_body_size"] == (len(BODY) if has_body else None)
    assert row["request_body_chunked"] == 0
    assert row["response_body_size"] == 0
    assert row["response_complete"] == 1
    assert row["user_agent"] == "field-test/1.0"
    assert row["worker_id"] == WORKER_ID
    assert len(row["client_key"]) == 16 and row["client_key"] != "127.0.0.1"
    assert row["connection_key"] and row["connection_key"] != row["client_key"]
    assert row["client_ip"] is None
    assert row["http_version"] == "1.1"
    assert row["error"] is None
    assert (row["server_scheme"], row["server_host"]) == ("http", f"127.0.0.1:{port}")


def test_post_landing_records_response_body_size(shared: tuple[str, RedirectRecorder]) -> None:
    url, recorder = shared
    response = httpx.post(f"{url}/landing/form", content=BODY, headers={"x-request-id": "size"})
    assert response.content == b"POST 10"
    row = row_for(recorder, "size")
    assert (row["request_body_size"], row["response_body_size"]) == (10, 7)
    assert row["request_content_type"] is None


def test_chunked_request_body_is_flagged_without_size(shared: tuple[str, RedirectRecorder]) -> None:
    url, recorder = shared
    response = httpx.put(
        f"{url}/landing/upload",
        content=iter([b"part one ", b"part two"]),
        headers={"x-request-id": "chunked", "content-type": "text/plain"},
    )
    assert response.content == b"PUT 17"
    row = row_for(recorder, "chunked")
    assert (row["request_body_chunked"], row["request_body_size"]) == (1, None)
    assert row["request_content_type"] == "text/plain"


def test_every_location_is_kept_when_sent_twice(shared: tuple[str, RedirectRecorder]) -> None:
    url, recorder = shared
    httpx.get(f"{url}/multi", headers={"x-request-id": "multi"})
    row = row_for(recorder, "multi")
    assert row["location"] == "/landing/one"
    assert json.loads(row["locations"]) == ["/landing/one", "/landing/two?token=REDACTED"]


def test_absolute_location_is_resolved_and_normalized(shared: tuple[str, RedirectRecorder]) -> None:
    url, recorder = shared
    httpx.get(f"{url}/absolute", headers={"x-request-id": "absolute"})
    row = row_for(recorder, "absolute")
    assert row["location"] == "https://Example.COM:443/Next/%7euser?b=2#frag"
    assert row["location_url"] == "https://example.com/Next/~user?b=2"


def test_cache_headers_are_stored_on_redirects_only(shared: tuple[str, RedirectRecorder]) -> None:
    url, recorder = shared
    httpx.get(f"{url}/cached-redirect", headers={"x-request-id": "cached-301"})
    httpx.get(f"{url}/cached-ok", headers={"x-request-id": "cached-200"})
    redirect = row_for(recorder, "cached-301")
    assert redirect["cache_control"] == "max-age=3600"
    assert redirect["expires"] == "Thu, 01 Jan 2099 00:00:00 GMT"
    ok = row_for(recorder, "cached-200")
    assert (ok["cache_control"], ok["expires"]) == (None, None)


def test_mounted_route_template_includes_mount_prefix(shared: tuple[str, RedirectRecorder]) -> None:
    url, recorder = shared
    assert httpx.get(f"{url}/api/v1/users/42", headers={"x-request-id": "mount"}).text == "user 42"
    row = row_for(recorder, "mount")
    assert (row["path"], row["route"]) == ("/api/v1/users/42", "/api/v1/users/{user_id:int}")


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/people/ann/posts/7", "/people/{uid}/posts/{post_id:int}"),
        ("/plain/any/file.css", "/plain/{path:path}"),
    ],
)
def test_mount_templates_keep_parameters_and_plain_apps_get_a_path_template(
    shared: tuple[str, RedirectRecorder], path: str, route: str
) -> None:
    url, recorder = shared
    assert httpx.get(url + path, headers={"x-request-id": path}).status_code == 200
    assert row_for(recorder, path)["route"] == route


def test_unmatched_path_has_no_route(make_recorder: Callable[..., RedirectRecorder]) -> None:
    from starlette.applications import Starlette

    recorder = make_recorder(Starlette())
    with serve_in_thread(recorder) as url:
        assert httpx.get(f"{url}/nowhere").status_code == 404
    recorder.writer.flush()
    rows = fetch_rows(recorder.writer.db_path, "select path, route, status from requests")
    assert rows == [{"path": "/nowhere", "route": None, "status": 404}]


def test_fastapi_routes_record_templates_with_prefix_and_mount(
    make_recorder: Callable[..., RedirectRecorder],
) -> None:
    recorder = make_recorder(fastapi_site.app)
    with serve_in_thread(recorder) as url, httpx.Client(base_url=url) as client:
        assert client.get("/items/5").json() == {"item": 5}
        assert client.post("/shop/orders/9").status_code == 303
        assert client.get("/docs-site/pages/intro").json() == {"page": "intro"}
    recorder.writer.flush()
    rows = fetch_rows(
        recorder.writer.db_path, "select path, route, status, location from requests order by id"
    )
    assert rows == [
        {"path": "/items/5", "route": "/items/{item_id}", "status": 200, "location": None},
        {
            "path": "/shop/orders/9",
            "route": "/shop/orders/{order_id}",
            "status": 303,
            "location": "/shop/orders/9/done",
        },
        {
            "path": "/docs-site/pages/intro",
            "route": "/docs-site/pages/{slug}",
            "status": 200,
            "location": None,
        },
    ]


FORWARDED = {
    "x-forwarded-proto": "https",
    "x-forwarded-host": "www.example.org",
    "forwarded": 'for=203.0.113.9;proto=https;host="fwd.example.net"',
    "x-forwarded-for": "203.0.113.9",
}


def test_forwarded_headers_are_recorded_but_not_trusted_by_default(
    make_recorder: Callable[..., RedirectRecorder],
) -> None:
    recorder = make_recorder()
    with serve_in_thread(recorder, proxy_headers=False) as url:
        httpx.get(f"{url}/redirect/301?to=/landing/x", headers=FORWARDED)
    recorder.writer.flush()
    (row,) = fetch_rows(recorder.writer.db_path, "select * from requests")
    port = url.rsplit(":", 1)[1]
    assert (row["scheme"], row["host"]) == ("http", f"127.0.0.1:{port}")
    assert row["x_forwarded_proto"] == "https"
    assert row["x_forwarded_host"] == "www.example.org"
    assert row["forwarded"] == FORWARDED["forwarded"]
    assert row["location_url"] == f"http://127.0.0.1:{port}/landing/x"


def test_trusted_proxy_sets_effective_scheme_host_and_client(
    make_recorder: Callable[..., RedirectRecorder],
) -> None:
    recorder = make_recorder(trusted_proxies=["127.0.0.0/8"], store_client_ip=True)
    with serve_in_thread(recorder, proxy_headers=False) as url:
        httpx.get(f"{url}/redirect/301?to=/landing/x", headers=FORWARDED)
        only_forwarded = {"forwarded": FORWARDED["forwarded"]}
        httpx.get(f"{url}/landing/y", headers=only_forwarded)
    recorder.writer.flush()
    first, second = fetch_rows(recorder.writer.db_path, "select * from requests order by id")
    assert (first["scheme"], first["host"]) == ("https", "www.example.org")
    assert first["url"] == "https://www.example.org/redirect/301?to=/landing/x"
    assert first["location_url"] == "https://www.example.org/landing/x"
    assert first["client_ip"] == "203.0.113.9"
    assert first["server_scheme"] == "http"
    assert (second["scheme"], second["host"]) == ("https", "fwd.example.net")
    assert first["client_key"] == second["client_key"]


def test_client_key_is_per_client_and_connection_key_per_connection(
    make_recorder: Callable[..., RedirectRecorder],
) -> None:
    recorder = make_recorder(store_client_ip=True)
    with serve_in_thread(recorder) as url:
        with httpx.Client() as one:
            one.get(f"{url}/landing/a")
            one.get(f"{url}/landing/b")
        with httpx.Client() as two:
            two.get(f"{url}/landing/c")
    recorder.writer.flush()
    rows = fetch_rows(recorder.writer.db_path, "select * from requests order by id")
    assert len({r["client_key"] for r in rows}) == 1
    assert rows[0]["connection_key"] == rows[1]["connection_key"] != rows[2]["connection_key"]
    assert {r["client_ip"] for r in rows} == {"127.0.0.1"}


def test_request_id_header_variants_are_recorded(shared: tuple[str, RedirectRecorder]) -> None:
    url, recorder = shared
    httpx.get(f"{url}/landing/corr", headers={"x-correlation-id": "corr-1"})
    assert row_for(recorder, "corr-1")["path"] == "/landing/corr"


def test_redacted_location_keeps_matching_redacted_follow_up(tmp_path: Path) -> None:
    # A redirect whose target carries a secret is stored redacted on both sides,
    # so hop linking can still join the Location to its follow-up URL.
    recorder = RedirectRecorder(site.app, tmp_path / "traffic.db")
    try:
        with serve_in_thread(recorder) as url:
            httpx.get(f"{url}/redirect/302?to=/landing/x%3Fsession%3Dabc", follow_redirects=True)
        recorder.writer.flush()
        redirect, follow = fetch_rows(recorder.writer.db_path, "select * from requests order by id")
        assert redirect["location"] == "/landing/x?session=REDACTED"
        assert redirect["location_url"] == follow["url"]
        assert "abc" not in redirect["location_url"] + follow["url"] + follow["query"]
    finally:
        recorder.writer.close()
