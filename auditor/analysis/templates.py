"""Route templates inferred from recorded paths, for apps that expose none.

Django, Quart, Datasette and plain ASGI apps record concrete paths. The audit groups
findings by place, so it infers each path's template here in two steps:

1. Id-like segments, one path at a time (:func:`template_of_path`): all digits ->
   ``{id}``, a UUID -> ``{uuid}``, a ``YYYY-MM-DD`` date -> ``{date}``, hex of 8+
   characters with a digit and a letter (or of 16+) -> ``{hex}``, and the recorder's
   redaction markers (``{redacted:...}``) -> ``{redacted}``.
2. Across paths (:func:`infer_templates`): a segment position becomes ``{slug}`` when,
   with the segments before it (already templated) and the segments after it
   (templated) fixed, it takes at least ``min_variants`` distinct values. Other paths
   at that position whose values are all among those values follow
   (``/blog/{slug}/edit/`` once ``/blog/{slug}/`` is known).

Trailing slashes are kept (``/a/{id}/`` is not ``/a/{id}``); a query string is dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from itertools import compress, groupby, repeat
from operator import getitem, itemgetter, not_

# Static routes under one parent with one suffix (allauth's /accounts/<view>/, the
# models of one Django admin app, a DRF API's resources) are usually fewer than this;
# a slug or username position in weeks of traffic reaches it quickly. Merging two
# routes hides one of them, splitting one route only repeats it, so err high.
DEFAULT_MIN_VARIANTS = 10

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
    r"|(?P<redacted>(?:\{|%7[Bb])(?i:redacted)(?:(?::|%3[Aa])[^/]*?)?(?:\}|%7[Dd]))"
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
    if plain:
        id_forms = list(map(_ID_SEGMENT.sub, repeat(_placeholder), distinct))
    else:
        id_forms = list(map(template_of_path, distinct))
    final = _collapse_slugs(set(id_forms), min_variants)
    return dict(zip(distinct, map(final.__getitem__, id_forms), strict=True))


Segments = tuple[str, ...]
# Values at a position that never count as varying (nor become {slug}).
_FIXED = frozenset({"", ID, UUID, HEX, DATE, REDACTED, SLUG})


def _collapse_slugs(forms: set[str], min_variants: int) -> dict[str, str]:
    """Map each id-templated path to its final template (``{slug}`` positions added)."""
    ordered = list(forms)
    rows = list(map(tuple, map(str.split, ordered, repeat("/"))))
    by_length = sorted(zip(map(len, rows), ordered, rows, strict=True), key=itemgetter(0))
    result: dict[str, str] = {}
    buckets: dict[int, _Bucket] = {}
    for length, group in groupby(by_length, key=itemgetter(0)):
        _, group_forms, group_rows = zip(*group, strict=True)
        if length > MAX_SEGMENTS:
            result.update(zip(group_forms, group_forms, strict=True))
        else:
            buckets[length] = _Bucket(list(group_forms), list(group_rows))
    positions = min(MAX_POSITIONS, max(buckets, default=0))
    quiet, i = 0, 0
    # Visit positions cyclically until each has been tried once since the last change:
    # a {slug} to the right changes the suffixes that the positions to its left see.
    while quiet < positions:
        quiet = 1 if _collapse_position(buckets, i, min_variants) else quiet + 1
        i = (i + 1) % positions
    for bucket in buckets.values():
        templates = map("/".join, zip(*bucket.columns, strict=True))
        result.update(zip(bucket.forms, templates, strict=True))
    return result


class _Bucket:
    """The forms with one number of segments, as columns (a {slug} keeps the length)."""

    def __init__(self, forms: list[str], rows: list[Segments]) -> None:
        self.forms = forms
        self.columns = [list(column) for column in zip(*rows, strict=True)]
        self.distinct: list[Segments] | None = rows  # the distinct current forms

    def rows(self) -> list[Segments]:
        if self.distinct is None:
            self.distinct = list(set(zip(*self.columns, strict=True)))
        return self.distinct


def _collapse_position(buckets: dict[int, _Bucket], i: int, min_variants: int) -> bool:
    """Turn segment ``i`` into ``{slug}`` where its values vary enough; True if any did."""
    heads: set[object] = set()
    head = itemgetter(*range(i + 1))
    for length, bucket in buckets.items():
        if length <= i or len(set(bucket.columns[i])) < min_variants:
            continue
        rows = bucket.rows()
        varying = list(
            compress(rows, map(not_, map(_FIXED.__contains__, map(itemgetter(i), rows))))
        )
        if len(varying) < min_variants:
            continue
        # Distinct forms with equal keys differ only at i: a key's count is its number
        # of values at i, with the segments before and after it fixed.
        rest = [j for j in range(length) if j != i]
        others = itemgetter(*rest) if rest else _no_key
        keys = list(map(others, varying))
        counts = Counter(keys)
        if max(counts.values()) < min_variants:
            continue
        hits = {key for key, count in counts.items() if count >= min_variants}
        heads.update(map(head, compress(varying, map(hits.__contains__, keys))))
    if not heads:
        return False
    # Forms of any length with the same segments up to i and a value seen varying
    # here follow: /blog/{slug}/edit/ once /blog/{slug}/ is known.
    for length, bucket in buckets.items():
        if length <= i:
            continue
        columns = bucket.columns
        mask = list(map(heads.__contains__, map(head, zip(*columns[: i + 1], strict=True))))
        if any(mask):
            columns[i] = list(map(getitem, zip(columns[i], repeat(SLUG)), mask))
            bucket.distinct = None
    return True


def _no_key(segments: Segments) -> object:
    return ()
