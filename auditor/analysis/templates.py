"""Route templates inferred from recorded paths, for apps that expose none.

Django, Quart, Datasette and plain ASGI apps record concrete paths. The audit groups
findings by place, so it infers each path's template here in two steps:

1. Id-like segments, one path at a time (:func:`template_of_path`): all digits ->
   ``{id}``, a UUID -> ``{uuid}``, a ``YYYY-MM-DD`` date -> ``{date}``, hex of 8+
   characters with a digit and a letter (or of 16+) -> ``{hex}``, and the recorder's
   the recorder's redaction markers (``(redacted:...)``) -> ``{redacted}``.
2. Across paths (:func:`infer_templates`): a segment position becomes ``{slug}`` when,
   with the segments before it (already templated) and the segments after it
   (templated) fixed, it takes at least ``min_variants`` distinct values (the first
   segment: ``TOP_LEVEL_FACTOR`` times more). Other paths with the same segments
   before it and one of those values there follow (``/blog/{slug}/edit/`` once
   ``/blog/{slug}/`` is known).

Trailing slashes are kept (``/a/{id}/`` is not ``/a/{id}``); a query string is dropped.
"""

from __future__ import annotations

import gc
import re
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import compress, count, groupby, repeat
from operator import and_, getitem, itemgetter, not_
from urllib.parse import urlsplit

# Static routes under one parent with one suffix (allauth's /accounts/<view>/, the
# models of one Django admin app, a DRF API's resources) are usually fewer than this;
# a slug or username position in weeks of traffic reaches it quickly. Merging two
# routes hides one of them, splitting one route only repeats it, so err high.
DEFAULT_MIN_VARIANTS = 10
# The first segment needs this many times more: a site's top level is where static
# pages pile up (about, pricing, login, terms, ...), often past ten. Beyond forty,
# one view serves them (usernames, CMS pages).
TOP_LEVEL_FACTOR = 4

ID, UUID, HEX, DATE, REDACTED, SLUG = "{id}", "{uuid}", "{hex}", "{date}", "{redacted}", "{slug}"

# Only the first MAX_POSITIONS segments can become {slug}, and paths of more than
# MAX_SEGMENTS segments keep their id template: hostile paths stay cheap.
MAX_POSITIONS = 32
MAX_SEGMENTS = 64

# One whole segment, with the "/" before it, up to the next "/" or the end. The digits
# branch comes first: an 8-digit value such as 20261205 is an {id}, not a {date},
# because the same route's other ids would not look like dates.
_ID_SEGMENT = re.compile(
    r"/(?:"
    r"(?P<id>[0-9]+)"
    r"|(?P<uuid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"
    r"|(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"|(?P<hex>[0-9A-Fa-f]{8,})"
    r"|(?P<redacted>(?:\{|%7[Bb]|\(|%28)(?i:redacted)(?:(?::|%3[Aa])[^/]*?)?(?:\}|%7[Dd]|\)|%29))"
    r")(?![^/])"
)
_PLACEHOLDERS = {"id": "/" + ID, "uuid": "/" + UUID, "date": "/" + DATE, "redacted": "/" + REDACTED}


def _placeholder(match: re.Match[str]) -> str:
    kind = match.lastgroup or ""
    if kind == "hex":
        value = match.group(kind)
        # Not all digits (the id branch took those), so it has a letter; it needs a
        # digit too unless it is long: "deadbeef" or "acceded" may be words.
        return "/" + HEX if len(value) >= 16 or not value.isalpha() else match.group()
    return _PLACEHOLDERS[kind]


def template_of_path(path: str) -> str:
    """The path with its id-like segments replaced by placeholders (no cross-URL rule)."""
    if "?" in path:
        path = path.partition("?")[0]
    if path[:1] == "/":
        return _ID_SEGMENT.sub(_placeholder, path)
    return _ID_SEGMENT.sub(_placeholder, "/" + path)[1:]


def infer_templates(
    paths: Iterable[str], *, min_variants: int = DEFAULT_MIN_VARIANTS
) -> dict[str, str]:
    """Map every distinct path to its template: id-like segments, then ``{slug}``
    positions where at least ``min_variants`` values share the same surroundings.

    The result depends only on the set of paths, not on their order or repeats.
    """
    if min_variants < 2:
        raise ValueError("min_variants must be at least 2")
    # Most steps below are map/zip/Counter so that the per-path work runs in C.
    distinct = list(dict.fromkeys(paths))
    plain = all(map(str.startswith, distinct, repeat("/"))) and not any(
        map(str.__contains__, distinct, repeat("?"))
    )
    with _gc_paused():
        if plain:
            id_forms = list(map(_ID_SEGMENT.sub, repeat(_placeholder), distinct))
        else:
            id_forms = list(map(template_of_path, distinct))
        forms = list(dict.fromkeys(id_forms))
        templates = _collapse_slugs(forms, min_variants)
        if len(forms) == len(distinct):  # no two paths share an id template
            return dict(zip(distinct, templates, strict=True))
        template_of_form = dict(zip(forms, templates, strict=True))
        return dict(zip(distinct, map(template_of_form.__getitem__, id_forms), strict=True))


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Hundreds of thousands of new tuples and lists, none in a cycle, would otherwise
    # set off the cyclic collector again and again: with a million other objects alive
    # in the process, 200,000 paths took 20-60 % longer.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


