"""Running a child (QEMU, a compiler, a guest Python) so that it never outlives an interrupted nrqc.

The child gets its own process group; whatever ends the wait early (a timeout, Ctrl-C, or the
SIGTERM the CLI turns into an exception) kills that whole group before the exception goes on,
so no QEMU is left running after `nrqc compile` is stopped.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def kill_group(proc: subprocess.Popen, wait: float = 10.0) -> None:
    """SIGKILL the process group led by `proc` (started with start_new_session) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(wait)


def run(cmd: list[str], *, timeout: float | None = None, cwd=None, env: dict | None = None,
        text: bool = True) -> subprocess.CompletedProcess:
    """Like subprocess.run(cmd, capture_output=True), but the child and its children are
    killed on a timeout (subprocess.TimeoutExpired is raised) or on any exception."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=text, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        kill_group(proc)
        with contextlib.suppress(Exception):
            proc.communicate(timeout=1)  # close the pipes
        raise
    # The leader exited; anything it left in its group (it should leave nothing) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
