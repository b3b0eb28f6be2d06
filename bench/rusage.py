"""``python -m bench.rusage OUT COMMAND...``: run COMMAND, write its peak RSS (KiB) to OUT.

Linux keeps a process's RSS high-water mark across ``exec``: a command started straight from
the benchmark process, which holds hundreds of MB of inputs by then, would report at least
the benchmark's own size as its ``ru_maxrss``. Started from this small process instead, the
figure is the command's own (and, for a command with worker processes, that of its largest
process). Exits with the command's status (128 + N when signal N ended it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    out, *command = argv
    pid = os.fork()
    if pid == 0:  # pragma: no cover - replaced by exec
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    Path(out).write_text(f"{usage.ru_maxrss}\n")
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
