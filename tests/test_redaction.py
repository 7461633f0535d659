"""Redaction (auditor/redaction.py): secrets planted anywhere a URL carries them are
gone from every column, ordinary ids are kept, and a redirect still links to its
follow-up. Property tests plant realistic secrets (the generators frameworks use) at
random depths and positions; tests/test_privacy.py sends the same cases through
real uvicorn."""

from __future__ import annotations

import json
import random
import sqlite3
import string
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.record.options import RecorderOptions
from auditor.record.rows import Capture, RowBuilder
from auditor.redaction import (
    MAX_DEPTH,
    RedactionRules,
    Redactor,
    app_token_routes,
    compile_template,
    is_token_param,
    looks_like_secret,
)
from auditor.store.requests import ROW_COLUMNS
from auditor.urls import TrustedProxies, normalize_url, redact_query, resolve_location

ORIGIN = "https://shop.example"
MARKER = r"\(redacted:[0-9a-f]{12}\)"
B64URL = string.ascii_letters + string.digits + "-_"
B36 = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"

# Words for slugs and camelCase names: ordinary path segments and values.
_WORD_LIST = (
    "about account address after again answer apple archive article autumn back bank "
    "basket best blog board book brown building business cart category change checkout "
    "city clean cloud collection color comment company contact content country course "
    "customer daily data delivery design detail dinner doctor document download dream "
    "early edit editor email energy event example family feature field final first "
    "flower football forest friend garden gift green group guide happy health help "
    "history holiday home house image index install invoice island journey kitchen "
    "language large latest learn letter library light list local market member menu "
    "message method modern month morning mountain music network news night notes "
    "number office order page paper party payment people photo picture plan player "
    "point policy popular post press price print privacy product profile project "
    "python question quick recipe record report review river road sale school search "
    "season second service settings share shipping shop show simple size small "
    "software spring store story street student summer support system table team "
    "thing ticket travel update upload user video view village water weather week "
    "welcome window winter world write year yellow"
)
WORDS = _WORD_LIST.split()

ROUTE_NAMES = (
    "reset",
    "reset-token",
    "password-reset",
    "confirm",
    "confirm-email",
    "verify",
    "verify-email",
    "activate",
    "magic-link",
    "invite",
    "invitations",
    "unsubscribe",
    "key",
)
SECRET_PARAMS = ("token", "password", "api_key", "code", "access_token", "sig", "session")
PLAIN_PARAMS = ("next", "state", "t", "x", "ref", "return_to", "redirect_uri")


def _token(rnd: random.Random, alphabet: str, n: int) -> str:
    return "".join(rnd.choice(alphabet) for _ in range(n))


def make_secret(kind: str, seed: int) -> str:
    """A secret as frameworks make them (secrets.token_urlsafe/token_hex, session keys,
    JWTs, Django's password-reset tokens), from a seeded generator."""
    rnd = random.Random(seed)
    if kind == "urlsafe":  # secrets.token_urlsafe(24..48)
        return _token(rnd, B64URL, rnd.randint(32, 64))
    if kind == "hex":  # secrets.token_hex, sha1/sha256 digests
        return _token(rnd, HEX, rnd.choice((32, 40, 64)))
    if kind == "b36":  # Django session keys
        return _token(rnd, B36, 32)
    if kind == "jwt":
        return ".".join(
            (
                "eyJ" + _token(rnd, B64URL, 30),
                "eyJ" + _token(rnd, B64URL, 40),
                _token(rnd, B64URL, 43),
            )
        )
    assert kind == "django-reset"  # PasswordResetTokenGenerator: <b36 timestamp>-<hex hmac>
    return _token(rnd, B36, 6) + "-" + _token(rnd, HEX, 32)


SHAPE_KINDS = ("urlsafe", "hex", "b36", "jwt", "django-reset")
shape_secrets = st.builds(make_secret, st.sampled_from(SHAPE_KINDS), st.integers(0, 2**64))
# What a token route or a secret-named parameter carries: any value, short or long,
# random-looking or not, as long as it is not a plain lower-case word. (An upper-case
# letter before a digit: no ordinary segment below holds one, so "absent" is exact.)
short_secrets = st.from_regex(r"[a-z0-9]{0,4}[A-Z][0-9][A-Za-z0-9_-]{2,14}", fullmatch=True)

