"""What is shown never holds a URL's credentials nor a name's control characters: the helpers
(``support.redact``), the log filter of the command line and of the Lambda's JSON lines, and
the messages of the AWS explanations and the S3 source."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest
from botocore.exceptions import EndpointConnectionError, PartialCredentialsError

from currents_export.aws.explain import explain
from currents_export.aws_lambda.observability import JsonFormatter, setup_json_logging
from currents_export.deadletter import S3Store
from currents_export.errors import AwsSetupError, DeadLetterStoreError, S3ReadError
from currents_export.sources.s3 import s3_object
from currents_export.support.logs import ShownFilter, setup_logging
from currents_export.support.redact import (
    printable,
    scrub,
    shown,
    shown_lines,
    without_credentials,
)

SECRET = "s3cr3t-MARKER"
CREDENTIALED = f"https://user:{SECRET}@host.example:8443/path"
FORGING_NAME = "currents/a\nERROR forged: all good\x1b[31m.avro"

# ---- scrub ---------------------------------------------------------------------------------------

SCRUBBED = [
    # (text, what scrub makes of it)
    (CREDENTIALED, "https://host.example:8443/path"),
    ("https://user@host/", "https://host/"),  # a user alone can be a token: gone too
    ("https://@host/", "https://host/"),
    ("https://u:p%40ss%2Fword@host/", "https://host/"),  # percent-encoded, as RFC 3986 says
    ("https://u:p@ss:w@rd@host:1/x", "https://host:1/x"),  # raw '@' and ':' in the password
    ("https://u:pa/ss@host/x", "https://host/x"),  # raw '/' in the password
    ("https://u:pa?ss@host/x", "https://host/x"),  # raw '?'
    ("https://u:pa#ss@host/x", "https://host/x"),  # raw '#'
    ("HTTPS://USER:PW@HOST/", "HTTPS://HOST/"),
    ("s3+custom://key:sec@minio:9000/bucket", "s3+custom://minio:9000/bucket"),
    ("9p://u:p@h/", "9p://h/"),  # not a valid scheme: scrubbed all the same
    # Several URLs, quoted, in brackets or at the end of a sentence.
    ('cannot reach "https://a:b@one/" nor <http://c:d@two:80/x>; also ftp://e:f@three.',
     'cannot reach "https://one/" nor <http://two:80/x>; also ftp://three.'),
    ("endpoint='https://u:p@h:1'", "endpoint='https://h:1'"),
    ("(https://u:p@h/),(https://v:q@i/)", "(https://h/),(https://i/)"),
    ("x://y://u:p@h", "x://h"),
    # Kept: no userinfo, only an '@' elsewhere.
    ("https://host/users/@alice", "https://host/users/@alice"),
    ("https://host:8080/p?email=a@b.example#f@g", "https://host:8080/p?email=a@b.example#f@g"),
    ("http://[::1]:8080/x@y", "http://[::1]:8080/x@y"),
    ("s3://bucket/key@v2.avro", "s3://bucket/key@v2.avro"),
    ("write to ops@example.com or see https://host/", "write to ops@example.com or see "
     "https://host/"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), SCRUBBED)
def test_scrub_removes_userinfo_and_only_userinfo(text: str, expected: str) -> None:
    assert scrub(text) == expected
    assert scrub(expected) == expected  # nothing more goes on a second pass


def test_scrub_never_keeps_a_password_it_was_given() -> None:
    for tail in ("", "@ss", ":ss", "/ss", "?s#s", "%2F%40", "ünï", ":", "/"):
        password = f"PW{tail}"
        for text in (f"https://u:{password}@h/", f"error: 'https://u:{password}@h:1/x' down",
                     f"x https://u:{password}@h/a?b=c x", f"(http://u:{password}@h)"):
            assert "PW" not in scrub(text) and "u:" not in scrub(text), text
    for user in ("TOKEN", "TO@KEN", "TOKEN:"):  # a user (a token) without a password
        assert "TO" not in scrub(f"see https://{user}@h/x")


def test_without_credentials_shows_scheme_host_port_and_path() -> None:
    assert without_credentials(CREDENTIALED + "?token=abc#frag") == "https://host.example:8443/path"
    assert without_credentials("http://u:pa/ss@127.0.0.1:9/api") == "http://127.0.0.1:9/api"
    assert without_credentials("https://amplitude.com") == "https://amplitude.com"
    assert without_credentials("http://[::1]:4566/") == "http://[::1]:4566/"
    assert without_credentials("user:pw@minio:9000/b") == "minio:9000/b"  # no scheme
    assert without_credentials("not a url") == "not a url"
    assert SECRET not in without_credentials(f"{CREDENTIALED}?{SECRET}")


# ---- printable -----------------------------------------------------------------------------------

def test_printable_escapes_control_characters_the_way_repr_does() -> None:
    assert printable(FORGING_NAME) == "currents/a\\nERROR forged: all good\\x1b[31m.avro"
    assert printable("a\rb\tc\x00d\x7fe\x85f\x9bg") == "a\\rb\\tc\\x00d\\x7fe\\x85f\\x9bg"
    separators = "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    assert printable(separators) == "".join(f"\\u{ord(c):04x}" for c in separators)
    assert printable("bad-\udcff-bytes") == "bad-\\udcff-bytes"  # an undecodable file name
    for character in map(chr, [*range(0x20), *range(0x7f, 0xa0)]):
        assert printable(character) == repr(character)[1:-1]  # escaped as repr does
    assert len(printable("".join(map(chr, range(0x20)))).splitlines()) == 1


def test_printable_leaves_ordinary_names_alone() -> None:
    for name in ("currents/dt=2024-01-01/part 1.avro", "Ünïcödé/名前/ملف/😀.jsonl",
                 "a\\nb (a backslash and an n)", "tab-less, quote's \"fine\"", ""):
        assert printable(name) == name


def test_shown_does_both_and_shown_lines_keeps_the_line_breaks() -> None:
    assert shown(f"{CREDENTIALED} {FORGING_NAME}") == (
        "https://host.example:8443/path currents/a\\nERROR forged: all good\\x1b[31m.avro")
    assert shown_lines(f"first {CREDENTIALED}\nsecond \x1b[0m\u2028") == (
        "first https://host.example:8443/path\nsecond \\x1b[0m\\u2028")


# ---- the command line's logging (setup_logging) --------------------------------------------------

@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without handlers (as in a fresh process), restored afterwards. (Not a
    fixture: pytest adds its capturing handlers again when the test itself starts.)"""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = []
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def log_everything(logger: logging.Logger) -> None:
    logger.warning("cannot reach %s for %s", CREDENTIALED, FORGING_NAME)
    logger.warning(f"cannot reach {CREDENTIALED} for {FORGING_NAME}")
    logger.warning("%(url)s: %(name)s", {"url": CREDENTIALED, "name": FORGING_NAME})
    try:
        raise RuntimeError(f"Could not connect to the endpoint URL: {CREDENTIALED}")
    except RuntimeError:
        logger.exception("failed on %s", FORGING_NAME)
    logger.warning("%s %s", "arguments that do not fit")  # still shown, scrubbed


