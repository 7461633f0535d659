"""Property tests for URL normalization, Location resolution, redaction and row building."""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.record.rows import Capture, RowBuilder
from auditor.store.requests import INSERT_SQL, ROW_COLUMNS
from auditor.store.schema import ensure_schema
from auditor.urls import (
    REDACTED,
    TrustedProxies,
    build_url,
    is_secret_name,
    normalize_url,
    redact_query,
    resolve_location,
)

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
segments = st.text(alphabet=UNRESERVED + "%/:@!$&'()*+,;= é", max_size=30)
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True)
names = st.text(alphabet=UNRESERVED, min_size=1, max_size=12)
values = st.text(alphabet=UNRESERVED + "%+", max_size=12)
queries = st.lists(st.tuples(names, values), max_size=6).map(
    lambda pairs: "&".join(f"{n}={v}" for n, v in pairs)
)


@given(scheme=st.sampled_from(["http", "https", "HTTP", "Https"]), host=hosts, path=segments)
def test_normalize_url_is_idempotent(scheme: str, host: str, path: str) -> None:
    url = f"{scheme}://{host}/{path}"
    once = normalize_url(url)
    assert normalize_url(once) == once


@given(host=hosts, path=st.text(alphabet=UNRESERVED + "/", max_size=20))
def test_default_port_case_and_unreserved_escapes_do_not_change_identity(
    host: str, path: str
) -> None:
    plain = normalize_url(f"https://{host}/{path}")
    escaped_path = "".join(f"%{ord(c):02x}" if c.isalpha() else c for c in path)
    assert normalize_url(f"HTTPS://{host.upper()}:443/{escaped_path}#frag") == plain


@given(host=hosts, port=st.integers(1, 65535).filter(lambda p: p not in (80, 443)))
def test_non_default_ports_are_kept(host: str, port: int) -> None:
    assert normalize_url(f"http://{host}:{port}/x") == f"http://{host}:{port}/x"


@given(query=queries)
def test_redaction_removes_every_secret_value_and_keeps_the_rest(query: str) -> None:
    redacted = redact_query(query)
    before = query.split("&") if query else []
    after = redacted.split("&") if redacted else []
    assert len(before) == len(after)
    for original, kept in zip(before, after, strict=True):
        name, _, value = original.partition("=")
        if value and is_secret_name(name):
            assert kept == f"{name}={REDACTED}"
        else:
            assert kept == original
    assert redact_query(redacted) == redacted


@given(secret=st.sampled_from(["token", "password", "api_key", "code", "access_token", "sig"]))
def test_well_known_secret_names_are_redacted(secret: str) -> None:
    assert dict(parse_qsl(redact_query(f"a=1&{secret}=hunter2")))[secret] == REDACTED


@given(host=hosts, path=st.text(alphabet=UNRESERVED + "/", max_size=20), query=queries)
def test_relative_location_resolves_onto_the_request_origin(
    host: str, path: str, query: str
) -> None:
    request_url = f"https://{host}/base/page"
    path = path.lstrip("/")  # "//x" would be a network-path reference to host x
    location = f"/{path}?{query}" if query else f"/{path}"
    resolved = resolve_location(request_url, location)
    assert resolved is not None
    parts = urlsplit(resolved)
    assert (parts.scheme, parts.netloc) == ("https", host)
    assert resolve_location(request_url, resolved) == resolved


@given(location=st.text(max_size=200))
def test_resolve_location_never_raises(location: str) -> None:
    result = resolve_location("http://example.test/a/b", location)
    assert result is None or isinstance(result, str)


header_bytes = st.binary(max_size=80)
header_names = st.sampled_from(
    [
        b"host",
        b"user-agent",
        b"content-length",
        b"transfer-encoding",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-for",
        b"forwarded",
        b"x-request-id",
        b"cookie",
        b":authority",
        b"HOST",
    ]
) | st.binary(max_size=20)


def _scope(draw: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "method": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "BREW"])),
        "scheme": draw(st.sampled_from(["http", "https", "", "weird"])),
        "path": draw(st.text(max_size=60)),
        "raw_path": draw(st.none() | st.binary(max_size=60)),
        "query_string": draw(st.binary(max_size=60)),
        "root_path": draw(st.sampled_from(["", "/api"])),
        "headers": draw(st.lists(st.tuples(header_names, header_bytes), max_size=12)),
        "client": draw(
            st.none() | st.tuples(st.sampled_from(["10.0.0.1", "::1", "x"]), st.integers(0, 65535))
        ),
        "server": draw(
            st.none()
            | st.tuples(st.sampled_from(["127.0.0.1", "h"]), st.none() | st.integers(1, 65535))
        ),
        "http_version": draw(st.sampled_from(["1.1", "2"])),
    }


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_client_input_builds_a_row_sqlite_accepts(data: st.DataObject) -> None:
    scope = _scope(data.draw)
    response_headers = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from([b"location", b"cache-control", b"expires"]) | header_names,
                header_bytes,
            ),
            max_size=6,
        )
    )
    status = data.draw(st.sampled_from([0, 200, 204, 301, 302, 303, 307, 308, 404, 500]))
    builder = RowBuilder(b"k" * 32, "test:1", TrustedProxies(["*"]), store_client_ip=False)
    row = builder.build(Capture(scope, 1.0, 1.5, status, response_headers, 0, True))
    assert len(row) == len(ROW_COLUMNS)
    conn = sqlite3.connect(":memory:")
    ensure_schema(conn)
    with conn:
        try:
            conn.execute(INSERT_SQL, row)
        except UnicodeEncodeError:  # the writer's fallback re-encodes such rows
            conn.execute(
                INSERT_SQL,
                [
                    v.encode("utf-8", "backslashreplace").decode() if isinstance(v, str) else v
                    for v in row
                ],
            )
    assert conn.execute("select count(*) from requests").fetchone()[0] == 1


path_chars = st.text(alphabet=UNRESERVED + "/%:@!$&'()*+,;=?é[] ", max_size=25)


@given(
    scheme=st.sampled_from(["http", "https"]),
    host=hosts
    | st.sampled_from(
        ["127.0.0.1:8000", "example.test:80", "example.test:443", "[::1]:8000", "Example.TEST"]
    ),
    path=path_chars,
    query=path_chars,
)
def test_build_url_fast_path_equals_full_normalization(
    scheme: str, host: str, path: str, query: str
) -> None:
    raw_path = "/" + path.replace("?", "")
    url = f"{scheme}://{host}{raw_path}" + (f"?{query}" if query else "")
    assert build_url(scheme, host, raw_path, query) == normalize_url(url)


@given(
    origin=st.sampled_from(
        ["http://example.test", "https://shop.test:8443", "http://127.0.0.1:8000"]
    ),
    # No ";": urljoin drops an empty ";" path parameter, a urllib quirk the fast path avoids.
    # No leading "/" either: "//[" is a network-path reference (not this fast path), on
    # which urljoin itself raises.
    location=st.builds(
        lambda p, q: f"/{p}" + (f"?{q}" if q else ""),
        path_chars.map(lambda t: t.replace(";", "").lstrip("/")),
        path_chars,
    ),
)
def test_resolve_location_fast_path_equals_urljoin(origin: str, location: str) -> None:
    # Like browsers, resolution ignores surrounding white space.
    expected = normalize_url(urljoin(f"{origin}/a/b", location.strip()))
    parts = urlsplit(expected)
    expected = normalize_url(urlunsplit(parts._replace(query=redact_query(parts.query))))
    assert resolve_location(f"{origin}/a/b", location) == expected
