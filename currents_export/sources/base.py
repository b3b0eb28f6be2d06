"""What the pipeline needs to know about an object, whatever its origin."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO

from currents_export.currents.keys import currents_identity, parse_key
from currents_export.errors import NotACurrentsKey

DIGEST_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class SourceObject:
    """One Avro file to process.

    ``uri``: where it is read from (logs, dead letter, the ledger's ``location``). ``key``:
    the part in Braze's layout (``…/event_type=…/date=…/…avro``). ``identity``: the ledger's
    key, the same wherever the file is copied; outside the layout, ``fingerprint`` (S3:
    ``s3etag:<ETag>``) stands in for hashing the content. ``origin``: how another process
    opens it again, picklable (``("file", PATH)``, ``("s3", BUCKET, KEY, VERSION_ID or "")``;
    None: it cannot), since ``opener`` may hold a client that cannot cross.
    """

    uri: str
    key: str
    size: int | None
    opener: Callable[[], AbstractContextManager[IO[bytes]]]
    fingerprint: str | None = None
    origin: tuple[str, ...] | None = None
    _identity: str | None = field(default=None, init=False, repr=False, compare=False)

    def open(self) -> AbstractContextManager[IO[bytes]]:
        return self.opener()

    @property
    def key_event_type(self) -> str | None:
        try:
            return parse_key(self.key).event_type
        except NotACurrentsKey:
            return None

    @property
    def identity(self) -> str:
        """``currents:<key from event_type= on>`` for a file in the Currents layout; else the
        ``fingerprint`` if there is one; else ``sha256:<hex>`` of the content (read once, in
        chunks, the first time it is asked for; may raise what ``open`` raises)."""
        if self._identity is None:
            object.__setattr__(self, "_identity", self._find_identity())
        assert self._identity is not None
        return self._identity

    def _find_identity(self) -> str:
        in_layout = currents_identity(self.key)
        if in_layout is not None:
            return f"currents:{in_layout}"
        if self.fingerprint is not None:
            return self.fingerprint
        digest = hashlib.sha256()
        with self.open() as stream:
            while chunk := stream.read(DIGEST_CHUNK_BYTES):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"
