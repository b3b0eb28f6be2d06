"""Personal data in free text, URLs and custom properties: the scan, ``strip_query`` and the
walk over custom JSON that ``[mapping.properties]`` configures.

Pure logic, no I/O. The mapper builds one ``Redactor`` per event type only when the
configuration asks for any of it (never with the defaults). The scan flags e-mail
addresses and phone numbers written as such (international with ``+``, North American or
national with separators), URL-encoded too; a flagged value is hashed in a normal form, so
``JANE@x.com`` and ``jane@x.com`` share one pseudonym. It never flags bare digits, decimals,
dates, times, UUIDs or IP addresses. It sees through text written to dodge it:
compatibility forms (U+FF20 and U+FE6B for ``@``, full-width digits) are read in NFKC,
invisible characters (zero-width spaces and joiners, soft hyphens: every format
character) are left out, and ``\\u0040``, ``&#64;``, ``&#x40;`` and ``&commat;`` are read
as ``@``. The exact rules, with examples: README, "Privacy".
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal
from urllib.parse import unquote, unquote_plus

import orjson

ScanPolicy = Literal["off", "hash", "drop"]
SCAN_POLICIES: tuple[str, ...] = ("off", "hash", "drop")
_MAX_NAMES: Final = 10_000  # property key names remembered per event type
_MAX_CLEAN: Final = 4_096  # short strings remembered as clean per event type…
_MAX_CLEAN_LENGTH: Final = 64  # …up to this length
MAX_DEPTH: Final = 64  # deeper custom JSON is dropped: it cannot be checked (nor be useful)


class _Drop:
    """Marks a value that is left out entirely."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = _Drop()

# Separators inside a phone number: space, dot, dash, and their typographic variants
# (no-break and thin spaces, the hyphens and dashes U+2010 to U+2013).
_SEPS = r" .\-\u00a0\u2009\u202f\u2010-\u2013"
_SEP = f"[{_SEPS}]"
# The TLD takes every letter that follows (greedy) and anything may come after it, so an
# address glued to more text (``jane@example.com_2024``, ``jane@x.com-1699999999``,
# ``ref:jane@example.com1``) is matched whole.
_EMAIL = (
    r"(?<![\w.%+\-])[\w.%+\-]*[\w](?:@|%40)"  # local part (may be URL-encoded)
    r"[^\W_](?:[\w\-]*[^\W_])?(?:\.[^\W_](?:[\w\-]*[^\W_])?)*\.[^\W\d_]{2,}"
)
_INTERNATIONAL = r"(?<![\w+%])(?:\+|%2[Bb])(?:[" + _SEPS + r"()]{0,2}\d){7,15}(?![\d])"
_NANP = (
    r"(?<![\w.+\-/])(?:1" + _SEP + r")?(?:\(\d{3}\)" + _SEP + r"?|\d{3}" + _SEP + r")"
    r"\d{3}" + _SEP + r"\d{4}(?![\w]|[.\-/:]\d)"
)
_TRUNK = (
    r"(?<![\w.+\-/,])(?:\(0\d{1,4}\)" + _SEP + r"?\d{2,8}|0\d{1,4}" + _SEP + r"\d{2,8})"
    r"(?:" + _SEP + r"\d{2,8}){0,4}(?![\w]|[.\-/:,]\d)"
)
_PATTERN = re.compile(
    f"(?P<email>{_EMAIL})|(?P<intl>{_INTERNATIONAL})|(?P<nanp>{_NANP})|(?P<trunk>{_TRUNK})"
)
# What every string the scan must look at contains: an @, a "%" (URL-encoded text is decoded
# first) or a digit followed by 6 digits or separators ("+" included: form encoding writes a
# space as "+"), as every number the pattern flags does. A cheap test (it starts with a
# class, which the regex engine scans for quickly) that rules out most strings before the
# full pattern (and any decoding) runs.
_NUMBER_HINT = r"\d[\d" + _SEPS + r"()+]{6}"
_HINT = re.compile(r"[@%]|" + _NUMBER_HINT)
_FORM_PLUS = re.compile(r"[\d)]\+[\d(]")  # "555+123+4567": form-encoded spaces between digits
_DATE = re.compile(r"\d{1,2}[.\-/ ]\d{1,2}[.\-/ ]\d{4}(?!\d)")  # 01.02.2024 10:30
# "+48.8584123", "+1234567.89": a signed decimal, not a number to call
_SIGNED_DECIMAL = re.compile(r"(?:\+|%2[Bb])\d+[.,]\d+")
# "logo@2x.png", "icon@1.5x.webp": a high-resolution image's name, not an address
_RETINA = re.compile(
    r"\d+(?:\.\d+)?x\.(?:png|jpe?g|gif|webp|svg|ico|css|js|pdf)",
    re.IGNORECASE,
)
_MIN_COMPACT_DIGITS = 10  # "+" then digits only: fewer is a signed count ("+12345678")

