"""Benchmark: download / headers on 200 CT slices, refresh on the 20,000-instance archive.

    PYTHONPATH=. /work/venv/bin/python benchmarks/files.py [--skip-refresh]

Rows (same server, one run):
* ``download`` (ours, 4 threads) vs the floor (raw ``requests`` GETs of /instances/{id}/file
  with ``Accept-Encoding: identity`` written to disk, 4 threads like ours, and serially) vs the
  simple-orthanc way (one ``requests.get`` per file with default headers, so Orthanc gzips).
* the same download on 200 slices with CT-like noise (sd 20 HU): the clean phantom gzips
  unrealistically well, which flatters the simple-orthanc way.
* ``headers()`` (4 threads) vs the same download floor.
* ``refresh()`` after adding 1% new instances (4 new series of 50) to the 20k archive vs a
  full ``read_orthanc``. The cached archive is copied to a temporary folder first, so it is
  never modified.
Server storage is cached under ``benchmarks/.cache/`` (git-ignored).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import requests

import orthanc_pandas as op
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import generate_archive, make_series, phantom, to_bytes

CACHE = Path(__file__).resolve().parent / ".cache"


def cached_server(name: str, make_blobs, expected: int) -> LocalOrthanc:
    """A LocalOrthanc on ``benchmarks/.cache/<name>``, filled once."""
    storage = CACHE / name
    server = LocalOrthanc(storage=storage, name=name).start()
    have = int(server.client().statistics()["CountInstances"])
    if have != expected:
        print(f"filling {storage} ({have} -> {expected} instances)...", file=sys.stderr)
        server.upload_bytes(make_blobs())
    return server


def archive_server(storage: Path | None = None) -> LocalOrthanc:
    """The 20,000-instance archive (``generate_archive()`` defaults, seed "archive")."""
    if storage is None:
        return cached_server("archive-20k", lambda: generate_archive(), 20_000)
    return LocalOrthanc(storage=storage, name="archive-20k").start()


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def floor_download(url: str, ids: list[str], folder: Path, workers: int) -> None:
    session = requests.Session()
    session.headers["Accept-Encoding"] = "identity"
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(workers, 1))
    session.mount("http://", adapter)

    def one(i):
        r = session.get(f"{url}/instances/{i}/file")
        r.raise_for_status()
        (folder / f"{i}.dcm").write_bytes(r.content)

    if workers <= 1:
        for i in ids:
            one(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, ids))


def simple_orthanc_download(url: str, ids: list[str], folder: Path) -> None:
    for i in ids:  # what simple-orthanc / pyorthanc users write: default headers -> gzip
        r = requests.get(f"{url}/instances/{i}/file")
        r.raise_for_status()
        (folder / f"{i}.dcm").write_bytes(r.content)


def bench_files(rows: list[dict]) -> None:
    server = cached_server("ct200", lambda: (to_bytes(d) for d in make_series(200, 512, 512, seed="ct200")),
                           200)
    try:
        df = op.read_orthanc(server.url)
        ids = list(df.index.get_level_values("instance"))
        mb = df.orthanc_file_size.sum() / 1e6
        tmp = Path(tempfile.mkdtemp(prefix="bench-files-"))

        def fresh(name):
            d = tmp / name
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            return d

        t_ours = best(lambda: df.orthanc.download(fresh("ours"), progress=False))
        t_floor4 = best(lambda: floor_download(server.url, ids, fresh("floor4"), 4))
        t_floor1 = best(lambda: floor_download(server.url, ids, fresh("floor1"), 1))
        t_simple = best(lambda: simple_orthanc_download(server.url, ids, fresh("simple")), repeat=1)
        t_rerun = best(lambda: df.orthanc.download(tmp / "ours", progress=False))
        t_headers = best(lambda: df.orthanc.headers(progress=False))
        shutil.rmtree(tmp, ignore_errors=True)
        rows += [
            {"task": f"download 200 CT ({mb:.0f} MB)", "way": "orthanc-pandas (4 threads)", "s": t_ours},
            {"task": "", "way": "floor: requests identity, 4 threads", "s": t_floor4},
            {"task": "", "way": "floor: requests identity, serial", "s": t_floor1},
            {"task": "", "way": "simple-orthanc way (gzip, serial)", "s": t_simple},
            {"task": "", "way": "orthanc-pandas rerun (all complete)", "s": t_rerun},
            {"task": "headers() 200 CT", "way": "orthanc-pandas (4 threads)", "s": t_headers},
        ]
        ratios = {"download / floor(4 threads)": t_ours / t_floor4,
                  "simple-orthanc / download": t_simple / t_ours,
                  "headers / floor(4 threads)": t_headers / t_floor4,
                  "headers / floor(serial)": t_headers / t_floor1}
        rows.append({"task": "ratios", "way": "; ".join(f"{k} = {v:.2f}" for k, v in ratios.items()),
                     "s": float("nan")})
    finally:
        server.stop()


def _noisy(k, rows, cols, z):
    # CT-like noise (sd 20 HU) on the phantom: real scans compress far less than a clean phantom
    rng = np.random.default_rng(k)
    return phantom(rows, cols, z).astype(np.int32) + rng.normal(0, 20, (rows, cols)).astype(np.int32)


def bench_noisy(rows: list[dict]) -> None:
    server = cached_server("ct200-noisy", lambda: (to_bytes(d) for d in make_series(
        200, 512, 512, seed="ct200-noisy", pixels=_noisy)), 200)
    try:
        df = op.read_orthanc(server.url)
        ids = list(df.index.get_level_values("instance"))
        tmp = Path(tempfile.mkdtemp(prefix="bench-noisy-"))
        try:
            t_ours = best(lambda: df.orthanc.download(Path(tempfile.mkdtemp(dir=tmp)), progress=False))
            t_floor4 = best(lambda: floor_download(server.url, ids, Path(tempfile.mkdtemp(dir=tmp)), 4))
            t_simple = best(lambda: simple_orthanc_download(server.url, ids, Path(tempfile.mkdtemp(dir=tmp))),
                            repeat=1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows += [
            {"task": "download 200 noisy CT", "way": "orthanc-pandas (4 threads)", "s": t_ours},
            {"task": "", "way": "floor: requests identity, 4 threads", "s": t_floor4},
            {"task": "", "way": "simple-orthanc way (gzip, serial)", "s": t_simple},
            {"task": "ratios", "way": f"download / floor = {t_ours / t_floor4:.2f}; "
                                      f"simple-orthanc / download = {t_simple / t_ours:.1f}",
             "s": float("nan")},
        ]
    finally:
        server.stop()


def bench_refresh(rows: list[dict]) -> None:
    archive_server().stop()  # make sure the cache is filled
    tmp = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    try:
        copy = tmp / "archive"
        shutil.copytree(CACHE / "archive-20k", copy)
        server = archive_server(copy)
        try:
            reads = []
            for _ in range(3):
                t = time.perf_counter()
                df = op.read_orthanc(server.url, progress=False)
                reads.append(time.perf_counter() - t)
            t_read = min(reads)
            t_noop = best(lambda: df.orthanc.refresh(), repeat=5)
            server.upload_bytes(generate_archive(1, 1, 4, 50, seed="refresh-bench"))  # +1%
            refreshed = df.orthanc.refresh()
            # refresh() does not change the server, so it can be timed again on the same frame
            t_refresh = best(lambda: df.orthanc.refresh(), repeat=5)
            ids_only = best(lambda: server.client().list_ids("instances"), repeat=5)
            fresh = op.read_orthanc(server.url, progress=False)
            pd.testing.assert_frame_equal(refreshed.sort_index(), fresh.sort_index())
            rows += [
                {"task": "read_orthanc 20k", "way": "full read (best of 3)", "s": t_read},
                {"task": "refresh() 20k, no change", "way": "orthanc-pandas", "s": t_noop},
                {"task": "refresh() 20k + 200 new (1%)", "way": "orthanc-pandas (checked == fresh read)",
                 "s": t_refresh},
                {"task": "", "way": "of which GET /instances (ids only)", "s": ids_only},
                {"task": "ratios", "way": f"refresh / read = {t_refresh / t_read:.3f} "
                                          f"(reads: {statistics.median(reads):.2f} s median)",
                 "s": float("nan")},
            ]
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    rows: list[dict] = []
    bench_files(rows)
    bench_noisy(rows)
    if "--skip-refresh" not in sys.argv:
        bench_refresh(rows)
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
