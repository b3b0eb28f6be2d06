"""The privacy scan sees through text written to dodge it (issue 23, "smaller ones").

An address written with a full-width or small at sign, with an invisible character (zero-width
space, soft hyphen, any format character) inside it, or with ``@`` as ``\\u0040``, ``&#64;``
or ``&#x40;`` is flagged, and a property key with an invisible character or in full-width
letters still names the field it spells. Text that hides nothing is kept exactly as it came.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import unicodedata
from typing import Any

import orjson
import pytest

from currents_export.mapping import Mapped, MappingOptions, mapper_for
from currents_export.mapping.pii import (
    _INVISIBLE,
    _REVEALING,
    DROP,
    Redactor,
    find_personal,
    hmac_hasher,
    key_name,
    revealed,
)
from currents_export.settings.mapping import mapping_options
from tests.support.configs import ENV, SALT

HASH = hmac_hasher(SALT.encode())
ADDRESS = "jane@example.com"
PHONE = "+15551234567"


def hashed(text: str) -> str:
    return hmac.new(SALT.encode(), text.encode(), hashlib.sha256).hexdigest()


# Each is "jane@example.com" written so that the plain pattern does not see it.
DODGED_ADDRESSES = {
    "full-width at": "jane\uff20example.com",
    "small at": "jane\ufe6bexample.com",
    "full-width address": "\uff4a\uff41\uff4e\uff45\uff20\uff45\uff58\uff41\uff4d\uff50\uff4c"
                          "\uff45\uff0e\uff43\uff4f\uff4d",
    "zero-width space before @": "jane\u200b@example.com",
    "soft hyphen before @": "jane\u00ad@example.com",
    "zero-width joiner after @": "jane@\u200dexample.com",
    "word joiner in the domain": "jane@exam\u2060ple.com",
    "byte order mark in the local part": "ja\ufeffne@example.com",
    "tag character before @": "jane\U000e0020@example.com",
    "soft hyphen and full-width at": "ja\u00adne\uff20example.com",
    "JSON escape": "jane\\u0040example.com",
    "double-escaped JSON": "jane\\\\u0040example.com",
    "Python long escape": "jane\\U00000040example.com",
    "ES6 escape": "jane\\u{40}example.com",
    "hex escape": "jane\\x40example.com",
    "decimal entity": "jane&#64;example.com",
    "decimal entity, zero-padded": "jane&#064;example.com",
    "hex entity": "jane&#x40;example.com",
    "hex entity, upper case": "jane&#X0040;example.com",
    "named entity": "jane&commat;example.com",
}


@pytest.mark.parametrize("text", DODGED_ADDRESSES.values(), ids=DODGED_ADDRESSES.keys())
def test_a_dodged_address_is_flagged(text: str) -> None:
    assert find_personal(text) == [ADDRESS]
    assert find_personal(f"write to {text} today") == [ADDRESS]
    hashing, dropping = Redactor("hash", HASH), Redactor("drop", None)
    # one address, one pseudonym: the same hash as the address written plainly
    assert hashing.text(text) == hashed(ADDRESS)
    assert hashing.text(f"write to {text} today") == f"write to {hashed(ADDRESS)} today"
    assert dropping.text(text) is DROP
    assert dropping.text(f"write to {text} today") == "write to  today"
    assert hashing.looks(text) and hashing.looks(f"write to {text} today")
    # in custom JSON, at any depth, in lists and objects
    assert hashing.value({"note": text, "items": [{"to": f"cc {text}"}, text]}) == {
        "note": hashed(ADDRESS), "items": [{"to": f"cc {hashed(ADDRESS)}"}, hashed(ADDRESS)]}
    assert dropping.value({"note": text, "items": [text, "keep"]}) == {"items": ["keep"]}


DODGED_PHONES = {
    "full-width digits": "\uff0b\uff11 \uff15\uff15\uff15 \uff11\uff12\uff13 \uff14\uff15\uff16"
                         "\uff17",
    "zero-width spaces between digits": "+1 555\u200b 123\u200b 4567",
    "soft hyphens as separators": "555\u00ad-123-\u00ad4567",
    "circled digits": "\u2460-\u2464\u2464\u2464-\u2460\u2461\u2462-\u2463\u2464\u2465\u2466",
}


@pytest.mark.parametrize("text", DODGED_PHONES.values(), ids=DODGED_PHONES.keys())
def test_a_dodged_number_is_flagged(text: str) -> None:
    assert find_personal(text), text
    hashing = Redactor("hash", HASH)
    assert hashing.text(text) == hashed(PHONE)
    assert Redactor("drop", None).text(f"call {text} now") == "call  now"


def test_what_is_plain_stays_as_written_beside_what_was_dodged() -> None:
    hashing = Redactor("hash", HASH)
    text = "from a@b.com to c\u200b@d.com"
    assert find_personal(text) == ["a@b.com", "c@d.com"]
    assert hashing.text(text) == f"from {hashed('a@b.com')} to {hashed('c@d.com')}"
    # nothing dodged: the text around a plain address is kept as it came (no NFKC)
    kept = "\uff08\u3054\u9023\u7d61\uff09 a@b.com \U0001f468\u200d\U0001f469"
    assert hashing.text(kept) == kept.replace("a@b.com", hashed("a@b.com"))
    # URL-encoded and dodged together
    assert hashing.text("to=jane%40example.com&cc=bob&#64;example.org") == (
        f"to={hashed(ADDRESS)}&cc={hashed('bob@example.org')}")


# Ordinary text the normalisation must not make into an address or a number.
ORDINARY = [
    "a&amp;b", "Tom &amp; Jerry &lt;3", "&#65;&#66;C", "x &#640; y", "&#x400; and &#x4;",
    "&#64;handle", "\uff20handle", "@\u200bhandle", "logo\uff202x.png",
    "C:\\users\\jane", "C:\\\\users\\\\jane\\\\u0041", "path\\u0041\\x41", "a\\tb\\nc",
    "\u79c1\u306f\u7530\u4e2d\u3067\u3059\u3002\u3088\u308d\u3057\u304f\u304a\u9858\u3044"
    "\u3057\u307e\u3059\u3002",  # a Japanese sentence without an address
    "\uff12\uff10\uff12\uff14\u5e74\uff11\u6708\uff11\uff15\u65e5\u306e\u30bb\u30fc\u30eb",
    "2024\u5e741\u670815\u65e5 10:30", "\uff11\uff12\uff0e\uff19\uff19 \u5186",
    "Caf\u00e9 na\u00efve \u00bd price", "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
    "x\u00b2 + y\u00b2", "\u2460 first \u2461 second", "Stra\u00dfe 12\u00ad3",
    "line one\nline two\twith tab", "\u00a0\u00a0indented", "\u200b", "",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_not_flagged_and_is_kept_as_it_came(text: str) -> None:
    assert find_personal(text) == []
    for redactor in (Redactor("hash", HASH), Redactor("drop", None)):
        assert redactor.text(text) == text
        assert redactor.value({"k": [text, {"n": text}]}) == {"k": [text, {"n": text}]}
        if "@" not in (revealed(text) or text):  # "@handle" passes the pre-check, as ever
            assert not redactor.looks(text)


DODGED_KEYS = [
    "e\u200bmail", "E\u00ADmail", "\uff45\uff4d\uff41\uff49\uff4c", "\ufeffemail",
    "e\u2060mail", "Email\u200d", "e\u200c_mail", "E-\u00adMAIL",
]


@pytest.mark.parametrize("key", DODGED_KEYS)
def test_a_key_with_invisible_or_full_width_characters_names_the_field(key: str) -> None:
    assert key_name(key) == "email"
    dropping = Redactor("hash", HASH, drop_keys=["email"], hash_keys=["customer_id"])
    assert dropping.value({key: "x", "plan": "pro", "deep": [{key: "y"}]}) == {
        "plan": "pro", "deep": [{}]}
    hashing = Redactor("off", HASH, hash_keys=["email"])
    assert hashing.value({key: "x"}) == {key: hashed("x")}
    # a configured name with an invisible character is the same name
    assert Redactor("off", None, drop_keys=[key]).value({"email": 1, "e": 2}) == {"e": 2}


def test_ordinary_keys_are_still_their_own_names() -> None:
    assert key_name("\u540d\u524d") == "\u540d\u524d"  # a Japanese key is left as it is
    assert key_name("Stra\u00dfe") == "stra\u00dfe"
    assert key_name("e_mail") == "email"
    redactor = Redactor("hash", HASH, drop_keys=["email"])
    assert redactor.value({"emails": 1, "e\u200bmails": 2, "mail": 3}) == {
        "emails": 1, "e\u200bmails": 2, "mail": 3}


def options(pii: dict[str, str], properties: dict[str, Any] | None = None) -> MappingOptions:
    table: dict[str, Any] = {"pii": pii}
    if properties is not None:
        table["properties"] = properties
    return mapping_options(table, environ=ENV)


def test_the_mapper_sees_through_dodged_addresses_and_keys() -> None:
    chosen = options({}, {"drop": ["email"], "scan": "hash"})
    custom = mapper_for("users.behaviors.CustomEvent", chosen)
    record = {"id": "e-1", "external_user_id": "user-0001", "time": 1_700_000_000,
              "name": "signup", "properties": orjson.dumps({
                  "e\u200bmail": ADDRESS, "contact": "jane&#64;example.com",
                  "items": [{"note": "write jane\uff20example.com"}], "plan": "pro"}).decode()}
    result = custom.map(record)
    assert isinstance(result, Mapped)
    prefix = "[Custom event property] "
    assert result.event["event_properties"] == {
        prefix + "contact": hashed(ADDRESS),
        prefix + "items": [{"note": f"write {hashed(ADDRESS)}"}],
        prefix + "plan": "pro",
    }
    assert "example" not in orjson.dumps(custom.redact_record(record)).decode()
    inbound = {"id": "e-2", "external_user_id": "user-0001", "time": 1_700_000_000,
               "message_body": "reach me at jane\u00ad@example.com or \uff15\uff15\uff15-"
                               "\uff11\uff12\uff13-\uff14\uff15\uff16\uff17"}
    sms = mapper_for("users.messages.sms.InboundReceive", chosen).map(inbound)
    assert isinstance(sms, Mapped)
    body = orjson.dumps(sms.event).decode()
    assert "example" not in body and "\uff15\uff15\uff15" not in body
    assert hashed(ADDRESS) in body and hashed(PHONE) in body


def test_the_invisible_characters_are_every_format_character() -> None:
    """``_INVISIBLE`` is written out (building it from unicodedata at import would cost
    every start); this keeps it complete for the Unicode of the Python running the tests."""
    missing = [f"U+{c:04X}" for c in range(sys.maxunicode + 1)
               if unicodedata.category(chr(c)) == "Cf" and not _INVISIBLE.fullmatch(chr(c))]
    assert missing == []
    assert not any(chr(c).isprintable() for c in range(sys.maxunicode + 1)
                   if _INVISIBLE.fullmatch(chr(c)))  # what the isprintable() shortcut needs


def test_the_revealing_characters_are_every_form_of_a_digit_or_at() -> None:
    """Text that ``_REVEALING`` does not match is not normalised: it must match every
    character that NFKC reads as a digit, ``@``, ``%``, ``\\``, ``&`` or ``+``."""
    missing = [
        f"U+{c:04X}" for c in range(sys.maxunicode + 1)
        if any(ch.isdecimal() or ch in "@%\\&+" for ch in unicodedata.normalize("NFKC", chr(c)))
        and not _REVEALING.fullmatch(chr(c)) and chr(c) != "+"
    ]
    assert missing == []


def test_revealed_is_none_when_nothing_could_be_hidden() -> None:
    assert revealed("plain ascii text") is None
    assert revealed("C:\\users") is None and revealed("a&amp;b") is None
    assert revealed("\uff21\uff22\uff23 full-width letters, no digit nor at") is None
    assert revealed("jane\uff20example.com") == ADDRESS
    assert revealed("jane\\u0040example.com") == ADDRESS
    assert revealed("line\nbreak jane\u200b@example.com") == f"line\nbreak {ADDRESS}"


def test_an_off_scan_does_none_of_it() -> None:
    off = Redactor("off", None)
    for text in DODGED_ADDRESSES.values():
        assert off.text(text) == text
        assert not off.looks(text)
