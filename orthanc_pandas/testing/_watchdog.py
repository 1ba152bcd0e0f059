"""Stops a LocalOrthanc whose Python process died: ``python -I .../testing/_watchdog.py``.

A server started in a notebook outlives a kernel restart or a crash, with its temporary
folder, unless something notices. :class:`~orthanc_pandas.testing.LocalOrthanc` starts this
small process beside its server. It checks twice a second whether the process that started it
is still its parent; when that process is gone (the watchdog is then adopted by another), it
asks the server's process group to shut down (SIGTERM, then SIGKILL after ``grace`` seconds),
removes the server's temporary folder and exits. It also exits when the server is gone. A
normal ``stop()`` ends the watchdog first.

Arguments: ``PARENT_PID SERVER_PGID WORKDIR [GRACE]``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(pgid: int, grace: float) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pgid):
        time.sleep(0.1)
    if _alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def watch(parent: int, pgid: int, workdir: str, grace: float = 10.0, *, period: float = 0.5) -> str:
    """Wait until the parent or the server is gone; then clean up after the server.

    Returns why it stopped: ``"parent died"`` or ``"server gone"``.
    """
    while True:
        if os.getppid() != parent:
            _stop_group(pgid, grace)
            shutil.rmtree(workdir, ignore_errors=True)
            return "parent died"
        if not _alive(pgid):
            return "server gone"
        time.sleep(period)


if __name__ == "__main__":  # pragma: no cover (run as its own process; tested from outside)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the parent's
    args = sys.argv[1:]
    watch(int(args[0]), int(args[1]), args[2], float(args[3]) if len(args) > 3 else 10.0)
