"""Redaction: the secrets URLs carry never reach the traffic database.

Secrets sit in URLs in a few places, and each is redacted in the request URL and
in every ``Location`` alike (the raw value and the resolved one):

- **Query parameters with secret-looking names** (``token``, ``password``,
  ``api_key``, ``code``, ... and any name added with ``redact_params``): the value
  becomes ``REDACTED``; the name stays.
- **At any depth**: a value that holds a URL or a query string (``next``,
  ``redirect_uri``, ``return_to``, ``state``, ...), percent-encoded or not, is
  parsed and redacted the same way, up to ``MAX_DEPTH`` levels down. The
  redacted text is spliced into the original, whose encoding is kept.
- **Values and path segments that look like credentials**: JWTs, hex digests,
  and long high-entropy tokens (``looks_like_secret``); ordinary ids are kept:
  numbers, dates, slugs, UUIDs, static-asset file names.
- **Segments after well-known token routes**: the two segments after a segment
  naming one (``reset``, ``reset-token``, ``confirm-email``, ``verify``,
  ``activate``, ``magic-link``, ``invite``, ``unsubscribe``, ``key``, ...), unless
  a plain word (``/reset/MQ/set-password/``). Django's ``/reset/<uidb64>/<token>/``,
  allauth's ``/confirm-email/<key>/`` and ``/password/reset/key/<uidb36>-<key>/``,
  Flask-Security's ``/confirm/<token>``, magic links and invitations.
- **Path parameters a route template names as tokens** (``token``, ``key``,
  ``secret``, ``signature``, ``code``, ``password``, ``uidb64``, ...; not a bare
  ``uid`` or ``uuid``, nor a parameter converted to a number): templates of the
  app's routes found when the recorder starts, every route template the recorder
  sees, and every placeholder of the user's ``redact_routes``.
- **Userinfo** (``user:password@``) in a ``Location``, and secrets in fragments
  (``#access_token=...``), read like a query.

Values of named parameters become ``REDACTED``; everything else becomes a marker,
``(redacted:<12 hex>)``, a keyed hash of the secret (the database's key, like the
client hash): one path segment or value, so the URL keeps its shape, and the same
secret always gives the same marker, so a redirect's ``Location`` and the URL of
its follow-up still match and link. The marker's characters need no escaping in a
path or a query at any depth, so normalization and resolution leave it as it is.

Cost: most URLs have nothing that could be a secret, and a cheap check (string
methods and small dictionaries, no regular expression over the URL) returns them
untouched; only the rest are parsed (``benchmarks/redaction.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

REDACTED = "REDACTED"
MARKER_FORMAT = "(redacted:{})"  # 12 hex digits of a keyed hash
MAX_DEPTH = 3  # URLs inside values inside URLs: levels parsed below the top one
MIN_SECRET_CHARS = 16  # letters and digits a token needs before its shape can tell
_CACHE_LIMIT = 16_384

MARKER_PATTERN = r"\(redacted:[0-9a-f]{12}\)"  # what a marker looks like, for readers
_MARKER = re.compile(MARKER_PATTERN)

# Parameter names whose values are credentials or one-time secrets.
_SECRET_NAME = re.compile(
    r"pass|secret|token|auth|sig|session|credential|jwt|otp|apikey|api[_-]key|private"
    r"|^(key|code|sid|ticket|hash|salt|nonce)$|[_-](key|code|sid)$",
    re.IGNORECASE,
)

# Route-template parameter names that mark a token (``{token}``, ``{uidb64}``,
# ``{invite_code}``, ``{resetKey}``), as words of the name. Ids are not: ``{uuid}``, and
# ``{uid}`` alone (a user id); Django's ``{uidb64}`` travels with a reset token.
_TOKEN_PARAM_SUBSTRINGS = ("token", "secret", "signature", "password", "passwd")
_TOKEN_PARAM_WORDS = frozenset(
    {"key", "code", "sig", "otp", "uidb64", "uidb36", "nonce", "hmac", "jwt"}
    | {"pin", "pass", "passcode", "pwd", "apikey"}
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NAME_WORD = re.compile(r"[a-z]+[0-9]*|[0-9]+")

# A path segment naming a token route: the next two segments are its token.
_TOKEN_ROUTE = re.compile(
    r"(?:^|[-_.])(?:reset|token|tokens|confirm|confirmation|verify|verification|activate"
    r"|activation|magic|invite|invites|invitation|invitations|unsubscribe|key|keys|otp)"
    r"(?:$|[-_.])"
)
_TOKEN_ROUTE_HINT = re.compile(r"reset|token|confirm|verif|activat|magic|invit|unsubscr|key|otp")
_PLAIN_WORD = re.compile(r"[a-z]+(?:[-_.][a-z]+)*")

# Shapes.
_ALNUM = re.compile(r"[A-Za-z0-9]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_NUMBERS = re.compile(r"[0-9]+(?:[-_.:,+ /][0-9]+)*")  # ids, dates, times, versions, lists
_HEX = re.compile(r"[0-9a-fA-F]+")
_NUMBER = re.compile(r"[0-9]{3,}")
_ASSET = re.compile(
    r"\.(?:js|mjs|cjs|css|map|png|jpe?g|gif|svg|webp|avif|ico|woff2?|ttf|otf|eot)\Z", re.I
)

# How surprising each letter is after the one before it in English words: -log2 of
# P(next | previous), 0-15 bits (hex digit), rows and columns a-z. Counted over the
# letter pairs of the words in Python 3.11's standard-library docstrings (add-0.5
# smoothing). A random letter costs log2(26) = 4.7 bits; natural text costs less.
_BIGRAM_BITS = (
    "c545c86c5d7343f6d34366886c49672baa53d39947d5584ceb3b3d683bb44f449a2b95735bdf8f"
    "48951aad2af6a849f5474aab7f4843657a7d9453957333a7757c3e9844ae2ee5aa29d3864cbe7e"
    "59ab2a653ee48469e43738cea73fcb1adf3fd9893ef6977eff9f6656646fcf844246b533c5f8f7"
    "6bbb0bbbabbbb94bbbbb4bbb9b4b97195c4cc48565ba39685cbc3785249a3fa3c847f8544a8e4b"
    "24a82bdf5fa85833fa6a5dcf8f4a43363a5c779647db4356bf7b8554747d7e754264f2544668bb"
    "3a8729d75f939a34d3635aaf5f98b9bbb9bbb999bbb6bb0bbbbb3866275c3c785448d544577e5d"
    "5c6b28953d87875499324c9f6f4b7839e23fd68a37e4564d7b6c6667377f6fd33384f233affbfe"
    "2acd199c3ddd9a69bd9bcbcdba39c949e22ee6b53ee459ee89ee383847b83cc89c93c782b9ca88"
    "9866587b4dd65542a732d85dda496b07bb3bb8675bb897bbbb88"
)
_RANDOM_LETTER_BITS = 4.700439718141092  # log2(26)
_CLASS_CHANGE_BITS = 3.0  # a digit next to a letter, or a lower-case letter before an upper
_CAMEL_WORD_BITS = 1.0  # "camelCase": a new word, not a letter pair
# Letter pairs say less than the table's bits: short words are often unlikely pairs
# ("week", "night"), so their evidence counts half.
_LETTER_PAIR_WEIGHT = 0.5
# A token is random when its letter pairs are, on average, this many bits less
# likely in words than in random text (see tests/test_redaction_shapes.py).
_RANDOM_BITS_PER_CHAR = 0.5


def _pair_weights() -> dict[str, float | None]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    chars = letters + letters.upper() + "0123456789"
    weights: dict[str, float | None] = {}
    for a in chars:
        for b in chars:
            if a.isdigit() or b.isdigit():
                weights[a + b] = 0.0 if a.isdigit() == b.isdigit() else -_CLASS_CHANGE_BITS
            elif a.islower() and b.isupper():
                weights[a + b] = None  # decided by the letter after: camelCase or noise
            else:
                bits = int(
                    _BIGRAM_BITS[letters.index(a.lower()) * 26 + letters.index(b.lower())], 16
                )
                weight = (_RANDOM_LETTER_BITS - bits) * _LETTER_PAIR_WEIGHT
                # A doubled letter is rare in random text too: no evidence either way.
                weights[a + b] = max(weight, 0.0) if a.lower() == b.lower() else weight
    return weights


_PAIR_WEIGHTS = _pair_weights()


def _word_likeness(token: str) -> float:
    """Bits by which ``token`` (letters and digits) is likelier text than random."""
    if _NUMBER.search(token):
        # A number of three digits or more is a number ("city1684Autumn"), not noise:
        # the words around it are scored on their own, one class change each.
        numbers = len(_NUMBER.findall(token))
        return sum(map(_word_likeness, _NUMBER.split(token))) - _CAMEL_WORD_BITS * numbers
    total = 0.0
    weights = _PAIR_WEIGHTS
    for i in range(len(token) - 1):
        weight = weights[token[i : i + 2]]
        if weight is None:  # lower then upper case
            weight = -_CAMEL_WORD_BITS if token[i + 2 : i + 3].islower() else -_CLASS_CHANGE_BITS
        total += weight
    return total


def _is_random(token: str) -> bool:
    if len(set(token)) < 6:
        return False  # "aaaaaaaaaaaaaaaa": repetitive, not random
    if _HEX.fullmatch(token) and not token.isdigit() and not token.isalpha():
        return True  # a hex digest (letters and digits)
    return _word_likeness(token) < -_RANDOM_BITS_PER_CHAR * len(token)


def looks_like_secret(text: str) -> bool:
    """True when ``text`` (a decoded path segment or value) has a credential's shape:
    a JWT, a hex digest, or a long token whose characters read as random.

    Ordinary ids keep their shape: numbers, dates, UUIDs, slugs and camelCase words
    (``my-first-post``), asset file names (``app.3f9a1c2e8b1d.js``). Needs at least
    ``MIN_SECRET_CHARS`` letters and digits: shorter tokens are left to the route
    rules and templates.
    """
    if len(text) < MIN_SECRET_CHARS:
        return False
    if _JWT.fullmatch(text):
        return True
    if _NUMBERS.fullmatch(text) or _ASSET.search(text):
        return False
    if "-" in text and _UUID.search(text):
        text = _UUID.sub("-", text)
    tokens = _ALNUM.findall(text)
    chars = sum(map(len, tokens))
    if chars < MIN_SECRET_CHARS:
        return False
    if any(len(token) >= MIN_SECRET_CHARS and _is_random(token) for token in tokens):
        return True
    if len(tokens) == 1:
        return False  # the one long token was judged above
    likeness = sum(_word_likeness(token) for token in tokens)
    return likeness < -_RANDOM_BITS_PER_CHAR * chars


def is_secret_name(name: str) -> bool:
    """True when a query parameter name looks like it carries a secret."""
    return bool(_SECRET_NAME.search(unquote(name)))


def is_token_param(name: str) -> bool:
    """True when a route template's parameter name marks a token (``{token}``,
    ``{uidb64}``, ``{invite_code}``, ``{resetKey}``), not an id (``{uuid}``, ``{uid}``)."""
    lowered = name.lower()
    if any(part in lowered for part in _TOKEN_PARAM_SUBSTRINGS):
        return True
    words = _NAME_WORD.findall(_CAMEL.sub("_", name).lower())
    return any(word in _TOKEN_PARAM_WORDS for word in words)


# ``{name}``, ``{name:convertor}`` (Starlette, FastAPI, Litestar) and ``<name>``,
# ``<convertor:name>`` (Django, Flask) placeholders.
_PLACEHOLDER = re.compile(r"\{([^{}:/]+)(?::([^{}/]*))?\}|<(?:([^<>:/]+):)?([^<>:/]+)>")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def compile_template(
    template: str, every: bool, capture: bool = True
) -> tuple[str, tuple[int, ...]] | None:
    """A route template as a pattern over normalized paths and the numbers of the groups
    to redact (every placeholder, or those ``is_token_param`` names); None when none is.
    With ``capture=False`` the groups do not capture (for one pattern of many)."""
    if not template.startswith("/"):
        return None
    parts: list[str] = []
    redact: list[int] = []
    position = 0
    for group, match in enumerate(_PLACEHOLDER.finditer(template), 1):
        parts.append(re.escape(quote(template[position : match.start()], safe=_PATH_SAFE)))
        name, convertor = (match[1], match[2]) if match[1] else (match[4], match[3])
        group_open = "(" if capture else "(?:"
        parts.append(group_open + (".+?)" if convertor == "path" else "[^/]+)"))
        # A parameter the framework converts to a number is an id or a count (a status
        # code in /redirect/{code:int}), whatever its name.
        numeric = (convertor or "").strip() in ("int", "float", "decimal")
        if every or (not numeric and is_token_param(name.strip())):
            redact.append(group)
        position = match.end()
    if not redact:
        return None
    parts.append(re.escape(quote(template[position:], safe=_PATH_SAFE).rstrip("/")))
    return "".join(parts) + "/?", tuple(redact)


@dataclass(frozen=True)
class RedactionRules:
    """What to redact beyond the defaults (the recorder's options)."""

    params: tuple[str, ...] = ()  # more parameter names whose values are secrets
    allow_params: tuple[str, ...] = ()  # parameter names whose values are kept as sent
    patterns: tuple[str, ...] = ()  # regexes: a segment or value matching one is a secret
    routes: tuple[str, ...] = ()  # templates (/share/{id}): every placeholder is a secret
    token_routes: tuple[str, ...] = ()  # the app's templates: token-named placeholders

    def validate(self) -> None:
        """Raise ValueError (one line) for a pattern or route that cannot be used."""
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact pattern {pattern!r} is not a regex: {exc}") from None
        for route in self.routes:
            if compile_template(route, every=True) is None:
                raise ValueError(
                    f"redact route {route!r} must start with '/' and name a placeholder, "
                    "e.g. /share/{token}"
                )


def app_token_routes(app: Any, limit: int = 512) -> tuple[str, ...]:
    """Route templates of ``app`` with a token-named path parameter, found by walking
    its wrapper chain (``.app``) down to routes (Starlette/FastAPI routers and Mounts,
    Litestar). Never raises: an app whose routes cannot be read gives what was found."""
    found: list[str] = []
    seen: set[int] = set()
    obj = app
    try:
        for _ in range(32):
            if obj is None or id(obj) in seen:
                break
            seen.add(id(obj))
            routes = getattr(obj, "routes", None)
            if isinstance(routes, list | tuple):
                _collect_routes(routes, "", found, 0)
                break
            obj = getattr(obj, "app", None)
    except Exception:  # a property that raises: keep what we have
        pass
    tokens = [t for t in dict.fromkeys(found) if compile_template(t, every=False) is not None]
    return tuple(tokens[:limit])


def _collect_routes(routes: Iterable[Any], prefix: str, found: list[str], depth: int) -> None:
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        children = getattr(route, "routes", None) if depth < 8 else None
        if isinstance(children, list | tuple) and children:
            _collect_routes(children, prefix + path, found, depth + 1)
        else:
            found.append(prefix + path)


_PLAIN, _SECRET, _ALLOWED = 0, 1, 2  # parameter names
# What a path segment is (flags): a marker already, a token route's name, a plain
# word, a URL or query inside, a secret by its shape.
_REDACTED_ALREADY, _ROUTE_NAME, _PLAIN_SEGMENT, _NESTED, _SHAPE = 1, 2, 4, 8, 16
# Where a URI reference's authority ends (RFC 3986 appendix B).
_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//[^/?#]*")
_SPLIT = re.compile(
    r"((?:[A-Za-z][A-Za-z0-9+.\-]*:)?(?://[^/?#]*)?)([^?#]*)(?:\?([^#]*))?(?:#(.*))?"
)

Edit = tuple[int, int, str | None]  # (start, end, replacement); None: the keyed marker


class Redactor:
    """Redacts URLs, query strings and ``Location`` values by one set of rules.

    ``mark`` turns a secret into its marker (a keyed hash, see ``RowBuilder``).
    Without it only parameter names count (at any depth): shapes, routes and
    templates need the marker.
    """

    def __init__(
        self, mark: Callable[[str], str] | None = None, rules: RedactionRules | None = None
    ) -> None:
        rules = rules or RedactionRules()
        self._mark = mark
        self._names_added = frozenset(name.lower() for name in rules.params)
        self._names_allowed = frozenset(name.lower() for name in rules.allow_params)
        self._patterns = tuple(re.compile(p) for p in rules.patterns)
        self._templates: list[tuple[re.Pattern[str], tuple[int, ...]]] = []
        self._any_template: re.Pattern[str] | None = None  # all templates in one
        self._any_sources: list[str] = []
        self._learned: set[str] = set()
        self._names: dict[str, int] = {}
        self._segments: dict[str, bool] = {}  # segment -> may need a look
        self._clean_paths: dict[str, None] = {}  # paths looked at: nothing to redact
        self._shapes: dict[str, bool] = {}
        self._segment_kinds: dict[str, int] = {}
        for route in rules.routes:
            self._add_template(route, every=True)
        for route in rules.token_routes:
            self.learn(route)

    # --- public ---------------------------------------------------------------------

    def reference(self, text: str) -> str:
        """A URL or URI reference (request URL, raw or resolved ``Location``), redacted."""
        if not self._may_hold_secret(text):
            return text
        return self._apply(text, self._reference_edits(text, 0))

    def url(self, url: str) -> str:
        """``reference`` for a URL, faster for a normalized http(s) one (the request's
        URL, a resolved ``Location``): no userinfo, no fragment."""
        if not url.startswith(("http://", "https://")):
            return self.reference(url)
        slash = url.find("/", 8)
        if slash < 0:
            return url
        path, sep, query = url[slash:].partition("?")
        if self._path_may_hold_secret(path) or (sep and self._query_may_hold_secret(query)):
            return self._apply(url, self._reference_edits(url, 0))
        return url

    def query(self, query: str) -> str:
        """A query string, redacted (parameter order and encoding kept)."""
        if not query or not self._query_may_hold_secret(query):
            return query
        return self._apply(query, self._query_edits(query, 0, 0))

    def knows(self, template: str) -> bool:
        """Whether ``learn`` would change nothing for this template."""
        return template in self._learned or len(self._learned) >= 1024

    def learn(self, template: str) -> None:
        """Redact, from now on, the token-named parameters of a route template."""
        if template in self._learned or len(self._learned) >= 1024:
            return
        self._learned.add(template)
        self._add_template(template, every=False)

    # --- the cheap check ------------------------------------------------------------

    def _may_hold_secret(self, text: str) -> bool:
        if text.startswith("/") and not text.startswith("//"):
            rest = text
        else:
            match = _AUTHORITY.match(text)
            if match is None:
                rest = text
            else:
                if "@" in match.group():
                    return True  # userinfo
                rest = text[match.end() :]
        if "#" in rest:
            return True
        path, sep, query = rest.partition("?")
        return self._path_may_hold_secret(path) or (
            bool(sep) and self._query_may_hold_secret(query)
        )

    def _path_may_hold_secret(self, path: str) -> bool:
        if self._mark is None or not path or path in self._clean_paths:
            return False
        if "%" in path or self._patterns:
            return True
        if self._any_template is not None and self._any_template.match(path):
            return True
        segments = self._segments
        for segment in path.split("/"):
            if len(segment) >= MIN_SECRET_CHARS:
                return True
            if not segment or segment.isdigit():
                continue
            hint = segments.get(segment)
            if hint is None:
                if len(segments) >= _CACHE_LIMIT:
                    segments.clear()
                hint = segments[segment] = bool(_TOKEN_ROUTE_HINT.search(segment.lower()))
            if hint:
                return True
        self._remember_clean(path)
        return False

    def _remember_clean(self, path: str) -> None:
        if len(self._clean_paths) >= _CACHE_LIMIT:
            self._clean_paths.clear()
        self._clean_paths[path] = None

    def _query_may_hold_secret(self, query: str) -> bool:
        if "%" in query or "?" in query or "#" in query:
            return True
        if query.count("=") > query.count("&") + 1:
            return True  # a value holding "=": a query string inside
        if self._patterns and self._mark is not None:
            return True
        for pair in query.split("&"):
            name, sep, value = pair.partition("=")
            kind = self._name_kind(name)
            if kind == _ALLOWED:
                continue
            if kind == _SECRET and value:
                return True
            if self._mark is not None:
                if len(value) >= MIN_SECRET_CHARS or (not sep and len(name) >= MIN_SECRET_CHARS):
                    return True
                if value.startswith("/") and self._path_may_hold_secret(value):
                    return True
        return False

    def _name_kind(self, name: str) -> int:
        kind = self._names.get(name)
        if kind is None:
            decoded = unquote(name) if "%" in name else name
            lowered = decoded.lower()
            if lowered in self._names_allowed:
                kind = _ALLOWED
            elif lowered in self._names_added or _SECRET_NAME.search(decoded):
                kind = _SECRET
            else:
                kind = _PLAIN
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            self._names[name] = kind
        return kind

    # --- finding secrets ------------------------------------------------------------

    def _reference_edits(self, text: str, depth: int) -> list[Edit]:
        match = _SPLIT.match(text)
        assert match is not None  # every group is optional
        edits: list[Edit] = []
        prefix = match.group(1)
        at = prefix.rfind("@")
        if at >= 0:
            start = prefix.find("//") + 2
            edits.append((start, at, REDACTED))
        path = match.group(2)
        if path and not (depth == 0 and path in self._clean_paths):
            edits += self._path_edits(path, match.start(2), depth, rooted=path.startswith("/"))
        if match.group(3):
            edits += self._query_edits(match.group(3), match.start(3), depth)
        if match.group(4):
            edits += self._query_edits(match.group(4), match.start(4), depth)
        return edits

    def _path_edits(self, path: str, offset: int, depth: int, rooted: bool) -> list[Edit]:
        if self._mark is None:
            return []
        edits: list[Edit] = []
        covered: list[tuple[int, int]] = []  # parts of the path a template redacts
        if rooted and self._any_template is not None and self._any_template.match(path):
            for pattern, groups in self._templates:
                match = pattern.match(path)
                if match:
                    covered = [match.span(group) for group in groups]
                    edits += [
                        (offset + s, offset + e, None)
                        for s, e in covered
                        if not _MARKER.fullmatch(path, s, e)
                    ]
                    break
        after_route = 0  # segments left to redact after a token route's name
        position = 0
        for segment in path.split("/"):
            start = position
            position += len(segment) + 1
            if not segment or any(s <= start < e for s, e in covered):
                continue
            decoded = _percent_decode(segment) if "%" in segment else segment
            kind = self._segment_kinds.get(decoded)
            if kind is None:
                kind = self._segment_kind(decoded)
            if kind & _REDACTED_ALREADY:
                after_route = max(0, after_route - 1)
                continue
            secret = bool(kind & _SHAPE)
            if after_route:
                after_route -= 1
                secret = secret or not kind & _PLAIN_SEGMENT
            if kind & _ROUTE_NAME:
                after_route = 2
            if secret:
                edits.append((offset + start, offset + start + len(segment), None))
            elif kind & _NESTED and depth < MAX_DEPTH:
                edits += _shift(self._nested_edits(decoded, depth), segment, offset + start)
        if not edits and depth == 0:
            self._remember_clean(path)
        return edits

    def _segment_kind(self, decoded: str) -> int:
        """What a decoded path segment is, as ``_SHAPE``... flags (cached)."""
        if decoded == REDACTED or _MARKER.fullmatch(decoded):
            kind = _REDACTED_ALREADY
        else:
            kind = _ROUTE_NAME if _TOKEN_ROUTE.search(decoded.lower()) else 0
            if _PLAIN_WORD.fullmatch(decoded):
                kind |= _PLAIN_SEGMENT
            if _holds_url_or_query(decoded):
                kind |= _NESTED
            elif self._is_secret_value(decoded):
                kind |= _SHAPE
        if len(self._segment_kinds) >= _CACHE_LIMIT:
            self._segment_kinds.clear()
        self._segment_kinds[decoded] = kind
        return kind

    def _query_edits(self, query: str, offset: int, depth: int) -> list[Edit]:
        edits: list[Edit] = []
        position = 0
        for pair in query.split("&"):
            start = offset + position
            position += len(pair) + 1
            name, sep, value = pair.partition("=")
            if not sep:
                if pair:  # a bare value: ?<token>
                    edits += self._value_edits(pair, start, depth)
                continue
            if not value:
                continue
            kind = self._name_kind(name)
            if kind == _ALLOWED:
                continue
            value_start = start + len(name) + 1
            if kind == _SECRET:
                if value != REDACTED:
                    edits.append((value_start, value_start + len(value), REDACTED))
                continue
            edits += self._value_edits(value, value_start, depth)
        return edits

    def _value_edits(self, value: str, offset: int, depth: int) -> list[Edit]:
        if value == REDACTED or _MARKER.fullmatch(value):
            return []
        decoded = _percent_decode(value) if "%" in value else value
        if depth < MAX_DEPTH and _holds_url_or_query(decoded):
            return _shift(self._nested_edits(decoded, depth), value, offset)
        if self._mark is not None and self._is_secret_value(decoded):
            return [(offset, offset + len(value), None)]
        return []

    def _nested_edits(self, text: str, depth: int) -> list[Edit]:
        if "?" in text or "#" in text or "/" in text:
            return self._reference_edits(text, depth + 1)
        return self._query_edits(text, 0, depth + 1)

    def _is_secret_value(self, decoded: str) -> bool:
        if self._mark is None:
            return False
        for pattern in self._patterns:
            if pattern.fullmatch(decoded):
                return True
        if len(decoded) < MIN_SECRET_CHARS:
            return False
        verdict = self._shapes.get(decoded)
        if verdict is None:
            if len(self._shapes) >= _CACHE_LIMIT:
                self._shapes.clear()
            verdict = self._shapes[decoded] = looks_like_secret(decoded)
        return verdict

    def _apply(self, text: str, edits: list[Edit]) -> str:
        if not edits:
            return text
        out: list[str] = []
        last = 0
        for start, end, replacement in sorted(edits):
            if start < last:
                continue  # overlaps one already made (a template and a segment rule)
            out.append(text[last:start])
            if replacement is None:
                assert self._mark is not None
                replacement = self._mark(unquote(text[start:end]))
            out.append(replacement)
            last = end
        out.append(text[last:])
        return "".join(out)

    # --- templates ------------------------------------------------------------------

    def _add_template(self, template: str, every: bool) -> None:
        compiled = compile_template(template, every)
        if compiled is None:
            return
        source, groups = compiled
        self._templates.append((re.compile(source + r"\Z"), groups))
        uncaptured = compile_template(template, every, capture=False)
        assert uncaptured is not None  # the same template, the same placeholders
        self._any_sources.append(uncaptured[0])
        self._any_template = re.compile("(?:" + "|".join(self._any_sources) + r")\Z")
        self._clean_paths.clear()


def redacted_path(sent_url: str, url: str, path: str) -> str:
    """The decoded ``path`` of a request whose normalized URL ``sent_url`` was redacted
    to ``url``: ``path`` itself when redaction left the URL's path alone."""
    start = sent_url.find("/", sent_url.find("//") + 2)
    sent = sent_url[start:].partition("?")[0] if start >= 0 else "/"
    start = url.find("/", url.find("//") + 2)
    redacted = url[start:].partition("?")[0] if start >= 0 else "/"
    return path if redacted == sent else unquote(redacted)


def _holds_url_or_query(decoded: str) -> bool:
    """A decoded value or segment that is itself a URL, path or query string."""
    return (
        "?" in decoded
        or "=" in decoded.rstrip("=")  # base64 padding is not a query
        or decoded.startswith("/")
        or "://" in decoded
    )


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _percent_decode(text: str) -> str:
    """``text`` with its %XX escapes decoded, one character per byte (latin-1)."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text)


def _shift(edits: list[Edit], encoded: str, offset: int) -> list[Edit]:
    """Edits found in ``_percent_decode(encoded)``, as positions in the text ``encoded``
    starts at ``offset`` of."""
    if not edits:
        return edits
    if "%" not in encoded:
        return [(offset + s, offset + e, r) for s, e, r in edits]
    starts: list[int] = []  # where each decoded character starts in ``encoded``
    position = 0
    for match in _ESCAPE.finditer(encoded):
        starts.extend(range(position, match.start()))
        starts.append(match.start())
        position = match.end()
    starts.extend(range(position, len(encoded) + 1))
    return [(offset + starts[s], offset + starts[e], r) for s, e, r in edits]


DEFAULT = Redactor()  # names only: what ``urls.redact_query`` applies
