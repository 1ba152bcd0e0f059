"""read_orthanc at scale: 20k instances (SQLite index) vs 20k and 200k (PostgreSQL index), one run.

    python benchmarks/scale.py [--repeat 2] [--no-dask] [--no-refresh]

Servers (generated once, cached under benchmarks/.cache/, see _common.py):
  * archive-20k: the SQLite-backed 20,000-instance archive of benchmarks/index.py
  * pg-20k:  the SAME 20,000 instances, index in PostgreSQL (a snapshot taken while pg-200k was
             built), so linearity is measured on one backend and the backend cost at one size
  * pg-200k: 200,000 instances (400 patients x 2 studies x 5 series x 50), index in PostgreSQL
Each PostgreSQL server is a LocalPostgres on loopback started by this script.

All servers run at once and the reads are interleaved (round 1: each server, round 2: each
server, ...), and the best round counts: the machine is shared, and drift or a busy neighbour
then hits every size alike instead of one of them.

Every measured read runs in a fresh Python process, so its peak RSS (ru_maxrss) minus the RSS
just before the read is the memory the read itself needed, not what earlier reads left in the
allocator. Two baselines: "cold" = after imports and one request; "warm" = after the same code
has run once on one series (first-use costs that do not grow with the archive: pydicom's
dictionary, pyarrow kernels, allocator arenas), as in any process that has read before.
Columns:
  * s/read, us/inst: wall time of read_orthanc (best round) and per instance
  * peak MB: peak RSS during the read above the warm (cold) baseline; x frame = that / the
    frame's memory
  * B/inst: df.memory_usage(deep=True).sum() / len(df)
  * Dask: orthanc_pandas.dask.read_orthanc(url).compute(scheduler="threads", num_workers=2)
  * refresh: on pg-200k, 1,000 instances (2 new patients) are uploaded after a read, then
    df.orthanc.refresh() is timed against a full read; the 1,000 are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the refresh test's patients: right after the 400 of pg-200k, same generator
REFRESH_PATIENTS = (400, 402)
TARGETS = {"linearity": 1.2, "peak_x_frame": 2.0, "bytes_per_instance": 300}


# -- children: one measurement each, in a fresh process ---------------------------------------
def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _warm_up(url: str) -> None:
    """Run the reader's code once on one series: pay first-use costs before the baseline."""
    import orthanc_pandas as op
    from orthanc_pandas._frame.schema import LevelTable, build_frame

    c = op.OrthancClient(url)
    series = c.get_json("/series", params={"expand": "", "since": 0, "limit": 1})[0]
    study = c.get_json(f"/studies/{series['ParentStudy']}")
    patient = c.get_json(f"/patients/{study['ParentPatient']}")
    instances = c.get_json(f"/series/{series['ID']}/instances")
    build_frame({"patient": LevelTable.from_resources("patient", [patient]),
                 "study": LevelTable.from_resources("study", [study]),
                 "series": LevelTable.from_resources("series", [series]),
                 "instance": LevelTable.from_resources("instance", instances)})
    c.close()


def child_read(url: str, kind: str, keep: bool = False) -> dict:
    import gc

    import pandas as pd  # noqa: F401

    import orthanc_pandas as op

    warnings.simplefilter("ignore")
    read = None
    if kind == "dask":
        try:
            import orthanc_pandas.dask as opd
        except ImportError as exc:
            return {"error": f"orthanc_pandas.dask: {exc}"}

        def read():
            return opd.read_orthanc(url).compute(scheduler="threads", num_workers=2)
    else:
        def read():
            return op.read_orthanc(url, progress=False)
    op.OrthancClient(url).system()  # connection machinery loaded before the baseline
    gc.collect()
    cold = _rss()
    _warm_up(url)
    gc.collect()
    base, peak0 = _rss(), _peak()
    t = time.perf_counter()
    df = read()
    seconds = time.perf_counter() - t
    peak = _peak()
    frame = int(df.memory_usage(deep=True).sum())
    out = {"seconds": seconds, "n": len(df), "columns": df.shape[1], "base": base,
           "peak_above_base": peak - base, "peak_above_cold": peak - cold, "peak_before": peak0,
           "frame_bytes": frame}
    if keep:
        out["frame"] = df
    return out