# Text written to dodge the scan. Characters nobody sees: the format characters (Unicode
# category Cf: soft hyphen, zero-width space, non-joiner and joiner, word joiner, direction
# marks and isolates, byte order mark, invisible operators, tags…), as of Unicode 15
# (tests/mapping checks the list against unicodedata). None of them is printable, so text
# that ``str.isprintable`` passes has none.
_INVISIBLE = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)
# "@" written as an escape: "\u0040" (JSON, JavaScript, Python; "\U00000040", "\u{40}"),
# "\x40", and the HTML character references "&#64;", "&#x40;", "&commat;".
_AT_ESCAPE = re.compile(
    r"\\+(?:u0040|U00000040|u\{0*40\}|x40)|&#(?:0*64(?!\d)|[xX]0*40(?![0-9a-fA-F]));?"
    r"|&commat;"
)
# What the pre-check lets through besides the hint: text that could hide one once read as
# the scan reads it (any non-ASCII character, a backslash, "&#", "&commat;").
_HINT_ANY = re.compile(r"[@%\\\x80-\U0010ffff]|&(?:#|commat;)|" + _NUMBER_HINT)
# What text must hold to hide one: a digit, "@", "%", "\\" or "&", or a character NFKC
# reads as one of them or as "+" (superscript and circled digits, fractions, full-width
# and small forms…; tests/mapping checks the list against unicodedata). Text without any
# (most text in any script) is not normalised at all.
_REVEALING = re.compile(
    "[@%\\\\&\\d\u00b2\u00b3\u00b9\u00bc-\u00be\u2070\u2074-\u207a\u2080-\u208a"
    "\u2150-\u215f\u2189\u2460-\u249b\u24ea\u3251-\u325f\u32b1-\u32cb\u3358-\u3370"
    "\u3378\u3379\u339f-\u33a6\u33a8\u33af\u33e0-\u33fe\ufb29\ufe60\ufe62\ufe68"
    "\ufe6a\ufe6b\uff05\uff06\uff0b\uff20\uff3c\U0001f100-\U0001f10a]"
)


def _plausible(match: re.Match[str]) -> bool:
    """Whether a match of ``_PATTERN`` is personal data: a national (trunk-0) candidate needs
    9 to 15 digits and must not start with a date; an international one must not be a
    signed decimal, and written without separators needs 10 digits at least; an address
    must not be an image name such as ``logo@2x.png``."""
    kind = match.lastgroup
    text = match.group()
    if kind == "email":
        at = text.rfind("@")
        domain = text[at + 1:] if at >= 0 else text[text.lower().rfind("%40") + 3:]
        return _RETINA.fullmatch(domain) is None
    if kind == "intl":
        if _SIGNED_DECIMAL.fullmatch(text):
            return False
        body = text[3:] if text[0] == "%" else text[1:]
        return not body.isdigit() or len(body) >= _MIN_COMPACT_DIGITS
    if kind != "trunk":
        return True
    digits = sum(c.isdigit() for c in text)
    return 9 <= digits <= 15 and not _DATE.match(text.lstrip("("))