ordinary_segments = st.one_of(
    st.integers(0, 10**12).map(str),
    st.dates().map(lambda d: d.isoformat()),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map("-".join),
    st.lists(st.sampled_from(WORDS), min_size=2, max_size=4).map(
        lambda ws: ws[0] + "".join(w.capitalize() for w in ws[1:])
    ),
    st.builds(lambda: str(uuid.uuid4())),
    st.builds(
        lambda w, h: f"{w}.{h}.js", st.sampled_from(WORDS), st.text(HEX, min_size=8, max_size=20)
    ),
    st.sampled_from(("api", "v1", "v2", "en", "static", "css", "img", "index.html", "feed.xml")),
)
ordinary_values = st.one_of(
    st.integers(0, 10**9).map(str),
    st.sampled_from(WORDS),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map("+".join),
    st.dates().map(lambda d: d.isoformat()),
)
ordinary_params = st.lists(
    st.tuples(
        st.sampled_from(("page", "sort", "q", "id", "lang", "category", "from")), ordinary_values
    ),
    max_size=4,
)


def builder() -> RowBuilder:
    return RowBuilder(b"k" * 32, "test:1", TrustedProxies(()), store_client_ip=False)


def absent(secret: str, *texts: Any) -> bool:
    """No text holds the secret, plainly or percent-encoded (once or twice)."""
    forms = {secret, quote(secret, safe=""), quote(quote(secret, safe=""), safe="")}
    return not any(form in str(text) for form in forms for text in texts)


# --- planting secrets --------------------------------------------------------------


