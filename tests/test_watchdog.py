"""A LocalOrthanc stops when the Python process that started it dies (testing/_watchdog.py).

A notebook kernel restarted or killed never calls stop(): the watchdog must end the server
and remove its temporary folder. The truth is the operating system's: is the server's
process there, is its folder there. The waits are bounded (they only catch "never").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import json, sys, time
from orthanc_pandas.testing import LocalOrthanc
server = LocalOrthanc(name="orphan").start()
print(json.dumps({"pid": server.process.pid, "workdir": str(server.workdir), "url": server.url}),
      flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie that nobody reaps counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _wait(predicate, limit: float = 60.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_parent_leaves_no_orthanc_and_no_temp_folder(orthanc_available, how):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(parent.stdout.readline())
        assert not _gone(info["pid"]) and Path(info["workdir"]).is_dir()  # it runs
        parent.send_signal(how)
        parent.wait(30)
        assert _wait(lambda: _gone(info["pid"])), "the orphaned Orthanc is still running"
        assert _wait(lambda: not Path(info["workdir"]).exists()), "its temporary folder is still there"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_normal_stop_ends_the_watchdog_too(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc

    server = LocalOrthanc(name="watched").start()
    dog = server._watchdog
    assert dog is not None and dog.poll() is None
    server.stop()
    assert dog.poll() is not None