def normalised(match: re.Match[str]) -> str:
    """The text a flagged value is hashed as, so one address or number has one pseudonym
    however it is written: an address in lower case with ``%40`` (and any other
    URL-encoding) decoded; a number as its digits, ``+`` first when international (``00``
    read as ``+``; a North American number with separators as ``+1`` and its 10 digits)."""
    text = match.group()
    kind = match.lastgroup
    if kind == "email":
        return unquote(text).lower() if "%" in text else text.lower()
    if kind == "intl":
        text = (text[3:] if text[0] == "%" else text).replace("(0)", "")  # +44 (0) 20…
    digits = "".join(c if c < "\x80" else str(int(c)) for c in text if c.isdecimal())
    if kind == "intl":
        return "+" + digits
    if kind == "nanp":
        return "+1" + digits[-10:]
    if digits.startswith("00"):
        return "+" + digits[2:]
    return digits


def revealed(text: str) -> str | None:
    """``text`` as the scan reads it, when that differs and could hide an address or a
    number (None otherwise): in NFKC (U+FF20 and U+FE6B are ``@``, full-width digits are
    digits), without invisible characters (``_INVISIBLE``), with ``\\u0040``, ``&#64;``,
    ``&#x40;`` and their kin as ``@``. Text without a digit, ``@``, ``%``, ``\\`` or ``&``
    in any form (``_REVEALING``) costs one search; plain ASCII without ``\\`` or ``&``, two
    membership tests."""
    if text.isascii():
        if "\\" not in text and "&" not in text:
            return None
        out = _AT_ESCAPE.sub("@", text)
        return None if out == text else out
    if _REVEALING.search(text) is None:
        return None
    out = text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize(
        "NFKC", text)
    if not out.isprintable():  # tabs and line breaks too: then the full search
        out = _INVISIBLE.sub("", out)
    if "\\" in out or "&" in out:
        out = _AT_ESCAPE.sub("@", out)
    return None if out == text else out


def _flagged(text: str) -> list[str]:
    return [m.group() for m in _PATTERN.finditer(text) if _plausible(m)]


def _shows_the_same(text: str, hidden: str) -> bool:
    """Whether ``text`` shows, as it is written, every address and number its ``revealed``
    form ``hidden`` holds, whole (not ``ne@example.com`` of ``ja\\u200bne@example.com``)."""
    found = _flagged(text)
    return bool(found) and [revealed(f) or f for f in found] == _flagged(hidden)


def find_personal(text: str) -> list[str]:
    """Every e-mail address and phone number the scan flags in ``text``: as written, or as
    ``revealed`` shows them when the text hides one (for tests and documentation: the
    redaction itself uses ``Redactor.text``)."""
    hidden = revealed(text)
    if hidden is not None and not _shows_the_same(text, hidden):
        shown = _flagged(hidden)
        if shown:
            return shown
    return _flagged(text)


def strip_query(url: str) -> str:
    """``url`` without its query, fragment and user-info: scheme, host (and port) and path.

    ``https://u:p@shop.example.com/a/b?email=x#top`` → ``https://shop.example.com/a/b``;
    a path alone (``/crm/update?id=1``) keeps the path.
    """
    cut = len(url)
    for mark in ("?", "#"):
        at = url.find(mark)
        if 0 <= at < cut:
            cut = at
    base = url[:cut]
    scheme, sep, rest = base.partition("://")
    if sep:
        host, slash, path = rest.partition("/")
        base = scheme + sep + host.rpartition("@")[2] + slash + path
    return base


def key_name(key: str) -> str:
    """How property keys are compared: case and the separators ``_ - . `` and space
    ignored (``Email``, ``e-mail`` and ``E_MAIL`` are one name), read in NFKC and without
    invisible characters (``email`` in full-width letters and ``e\\u200bmail`` are
    ``email`` too)."""
    if not key.isascii():
        key = unicodedata.normalize("NFKC", key)
        if not key.isprintable():
            key = _INVISIBLE.sub("", key)
    return key.lower().replace("_", "").replace("-", "").replace(".", "").replace(" ", "")