@st.composite
def urls_with_secrets(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A normalized URL with 1-3 secrets planted in its path, its query, or URLs
    nested (percent-encoded or raw) in its values, up to ``MAX_DEPTH`` levels down."""
    planted: list[str] = []

    def path() -> str:
        segments = draw(st.lists(ordinary_segments, max_size=3))
        where = draw(st.sampled_from(("none", "shape", "route")))
        if where == "shape":
            secret = draw(shape_secrets)
            segments.insert(draw(st.integers(0, len(segments))), secret)
            planted.append(secret)
        elif where == "route":
            secret = draw(short_secrets)
            at = draw(st.integers(0, len(segments)))
            segments[at:at] = [draw(st.sampled_from(ROUTE_NAMES)), secret]
            planted.append(secret)
        return "/" + "/".join(segments)

    def query(depth: int) -> str:
        pairs = [f"{n}={quote(v, safe='+')}" for n, v in draw(ordinary_params)]
        kind = draw(st.sampled_from(("name", "shape", "nested", "raw-nested", "none")))
        if kind == "nested" and depth >= MAX_DEPTH:
            kind = "name"
        if kind == "name":
            secret = draw(st.one_of(shape_secrets, short_secrets))
            planted.append(secret)
            pair = f"{draw(st.sampled_from(SECRET_PARAMS))}={secret}"
        elif kind == "shape":
            secret = draw(shape_secrets)
            planted.append(secret)
            pair = f"{draw(st.sampled_from(PLAIN_PARAMS))}={secret}"
        elif kind == "nested":
            inner = path() + "?" + query(depth + 1)
            if draw(st.booleans()):
                inner = "https://other.example" + inner
            pair = f"{draw(st.sampled_from(PLAIN_PARAMS))}={quote(inner, safe='')}"
        elif kind == "raw-nested" and depth == 0:  # next=/x?token=... sent unencoded
            secret = draw(shape_secrets)
            planted.append(secret)
            pair = f"next=/x?{draw(st.sampled_from(SECRET_PARAMS))}={secret}"
        else:
            pair = ""
        if pair:
            pairs.insert(draw(st.integers(0, len(pairs))), pair)
        return "&".join(pairs)

    url = ORIGIN + path()
    q = query(0)
    if q:
        url += "?" + q
    return normalize_url(url), planted


@settings(max_examples=300)
@given(case=urls_with_secrets())
def test_secrets_planted_anywhere_in_a_url_are_redacted(case: tuple[str, list[str]]) -> None:
    url, planted = case
    redactor = builder().redactor
    redacted = redactor.url(url)
    for secret in planted:
        assert absent(secret, redacted), (secret, redacted)
    # A fixed point: redacting again changes nothing (markers are not secrets).
    assert redactor.url(redacted) == redacted
    # The marker needs no escaping: normalization and resolution keep it as it is.
    assert normalize_url(redacted) == redacted
    target = redacted[len(ORIGIN) :]
    if "?" not in target.partition("#")[0] or target.startswith("/"):
        assert resolve_location(f"{ORIGIN}/a/b", target, redact=False) == redacted


@settings(max_examples=300)
@given(
    segments=st.lists(ordinary_segments, min_size=1, max_size=5),
    params=ordinary_params,
)
def test_ordinary_ids_slugs_dates_and_uuids_are_kept(
    segments: list[str], params: list[tuple[str, str]]
) -> None:
    query = "&".join(f"{n}={quote(v, safe='+')}" for n, v in params)
    url = normalize_url(ORIGIN + "/" + "/".join(segments) + (f"?{query}" if query else ""))
    assert builder().redactor.url(url) == url


@pytest.mark.parametrize(
    "path",
    [
        "/users/42",
        "/users/42/orders/7",
        "/orders/2026-12-05",
        "/blog/my-first-post",
        "/blog/how-to-install-python-3-11-on-ubuntu-22-04",
        "/items/3f2a9c1e-8b7d-4e6f-a5c3-1d2e3f4a5b6c",
        "/static/js/main.8e0d62a03f8d2b7c1a4e.js",
        "/products/iPhone15ProMaxReview",
        "/api/v1/users/getUserProfileById",
        "/tweets/1790123456789012345",
        "/reset/done/",
        "/password_reset/done/",
        "/tokens/new",
        "/api/keys",
    ],
)
def test_ordinary_paths_are_kept(path: str) -> None:
    url = ORIGIN + path
    assert builder().redactor.url(url) == url


def test_each_case_of_the_issue() -> None:
    r = builder().redactor
    t = make_secret("urlsafe", 1)
    assert (
        r.url(f"{ORIGIN}/login?next=/x%3Ftoken%3D{t}")
        == f"{ORIGIN}/login?next=/x%3Ftoken%3DREDACTED"
    )
    out = r.url(f"{ORIGIN}/users/{t}/feed.ics")
    assert out.startswith(f"{ORIGIN}/users/(redacted:") and out.endswith(")/feed.ics")
    assert r.url(f"{ORIGIN}/reset-token/s3cr3t-reset-55aa").count("(redacted:") == 1
    reset = make_secret("django-reset", 2)
    out = r.url(f"{ORIGIN}/reset/MQ/{reset}/")
    assert reset not in out and "/reset/(redacted:" in out
    # Django then redirects to /reset/<uidb64>/set-password/: the same uid, the same marker.
    uid_marker = out.split("/")[4]
    assert r.url(f"{ORIGIN}/reset/MQ/set-password/") == f"{ORIGIN}/reset/{uid_marker}/set-password/"
    assert (
        r.url(f"{ORIGIN}/accounts/confirm-email/MQ:1rZ2aB:Xk3f9Qm2LpT8vW1/").count("(redacted:")
        == 1
    )
    # allauth: /accounts/password/reset/key/<uidb36>-<key>/
    assert "(redacted:" in r.url(f"{ORIGIN}/accounts/password/reset/key/1-5xk-{reset[7:27]}/")


def test_the_same_secret_gives_the_same_marker_and_another_secret_another() -> None:
    r = builder().redactor
    a, b = make_secret("urlsafe", 3), make_secret("urlsafe", 4)
    first = r.url(f"{ORIGIN}/download/{a}")
    assert r.url(f"{ORIGIN}/download/{a}") == first
    assert r.url(f"{ORIGIN}/download/{b}") != first
    # ... in the path of a nested URL too, and the key makes it (another database: another).
    nested = r.url(f"{ORIGIN}/go?to={quote(f'/download/{a}', safe='')}")
    assert first.rsplit("/", 1)[1] in nested
    other = RowBuilder(b"x" * 32, "test:2", TrustedProxies(()), store_client_ip=False)
    assert other.redactor.url(f"{ORIGIN}/download/{a}") != first


def test_userinfo_and_fragment_of_a_location_are_redacted() -> None:
    r = builder().redactor
    t = make_secret("urlsafe", 5)
    assert r.reference("http://deploy:pw@example.test/") == "http://REDACTED@example.test/"
    out = r.reference(f"/cb#access_token={t}&expires_in=3600")
    assert out == "/cb#access_token=REDACTED&expires_in=3600"
    assert t not in r.reference(f"https://app.example/#/reset/{t}")


def test_name_only_redaction_without_a_key_still_goes_deep() -> None:
    # urls.redact_query (and resolve_location's default) know no key: names only.
    assert (
        redact_query("a=1&next=%2Fx%3Fpassword%3Dhunter2") == "a=1&next=%2Fx%3Fpassword%3DREDACTED"
    )
    assert redact_query("next=/x?token=abc&b=2") == "next=/x?token=REDACTED&b=2"
    assert redact_query("t=" + make_secret("urlsafe", 6)) == "t=" + make_secret("urlsafe", 6)


# --- rows: every column, and linking ---------------------------------------------


def capture(
    path_qs: str, status: int = 200, location: str | None = None, route: Any = None
) -> Capture:
    path, _, query = path_qs.partition("?")
    headers = [(b"content-length", b"0")]
    if location is not None:
        headers.append((b"location", location.encode("latin-1")))
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "server": ("shop.example", 443),
        "client": ("127.0.0.1", 50000),
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "headers": [(b"host", b"shop.example")],
        "http_version": "1.1",
    }
    if route is not None:
        scope["route"] = route
    return Capture(scope, 1.0, 1.001, status, headers, 0, True)


@st.composite
def locations(draw: st.DrawFn) -> tuple[str, list[str]]:
    url, planted = draw(urls_with_secrets())
    target = url[len(ORIGIN) :]
    style = draw(st.sampled_from(("path", "absolute")))
    return (target if style == "path" else url), planted


@settings(max_examples=200)
@given(case=locations())
def test_a_redirect_and_its_follow_up_redact_alike_and_still_link(
    case: tuple[str, list[str]],
) -> None:
    location, planted = case
    b = builder()
    redirect = dict(zip(ROW_COLUMNS, b.build(capture("/start", 302, location)), strict=True))
    resolved = resolve_location(f"{ORIGIN}/start", location, redact=False)
    assert resolved is not None
    follow_up = dict(zip(ROW_COLUMNS, b.build(capture(resolved[len(ORIGIN) :])), strict=True))
    assert follow_up["url"] == redirect["location_url"]
    for secret in planted:
        assert absent(secret, *redirect.values(), *follow_up.values()), secret


def test_every_url_column_is_redacted_consistently() -> None:
    b = builder()
    t, u = make_secret("urlsafe", 7), make_secret("hex", 8)
    row = dict(
        zip(
            ROW_COLUMNS,
            b.build(
                Capture(
                    {
                        "type": "http",
                        "method": "GET",
                        "scheme": "https",
                        "server": ("shop.example", 443),
                        "client": ("127.0.0.1", 5),
                        "path": f"/users/{t}/feed",
                        "raw_path": f"/users/{t}/feed".encode(),
                        "query_string": f"sig={u}&next=%2Fdl%2F{u}".encode(),
                        "headers": [(b"host", b"shop.example")],
                    },
                    1.0,
                    1.1,
                    302,
                    [(b"location", f"/invite/{t}?x=1".encode()), (b"location", f"/d/{u}".encode())],
                    0,
                    True,
                )
            ),
            strict=True,
        )
    )
    assert absent(t, *row.values()) and absent(u, *row.values())
    marker_t = b.redaction_marker(t)
    assert row["path"] == f"/users/{marker_t}/feed"
    assert row["url"] == f"https://shop.example/users/{marker_t}/feed?{row['query']}"
    assert row["query"] == f"sig=REDACTED&next=%2Fdl%2F{b.redaction_marker(u)}"
    assert row["location"] == f"/invite/{marker_t}?x=1"
    assert row["location_url"] == f"https://shop.example/invite/{marker_t}?x=1"
    assert json.loads(row["locations"]) == [row["location"], f"/d/{b.redaction_marker(u)}"]


# --- route templates ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("token", True),
        ("reset_token", True),
        ("uidb64", True),
        ("invite_code", True),
        ("resetKey", True),
        ("signature", True),
        ("password", True),
        ("api_key", True),
        ("uuid", False),
        ("uid", False),  # a user id
        ("user_id", False),
        ("slug", False),
        ("keyword", False),
        ("author", False),
    ],
)
def test_template_parameters_named_as_tokens(name: str, token: bool) -> None:
    assert is_token_param(name) is token


def test_a_template_names_its_tokens_and_numeric_parameters_are_ids() -> None:
    assert compile_template("/redirect/{code:int}", every=False) is None  # a status code
    assert compile_template("/verify/{code}", every=False) is not None
    assert compile_template("/users/{uid}/posts/{post_id:int}", every=False) is None
    r = Redactor(builder().redaction_marker, RedactionRules(token_routes=("/i/{invite_code}",)))
    out = r.url(f"{ORIGIN}/i/ab12")  # short and plain: only the template says it is a token
    assert "ab12" not in out and out.startswith(f"{ORIGIN}/i/(redacted:")
    assert r.url(f"{ORIGIN}/i/ab12/extra") == f"{ORIGIN}/i/ab12/extra"  # another route


def test_templates_learned_from_recorded_routes_apply_to_later_locations() -> None:
    b = builder()
    b.build(capture("/share/x1", route=_Route("/share/{share_key}")))  # as Starlette sets it
    row = dict(zip(ROW_COLUMNS, b.build(capture("/s", 302, "/share/x2")), strict=True))
    assert "x2" not in row["location"] and "x2" not in row["location_url"]


def test_a_location_resolved_before_a_route_is_learned_is_redacted_after() -> None:
    # Resolved Locations are cached per (request URL, Location): learning a token
    # route must not leave the earlier, unredacted resolution in use.
    b = builder()
    before = dict(zip(ROW_COLUMNS, b.build(capture("/s", 302, "/share/x2")), strict=True))
    assert before["location_url"] == f"{ORIGIN}/share/x2"  # short and plain: no secret yet
    again = dict(zip(ROW_COLUMNS, b.build(capture("/s", 302, "/share/x2")), strict=True))
    assert again["location_url"] == before["location_url"]
    b.build(capture("/share/x1", route=_Route("/share/{share_key}")))
    after = dict(zip(ROW_COLUMNS, b.build(capture("/s", 302, "/share/x2")), strict=True))
    assert "x2" not in after["location"] and "x2" not in after["location_url"]


class _Route:
    def __init__(self, path: str, routes: list[Any] | None = None) -> None:
        self.path = path
        if routes is not None:
            self.routes = routes


def test_the_apps_token_routes_are_found_through_its_wrappers() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/users/{user_id:int}", ok),
            Route("/reset/{uidb64}/{token}/", ok),
            Mount("/teams/{team}", routes=[Route("/invites/{invite_code}", ok)]),
        ]
    )
    assert app_token_routes(app) == (
        "/reset/{uidb64}/{token}/",
        "/teams/{team}/invites/{invite_code}",
    )

    class Wrapper:  # like the middleware stack add_middleware builds
        def __init__(self, app: Any) -> None:
            self.app = app

    assert app_token_routes(Wrapper(Wrapper(app.router))) == app_token_routes(app)
    assert app_token_routes(object()) == ()


# --- options ----------------------------------------------------------------------


def test_options_add_names_patterns_and_routes_and_allow_names() -> None:
    rules = RedactionRules(
        params=("voucher",),
        allow_params=("code", "state"),
        patterns=(r"sk_(live|test)_\w+",),
        routes=("/s/{id}",),
    )
    r = Redactor(builder().redaction_marker, rules)
    assert r.query("voucher=SPRING25&code=ABC-1&state=x") == "voucher=REDACTED&code=ABC-1&state=x"
    long_state = make_secret("urlsafe", 9)
    assert r.query(f"state={long_state}") == f"state={long_state}"  # allowed: kept as sent
    assert "sk_live_abc" not in r.url(f"{ORIGIN}/keys/sk_live_abc")
    assert "sk_test_1" not in r.query("k=sk_test_1")
    assert r.url(f"{ORIGIN}/s/abc").startswith(f"{ORIGIN}/s/(redacted:")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("redact_patterns", ["("], "is not a regex"),
        ("redact_routes", ["share/{id}"], "must start with '/'"),
        ("redact_routes", ["/share"], "name a placeholder"),
    ],
)
def test_bad_options_fail_at_start_up(option: str, value: list[str], message: str) -> None:
    base = {
        "record": "all",
        "sample_rate": 0.0,
        "trusted_proxies": (),
        "store_client_ip": False,
        "queue_size": 10,
        "flush_interval": 0.05,
        "follow_up_delay": 2.0,
        "follow_up_window": 30.0,
    }
    with pytest.raises(ValueError, match=message):
        RecorderOptions.build(**base, **{option: value})
    options = RecorderOptions.build(**base, redact_params="voucher")
    assert options.redaction().params == ("voucher",)


# --- shapes: how often the classifier is wrong, measured -----------------------------


@pytest.mark.parametrize(
    ("alphabet", "length", "misses_at_most"),
    [
        (B64URL, 22, 30),  # secrets.token_urlsafe(16): 1.3e-4 measured
        (B64URL, 32, 1),
        (B64URL, 43, 0),  # token_urlsafe(32), the usual size
        (string.ascii_letters + string.digits, 32, 1),
        (B36, 32, 1),  # Django session keys
        (HEX, 16, 5),  # token_hex(8)
        (HEX, 32, 0),
        (string.ascii_uppercase + "234567", 32, 2),  # base32 (TOTP secrets)
    ],
)
def test_random_tokens_are_recognized(alphabet: str, length: int, misses_at_most: int) -> None:
    rnd = random.Random(length * 1000 + len(alphabet))
    tokens = [_token(rnd, alphabet, length) for _ in range(20_000)]
    # A token of digits only is a number, an id: kept (token_hex(8): 1 in 1,900).
    misses = [t for t in tokens if not t.isdigit() and not looks_like_secret(t)]
    assert len(misses) <= misses_at_most, misses[:10]


def test_slugs_and_camel_case_names_of_words_are_not_secrets() -> None:
    rnd = random.Random(0)
    for _ in range(20_000):
        words = [rnd.choice(WORDS) for _ in range(rnd.randint(2, 6))]
        if rnd.random() < 0.3:
            words.insert(rnd.randrange(len(words) + 1), str(rnd.randint(1, 3000)))
        for text in (
            "-".join(words),
            "_".join(words),
            words[0] + "".join(w.title() for w in words[1:]),
        ):
            assert not looks_like_secret(text), text


# --- HAR import: the same rules --------------------------------------------------------


def test_har_import_redacts_like_the_recorder(tmp_path: Path) -> None:
    from auditor.sources.har import import_har

    token, reset = make_secret("urlsafe", 10), make_secret("django-reset", 11)

    def entry(url: str, status: int, location: str | None, started: str) -> dict[str, Any]:
        headers = [{"name": "Location", "value": location}] if location else []
        return {
            "startedDateTime": started,
            "time": 5,
            "request": {"method": "GET", "url": url, "httpVersion": "HTTP/1.1", "headers": []},
            "response": {"status": status, "headers": headers, "redirectURL": location or ""},
        }

    har = {
        "log": {
            "entries": [
                entry(
                    f"{ORIGIN}/reset/MQ/{reset}/?next=%2Fx%3Ftoken%3D{token}",
                    302,
                    "/reset/MQ/set-password/",
                    "2026-01-05T10:00:00.000Z",
                ),
                entry(
                    f"{ORIGIN}/reset/MQ/set-password/",
                    302,
                    f"/feeds/{token}",
                    "2026-01-05T10:00:01.000Z",
                ),
                entry(f"{ORIGIN}/feeds/{token}", 200, None, "2026-01-05T10:00:02.000Z"),
            ]
        }
    }
    har_path, db = tmp_path / "session.har", tmp_path / "traffic.db"
    har_path.write_text(json.dumps(har))
    import_har(har_path, db)
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("select * from requests order by started_at")]
    assert absent(token, *[v for r in rows for v in r.values()])
    assert absent(reset, *[v for r in rows for v in r.values()])
    assert rows[0]["location_url"] == rows[1]["url"]  # the uidb64 marker is the same
    assert rows[1]["location_url"] == rows[2]["url"]
    assert rows[2]["path"].startswith("/feeds/(redacted:")