def child_refresh(url: str) -> dict:
    import pandas as pd
    from _common import fast_archive, upload_pipelined

    import orthanc_pandas as op

    warnings.simplefilter("ignore")
    t = time.perf_counter()
    df = op.read_orthanc(url, progress=False)
    t_read = time.perf_counter() - t
    added = upload_pipelined(op.OrthancClient(url), fast_archive(REFRESH_PATIENTS[1], REFRESH_PATIENTS[0]))
    t = time.perf_counter()
    refreshed = df.orthanc.refresh()
    t_refresh = time.perf_counter() - t
    t = time.perf_counter()
    fresh = op.read_orthanc(url, progress=False)
    t_fresh = time.perf_counter() - t
    pd.testing.assert_frame_equal(refreshed, fresh)
    return {"n": len(df), "added": added, "read_before": t_read, "refresh": t_refresh,
            "full_read_after": t_fresh, "equal": True, "n_after": len(refreshed)}


# -- the 1,000,000-instance archive (--million) -------------------------------------------------
#: patients added by the mirror measurements, after the 2,000 of the archive (same generator)
MILLION_NEW = ((2000, 2002), (2002, 2004))


def child_mirror(url: str, path: str) -> dict:
    """One op.mirror call in a fresh process: its time and the frame's size."""
    import orthanc_pandas as op

    warnings.simplefilter("ignore")
    t = time.perf_counter()
    df = op.mirror(url, path, progress=False)
    return {"seconds": time.perf_counter() - t, "n": len(df),
            "last_change": df.attrs["orthanc"]["last_change"]}


def child_check(url: str, path: str) -> dict:
    """A fresh read_orthanc, measured as child_read measures it, then whether the mirror on
    disk equals it (pd.testing.assert_frame_equal of what its loader reads): at 1M one read
    serves both rows."""
    import pandas as pd

    from orthanc_pandas._ops.mirror import read_frame

    out = child_read(url, "pandas", keep=True)
    fresh = out.pop("frame")
    pd.testing.assert_frame_equal(read_frame(path), fresh)
    return {**out, "equal": True}