class Redactor:
    """Applies the scan and the key rules of ``[mapping.properties]`` with one salt."""

    __slots__ = ("_clean", "_drop_keys", "_hash", "_hash_keys", "_names", "_replace", "_scan",
                 "_search", "_sub")

    def __init__(
        self,
        scan: str,
        hash_text: Callable[[str], str] | None,
        drop_keys: Iterable[str] = (),
        hash_keys: Iterable[str] = (),
    ) -> None:
        if scan not in SCAN_POLICIES:
            raise ValueError(f"unknown scan policy {scan!r}; use off, hash or drop")
        drop_names = frozenset(key_name(k) for k in drop_keys)  # one pass: may be an iterator
        hash_names = frozenset(key_name(k) for k in hash_keys)
        if hash_text is None and (scan == "hash" or hash_names):
            raise ValueError("hashing personal data needs a secret salt")
        self._scan = scan
        self._hash = hash_text
        self._drop_keys = drop_names
        self._hash_keys = hash_names
        self._sub = _PATTERN.sub
        # A hit is checked by the full pattern (text); the hint lets through what may hide
        # one once revealed (non-ASCII, a backslash, an HTML character reference).
        self._search = _HINT_ANY.search
        self._names: dict[str, str] = {}  # key → key_name(key): keys recur in every record
        # Short strings the pre-check passed (platforms, versions, names): they recur in
        # every record, and a set lookup is several times cheaper than the regex.
        self._clean: set[str] = set()
        hashing = scan == "hash"

        def replace(match: re.Match[str]) -> str:
            if not _plausible(match):
                return match.group()
            return hash_text(normalised(match)) if hashing and hash_text else ""

        self._replace = replace

    def looks(self, value: str) -> bool:
        """The cheap pre-check: False means ``text(value)`` is ``value`` (nothing to scan).
        Remembers short values that pass it (up to ``_MAX_CLEAN``)."""
        clean = self._clean
        if value in clean or self._scan == "off":
            return False
        if self._search(value) is not None and _REVEALING.search(value) is not None:
            if _HINT.search(value) is not None:
                return True
            hidden = revealed(value)
            if hidden is not None and _HINT.search(hidden) is not None:
                return True
        if len(value) <= _MAX_CLEAN_LENGTH and len(clean) < _MAX_CLEAN:
            clean.add(value)
        return False

    def text(self, value: str) -> Any:
        """A string after the scan: itself, with every address and number in it hashed or
        removed, or ``DROP`` when the whole string was one (under ``scan = "drop"``).

        URL-encoded text is decoded when the decoded text hides an address or a number
        (``%2B1%20555%20123%204567``; form encoding too, ``+`` for a space:
        ``tel=%2B1+555+123+4567``) and is then left decoded. So is text that hides one
        once ``revealed`` (``jane\\uff20example.com``, ``jane\\u200b@example.com``,
        ``jane&#64;example.com``): it is then left as revealed. Text that hides nothing
        is kept exactly as it came."""
        if self._scan == "off" or self._search(value) is None:  # the common case
            return value
        return self._scan_text(value)

    def _scan_text(self, value: str) -> Any:
        """``text`` of a value the pre-check (``_search``) let through."""
        if value.isascii():
            if "\\" not in value and "&" not in value:  # nothing escaped: as ever
                return self._plain(value)
        elif _REVEALING.search(value) is None:  # text in any script, without digits nor "@"
            return value
        hidden = revealed(value)
        if hidden is not None and _HINT.search(hidden) is not None:
            again = self._plain(hidden)
            if again is DROP or again != hidden:  # it hides an address or a number
                if not _shows_the_same(value, hidden):
                    return again
                # All of it is plain to see as it is written (a thin space in a number,
                # full-width brackets around an address): redacted where it is, the rest
                # of the text kept as it came, unless something is still hidden in it.
                out = self._plain(value)
                if out is DROP:
                    return DROP
                left = revealed(out)
                if left is None or _HINT.search(left) is None or self._plain(left) == left:
                    return out
                return again
        return self._plain(value) if _HINT.search(value) is not None else value

    def _plain(self, value: str) -> Any:
        """``text`` without ``revealed``: what is plain to see, then URL-decoded."""
        out = self._redact(value)  # what is plain to see, "+15551234567" included
        if out is DROP:
            return DROP
        plus = "+" in out and ("%" in out or _FORM_PLUS.search(out) is not None)
        if plus or "%" in out:
            decoded = unquote_plus(out) if plus else unquote(out)
            if decoded == out or not self._finds(decoded):
                if not plus or "%" not in out:
                    return out
                decoded = unquote(out)  # a "+" that is not a space: "%2B1%20555…+more"
                if decoded == out or not self._finds(decoded):
                    return out
            out = self._redact(decoded)
        return out

    def _finds(self, text: str) -> bool:
        return self._search(text) is not None and any(
            _plausible(m) for m in _PATTERN.finditer(text))

    def _redact(self, value: str) -> Any:
        whole = _PATTERN.fullmatch(value.strip())
        if whole is not None and _plausible(whole):
            if self._scan == "drop":
                return DROP
            assert self._hash is not None
            return self._hash(normalised(whole))
        return self._sub(self._replace, value)

    def value(self, value: Any, depth: int = 0) -> Any:
        """A JSON value after the key rules and the scan (strings anywhere inside it; keys
        themselves are not scanned); ``DROP`` when nothing of it may stay."""
        cls = value.__class__
        if cls is str:
            return self.text(value)
        if cls is not dict and cls is not list:
            return value  # numbers, booleans, null: no address or number shape to find
        if depth >= MAX_DEPTH:
            return DROP
        # Strings, numbers and booleans are handled inline: most values are one of them.
        search = self._search if self._scan != "off" else None
        if cls is list:
            items = []
            for item in value:
                kind = item.__class__
                if kind is str:
                    if search is not None and search(item) is not None:
                        item = self._scan_text(item)
                elif kind is dict or kind is list:
                    item = self.value(item, depth + 1)
                if item is not DROP:
                    items.append(item)
            return items
        out: dict[Any, Any] = {}
        drop_keys, hash_keys, names = self._drop_keys, self._hash_keys, self._names
        for key, item in value.items():
            name = names.get(key)
            if name is None:
                name = key_name(key) if key.__class__ is str else key
                if len(names) < _MAX_NAMES:
                    names[key] = name
            if name in drop_keys:
                continue
            if name in hash_keys:
                out[key] = self.hash_any(item)
                continue
            kind = item.__class__
            if kind is str:
                if search is not None and search(item) is not None:
                    item = self._scan_text(item)
            elif kind is dict or kind is list:
                item = self.value(item, depth + 1)
            if item is not DROP:
                out[key] = item
        return out

    def hash_any(self, value: Any) -> Any:
        """The salted hash standing for ``value``: of the text, of a number's decimal text,
        of a list's or object's JSON (null stays null)."""
        assert self._hash is not None
        if value is None:
            return None
        cls = value.__class__
        if cls is str:
            return self._hash(value)
        if cls is bool:
            return self._hash("true" if value else "false")
        if cls is dict or cls is list:
            try:
                text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
            except (TypeError, orjson.JSONEncodeError):
                text = repr(value)
            return self._hash(text)
        return self._hash(str(value))


