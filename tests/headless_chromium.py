"""Headless Chromium driven over the DevTools protocol, with the standard library only.

Chromium's ``--remote-debugging-pipe`` reads protocol messages (JSON, each ended by a NUL byte)
on file descriptor 3 and writes its answers on 4: no WebSocket client, no Selenium or
Playwright (hundreds of MB of browsers and drivers) for opening a page, reading what it shows
and taking a full-page screenshot. Debian's ``chromium`` package is the browser.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM``, else the first of :data:`NAMES` on the PATH."""
    return os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, NAMES)), None)


class Chromium:
    """One headless browser; :meth:`open` a page, :meth:`evaluate` in it, :meth:`screenshot` it.

    Pages reach no network (every host name fails to resolve): a rendered notebook's CDN
    scripts (MathJax, the widget renderer) fail at once instead of waiting on a firewall, and
    what is shown is the same on every machine.
    """

    def __init__(self, binary: str, *, width: int = 1400, height: int = 900, timeout: float = 60):
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser, self._w = os.pipe()
        self._r, from_browser = os.pipe()

        def child_fds():  # fds 3 and 4 in the browser; the pipes may hold those numbers here
            a, b = os.dup(to_browser), os.dup(from_browser)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = open(os.path.join(self._profile, "stderr.log"), "wb")
        self._proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", "--hide-scrollbars", "--no-first-run",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=self._log)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._id = 0
        self._events: list[dict] = []
        self._session: str | None = None

    # -- protocol ---------------------------------------------------------------------------
    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._r], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._r, 1 << 20) if ready else None
            if not chunk:
                self._log.flush()
                said = Path(self._log.name).read_text(errors="replace")[-2000:]
                what = "answered nothing" if chunk is None else "closed the protocol pipe"
                raise RuntimeError(f"Chromium {what} (exit code {self._proc.poll()}); it said:\n{said}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, **params) -> dict:
        """Send one command (to the open page, once there is one) and return its result."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self._session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._events.append(answer)

    def _wait_for(self, event: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self._events):
                if message.get("method") == event:
                    return self._events.pop(i)
            self._events.append(self._receive())
        raise TimeoutError(f"no {event} within {self.timeout} s")

    # -- pages ------------------------------------------------------------------------------
    def open(self, url: str) -> None:
        """Open ``url`` in a new tab and wait until it has loaded."""
        if self._session:
            self.send("Target.closeTarget", targetId=self._target)
        self._target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=self._target, flatten=True)["sessionId"]
        self.send("Page.enable")
        self._events.clear()
        self.send("Page.navigate", url=url)
        self._wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the open page (JSON-like)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str | os.PathLike) -> tuple[int, int]:
        """A PNG of the whole page, not only the window; returns its (width, height) in pixels."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        width, height = int(size["width"]), int(size["height"])
        shot = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return width, height

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self._proc.wait(10)
        except (OSError, RuntimeError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        finally:
            self._log.close()
            os.close(self._w)
            os.close(self._r)
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
