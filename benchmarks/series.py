"""``df.orthanc.series()`` on 20,000 instances, and the geometry report of its 400 series.

Rows (best and median of 5 for the pure calls; the machine has 2 cores and is shared):

* ``series()`` - one row per series from the instance frame alone (target <= 0.2 s); run on a
  frame whose URL points at a closed port, so a request would fail.
* ``studies()`` / ``patients()`` - the same for the other levels.
* the hand-written pandas way (``groupby(level=...).agg`` of first values and a count), as a
  floor to compare with.
* ``series(geometry=True)`` - the fetch of PixelSpacing, Rows, Columns, SamplesPerPixel and
  FrameOfReferenceUID (``with_tags``: one request per series, no pixels) plus the checks of
  ``volume()`` per series; and the checks alone on a frame that already has those columns.
* ``with_tags`` on the series frame: two series-level tags for every instance, checked to
  agree within each series, and with ``sample=True`` (one instance per series).

Then the verdicts of the 400 series as a table (verdict x count, and the first problems).

Level-first reading (``--part levels`` runs only this): ``read_orthanc(url, level="series")``
(and ``"study"``, ``"patient"``) against the instance read followed by ``.series()``, best and
median of 5, with the requests each sent and the payload it received; on a server with
extended find also the GET-list route (``route="lists"``).

Run: ``PYTHONPATH=. python benchmarks/series.py [--server system|sid] [--part all|levels]``.
"""

from __future__ import annotations

import argparse
import time

from _common import archive_server, best_of, table

import orthanc_pandas as op
from orthanc_pandas._frame.levels import GEOMETRY_TAGS
from orthanc_pandas.testing import orthanc_root


def hand_written(df):
    cols = ["PatientID", "StudyDate", "Modality", "SeriesDescription", "SeriesInstanceUID"]
    g = df.groupby(level=["patient", "study", "series"], sort=False, observed=True)
    out = g[cols].first()
    out["instances"] = g.size()
    return out


def level_reads(server) -> None:
    """Level-first reads against the instance read + level frame, with their requests."""
    def counted(fn):
        client = op.OrthancClient(server.url)
        sent = []
        client.session.hooks["response"].append(
            lambda r, *a, **k: sent.append(int(r.headers.get("Content-Length") or 0)))
        out = fn(client)
        client.close()
        return out, len(sent), sum(sent)

    cases = [("read_orthanc(url).orthanc.series()", lambda c: op.read_orthanc(c).orthanc.series()),
             ("read_orthanc(url).orthanc.studies()", lambda c: op.read_orthanc(c).orthanc.studies()),
             ('read_orthanc(url, level="series")', lambda c: op.read_orthanc(c, level="series")),
             ('read_orthanc(url, level="study")', lambda c: op.read_orthanc(c, level="study")),
             ('read_orthanc(url, level="patient")', lambda c: op.read_orthanc(c, level="patient"))]
    if server.client().capabilities().extended_find:
        cases.append(('  ... level="series", route="lists"',
                      lambda c: op.read_orthanc(c, level="series", route="lists")))
    for _name, fn in cases:  # warm the server's caches and this process's first-use costs
        counted(fn)
    rows, base = [], None
    for name, fn in cases:
        best, med, (res, n, size) = best_of(lambda fn=fn: counted(fn), repeat=5)
        base = base or best
        rows.append((name, f"{best:.3f} s", f"{med:.3f} s", f"{base / best:.1f}x", n,
                     f"{size / 1e6:.2f} MB", len(res)))
    print(table(rows, ("call", "best", "median", "speed-up", "requests", "received", "rows")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", choices=["system", "sid"], default="system")
    ap.add_argument("--part", choices=["all", "levels"], default="all")
    args = ap.parse_args()
    root = orthanc_root("sid") if args.server == "sid" else None
    with archive_server("20k", root=root) as server:
        print(f"Orthanc {server.client().version}, level-first reading\n")
        level_reads(server)
        print()
        if args.part == "levels":
            return
        df = op.read_orthanc(server.url)
        client = server.client()
        print(f"{len(df):,} instances, {df.orthanc.series_count} series on Orthanc "
              f"{client.version}\n")
        offline = df.copy(deep=False)
        offline.attrs = {"orthanc": {**df.attrs["orthanc"], "url": "http://127.0.0.1:9"}}
        rows = []
        for name, fn in (("series()", lambda: offline.orthanc.series()),
                         ("studies()", lambda: offline.orthanc.studies()),
                         ("patients()", lambda: offline.orthanc.patients()),
                         ("pandas groupby by hand (5 tags + count)", lambda: hand_written(offline))):
            best, med, res = best_of(fn, repeat=5)
            rows.append((name, f"{best * 1000:.1f} ms", f"{med * 1000:.1f} ms", len(res)))
        t = time.perf_counter()
        report = df.orthanc.series(geometry=True)
        fetch_and_check = time.perf_counter() - t
        rows.append(("series(geometry=True): fetch 5 tags + checks", f"{fetch_and_check:.2f} s",
                     "(once)", len(report)))
        tagged = df.orthanc.with_tags(*GEOMETRY_TAGS)
        tagged.attrs = offline.attrs  # the checks alone: no request may happen
        best, med, report2 = best_of(lambda: tagged.orthanc.series(geometry=True), repeat=3)
        rows.append(("series(geometry=True), tags already columns", f"{best:.2f} s", f"{med:.2f} s",
                     len(report2)))
        series = df.orthanc.series()
        for name, kw in (("series.with_tags(Manufacturer, SliceThickness, df=df)", {}),
                         ("  ... sample=True (one instance per series)", {"sample": True})):
            best, med, res = best_of(lambda kw=kw: series.orthanc.with_tags(
                "Manufacturer", "SliceThickness", df=df, **kw), repeat=3)
            rows.append((name, f"{best:.2f} s", f"{med:.2f} s", len(res)))
        print(table(rows, ("call", "best", "median", "rows")))
        assert report.volume_ok.tolist() == report2.volume_ok.tolist()

        print()
        verdicts = report.assign(verdict=report.volume_problem.fillna("ok").str.split(":").str[0])
        counts = verdicts.groupby("verdict").size().sort_values(ascending=False)
        print(table([(v, n) for v, n in counts.items()], ("volume() would", "series")))
        print()
        shown = report[["SeriesDescription", "instance_count", "slice_spacing", "orientation",
                        "PixelSpacing_0", "volume_ok"]].head(5)
        print(table([(i[2][:8], *r) for i, r in zip(shown.index, shown.itertuples(index=False),
                                                     strict=True)],
                    ("series", *shown.columns)))


if __name__ == "__main__":
    main()
