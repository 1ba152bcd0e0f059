"""Benchmark: ``thumbnails()`` of 400 series, client-side decoding against Orthanc's rendering.

Two sources of the pixels, on the same server in one run, best and median of 5 runs each,
the two interleaved:

* ``source="file"``: ``GET /instances/{id}/file`` (the stored file, identity encoding) and
  pydicom decoding here, windowed by ``vol.orthanc.plot()``'s rules;
* ``source="rendered"``: ``GET /instances/{id}/rendered`` (an 8-bit PNG Orthanc decodes and
  windows; shrunk to 256 pixels on the server when larger).

Each run draws the whole grid: the row splits the time into choosing the middle instance of
each series (index columns only, no request), fetching and decoding the 400 instances (4 at a
time), drawing the 400 panels and writing the PNG; and counts the bytes received.

Part 1, the 20,000-instance benchmark archive (400 series of 50 tiny 8 x 8 CT slices: the
cost per request), from the instance frame, with the geometry report already in the series
frame. Part 2, realistic slices: a throw-away server with 60 CT series of 3 slices of
512 x 512 int16 (the cost per byte and per decoded pixel).

Run: ``PYTHONPATH=. python benchmarks/thumbnails.py [--server system|sid] [--part all|archive|ct]``;
the archive is the cached one of ``_common.archive_server`` (``ORTHANC_PANDAS_BENCH_CACHE``).
``--server sid`` (1.13) runs part 2 only unless that server's archive is cached.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from _common import CACHE, archive_server, table  # noqa: E402

import orthanc_pandas as op  # noqa: E402
import orthanc_pandas._ops.thumbnails as thumbs_ops  # noqa: E402
from orthanc_pandas._frame.levels import middle_instances  # noqa: E402
from orthanc_pandas.testing import LocalOrthanc, orthanc_root  # noqa: E402
from orthanc_pandas.testing.synthetic import make_series, to_bytes  # noqa: E402

SOURCES = ("file", "rendered")
REPEAT = 5


class Counted:
    """A client whose received bytes are counted (Content-Length of every answer)."""

    def __init__(self, url: str):
        self.client = op.OrthancClient(url)
        self.bytes = self.requests = 0
        self.client.session.hooks["response"].append(self._count)

    def _count(self, r, *a, **k):
        self.requests += 1
        self.bytes += int(r.headers.get("Content-Length") or 0)


def timed_run(series, df, url: str, source: str, max_panels: int) -> dict:
    """One thumbnails() call, its phases and the bytes it received."""
    counted = Counted(url)
    drawn = {}
    draw = thumbs_ops.draw_thumbnails

    def timed_draw(*a, **k):
        t = time.perf_counter()
        fig = draw(*a, **k)
        drawn["draw"] = time.perf_counter() - t
        return fig

    thumbs_ops.draw_thumbnails = timed_draw
    try:
        t = time.perf_counter()
        fig = series.orthanc.thumbnails(df, source=source, max_panels=max_panels,
                                        client=counted.client, progress=False)
        total = time.perf_counter() - t
    finally:
        thumbs_ops.draw_thumbnails = draw
    t = time.perf_counter()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    png = time.perf_counter() - t
    failed = sum(1 for ax in fig.axes if not ax.images)
    plt.close(fig)
    t = time.perf_counter()
    middle_instances(df[df.index.get_level_values("series").isin(
        series.index.get_level_values("series")[:max_panels])])
    pick = time.perf_counter() - t
    return {"total": total, "draw": drawn["draw"], "png": png, "pick": pick,
            "fetch": total - drawn["draw"] - pick, "bytes": counted.bytes,
            "requests": counted.requests, "png_bytes": len(buf.getvalue()), "failed": failed}


def compare(series, df, url: str, max_panels: int, label: str) -> None:
    for source in SOURCES:  # warm both routes (server caches, first imports)
        timed_run(series, df, url, source, min(max_panels, 12))
    rows, by = [], {source: [] for source in SOURCES}
    for _ in range(REPEAT):  # interleaved: the machine's load changes both alike
        for source in SOURCES:
            by[source].append(timed_run(series, df, url, source, max_panels))
    for source in SOURCES:
        runs = by[source]
        best, med = min(r["total"] for r in runs), statistics.median(r["total"] for r in runs)
        r = min(runs, key=lambda r: r["total"])
        n = min(max_panels, len(series))
        rows.append((f'source="{source}"', f"{best:.2f} s", f"{med:.2f} s",
                     f"{r['pick'] * 1000:.0f} ms", f"{r['fetch']:.2f} s",
                     f"{r['fetch'] / n * 1000:.1f} ms", f"{r['draw']:.2f} s", f"{r['png']:.2f} s",
                     r["requests"], f"{r['bytes'] / 1e6:.2f} MB", f"{r['png_bytes'] / 1e6:.1f} MB",
                     r["failed"]))
    print(f"{label}: thumbnails(max_panels={max_panels}) of {min(max_panels, len(series))} "
          "series (time = the call, fetch + draw; the PNG is written after)\n")
    print(table(rows, ("pixels", "best", "median", "pick middles", "fetch+decode",
                       "per series", "draw", "write PNG", "requests", "received", "PNG", "failed")))
    print()


def archive_part(root) -> None:
    name = "archive-20k" + (f"-{root.name}" if root is not None else "")
    if not (CACHE / name / ".complete").exists():
        print(f"(no cached {name} in {CACHE}: part 1 skipped; it is never generated here)\n")
        return
    with archive_server("20k", root=root) as server:
        df = op.read_orthanc(server.url)
        series = df.orthanc.series(geometry=True)
        print(f"Orthanc {server.client().version}: {len(df):,} instances, {len(series)} series\n")
        compare(series, df, server.url, 400, "20k archive (8 x 8 slices)")
        compare(series, df, server.url, thumbs_ops.MAX_PANELS, "20k archive, default bound")
        big = pd.concat([df] * 50)  # 1,000,000 rows (ids repeat: 400 series of 2,500 rows)
        t = time.perf_counter()
        middle_instances(big)
        print(f"middle_instances of 1,000,000 rows (400 series x 2,500): "
              f"{time.perf_counter() - t:.2f} s\n")


def ct_part(root) -> None:
    with LocalOrthanc(root=root) as server:
        blobs = []
        for k in range(60):
            blobs += [to_bytes(d) for d in make_series(3, 512, 512, seed=f"thumb-ct{k}",
                                                       patient_id=f"CT{k:03d}", series_number=1)]
        server.upload_bytes(blobs)
        df = op.read_orthanc(server.url)
        series = df.orthanc.series()
        print(f"Orthanc {server.client().version}: {len(series)} CT series of 3 x 512 x 512\n")
        compare(series, df, server.url, 60, "512 x 512 CT")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", choices=["system", "sid"], default="system")
    ap.add_argument("--part", choices=["all", "archive", "ct"], default="all")
    args = ap.parse_args()
    root = orthanc_root("sid") if args.server == "sid" else None
    if args.part in ("all", "archive"):
        archive_part(root)
    if args.part in ("all", "ct"):
        ct_part(root)


if __name__ == "__main__":
    main()
