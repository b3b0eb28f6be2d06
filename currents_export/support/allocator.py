"""Keep a long run's resident memory flat: fix glibc's mmap threshold (glibc only).

glibc raises its mmap threshold to the size of each large block freed, so after the first
request body, later ones come from the heap, between objects that live while their events
are in flight, and the space stays resident. A fixed threshold keeps every block of
:data:`MMAP_THRESHOLD` bytes or more in a mapping of its own (README, Performance, has
the figures). Elsewhere (macOS, musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 64 * 1024  # bytes: blocks this large get a mapping of their own
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)

@functools.cache
def keep_large_blocks_apart() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` (once per process).

    Returns True when the setting is in force, False where there is no glibc to set it on.
    """
    return _set_mmap_threshold(MMAP_THRESHOLD)


def _set_mmap_threshold(size: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, size) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) was refused", size)
        return False
    return True
