"""The allocator setting that keeps large blocks out of the heap (``allocator.py``), seen
in glibc's own accounting in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Frees a 1 MiB block (which raises glibc's dynamic threshold to 1 MiB), then says how many
# bytes of a 512 KiB block that stays alive went to a mapping of its own.
_PROBE = textwrap.dedent("""
    import ctypes, sys
    from currents_export.support.allocator import keep_large_blocks_apart

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "kept-apart" and not keep_large_blocks_apart():
        sys.exit("not applied")
    freed = bytearray(1 << 20)
    del freed
    before = libc.mallinfo2().hblkhd
    held = bytearray(512 * 1024)
    print(libc.mallinfo2().hblkhd - before)
""")


def _mapped_bytes(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          timeout=60, check=True)
    return int(done.stdout)


def test_large_blocks_keep_a_mapping_of_their_own_after_a_larger_one_was_freed() -> None:
    assert _mapped_bytes("default") == 0  # glibc's default: it came from the heap
    assert _mapped_bytes("kept-apart") >= 512 * 1024