def test_setup_logging_scrubs_and_escapes_every_line() -> None:
    stream = io.StringIO()
    with bare_root() as root:
        setup_logging(0)
        [handler] = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
        log_everything(logging.getLogger("currents_export.test"))
    text = stream.getvalue()
    assert SECRET not in text and "user:" not in text
    assert "\x1b" not in text and "\nERROR forged" not in text
    lines = text.splitlines()
    starts = [line for line in lines if line.startswith("WARNING ") or line.startswith("ERROR ")]
    assert len(starts) == 5  # each record one line (the traceback keeps its own lines)
    assert starts[0] == ("WARNING currents_export.test: cannot reach "
                         "https://host.example:8443/path for "
                         "currents/a\\nERROR forged: all good\\x1b[31m.avro")
    assert starts[1] == starts[0] and "https://host.example:8443/path: currents/a\\n" in starts[2]
    assert any("Could not connect to the endpoint URL: https://host.example:8443/path" in line
               for line in lines)  # the traceback is scrubbed
    assert "arguments that do not fit" in starts[4]


def test_setup_logging_puts_the_filter_on_handlers_already_there() -> None:
    stream = io.StringIO()
    existing = logging.StreamHandler(stream)
    with bare_root() as root:
        root.addHandler(existing)
        setup_logging(1)
        setup_logging(1)  # once only
        assert [type(f) for f in existing.filters] == [ShownFilter]
        logging.getLogger("currents_export.test").warning("at %s", f"s3://b/{FORGING_NAME}")
    assert stream.getvalue() == "at s3://b/currents/a\\nERROR forged: all good\\x1b[31m.avro\n"


