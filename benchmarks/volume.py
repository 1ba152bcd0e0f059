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

Run: ``PYTHONPATH=. python benchmarks/volume.py``
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
from orthanc_pandas.synthetic import make_series, to_bytes
from orthanc_pandas.testing import LocalOrthanc

CACHE = Path(__file__).parent / ".cache" / "ct200"
N = 200
REPEAT = 3


CPU: dict[str, float] = {}


def timed(fn, repeat=REPEAT, name=None):
    """(median wall s, min wall s, result); the median client CPU s goes to CPU[name]."""
    times, cpus, out = [], [], None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    CPU[name] = statistics.median(cpus)
    return statistics.median(times), min(times), out


def main() -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    with LocalOrthanc(storage=CACHE, name="ct200") as srv:
        client = srv.client()
        if int(client.statistics()["CountInstances"]) < N:
            print("generating the 200-slice CT series (once; cached in benchmarks/.cache/ct200)...",
                  file=sys.stderr)
            srv.upload_bytes(to_bytes(ds) for ds in make_series(N, 512, 512, seed="ct200"))
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
        rows = []
        t_vol, t_vol_min, vol = timed(lambda: ct.orthanc.volume(), name="vol")
        rows.append(("df.orthanc.volume() (float32 HU, geometry)", t_vol, t_vol_min, "vol"))
        t_raw, t_raw_min, _ = timed(lambda: ct.orthanc.volume(rescale=False), name="raw")
        rows.append(("df.orthanc.volume(rescale=False) (int16)", t_raw, t_raw_min, "raw"))
        t_floor, t_floor_min, nbytes = timed(lambda: floor(4), name="floor4")
        rows.append(("floor: raw /instances/{id}/file, identity, 4 threads", t_floor, t_floor_min, "floor4"))
        t_floor1, t_floor1_min, _ = timed(lambda: floor(1), name="floor1")
        rows.append(("floor: raw /instances/{id}/file, identity, 1 thread", t_floor1, t_floor1_min, "floor1"))
        t_np_id, t_np_id_min, arr = timed(lambda: numpy_route({"Accept-Encoding": "identity"}), name="np_id")
        rows.append(("/series/{id}/numpy, Accept-Encoding: identity", t_np_id, t_np_id_min, "np_id"))
        t_np_gz, _, arr_gz = timed(lambda: numpy_route(None), repeat=1, name="np_gz")  # requests' defaults: gzip
        rows.append(("/series/{id}/numpy, requests defaults (simple-orthanc way)", t_np_gz, t_np_gz, "np_gz"))

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
    print(f"\n{N} x 512 x 512 int16 CT, {nbytes / 1e6:.0f} MB of stored files, local Orthanc "
          f"{version} (median of {REPEAT}, min in brackets)\n")
    print(f"{'method':<{w}}  {'wall s':>14}  {'vs floor':>8}  {'client CPU s':>12}")
    for name, med, mn, key in rows:
        print(f"{name:<{w}}  {med:7.3f} ({mn:5.3f})  {med / t_floor:7.1f}x  {CPU[key]:12.3f}")
    print()
    print(f"volume() / floor (4 threads):           {t_vol / t_floor:.2f}x   (target <= 2x; "
          f"best runs {t_vol_min / t_floor_min:.2f}x)")
    print(f"load average during the run:            {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"simple-orthanc way / volume():          {t_np_gz / t_vol:.1f}x faster (target >= 20x)")
    print(f"volume() equals Orthanc's /numpy array: {same}")
    print(f"peak traced memory in volume():         {peak / 1e6:.0f} MB for a {final / 1e6:.0f} MB "
          f"array = {peak / final:.2f}x   (target <= 2.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
