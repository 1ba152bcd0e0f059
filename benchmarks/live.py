"""read_orthanc on a live archive: the 20k archive read quiet, and while instances arrive.

    python benchmarks/live.py [--server system|sid] [--rates 10 50 200] [--reads 5]

For each arrival rate, a fresh copy of the cached 20,000-instance archive (_common.py) is
started and a writer *process* stores one small synthetic instance per request
(``POST /instances``, as a modality sending a study) at that rate. Quiet reads (the writer
paused) and live reads (the writer running for a second before and during the read) take
turns, so the drift of this shared machine hits both alike. The archive grows while it is
written (at 200/s by ~5%), which the quiet reads after it pay too.

Columns: the rate asked and the rate the writer achieved; median seconds of the quiet and the
live reads and their ratio (goal: <= 1.5x at 50/s); of a live read, the median seconds of its
whole-index read and of its catch-up rounds (from the log); catch-up rounds per live read (0
when the archive happened not to change during that read); instances caught up (deleted or
missing) per live read; reads that raised ServerChangedError.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import archive_server, table

import orthanc_pandas as op
from orthanc_pandas.testing import orthanc_root

WRITER = r"""
import sys, time
from pathlib import Path
import orthanc_pandas as op
from orthanc_pandas.testing.synthetic import make_series, to_bytes
url, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
stop, pause, out = Path(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6])
n = int(rate * seconds) + 1
blobs = [to_bytes(d) for k in range(n // 50 + 1)
         for d in make_series(50, 4, 4, seed=f"bench-live-{rate}-{k}", patient_id=f"LIVE{k % 7}",
                              series_number=k + 1)][:n]
client = op.OrthancClient(url)
out.write_text("ready")
t0 = time.monotonic()
sent = paused = 0.0
for k, blob in enumerate(blobs):
    if stop.exists():
        break
    if pause.exists():  # the quiet reads: nothing arrives, and the schedule waits too
        p0 = time.monotonic()
        out.write_text("paused")
        while pause.exists() and not stop.exists():
            time.sleep(0.01)
        paused += time.monotonic() - p0
        out.write_text("running")
    due = t0 + paused + k / rate
    wait = due - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    client.post_json("/instances", data=blob, idempotent=True)
    sent += 1
out.write_text(f"{sent} {time.monotonic() - t0 - paused:.3f}")
"""


class Phases(logging.Handler):
    """The live read's parts from the log: the whole-index read and the catch-up rounds."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.reset()

    def reset(self):
        self.bulk, self.rounds, self.round_seconds, self.caught = None, 0, 0.0, 0

    def emit(self, record):
        msg = record.getMessage()
        m = re.match(r"Orthanc changed during the ([\d.]+) s read", msg)
        if m:
            self.bulk = float(m.group(1))
        m = re.match(r"catch-up round \d+: .* (\d+) gone, (\d+) missing, \d+ series read again "
                     r"in ([\d.]+) s", msg)
        if m:
            self.rounds += 1
            self.caught += int(m.group(1)) + int(m.group(2))
            self.round_seconds += float(m.group(3))


def timed_read(url: str) -> float:
    t = time.perf_counter()
    op.read_orthanc(url)
    return time.perf_counter() - t


def phase(rate: float, *, root, reads: int) -> tuple:
    """Quiet and live reads in turn on one fresh copy of the archive (the writer paused for
    the quiet ones), so that drift of the machine hits both alike."""
    with archive_server("20k", root=root) as server, tempfile.TemporaryDirectory() as tmp:
        url = server.url
        first = timed_read(url)  # warms the server's caches
        stop, pause, out = Path(tmp) / "stop", Path(tmp) / "pause", Path(tmp) / "out"
        seconds = (2 * first + 3) * reads + 20  # the writer does not run out first
        pause.touch()
        writer = subprocess.Popen([sys.executable, "-c", WRITER, url, str(rate), str(seconds),
                                   str(stop), str(pause), str(out)])
        handler = Phases()
        log = logging.getLogger("orthanc_pandas")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        quiet, live, bulk, catch, rounds, caught, errors = [], [], [], [], [], [], 0
        try:
            while not out.exists() and writer.poll() is None:
                time.sleep(0.05)
            for _ in range(reads):
                pause.touch()
                while out.read_text() not in ("paused", "ready") and writer.poll() is None:
                    time.sleep(0.01)
                time.sleep(0.3)
                quiet.append(timed_read(url))
                pause.unlink()
                time.sleep(1.0)  # arriving steadily before the read
                handler.reset()
                try:
                    live.append(timed_read(url))
                except op.ServerChangedError as exc:
                    errors += 1
                    print(f"  {rate}/s: {exc}", file=sys.stderr)
                    continue
                rounds.append(handler.rounds)
                caught.append(handler.caught)
                if handler.bulk is not None:
                    bulk.append(handler.bulk)
                    catch.append(handler.round_seconds)
        finally:
            log.removeHandler(handler)
            stop.touch()
            pause.unlink(missing_ok=True)
            writer.wait(120)
        sent, took = out.read_text().split()
        achieved = float(sent) / float(took)
    med = statistics.median
    q, lv = med(quiet), (med(live) if live else float("nan"))
    return (f"{rate:g}", f"{achieved:.0f}", f"{q:.2f}", f"{lv:.2f}", f"{lv / q:.2f}x",
            f"{med(bulk):.2f}" if bulk else "-", f"{med(catch):.3f}" if catch else "-",
            f"{sum(rounds) / len(rounds):.1f}" if rounds else "-",
            f"{sum(caught) / len(caught):.0f}" if caught else "-", errors)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", choices=["system", "sid", "trixie"], default="system")
    ap.add_argument("--rates", type=float, nargs="+", default=[10, 50, 200])
    ap.add_argument("--reads", type=int, default=5)
    args = ap.parse_args()
    root = None if args.server == "system" else orthanc_root(args.server)
    rows = []
    for rate in args.rates:
        rows.append(phase(rate, root=root, reads=args.reads))
        print(f"  done: {rows[-1]}", file=sys.stderr)
    with archive_server("20k", root=root) as server:
        version = server.client().version
    print(f"Orthanc {version}, 20,000 instances; per rate a fresh copy, {args.reads} quiet and "
          f"{args.reads} live reads in turn")
    print(table(rows, ("instances/s asked", "achieved", "quiet s (median)", "live s (median)",
                       "live / quiet", "of which: whole-index read s", "catch-up s",
                       "catch-up rounds per read", "instances caught up per read",
                       "ServerChangedError")))


if __name__ == "__main__":
    main()