# ---- the Lambda's JSON lines ---------------------------------------------------------------------

def test_json_logging_scrubs_and_escapes_message_fields_and_exception(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with bare_root():
        setup_json_logging()
        log = logging.getLogger("currents_export.aws_lambda")
        log.error("configuration error", extra={"fields": {
            "error": f"cannot reach {CREDENTIALED}", "object": f"s3://b/{FORGING_NAME}\u2028",
            "nested": {"list": [CREDENTIALED, 3]}, "count": 2}})
        log.warning("at %s", f"{FORGING_NAME}\x85\u202e")
        try:
            raise RuntimeError(f"down: {CREDENTIALED}")
        except RuntimeError:
            log.exception("failed")
    out = capsys.readouterr().out
    assert SECRET not in out and "user:" not in out
    for raw in ("\x1b", "\u2028", "\x85", "\u202e"):  # JSON itself would leave the last three
        assert raw not in out
    first, second, third = (orjson.loads(line) for line in out.splitlines())
    assert first["error"] == "cannot reach https://host.example:8443/path"
    assert first["object"] == ("s3://b/currents/a\\nERROR forged: all good\\x1b[31m.avro"
                               "\\u2028")
    assert first["nested"] == {"list": ["https://host.example:8443/path", 3]}
    assert first["count"] == 2
    assert second["message"] == "at currents/a\\nERROR forged: all good\\x1b[31m.avro\\x85\\u202e"
    assert "down: https://host.example:8443/path" in third["exception"]


def test_the_json_formatter_alone_shows_clean_text() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "to %s: %s",
                               (CREDENTIALED, FORGING_NAME), None)
    record.fields = {"error": CREDENTIALED}
    line = orjson.loads(JsonFormatter().format(record))
    assert line["message"] == ("to https://host.example:8443/path: "
                               "currents/a\\nERROR forged: all good\\x1b[31m.avro")
    assert line["error"] == "https://host.example:8443/path"


# ---- AWS explanations and S3 messages ------------------------------------------------------------

def test_explain_names_the_endpoint_without_its_credentials() -> None:
    error = explain(EndpointConnectionError(endpoint_url=f"{CREDENTIALED}/bucket/key"),
                    "s3://bucket/prefix")
    assert error is not None
    assert SECRET not in str(error)
    assert "cannot reach https://host.example:8443/path/bucket/key" in str(error)
    partial = explain(PartialCredentialsError(provider=f"env {CREDENTIALED}",
                                              cred_var="AWS_SECRET_ACCESS_KEY"), "s3://b/p")
    assert partial is not None and SECRET not in str(partial)


class _Unreachable:
    """An S3 client whose endpoint cannot be reached (as botocore says it)."""

    def get_object(self, **arguments: Any) -> Any:
        raise EndpointConnectionError(endpoint_url=f"{CREDENTIALED}/{arguments['Key']}")

    def get_paginator(self, operation: str) -> Any:
        return self

    def paginate(self, **arguments: Any) -> Iterator[Any]:
        raise EndpointConnectionError(endpoint_url=f"{CREDENTIALED}/{arguments['Bucket']}")
        yield  # a generator, as botocore's pages are


def test_an_s3_read_error_shows_the_key_escaped_and_no_endpoint_credentials() -> None:
    source = s3_object(_Unreachable(), "bucket", FORGING_NAME)  # type: ignore[arg-type]
    with pytest.raises(S3ReadError) as info, source.opener():
        pass
    message = str(info.value)
    assert SECRET not in message and "\n" not in message and "\x1b" not in message
    assert message.startswith("s3://bucket/currents/a\\nERROR forged: all good\\x1b[31m.avro: ")
    assert source.uri == f"s3://bucket/{FORGING_NAME}"  # the identity keeps the raw key


def test_the_s3_dead_letter_store_shows_no_endpoint_credentials() -> None:
    store = S3Store(_Unreachable(), "bucket", "dl")  # type: ignore[arg-type]
    with pytest.raises(AwsSetupError) as listing:
        store.names()
    with pytest.raises(DeadLetterStoreError) as reading:
        store.read(FORGING_NAME)
    for error in (listing.value, reading.value):
        assert SECRET not in str(error) and "https://host.example:8443/path" in str(error)
    assert "\n" not in str(reading.value) and "\x1b" not in str(reading.value)
