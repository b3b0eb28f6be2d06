"""Child processes: the ``currents-export`` command, and runs measured with ``os.wait4``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.settings import REPO_ROOT


def cli_command() -> list[str]:
    """How to start ``currents-export``: the installed script, else ``python -m``."""
    script = Path(sysconfig.get_path("scripts")) / "currents-export"
    if script.is_file():
        return [str(script)]
    found = shutil.which("currents-export")
    return [found] if found else [sys.executable, "-m", "currents_export"]


def child_env() -> dict[str, str]:
    """This environment without ``CURRENTS_EXPORT_*``: every child runs with the defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CURRENTS_EXPORT_")}


@dataclass(frozen=True, slots=True)
class ChildRun:
    """How a child process ended and what it cost."""

    exit_code: int
    wall_s: float  # from start to exit, interpreter start-up included (and bench.rusage's)
    peak_rss_mb: float  # ru_maxrss of the command, via bench.rusage (Linux reports KiB)
    cpu_s: float  # user + system CPU of the command and every process it waited for
    timed_out: bool
    stdout_path: Path
    stderr_path: Path

    def tail(self, lines: int = 20) -> str:
        """The last lines of the child's stderr (for error messages)."""
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def run_measured(
    command: list[str], log_prefix: Path, timeout_s: float, cwd: Path | None = None
) -> ChildRun:
    """Run ``command`` to completion; its stdout/stderr go to ``<log_prefix>.out/.err``.

    Started through ``bench.rusage`` (see there: a child's ``ru_maxrss`` would otherwise
    start at this process's size), in a process group of its own that is killed (SIGKILL,
    by its id) after ``timeout_s`` so a hung child cannot hang the benchmark.
    """
    stdout_path = log_prefix.with_name(log_prefix.name + ".out")
    stderr_path = log_prefix.with_name(log_prefix.name + ".err")
    rss_path = log_prefix.with_name(log_prefix.name + ".maxrss")
    rss_path.unlink(missing_ok=True)
    wrapped = [sys.executable, "-m", "bench.rusage", str(rss_path), *command]
    lock = threading.Lock()
    state = {"reaped": False, "killed": False}
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        started = time.perf_counter()
        env = child_env()
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )  # bench.rusage is importable whatever cwd is
        process = subprocess.Popen(
            wrapped, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True
        )

        def kill() -> None:
            with lock:
                if not state["reaped"]:
                    state["killed"] = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)

        watchdog = threading.Timer(timeout_s, kill)
        watchdog.daemon = True
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # e.g. Ctrl-C: do not leave the child behind
            watchdog.cancel()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        with lock:
            state["reaped"] = True
        watchdog.cancel()
        wall_s = time.perf_counter() - started
    exit_code = os.waitstatus_to_exitcode(status)
    process.returncode = exit_code  # reaped here; keep Popen from waiting again
    peak_kib = int(rss_path.read_text()) if rss_path.is_file() else 0  # none when killed
    return ChildRun(
        exit_code=exit_code,
        wall_s=wall_s,
        peak_rss_mb=peak_kib / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
        timed_out=state["killed"],
        stdout_path=stdout_path,
        stderr_path=stderr_path,
    )
