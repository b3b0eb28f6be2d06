"""Text that is safe to show: no credentials from a URL, no control characters from a name.

``without_credentials(url)``: a URL option as messages and reprs show it,
``scheme://host[:port]/path`` (no ``user:password@``, no query, no fragment).
``scrub(text)``: free text (an error message, a log line) with the ``user[:password]@`` of
every ``scheme://`` in it removed. ``printable(text)``: control characters escaped the way
``repr`` writes them (``\\n``, ``\\x1b``, ``\\u2028``), so a file or S3 key name can neither
forge a log line nor drive the terminal. ``shown(text)``: both; ``shown_lines(text)``: both,
line by line, keeping the line breaks of a text that has several (a traceback).

What counts as the userinfo of a URL in free text (``scrub``), after each ``://``, within the
same token (a token ends at whitespace, a quote, ``<``, ``>`` or a backtick):

- everything up to the last ``@`` before the first ``/``, ``?`` or ``#``: RFC 3986 userinfo,
  also when the password holds a raw ``@`` or ``:`` (``https://u:p@ss@host``);
- when the part before the first ``/``, ``?`` or ``#`` reads ``user:something`` where
  ``something`` is not a port (not all digits) and an ``@`` comes later in the token,
  everything up to that last ``@``: a password with a raw ``/``, ``?`` or ``#``
  (``https://u:pa/ss@host``), which RFC 3986 requires percent-encoded.

So the text shown may lose more than the userinfo (a path holding ``@`` after such a
password), never less. Not covered: a password whose raw ``/`` follows only digits
(``https://u:12/34@host``, read as a port and a path by every URL parser too), and URLs
without ``://``.

``printable`` escapes C0 (``\\x00``-``\\x1f``), DEL, C1 (``\\x80``-``\\x9f``), the Unicode line
and paragraph separators (U+2028, U+2029), the bidirectional embeddings, overrides and
isolates (U+202A-U+202E, U+2066-U+2069) and lone surrogates (undecodable bytes of a file
name); spaces, non-ASCII letters, emoji and backslashes stay as they are (so an ordinary
message keeps its text; the escaped form is for reading, not for copying back).
"""

from __future__ import annotations

import re

_TOKEN_END = re.compile(r"""[\s"'<>`]""")
_AUTHORITY_END = re.compile(r"[/?#]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def scrub(text: str) -> str:
    """``text`` without the ``user[:password]@`` of any ``scheme://`` URL in it."""
    if "://" not in text or "@" not in text:
        return text
    out: list[str] = []
    shown_from = 0  # text[shown_from:] is still to copy
    found = text.find("://")
    while found != -1:
        start = found + 3
        if start >= shown_from:
            end = _TOKEN_END.search(text, start)
            cut = _userinfo_length(text[start : end.start() if end else len(text)])
            if cut:
                out.append(text[shown_from:start])
                shown_from = start + cut
        found = text.find("://", start)
    out.append(text[shown_from:])
    return "".join(out)


def _userinfo_length(token: str) -> int:
    """How many characters of ``token`` (what follows ``://``) are userinfo, ``@`` included;
    0 when there is none."""
    end = _AUTHORITY_END.search(token)
    authority_end = end.start() if end else len(token)
    at = token.rfind("@", 0, authority_end)
    if at >= 0:
        return at + 1
    authority = token[:authority_end]
    if authority.startswith("[") or ":" not in authority:
        return 0  # an IPv6 host, or no user:password
    after_colon = authority.partition(":")[2]
    if after_colon.isascii() and after_colon.isdigit():
        return 0  # host:port
    at = token.rfind("@")
    return at + 1 if at > authority_end else 0


def without_credentials(url: str) -> str:
    """``url`` as ``scheme://host[:port]/path``: no userinfo, query or fragment (a token in a
    query string is a credential too). Never raises: what is not a URL is ``scrub``-bed."""
    text = scrub(url)
    scheme, separator, rest = text.partition("://")
    if not separator:
        head, slash, path = text.partition("/")
        return head.rpartition("@")[2] + slash + path  # user:password@host/… without scheme
    end = _AUTHORITY_END.search(rest)
    authority, remainder = (rest[: end.start()], rest[end.start():]) if end else (rest, "")
    path = re.split(r"[?#]", remainder, maxsplit=1)[0]
    return f"{scheme}://{authority.rpartition('@')[2]}{path}"


def printable(text: str) -> str:
    """``text`` with control characters escaped as ``repr`` writes them; one line."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    character = match.group()
    named = _NAMED.get(character)
    if named:
        return named
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """``text`` ready for one line of a log, a message or the terminal: credentials
    scrubbed, control characters escaped."""
    return printable(scrub(text))


def shown_lines(text: str) -> str:
    """A text of several lines (a traceback) ``shown`` line by line: its line breaks stay."""
    return "\n".join(printable(line) for line in scrub(text).split("\n"))
