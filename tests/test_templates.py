"""Route templates inferred from recorded paths (auditor.analysis.templates)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.analysis.templates import (
    DEFAULT_MIN_VARIANTS,
    TOP_LEVEL_FACTOR,
    infer_templates,
    template_of_path,
)

T = DEFAULT_MIN_VARIANTS


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/users/42/profile-old", "/users/{id}/profile-old"),
        ("/users/0", "/users/{id}"),
        ("/orders/123/items/9/", "/orders/{id}/items/{id}/"),
        ("/files/550e8400-e29b-41d4-a716-446655440000", "/files/{uuid}"),
        ("/files/550E8400-E29B-41D4-A716-446655440000/raw", "/files/{uuid}/raw"),
        ("/commit/3f786850e387550fdab836ed7e6dc881de23001b", "/commit/{hex}"),
        ("/c/a1b2c3d4", "/c/{hex}"),
        ("/c/DEADBEEF01", "/c/{hex}"),
        ("/c/abcdefabcdefabcd", "/c/{hex}"),  # 16+ hex letters, no digit
        ("/c/deadbeef", "/c/deadbeef"),  # 8 hex letters, no digit: could be a word
        ("/c/abc1234", "/c/abc1234"),  # 7 characters: too short for hex
        ("/c/a1b2c3d4z", "/c/a1b2c3d4z"),  # not hex
        ("/archive/2026-12-05/", "/archive/{date}/"),
        ("/archive/20261205", "/archive/{id}"),  # an 8-digit id, not a date
        ("/r/{redacted:token}/next", "/r/{redacted}/next"),
        ("/r/{redacted}", "/r/{redacted}"),
        ("/r/%7Bredacted%3Asecret%7D", "/r/{redacted}"),
        ("/r/%7bREDACTED%7d/", "/r/{redacted}/"),
        ("/v1/users", "/v1/users"),
        ("/api/v2/profile", "/api/v2/profile"),
        ("/a/1.5", "/a/1.5"),
        ("/a/-1", "/a/-1"),
        ("/12abc", "/12abc"),
        ("/users/42?next=/x/7", "/users/{id}"),  # the query is not part of the path
        ("/", "/"),
        ("", ""),
        ("//7//", "//{id}//"),
        ("relative/42", "relative/{id}"),
        ("42", "{id}"),
    ],
)
def test_template_of_path(path: str, template: str) -> None:
    assert template_of_path(path) == template
    assert infer_templates([path]) == {path: template}


def test_trailing_slash_is_kept() -> None:
    paths = ["/articles/1", "/articles/1/", "/articles/2", "/articles/2/"]
    assert infer_templates(paths) == {
        "/articles/1": "/articles/{id}",
        "/articles/1/": "/articles/{id}/",
        "/articles/2": "/articles/{id}",
        "/articles/2/": "/articles/{id}/",
    }


def slugs(n: int) -> list[str]:
    words = ["my", "first", "post", "another", "news", "how", "to", "django", "tips"]
    rng = random.Random(n)
    return [f"{'-'.join(rng.sample(words, 3))}-{chr(97 + i % 26)}{i}" for i in range(n)]


def test_slugs_varying_at_one_position_collapse() -> None:
    paths = [f"/blog/{slug}/edit" for slug in slugs(T)]
    assert set(infer_templates(paths).values()) == {"/blog/{slug}/edit"}


def test_fewer_values_than_the_threshold_stay() -> None:
    paths = [f"/blog/{slug}/edit" for slug in slugs(T - 1)]
    assert infer_templates(paths) == {path: path for path in paths}


def test_static_siblings_stay() -> None:
    paths = [
        "/accounts/login/",
        "/accounts/logout/",
        "/accounts/signup/",
        "/accounts/inactive/",
        "/accounts/email/",
        "/accounts/confirm-email/",
        "/accounts/password/change/",
        "/accounts/password/reset/",
        "/accounts/password/reset/done/",
        "/admin/",
        "/admin/login/",
        "/admin/auth/user/",
        "/admin/auth/user/add/",
        "/admin/auth/group/",
        "/admin/blog/post/",
        "/admin/blog/post/add/",
        "/about/",
        "/contact/",
        "/contact/thanks/",
        "/api/v1/orders",
        "/api/v2/orders",
        "/api/v2/profile",
    ]
    assert infer_templates(paths) == {path: path for path in paths}


def test_top_level_pages_need_more_variants() -> None:
    pages = ["about", "pricing", "contact", "login", "logout", "signup", "terms", "privacy"]
    pages += ["faq", "blog", "docs", "careers", "press", "team", "help", "status", "legal"]
    paths = [f"/{page}" for page in pages] + [f"/{page}/" for page in pages]
    assert infer_templates(paths) == {path: path for path in paths}
    users = [f"/{name}{i}x/" for name in ("ann", "bob") for i in range(2 * T)]
    assert set(infer_templates(users).values()) == {"/{slug}/"}
    assert infer_templates(users[: T * TOP_LEVEL_FACTOR - 1]) == {
        u: u for u in users[: T * TOP_LEVEL_FACTOR - 1]
    }


def test_the_threshold_is_a_parameter() -> None:
    paths = ["/accounts/login/", "/accounts/logout/", "/accounts/signup/"]
    assert set(infer_templates(paths, min_variants=3).values()) == {"/accounts/{slug}/"}
    with pytest.raises(ValueError):
        infer_templates(paths, min_variants=1)


def test_same_prefix_other_suffixes_follow_known_slugs() -> None:
    many = slugs(T + 2)
    paths = [f"/blog/{slug}/" for slug in many]
    paths += [f"/blog/{slug}/edit/" for slug in many[:2]]  # too few alone
    paths += ["/blog/archive/2024/", "/blog/feed/rss/"]  # static: not among the slugs
    result = infer_templates(paths)
    assert result[f"/blog/{many[0]}/"] == "/blog/{slug}/"
    assert result[f"/blog/{many[1]}/edit/"] == "/blog/{slug}/edit/"
    assert result["/blog/archive/2024/"] == "/blog/archive/{id}/"
    assert result["/blog/feed/rss/"] == "/blog/feed/rss/"


def test_slash_redirect_pairs_keep_their_shapes() -> None:
    many = slugs(T)
    paths = [f"/posts/{slug}" for slug in many] + [f"/posts/{slug}/" for slug in many]
    assert set(infer_templates(paths).values()) == {"/posts/{slug}", "/posts/{slug}/"}


def test_mixed_depths() -> None:
    many = slugs(T)
    paths = ["/docs/", "/docs/intro/", "/docs/intro/install/"]
    paths += [f"/users/{slug}" for slug in many]
    paths += [f"/users/{slug}/repos/{i}/" for i, slug in enumerate(many)]
    paths += [f"/users/{slug}/repos/{i}/settings/{slug}" for i, slug in enumerate(many)]
    paths += ["/users/me/settings", "/users"]
    result = infer_templates(paths)
    assert result["/docs/"] == "/docs/"
    assert result["/docs/intro/"] == "/docs/intro/"
    assert result["/docs/intro/install/"] == "/docs/intro/install/"
    assert result["/users"] == "/users"
    assert result["/users/me/settings"] == "/users/me/settings"
    assert {result[f"/users/{slug}"] for slug in many} == {"/users/{slug}"}
    assert {result[f"/users/{s}/repos/{i}/"] for i, s in enumerate(many)} == {
        "/users/{slug}/repos/{id}/"
    }
    assert {result[f"/users/{s}/repos/{i}/settings/{s}"] for i, s in enumerate(many)} == {
        "/users/{slug}/repos/{id}/settings/{slug}"
    }


def test_nested_slugs_collapse_when_each_level_varies() -> None:
    many = [f"/shop/cat{c}x/item{p}x/" for c in range(T + 1) for p in range(T)]
    few = [f"/store/cat{c}x/item{p}x/" for c in range(3) for p in range(T)]
    result = infer_templates(many + few)
    assert {result[path] for path in many} == {"/shop/{slug}/{slug}/"}
    # Three categories are three places, each with its own products.
    assert {result[path] for path in few} == {f"/store/cat{c}x/{{slug}}/" for c in range(3)}


def test_placeholders_beside_static_segments_do_not_count_as_variants() -> None:
    paths = ["/items/new", "/items/export", "/items/42", "/items/7"]
    paths += [f"/items/{uuid.UUID(int=i)}" for i in range(T)]
    paths += [f"/items/c0ffee{i:034x}" for i in range(T)]
    result = infer_templates(paths)
    assert result["/items/new"] == "/items/new"
    assert result["/items/export"] == "/items/export"
    assert set(result.values()) == {
        "/items/new",
        "/items/export",
        "/items/{id}",
        "/items/{uuid}",
        "/items/{hex}",
    }


def test_hostile_paths_are_handled() -> None:
    deep = "/a" * 5000
    wide = "/" + "x" * 100_000
    braces = "/{redacted" + ":}" * 100 + "/{" * 50
    paths = [deep, wide, braces, "/?", "/" * 300] + [f"/q/{'b' * i}z" for i in range(T)]
    result = infer_templates(paths)
    assert result[deep] == deep
    assert result[wide] == wide
    assert result["/?"] == "/"
    assert set(result) == set(paths)


# Property tests ------------------------------------------------------------------

TEMPLATES = [
    "/users/{id}/profile",
    "/users/{id}/orders/{id}/",
    "/api/v2/orders/{id}",
    "/files/{uuid}",
    "/commits/{hex}/",
    "/archive/{date}/photos",
    "/",
    "/about/",
]

ids = st.integers(min_value=0, max_value=10**30).map(str)
uuids = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
# At least one digit and one letter, or 16+ characters with a letter: {hex} by the rule
# (16+ digits alone are an {id}).
hexes = st.from_regex(r"[0-9a-f]{3,30}[a-f][0-9][0-9a-f]{3,30}", fullmatch=True) | st.integers(
    min_value=16**15
).map(lambda n: f"{n:x}").filter(lambda value: not value.isdigit())
dates = st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}")
VALUES = {"{id}": ids, "{uuid}": uuids, "{hex}": hexes, "{date}": dates}


@st.composite
def concrete(draw: st.DrawFn, template: str) -> str:
    parts = template.split("/")
    return "/".join(draw(VALUES[part]) if part in VALUES else part for part in parts)


@st.composite
def recorded(draw: st.DrawFn) -> list[tuple[str, str]]:
    chosen = draw(st.lists(st.sampled_from(TEMPLATES), min_size=1, max_size=60))
    return [(draw(concrete(template)), template) for template in chosen]


@settings(max_examples=200, deadline=None)
@given(recorded())
def test_paths_from_templates_map_back_to_them(pairs: list[tuple[str, str]]) -> None:
    result = infer_templates(path for path, _ in pairs)
    for path, template in pairs:
        assert result[path] == template
        assert template_of_path(path) == template


# Never id-like: a letter outside a-f, so neither digits, hex, a UUID nor a date.
slug_values = st.from_regex(r"[g-z][a-z0-9]{0,8}(-[a-z0-9]{1,8}){0,4}", fullmatch=True)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(slug_values, min_size=T, max_size=3 * T, unique=True),
    st.lists(st.tuples(st.integers(0, 10**6), st.booleans()), max_size=3 * T),
)
def test_slug_paths_map_back_to_their_templates(
    values: list[str], comments: list[tuple[int, bool]]
) -> None:
    expected = {f"/blog/{value}/": "/blog/{slug}/" for value in values}
    for n, (comment, slash) in enumerate(comments):
        path = f"/blog/{values[n % len(values)]}/comments/{comment}" + ("/" if slash else "")
        expected[path] = "/blog/{slug}/comments/{id}" + ("/" if slash else "")
    expected["/blog/"] = "/blog/"
    expected["/users/7/profile"] = "/users/{id}/profile"
    assert infer_templates(expected) == expected


WORDS = ["login", "logout", "signup", "profile", "settings", "billing", "help", "team", "x"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=4), max_size=80), st.booleans())
def test_static_paths_map_to_themselves(trees: list[list[str]], slash: bool) -> None:
    # Nine words: no position can take ten values, however the paths share parents.
    paths = ["/" + "/".join(words) + ("/" if slash and words else "") for words in trees]
    assert infer_templates(paths) == {path: path for path in paths}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [f"/blog/{slug}/" for slug in slugs(12)]
            + [f"/blog/{slug}/edit" for slug in slugs(4)]
            + [f"/p/{i}/{w}" for i in range(3) for w in WORDS]
            + ["/accounts/login/", "/accounts/logout/", "/", "/x/deadbeef1"]
        ),
        min_size=1,
    ),
    st.randoms(use_true_random=False),
)
def test_same_paths_in_any_order_give_the_same_mapping(
    paths: list[str], rng: random.Random
) -> None:
    expected = infer_templates(paths)
    shuffled = paths * 2
    rng.shuffle(shuffled)
    assert infer_templates(shuffled) == expected
    assert infer_templates(reversed(paths)) == expected


def test_same_mapping_under_any_hash_seed() -> None:
    # Sets iterate in another order under another PYTHONHASHSEED; the result must not.
    code = (
        "import json, random\n"
        "from auditor.analysis.templates import infer_templates\n"
        "from tests.test_templates import slugs\n"
        "paths = [f'/blog/{s}/' for s in slugs(30)] + [f'/shop/c{c}/p{p}' for c in range(12)"
        " for p in range(11)] + ['/accounts/login/', '/a/1', '/x/deadbeef1']\n"
        "random.Random(1).shuffle(paths)\n"
        "print(json.dumps(sorted(infer_templates(paths).items())))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1
    assert '"/blog/{slug}/"' in outputs.pop()
