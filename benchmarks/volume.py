"""Benchmark: one 200 x 512 x 512 int16 CT series as a volume.

Compares, on the same local Orthanc in one run:

* ``df.orthanc.volume()`` (download stored files with identity encoding, 4 at a time, decode
  with pydicom, sort and check geometry, float32 HU + coords + affine);
* the floor: raw ``GET /instances/{id}/file`` with ``Accept-Encoding: identity``, no decoding
  (4 threads, like volume(); and one thread);
* Orthanc's ``/series/{id}/numpy`` the simple-orthanc way (python-requests' default headers,
  which ask for gzip) - run once, it is slow - and with ``Accept-Encoding: identity``.

Also the peak memory traced during ``volume()`` (tracemalloc; numpy reports its buffers)
against the size of the final array.

The server storage is cached in ``benchmarks/.cache/ct200`` (shared with the files benchmark,
which makes the same ``make_series(200, 512, 512, seed="ct200")``).

Run: ``PYTHONPATH=. python benchmarks/volume.py [--server sid]`` (``--server sid``: Debian
sid's Orthanc 1.13 from ``orthanc-pandas install-orthanc``, with its own cache folder, as a
newer server upgrades the index it opens; ``--noisy``: the same phantom with
scanner-like noise, cached in ``benchmarks/.cache/ct200-noisy``; it gzips like real CT, so the
simple-orthanc row shows what users of real data see).
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

import orthanc_pandas as op
from orthanc_pandas.testing import LocalOrthanc, orthanc_root
from orthanc_pandas.testing.synthetic import make_series, phantom, to_bytes

CACHE = Path(__file__).parent / ".cache" / "ct200"
N = 200
REPEAT = 5


CPU: dict[str, float] = {}


def _noisy(k, rows, cols, z):
    """The phantom plus scanner-like noise (sd 20 HU): compresses like real CT, unlike the
    flat phantom, which gzip squeezes quickly."""
    noise = np.random.default_rng(k).normal(0, 20, (rows, cols))
    return np.clip(phantom(rows, cols, z).astype(np.float64) + noise, 0, 4095).astype(np.int16)


def main(argv: list[str]) -> int:
    noisy = "--noisy" in argv
    server = argv[argv.index("--server") + 1] if "--server" in argv else "system"
    root = None if server == "system" else orthanc_root(server)
    cache = CACHE.with_name("ct200-noisy") if noisy else CACHE
    if root is not None:
        cache = cache.with_name(f"{cache.name}-{server}")
    cache.mkdir(parents=True, exist_ok=True)
    with LocalOrthanc(storage=cache, name=cache.name, root=root) as srv:
        client = srv.client()
        if int(client.statistics()["CountInstances"]) < N:
            print(f"generating the 200-slice CT series (once; cached in {cache})...", file=sys.stderr)
            if noisy:
                series = make_series(N, 512, 512, seed="ct200-noisy", pixels=_noisy)
            else:  # exactly the files benchmark's call: both share benchmarks/.cache/ct200
                series = make_series(N, 512, 512, seed="ct200")
            srv.upload_bytes(to_bytes(ds) for ds in series)
        df = op.read_orthanc(srv.url)
        sizes = df.groupby(level="series").size()
        series_id = sizes.index[sizes == N][0]
        ct = df.xs(series_id, level="series", drop_level=False)
        ids = list(ct.index.get_level_values("instance"))
        url = srv.url
        version = client.version

        session = requests.Session()
        session.headers["Accept-Encoding"] = "identity"

        def floor(workers):
            def get(iid):
                return len(session.get(f"{url}/instances/{iid}/file").content)
            with ThreadPoolExecutor(workers) as pool:
                return sum(pool.map(get, ids))

        def numpy_route(headers):
            r = requests.get(f"{url}/series/{series_id}/numpy", headers=headers)
            r.raise_for_status()
            return np.load(io.BytesIO(r.content))

        ct.orthanc.volume()  # warm up imports and the server's disk cache
        floor(4)
        methods = {  # key: (label, function); run interleaved so each sees the same load
            "vol": ("df.orthanc.volume() (float32 HU, geometry)", lambda: ct.orthanc.volume()),
            "raw": ("df.orthanc.volume(rescale=False) (int16)",
                    lambda: ct.orthanc.volume(rescale=False)),
            "floor4": ("floor: raw /instances/{id}/file, identity, 4 threads", lambda: floor(4)),
            "floor1": ("floor: raw /instances/{id}/file, identity, 1 thread", lambda: floor(1)),
            "np_id": ("/series/{id}/numpy, Accept-Encoding: identity",
                      lambda: numpy_route({"Accept-Encoding": "identity"})),
        }
        walls = {k: [] for k in methods}
        cpus = {k: [] for k in methods}
        results = {}
        for _ in range(REPEAT):
            for key, (_, fn) in methods.items():
                c0, t0 = time.process_time(), time.perf_counter()
                results[key] = fn()
                walls[key].append(time.perf_counter() - t0)
                cpus[key].append(time.process_time() - c0)
        # requests' defaults (gzip): the simple-orthanc way, once - it is slow
        c0, t0 = time.process_time(), time.perf_counter()
        gz = requests.get(f"{url}/series/{series_id}/numpy")
        gz.raise_for_status()
        arr_gz = np.load(io.BytesIO(gz.content))
        encoding = gz.headers.get("Content-Encoding", "identity")
        walls["np_gz"], cpus["np_gz"] = [time.perf_counter() - t0], [time.process_time() - c0]
        methods["np_gz"] = ("/series/{id}/numpy, requests defaults (simple-orthanc way)", None)
        rows = [(label, statistics.median(walls[k]), min(walls[k]), k) for k, (label, _) in methods.items()]
        CPU.update({k: statistics.median(v) for k, v in cpus.items()})
        vol, arr, nbytes = results["vol"], results["np_id"], results["floor4"]
        t_vol, t_vol_min = statistics.median(walls["vol"]), min(walls["vol"])
        t_floor, t_floor_min = statistics.median(walls["floor4"]), min(walls["floor4"])
        t_np_gz = walls["np_gz"][0]

        # Same numbers as Orthanc's own rendering (it sorts by position too).
        same = np.array_equal(np.asarray(vol), arr[..., 0]) and np.array_equal(arr, arr_gz)

        tracemalloc.start()
        tracemalloc.reset_peak()
        v = ct.orthanc.volume()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        final = v.nbytes
        del v

    w = max(len(r[0]) for r in rows)
    print(f"\n{N} x 512 x 512 int16 CT{' with noise' if noisy else ''}, {nbytes / 1e6:.0f} MB of stored files, local Orthanc "
          f"{version} (median of {REPEAT}, min in brackets)\n")
    print(f"{'method':<{w}}  {'wall s':>14}  {'vs floor':>8}  {'client CPU s':>12}")
    for name, med, mn, key in rows:
        print(f"{name:<{w}}  {med:7.3f} ({mn:5.3f})  {med / t_floor:7.1f}x  {CPU[key]:12.3f}")
    print()
    print(f"volume() / floor (4 threads):           {t_vol / t_floor:.2f}x   (target <= 2x; "
          f"best runs {t_vol_min / t_floor_min:.2f}x)")
    print(f"load average during the run:            {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"simple-orthanc way / volume():          {t_np_gz / t_vol:.1f}x faster (target >= 20x "
          f"where the server compresses; its answer came {encoding})")
    print(f"volume() equals Orthanc's /numpy array: {same}")
    print(f"peak traced memory in volume():         {peak / 1e6:.0f} MB for a {final / 1e6:.0f} MB "
          f"array = {peak / final:.2f}x   (target <= 2.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