def child_mirror_update(url: str, path: str, first: str, last: str, deletions: str) -> dict:
    """op.mirror in a process that holds the mirror already (a notebook, a service): load it,
    then store patients [first, last) and delete ``deletions`` instances of patient 0 (as the
    archive changes between two updates), then time the update alone: with ``wait=False``
    the frame's return (``seconds``), and the file on disk (``file``: what ``wait=True`` waits
    for)."""
    from _common import fast_archive, upload_pipelined

    import orthanc_pandas as op

    warnings.simplefilter("ignore")
    client = op.OrthancClient(url, timeout=(5, 3600))
    op.mirror(client, path, progress=False)
    gone = 0
    if int(deletions):
        for sid in client.get_json(f"/patients/{_patient_ids(client, 0)[0]}/series")[:2]:
            for inst in client.get_json(f"/series/{sid['ID']}/instances")[:int(deletions) // 2]:
                client.delete(f"/instances/{inst['ID']}")
                gone += 1
    t = time.perf_counter()
    added = upload_pipelined(client, fast_archive(int(last), int(first)))
    stored = time.perf_counter() - t
    import pyarrow.parquet as pq

    from orthanc_pandas._ops.mirror import _join_writer

    t = time.perf_counter()
    df = op.mirror(client, path, progress=False, wait=False)
    frame = time.perf_counter() - t
    _join_writer(Path(path))  # the parts written behind: the time a wait=True call takes
    done = time.perf_counter() - t
    files = [f for f in Path(path).iterdir() if f.name != "part-000000.parquet"]
    written = [f for f in files if f.stat().st_nlink == 1]  # (kept parts are hard links)
    return {"seconds": frame, "file": done, "n": len(df), "added": added, "deleted": gone,
            "storing": stored, "parts": len(files), "written": len(written),
            "rows_written": sum(pq.ParquetFile(f).metadata.num_rows for f in written)}


def child_series(url: str) -> dict:
    import orthanc_pandas as op

    warnings.simplefilter("ignore")
    op.OrthancClient(url).system()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        df = op.read_orthanc(url, level="series", progress=False)
        times.append(time.perf_counter() - t)
    return {"seconds": min(times), "all": [round(x, 2) for x in times], "n": len(df)}


MILLION_PARTS = ("series", "mirror", "read")  # and "updates": "mirror" without its check


def _rebind_mirror(source: str, path: str, url: str) -> None:
    """A copy at ``path`` of the mirror ``source`` of this archive (parts, or a file of the
    one-file layout), bound to ``url`` (each run serves the archive at a new port, and a
    mirror refuses another URL). Written as parts, every one."""
    from orthanc_pandas._ops.mirror import load_mirror, write_parts

    df, info = load_mirror(source)
    info["url"] = url
    df.attrs["orthanc"]["url"] = url
    write_parts(df, path, info)


def million(repeat: int, parts=MILLION_PARTS, mirror_path: str | None = None,
            sqlite_stats: str = "analyze") -> None:
    """The issue-24 targets on 1,000,000 instances (20,000 series), SQLite index, Orthanc 1.13.

    Each row is printed as soon as it is measured (a long run on a shared machine may be
    stopped part-way). ``parts``: "series" (series-first read and its floor), "mirror" (first
    call, a fresh process with nothing new, updates after 1,000 new and after 1,000 new + 100
    deleted, the file against a fresh read, which also gives the instance read's row),
    "updates" ("mirror" without that check: no full read when started from a mirror), "read"
    (the instance read and the floor of its route; the read row comes from the mirror check
    when "mirror" ran). ``mirror_path``: a mirror file of this archive to start from instead
    of a first call (copied and bound to this run's URL; the source is never changed).
    ``sqlite_stats``: "analyze" or "none" (:func:`_common.sqlite_statistics`).
    """
    import tempfile

    from _common import archive_server, fast_archive, upload_pipelined
    from index import floor_find, floor_series_find

    from orthanc_pandas import OrthancClient
    from orthanc_pandas.testing import orthanc_root

    def row(*cells) -> None:
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)

    def floor(fn) -> list[float]:
        times = []
        for _ in range(max(repeat, 1)):
            t = time.perf_counter()
            fn(url)
            times.append(time.perf_counter() - t)
        return times

    with archive_server("1m", root=orthanc_root("sid"), ingest_root=None, in_place=True,
                        config={"StableAge": 3600}, sqlite_stats=sqlite_stats) as server, \
            tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        url = server.url
        client = OrthancClient(url, timeout=(5, 3600))  # 1.13 ingests slowly into 1M rows
        version = client.version
        removed = _remove_patients(client, [p for r in MILLION_NEW for p in range(*r)])
        upload_pipelined(client, fast_archive(1, 0))  # what a stopped run deleted comes back
        n = int(client.statistics()["CountInstances"])
        print(f"\n1,000,000-instance archive (20,000 series, SQLite index), Orthanc {version}, "
              f"{os.cpu_count()} cores, {n:,} instances ({removed} left by a stopped run removed), "
              f"SQLite planner statistics: {sqlite_stats}; "
              "each measurement in a fresh process\n", flush=True)
        row("what", "seconds", "detail", "target")
        row("---", "---", "---", "---")
        series = {}
        if "series" in parts:
            series = run_child("series", url)
            floors = floor(floor_series_find)
            row("series-first read_orthanc(url, level='series')", f"{series.get('seconds', 0):.2f}",
                f"{series.get('n', 0):,} series; runs {series.get('all', series)}; "
                f"{series.get('seconds', 0) / min(floors):.2f}x its floor", "<= 2 s")
            row("floor of the series-first route (the same requests: bare requests + json.loads)",
                f"{min(floors):.2f}", f"runs {[round(x, 2) for x in floors]}", "")
        reads = None
        if "mirror" in parts or "updates" in parts:
            path = str(Path(tmp) / "pacs.parquet")
            try:
                if mirror_path:
                    _rebind_mirror(mirror_path, path, url)
                    row("op.mirror: first call", "(not run)", f"started from a copy of {mirror_path}", "")
                else:
                    first = run_child("mirror", url, path)
                    size = (f"{sum(f.stat().st_size for f in Path(path).iterdir()) / 1e6:.0f} MB in "
                            f"{len(list(Path(path).iterdir())) - 1} parts"
                            if Path(path).exists() else str(first))
                    row("op.mirror: first call (the 1M read + writing the parts)",
                        f"{first.get('seconds', 0):.2f}", size, "")
                same = run_child("mirror", url, path)
                row("op.mirror, fresh process, nothing changed (load the parts + check the server)",
                    f"{same.get('seconds', 0):.2f}", str(same.get("error", "")), "")
                a, b = MILLION_NEW[0]
                one = run_child("update", url, path, str(a), str(b), "0")
                row(f"op.mirror update after {one.get('added', 0):,} new instances (process holding the "
                    "mirror; wait=False: the frame)", f"{one.get('seconds', 0):.2f}",
                    f"storing them took {one.get('storing', 0):.0f} s {one.get('error', '')}", "<= 1 s")
                row("  the same, wait=True (the frame + the parts written)", f"{one.get('file', 0):.2f}",
                    f"{one.get('written', 0)} of {one.get('parts', 0)} parts written "
                    f"({one.get('rows_written', 0):,} rows), the others kept", "<= 1 s")
                a, b = MILLION_NEW[1]
                two = run_child("update", url, path, str(a), str(b), "100")
                row(f"op.mirror update after {two.get('added', 0):,} new + {two.get('deleted', 0)} deleted "
                    "(process holding the mirror; wait=False: the frame)", f"{two.get('seconds', 0):.2f}",
                    (f"{two.get('seconds', 0) / max(series.get('seconds', 0), 1e-9):.2f}x the series-first "
                     "read") if series else str(two.get("error", "")), "<= series-first read")
                row("  the same, wait=True (the frame + the parts written)", f"{two.get('file', 0):.2f}",
                    (f"{two.get('file', 0) / max(series.get('seconds', 0), 1e-9):.2f}x the series-first "
                     f"read; {two.get('written', 0)} of {two.get('parts', 0)} parts written "
                     f"({two.get('rows_written', 0):,} rows)") if series else "", "<= series-first read")
                again = run_child("mirror", url, path)
                row("op.mirror, fresh process, nothing changed since (load + check)",
                    f"{again.get('seconds', 0):.2f}", "", "")
                if "mirror" in parts:  # ("updates": no full read)
                    check = run_child("check", url, path)
                    row("mirror on disk == fresh read_orthanc (assert_frame_equal)",
                        str(check.get("equal", check)), f"{check.get('n', 0):,} rows", "")
                    if "error" not in check:
                        reads = check
            finally:
                _remove_patients(client, [p for r in MILLION_NEW for p in range(*r)])
                upload_pipelined(client, fast_archive(1, 0))
        if "read" in parts or reads is not None:
            if reads is None:
                reads = best_of_rounds([run_child("read", url, "pandas") for _ in range(repeat)])
            if "error" in reads:
                row("read_orthanc(url)", "error", reads["error"], "")
            else:
                row("read_orthanc(url)", f"{reads['seconds']:.2f}",
                    f"{reads['frame_bytes'] / reads['n']:.0f} B/instance; peak RSS "
                    f"{reads['peak_above_base'] / reads['frame_bytes']:.2f}x the frame "
                    f"({reads['peak_above_base'] / 1e6:.0f} MB over {reads['frame_bytes'] / 1e6:.0f} MB)",
                    "<= 300 B; <= 2x")
            floors = floor(floor_find)
            row("floor of the find route (bare requests + json.loads)", f"{min(floors):.2f}",
                f"read_orthanc = {reads.get('seconds', 0) / min(floors):.2f}x this; runs "
                f"{[round(x, 1) for x in floors]}", "read <= 1.25x")


