"""Ctrl-C latency: time from SIGINT to control back in the caller, on the 20,000-instance archive.

    python benchmarks/interrupt.py [--server system|sid] [--repeat 3]

A SIGINT is sent to this process (as a terminal's Ctrl-C is) once a given number of requests
has been sent, from the thread that sends it; the clock runs from that ``os.kill`` to the
``except KeyboardInterrupt`` in the caller. Also counted: the requests sent after the main
thread took the signal (each worker may finish the one it is in), and the wall time of the
uninterrupted operation, for scale.

(a) ``read_orthanc`` (``--server sid``: the find route, three concurrent streams; ``system``:
    the GET lists), default page size, SIGINT after the first instance page;
(b) the same with ``page_size=500``, SIGINT after the 5th instance page;
(c) ``map_series`` (local threads) over 40 of the archive's series, SIGINT after 100 files.

Measured on Orthanc 1.13 (``--server sid``), 2 loaded cores, median of 3 (max):

==========================  ==================  ==========================================
case                        now: ms, requests    before fan_out (own pools): ms, requests
==========================  ==================  ==========================================
(a) read, page 5000         1130 (2074), 0       0 (1), 0: the pool threads were left
                                                  running, not joined, reading on
(b) read, page 500          277 (319), 0         1522 (1759), 18
(c) map_series              13 (34), 0           1278 (1549), 100
==========================  ==================  ==========================================

(a) is the page in flight: one 5000-instance ``/tools/find`` page is ~1/3 of the read there.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import threading
import time
import warnings

from _common import archive_server, table

import orthanc_pandas as op
from orthanc_pandas.testing import orthanc_root


class SigintAfter:
    """Wrap a client's ``session.send``: count requests whose path matches, SIGINT after the
    ``n``-th (noting the time), and note the count when the main thread takes the signal."""

    def __init__(self, client, pattern: str, n: int):
        self.pattern, self.n = re.compile(pattern), n
        self.sent, self.at_interrupt, self.t_kill = 0, None, None
        self.lock = threading.Lock()
        self.session = client.session
        self.send = send = self.session.send

        def counting_send(request, **kw):
            fire = False
            if self.pattern.search(request.url.split("?")[0]):
                with self.lock:
                    self.sent += 1
                    fire = self.sent == self.n
            if fire:
                self.t_kill = time.perf_counter()
                os.kill(os.getpid(), signal.SIGINT)
            return send(request, **kw)

        self.session.send = counting_send

    def handler(self, signum, frame):
        with self.lock:
            self.at_interrupt = self.sent
        raise KeyboardInterrupt

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self.handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        self.session.send = self.send


def interrupted(client, run, pattern: str, n: int) -> tuple[float, int]:
    """(seconds from SIGINT to control back, matching requests sent after the interrupt)."""
    with SigintAfter(client, pattern, n) as sig:
        try:
            run()
        except KeyboardInterrupt:
            back = time.perf_counter()
        else:
            raise RuntimeError(f"finished before the SIGINT (after {sig.sent} requests)")
    return back - sig.t_kill, sig.sent - sig.at_interrupt


def first_series(df, n: int = 40):
    """The rows of the first ``n`` series (the uninterrupted run of all 400 takes minutes)."""
    keep = df.index.get_level_values("series").unique()[:n]
    return df[df.index.get_level_values("series").isin(keep)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", choices=("system", "sid"), default="sid")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = orthanc_root("sid") if args.server == "sid" else None
    warnings.simplefilter("ignore")
    rows = []
    with archive_server("20k", root=root) as server:
        client = op.OrthancClient(server.url)
        route = "find" if client.capabilities().extended_find else "lists"
        inst = r"/tools/find$" if route == "find" else r"/instances$"
        df = None
        cases = [
            (f"read_orthanc ({route} route, page 5000), SIGINT after 1 instance page",
             lambda: op.read_orthanc(client), inst, 1),
            (f"read_orthanc ({route} route, page 500), SIGINT after 5 instance pages",
             lambda: op.read_orthanc(client, page_size=500), inst, 5),
            ("map_series (40 of the series, 50 files each), SIGINT after 100 files",
             lambda: first_series(df).orthanc.map_series(lambda vol, rows: float(vol.mean()),
                                                         client=client),
             r"/instances/[^/]+/file$", 100),
        ]
        for label, run, pattern, n in cases:
            t = time.perf_counter()
            result = run()
            full = time.perf_counter() - t
            if df is None:
                df = result
            lat, after = [], []
            for _ in range(args.repeat):
                s, k = interrupted(client, run, pattern, n)
                lat.append(s)
                after.append(k)
            rows.append((label, f"{full:.2f}", f"{statistics.median(lat) * 1000:.0f}",
                         f"{max(lat) * 1000:.0f}", max(after)))
    print(f"Orthanc {client.version}, 20,000 instances, {args.repeat} interrupts per row\n")
    print(table(rows, ("operation", "uninterrupted s", "SIGINT -> back, median ms", "max ms",
                       "requests after the interrupt (max)")))


if __name__ == "__main__":
    main()
