"""How a ledger names the destination it delivers to: the Amplitude host and a fingerprint
of the API key (see :class:`~currents_export.ledger.base.Destination`).

A ledger records that an object is done; the destination says where it went, so that a
run to another Amplitude (the emulator, then production; a staging project, then another)
is refused instead of finding every object "already done".
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from currents_export.ledger.base import Destination

__all__ = ["Destination", "destination_host", "key_fingerprint", "the_destination"]

# The fingerprint is HMAC-SHA-256 keyed with this constant, over the API key, cut to 12 hex
# digits (48 bits). It cannot be turned back into the key: a real Amplitude API key is 32
# hex digits (128 bits), so about 2**80 keys share each fingerprint; it tells apart the few
# keys one operator has, and names none of them. The constant is public: it only keeps these
# digests apart from any other SHA-256 of the key. What it cannot protect is a key that can
# be guessed (a word, "test-key"): trying candidates against the fingerprint would confirm
# one, as it would against any digest. Real keys are random.
_FINGERPRINT_KEY = b"currents-export:destination:v1"
FINGERPRINT_HEX_DIGITS = 12
_DEFAULT_PORTS = {"http": 80, "https": 443}


def key_fingerprint(api_key: str) -> str:
    """12 hex digits that tell API keys apart without revealing them (see above)."""
    digest = hmac.new(_FINGERPRINT_KEY, api_key.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:FINGERPRINT_HEX_DIGITS]


def destination_host(url: str) -> str:
    """``scheme://host[:port]`` of an upload URL: no user, no password, no path; the host in
    lower case, a default port (80, 443) left out, so that the same host reads the same."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()  # hostname drops "user:password@"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # not a number: the client refuses the URL anyway
        port = None
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def the_destination(upload_url: str, api_key: str) -> Destination:
    """The destination of a run that sends to ``upload_url`` with ``api_key``."""
    return Destination(host=destination_host(upload_url), key_fingerprint=key_fingerprint(api_key))
