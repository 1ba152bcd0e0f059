"""Benchmark: download / headers on 200 CT slices, refresh on the 20,000-instance archive.

    PYTHONPATH=. /work/venv/bin/python benchmarks/files.py [--skip-refresh] [--only-upload]

Rows (same server, one run):
* ``download`` (ours, 4 threads) vs the floor (raw ``requests`` GETs of /instances/{id}/file
  with ``Accept-Encoding: identity`` written to disk, 4 threads like ours, and serially) vs the
  simple-orthanc way (one ``requests.get`` per file with default headers, so Orthanc gzips).
* the same download on 200 slices with CT-like noise (sd 20 HU): the clean phantom gzips
  unrealistically well, which flatters the simple-orthanc way.
* ``headers()`` (4 threads) vs the same download floor.
* ``upload()`` of a ZIP of 2,000 generated CT instances (256 x 256, CT-like noise; ~250 MiB
  inflated) to a fresh server, each way in a fresh process: time and peak RSS growth
  (``ru_maxrss``) and client CPU of streamed members (today's ``upload``) vs ``upload`` as it
  was before streaming (read from git: the archive read whole, each member read whole) vs ZIP
  bodies of 50 members on ``POST /instances`` (what Orthanc also accepts), on this machine's
  Orthanc and on sid's (1.13) when its root is installed.
* ``refresh()`` after adding 1% new instances (4 new series of 50) to the 20k archive vs a
  full ``read_orthanc``. The cached archive is copied to a temporary folder first, so it is
  never modified.
Server storage is cached under ``benchmarks/.cache/`` (git-ignored).
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import requests

import orthanc_pandas as op
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import generate_archive, make_series, phantom, to_bytes, uid

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


def upload_zip(n: int = 2000) -> Path:
    """``benchmarks/.cache/upload-<n>.zip``: n noisy 256 x 256 CT instances, deflated, made once."""
    path = CACHE / f"upload-{n}.zip"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    template = make_series(1, 256, 256, seed="upload", pixels=_noisy)[0]
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for k in range(n):
            template.SeriesInstanceUID = uid("upload", k // 100)
            template.SOPInstanceUID = uid("upload", k // 100, k)
            template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
            template.InstanceNumber = k % 100 + 1
            with zf.open(f"series{k // 100:02d}/{k:05d}.dcm", "w") as member:
                member.write(to_bytes(template))
    tmp.rename(path)
    return path


#: upload() before it streamed (the archive read whole, each member read whole), from git
OLD_UPLOAD = "20e0331:orthanc_pandas/_ops/files.py"


#: each way of uploading, run in a fresh process: prints seconds, client CPU, peak RSS growth
_UPLOAD_CHILD = """
import importlib.util, io, json, resource, sys, time, zipfile
import orthanc_pandas as op
from orthanc_pandas._util.fanout import fan_out
url, archive, warm, way, old_source = sys.argv[1:]
client = op.OrthancClient(url)
op.upload(warm, client)  # what any upload loads (threads, pandas, requests) is loaded before
if way == "old":  # the old module, run against today's package (its imports still exist)
    spec = importlib.util.spec_from_file_location("orthanc_pandas._ops.old_files", old_source)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)

def zip_bodies(n=50):  # members re-packed (stored) into ZIP bodies of n, 4 in flight
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        def body(chunk):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
                for m in chunk:
                    out.writestr(m.filename, zf.read(m))
            return buf.getvalue()
        chunks = [members[i:i + n] for i in range(0, len(members), n)]
        fan_out(lambda c: client.post_json("/instances", data=body(c), idempotent=True,
                                           headers={"Content-Type": "application/zip"}),
                chunks, 4, window=4)

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

before, cpu0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cpu()
t = time.perf_counter()
{"streamed": lambda: op.upload(archive, client), "old": lambda: old.upload(archive, client),
 "zip50": zip_bodies}[way]()
seconds = time.perf_counter() - t
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"s": seconds, "cpu": cpu() - cpu0, "grew": grew,
                  "stored": client.statistics()["CountInstances"] - 1}))
"""


_UPLOAD_WAYS = {"streamed": "upload(): members streamed, 1 POST each, 4 threads",
                "old": "upload() before (git 20e0331): archive + members read whole",
                "zip50": "ZIP bodies of 50 members, 4 in flight"}


def bench_upload(rows: list[dict], repeat: int = 3) -> None:
    from orthanc_pandas.testing import OrthancNotInstalledError, find_orthanc_binary, orthanc_root

    archive = upload_zip()
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
    inflated, largest = sum(m.file_size for m in infos), max(m.file_size for m in infos)
    mib = 1 << 20
    warm = CACHE / "upload-warm.dcm"
    warm.write_bytes(to_bytes(make_series(1, 8, 8, seed="upload-warm")[0]))
    ways = dict(_UPLOAD_WAYS)
    old_source = CACHE / "old_upload_files.py"
    shown = subprocess.run(["git", "-C", str(Path(__file__).parent), "show", OLD_UPLOAD],
                           capture_output=True, text=True)
    if shown.returncode == 0:
        old_source.write_text(shown.stdout)
    else:  # not a git checkout with that commit
        del ways["old"]
    servers = {"system": None}
    try:
        find_orthanc_binary(root=orthanc_root("sid"))
        servers["sid"] = orthanc_root("sid")
    except OrthancNotInstalledError:
        pass
    for server_name, root in servers.items():
        runs: dict[str, list] = {way: [] for way in ways}
        for _ in range(repeat):  # the ways take turns, so a busy moment hits them alike
            for way in ways:
                with LocalOrthanc(name="upload-bench", root=root) as server:
                    out = subprocess.run([sys.executable, "-c", _UPLOAD_CHILD, server.url,
                                          str(archive), str(warm), way, str(old_source)],
                                         capture_output=True, text=True, check=True)
                    runs[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    assert runs[way][-1]["stored"] == len(infos), runs[way][-1]
        task = (f"upload ZIP of {len(infos)} CT ({archive.stat().st_size / mib:.0f} MiB, "
                f"{inflated / mib:.0f} MiB inflated, largest {largest / mib:.2f} MiB) "
                f"to {server_name}'s Orthanc (best of {repeat})")
        for way, label in ways.items():
            got = runs[way]
            rows.append({"task": task,
                         "way": f"{label}; peak RSS +{max(r['grew'] for r in got) / mib:.0f} MiB, "
                                f"client CPU {min(r['cpu'] for r in got):.1f} s",
                         "s": min(r["s"] for r in got)})
            task = ""


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
    if "--only-upload" not in sys.argv:
        bench_files(rows)
        bench_noisy(rows)
    bench_upload(rows)
    if "--skip-refresh" not in sys.argv and "--only-upload" not in sys.argv:
        bench_refresh(rows)
    table = pd.DataFrame(rows)
    with pd.option_context("display.max_colwidth", 120, "display.width", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