def _patient_ids(client, number: int) -> list[str]:
    """Orthanc ids of the generated patient ``number`` (fast_archive's PatientID PAT000123)."""
    return [hit["ID"] for hit in client.post_json("/tools/lookup", data=f"PAT{number:06d}".encode())
            if hit.get("Type") == "Patient"]


def _remove_patients(client, numbers) -> int:
    removed = 0
    for number in numbers:
        for pid in _patient_ids(client, number):
            removed += len(client.get_json(f"/patients/{pid}/instances"))
            client.delete(f"/patients/{pid}")
    return removed


def _remove_refresh_patients(client) -> int:
    """Delete what a (possibly interrupted) refresh measurement added to pg-200k."""
    removed = 0
    for p in range(*REFRESH_PATIENTS):
        for hit in client.post_json("/tools/lookup", data=f"PAT{p:06d}".encode()):
            if hit.get("Type") == "Patient":
                client.delete(f"/patients/{hit['ID']}")
                removed += 1
    return removed


def run_child(*args: str, timeout: float = 1800) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the parent: servers, rounds, the table -----------------------------------------------------
def best_of_rounds(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    best = dict(min(ok, key=lambda r: r["seconds"]))
    # memory: the least of the runs (noise from other processes only adds)
    for k in ("peak_above_base", "peak_above_cold"):
        best[k] = min(r[k] for r in ok)
    best["all_seconds"] = [round(r["seconds"], 2) for r in ok]
    return best


def main() -> None:
    import contextlib

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2, help="rounds of interleaved reads")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--no-refresh", action="store_true")
    ap.add_argument("--only", choices=["sqlite-20k", "pg-20k", "pg-200k"], action="append")
    ap.add_argument("--million", action="store_true",
                    help="only the 1,000,000-instance archive on Orthanc 1.13 (reads, mirror)")
    ap.add_argument("--parts", default=",".join(MILLION_PARTS),
                    help=f"with --million: which of {', '.join(MILLION_PARTS)} (comma-separated)")
    ap.add_argument("--mirror-from", help="with --million: start the mirror rows from a copy of "
                    "this mirror file of the archive instead of a first call")
    ap.add_argument("--sqlite-stats", choices=["analyze", "none"], default="analyze",
                    help="with --million: the SQLite planner statistics of the index: 'analyze' "
                    "(ANALYZE run once, as docs/large-archives.md advises) or 'none' (as Orthanc "
                    "leaves an index: 1.13 then scans 1M rows for each instance lookup)")
    args = ap.parse_args()
    if args.million:
        million(args.repeat, args.parts.split(","), args.mirror_from, args.sqlite_stats)
        return
    from _common import archive_server, pg_archive_server, table

    t_setup = time.perf_counter()
    specs = [("sqlite-20k", "SQLite", lambda: archive_server("20k")),
             ("pg-20k", "PostgreSQL", lambda: pg_archive_server("pg-20k")),
             ("pg-200k", "PostgreSQL", lambda: pg_archive_server("pg-200k"))]
    specs = [s for s in specs if not args.only or s[0] in args.only]
    results, refresh, version = {}, None, "?"
    with contextlib.ExitStack() as stack:
        servers = {}
        for key, backend, start in specs:
            server = stack.enter_context(start())
            client = server.client()
            version = client.version
            if key == "pg-200k" and _remove_refresh_patients(client):
                print("removed the refresh patients a previous run left behind", file=sys.stderr)
            servers[key] = (backend, server, int(client.statistics()["CountInstances"]))
        t_setup = time.perf_counter() - t_setup
        runs = {key: [] for key in servers}
        for r in range(args.repeat):
            for key, (backend, server, n) in servers.items():
                print(f"round {r + 1}: {key} ({n} instances, {backend} index)...", file=sys.stderr)
                runs[key].append(run_child("read", server.url, "pandas"))
        for key, (backend, server, n) in servers.items():
            dask_ = None
            if not args.no_dask:
                print(f"{key}: Dask read...", file=sys.stderr)
                dask_ = best_of_rounds([run_child("read", server.url, "dask")])
            results[key] = (backend, n, best_of_rounds(runs[key]), dask_)
        if "pg-200k" in servers and not args.no_refresh:
            client = servers["pg-200k"][1].client()
            print("pg-200k: refresh after 1,000 new instances...", file=sys.stderr)
            try:
                refresh = run_child("refresh", servers["pg-200k"][1].url)
            finally:
                _remove_refresh_patients(client)
    print(f"\nOrthanc {version}, {os.cpu_count()} cores; best of {args.repeat} interleaved rounds, "
          f"each read in a fresh process (server setup {t_setup:.0f} s)\n")
    rows = []
    base_us = {}
    for key, (backend, n, r, d) in results.items():
        if "error" in r:
            rows.append((key, backend, f"{n:,}", "error: " + r["error"], "", "", "", "", "", "", ""))
            continue
        us = r["seconds"] / r["n"] * 1e6
        base_us.setdefault(backend, us)
        peak_mb = r["peak_above_base"] / 1e6
        cold_mb = r["peak_above_cold"] / 1e6
        frame_mb = r["frame_bytes"] / 1e6
        if d is None:
            dask_cell = "skipped"
        elif "error" in d:
            dask_cell = "n/a"
        else:
            dask_cell = (f"{d['seconds']:.1f} s ({d['seconds'] / r['seconds']:.2f}x), "
                         f"peak {d['peak_above_base'] / 1e6:.0f} MB")
        rows.append((key, backend, f"{r['n']:,}", f"{r['seconds']:.2f}", f"{us:.0f}",
                     f"{us / base_us[backend]:.2f}", f"{peak_mb:.0f} ({cold_mb:.0f})", f"{frame_mb:.1f}",
                     f"{r['peak_above_base'] / r['frame_bytes']:.2f} ({r['peak_above_cold'] / r['frame_bytes']:.2f})",
                     f"{r['frame_bytes'] / r['n']:.0f}", dask_cell))
    print(table(rows, ("server", "index", "instances", "s/read", "us/inst", "x us/inst at 20k, same index",
                       "peak MB warm (cold)", "frame MB", "peak x frame warm (cold)", "B/inst",
                       "Dask, 2 threads")))
    if refresh is not None:
        print()
        if "error" in refresh:
            print(f"refresh on pg-200k: error: {refresh['error']}")
        else:
            print(f"refresh on pg-200k after {refresh['added']:,} new instances: {refresh['refresh']:.2f} s "
                  f"vs {refresh['full_read_after']:.2f} s for a full read of the {refresh['n_after']:,} "
                  f"({refresh['full_read_after'] / refresh['refresh']:.0f}x faster); "
                  f"refreshed frame == fresh read: {refresh['equal']}")
    print()
    for key, (_, _, r, _) in results.items():
        if "error" not in r and len(r["all_seconds"]) > 1:
            print(f"{key}: s/read of each run {r['all_seconds']}")
    pg20, pg200 = results.get("pg-20k"), results.get("pg-200k")
    if pg20 and pg200 and "error" not in pg20[2] and "error" not in pg200[2]:
        ratio = (pg200[2]["seconds"] / pg200[2]["n"]) / (pg20[2]["seconds"] / pg20[2]["n"])
        worst_peak = pg200[2]["peak_above_base"] / pg200[2]["frame_bytes"]
        worst_bytes = max(r["frame_bytes"] / r["n"] for _, _, r, _ in results.values() if "error" not in r)
        print(f"targets: time/instance 200k / 20k (PostgreSQL) = {ratio:.2f} (<= {TARGETS['linearity']}); "
              f"peak RSS / frame at 200k = {worst_peak:.2f} warm (<= {TARGETS['peak_x_frame']}); "
              f"frame <= {worst_bytes:.0f} bytes/instance (<= {TARGETS['bytes_per_instance']})")
    else:  # a run without both PostgreSQL servers: the memory targets of what was read
        for key, (_, _, r, _) in results.items():
            if "error" not in r:
                print(f"targets, {key}: peak RSS / frame = {r['peak_above_base'] / r['frame_bytes']:.2f} "
                      f"warm (<= {TARGETS['peak_x_frame']}); frame = {r['frame_bytes'] / r['n']:.0f} "
                      f"bytes/instance (<= {TARGETS['bytes_per_instance']})")
    sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        mode, url, *rest = sys.argv[2:]
        children = {"refresh": child_refresh, "mirror": child_mirror, "check": child_check,
                    "series": child_series, "read": child_read, "update": child_mirror_update}
        out = children[mode](url, *rest)
        print(json.dumps(out))
    else:
        main()