Segments = Sequence[str]
# Values at a position that never count as varying (nor become {slug}).
_FIXED = frozenset({"", ID, UUID, HEX, DATE, REDACTED, SLUG})


def _collapse_slugs(forms: list[str], min_variants: int) -> list[str]:
    """The template of each distinct id-templated path: ``{slug}`` positions added."""
    rows = list(map(str.split, forms, repeat("/")))
    by_length = sorted(zip(map(len, rows), count(), rows), key=itemgetter(0))
    buckets: dict[int, _Bucket] = {}
    for length, group in groupby(by_length, key=itemgetter(0)):
        if length <= MAX_SEGMENTS:
            members = list(group)
            indices = list(map(itemgetter(1), members))
            buckets[length] = _Bucket(indices, list(map(itemgetter(2), members)))
    positions = min(MAX_POSITIONS, max(buckets, default=0))
    quiet, i = 0, 0
    # Visit positions cyclically until each has been tried once since the last change:
    # a {slug} to the right changes the suffixes that the positions to its left see.
    while quiet < positions:
        quiet = 1 if _collapse_position(buckets, i, min_variants) else quiet + 1
        i = (i + 1) % positions
    templates = list(forms)
    for bucket in buckets.values():
        if bucket.changed:
            joined = map("/".join, zip(*bucket.columns, strict=True))
            deque(map(templates.__setitem__, bucket.indices, joined), maxlen=0)
    return templates


class _Bucket:
    """The forms with one number of segments, as columns (a {slug} keeps the length)."""

    def __init__(self, indices: list[int], rows: list[Segments]) -> None:
        self.indices = indices  # of the forms, in the order the columns hold them
        self.columns = [list(map(itemgetter(j), rows)) for j in range(len(rows[0]))]
        self.distinct: list[Segments] | None = rows  # the distinct current forms
        self.changed = False
        self.distinct_values = list(map(len, map(set, self.columns)))

    def rows(self) -> list[Segments]:
        if self.distinct is None:
            self.distinct = list(set(zip(*self.columns, strict=True)))
        return self.distinct

    def may_vary_at(self, i: int, min_variants: int) -> bool:
        """False when no ``min_variants`` forms can differ only at ``i``: fewer values
        there, or a position elsewhere where no value can be shared by that many."""
        if self.distinct_values[i] < min_variants:
            return False
        # A value occurs at most (rows - other values) times.
        most = len(self.indices) + 1 - min_variants
        return all(n <= most for j, n in enumerate(self.distinct_values) if j != i)

    def set_column(self, i: int, column: list[str]) -> None:
        self.columns[i] = column
        self.distinct_values[i] = len(set(column))
        self.distinct = None
        self.changed = True


def _collapse_position(buckets: dict[int, _Bucket], i: int, min_variants: int) -> bool:
    """Turn segment ``i`` into ``{slug}`` where its values vary enough; True if any did."""
    heads: set[object] = set()
    head = itemgetter(*range(i + 1))
    if i <= 1:  # the first segment: 1 under "/" (segment 0 is ""), 0 in a relative path
        min_variants *= TOP_LEVEL_FACTOR
    for length, bucket in buckets.items():
        if length <= i or not bucket.may_vary_at(i, min_variants):
            continue
        rows = bucket.rows()
        # Distinct forms with equal keys differ only at i: a key's count is its number
        # of values at i, with the segments before and after it fixed. Count in C
        # first; fixed values (placeholders, "") are set aside only where it matters.
        rest = [j for j in range(length) if j != i]
        others = itemgetter(*rest) if rest else _no_key
        keys = list(map(others, rows))
        counts = Counter(keys)
        if max(counts.values()) < min_variants:
            continue
        hits = {key for key, n in counts.items() if n >= min_variants}
        selected = list(map(hits.__contains__, keys))
        rows, keys = list(compress(rows, selected)), list(compress(keys, selected))
        values = list(map(itemgetter(i), rows))
        if not _FIXED.isdisjoint(values):
            varying = list(map(not_, map(_FIXED.__contains__, values)))
            counts = Counter(compress(keys, varying))
            hits = {key for key, n in counts.items() if n >= min_variants}
            rows = list(compress(rows, map(and_, varying, map(hits.__contains__, keys))))
        heads.update(map(head, rows))
    if not heads:
        return False
    # Forms of any length with the same segments up to i and a value seen varying
    # here follow: /blog/{slug}/edit/ once /blog/{slug}/ is known.
    for length, bucket in buckets.items():
        if length <= i:
            continue
        columns = bucket.columns
        prefixes = zip(*columns[: i + 1], strict=True) if i else columns[0]
        mask = list(map(heads.__contains__, prefixes))
        if any(mask):
            bucket.set_column(i, list(map(getitem, zip(columns[i], repeat(SLUG)), mask)))
    return True


def _no_key(segments: Segments) -> object:
    return ()


@lru_cache(maxsize=65536)
def template_of_url(url: str | None) -> str | None:
    """A URL with its path's id-like segments as placeholders (``/v2/items/{id}``)."""
    if not url:
        return url
    parts = urlsplit(url)
    path = template_of_path(parts.path)
    return url if path == parts.path else parts._replace(path=path).geturl()