def hmac_hasher(salt: bytes) -> Callable[[str], str]:
    """HMAC-SHA256 of a text with ``salt``, as lowercase hex (the pseudonym of a value)."""

    def hash_text(text: str) -> str:
        return hmac.digest(salt, text.encode(), "sha256").hex()

    return hash_text


# Schema attributes that describe structure; anything else (docs, non-null defaults, custom
# attributes) could carry example values, so ``schema_outline`` leaves it out.
_SCHEMA_KEYS = frozenset({
    "type", "name", "namespace", "fields", "items", "values", "symbols", "size",
    "logicalType", "precision", "scale", "aliases", "order",
})


def schema_outline(schema: Any, depth: int = 0) -> Any:
    """An Avro schema as structure only (for ``inspect``): names and types kept; ``doc``,
    defaults other than null and custom attributes (which could hold sample data) left
    out; a default that was left out shows as ``"default": "(not shown)"``."""
    if depth > MAX_DEPTH:
        return "(not shown)"
    if schema.__class__ is list:
        return [schema_outline(item, depth + 1) for item in schema]
    if schema.__class__ is not dict:
        return schema if schema is None or schema.__class__ in (str, int, bool) else (
            "(not shown)")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "default":
            out[key] = None if value is None else "(not shown)"
        elif key in _SCHEMA_KEYS:
            out[key] = schema_outline(value, depth + 1)
    return out
