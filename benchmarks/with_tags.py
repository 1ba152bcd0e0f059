"""with_tags for 3 non-main tags on 20,000 instances vs one request per instance.

Run: ``PYTHONPATH=. python benchmarks/with_tags.py`` (generates and caches the 20k archive on
the first run, under benchmarks/.cache/archive-20k).

Rows:
* ``df.orthanc.with_tags`` - ours: one ``/series/{id}/instances-tags`` per series (400), 4
  threads, typed columns aligned to the frame.
* floor - the same 400 requests with a bare requests session (identity encoding) and 4 threads,
  JSON decoded, nothing else.
* peer way - one ``GET /instances/{id}/simplified-tags`` per instance (what simple-orthanc does),
  sequential, then with 4 threads.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import requests
from _common import archive_server, best_of, table

import orthanc_pandas as op

TAGS = ("SliceThickness", "PixelSpacing", "RescaleIntercept")
KEYS = ("0018,0050", "0028,0030", "0028,1052")


def bare_session() -> requests.Session:
    s = requests.Session()
    s.headers["Accept-Encoding"] = "identity"
    s.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8))
    return s


def main() -> None:
    with archive_server("20k") as server:
        url = server.url
        warnings.simplefilter("ignore")
        df = op.read_orthanc(url, progress=False)
        n, n_series = len(df), df.orthanc.series_count
        assert n == 20_000, n
        rows = []

        t_ours, med_ours, out = best_of(lambda: df.orthanc.with_tags(*TAGS, progress=False))
        assert out["SliceThickness"].notna().all() and out["PixelSpacing_1"].notna().all()
        rows.append(("df.orthanc.with_tags (ours)", n_series, f"{t_ours:.2f}", f"{med_ours:.2f}", "1.0x"))

        series = list(df.index.get_level_values("series").unique())
        sess = bare_session()

        def one_series(sid):
            r = sess.get(f"{url}/series/{sid}/instances-tags?short&ignore-length=00180050,00280030,00281052")
            r.raise_for_status()
            return {i: [t.get(k) for k in KEYS] for i, t in r.json().items()}

        def floor():
            with ThreadPoolExecutor(4) as pool:
                return sum(len(p) for p in pool.map(one_series, series))

        t_floor, med_floor, got = best_of(floor)
        assert got == n
        rows.append(("floor: raw requests, 1 per series, 4 threads", n_series, f"{t_floor:.2f}",
                     f"{med_floor:.2f}", f"{t_ours / t_floor:.2f}x"))

        instances = list(df.index.get_level_values("instance"))

        def one_instance(iid):
            r = sess.get(f"{url}/instances/{iid}/simplified-tags")
            r.raise_for_status()
            tags = r.json()
            return [tags.get(k) for k in TAGS]

        def per_instance(threads: int):
            if threads == 1:
                return [one_instance(i) for i in instances]
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(one_instance, instances))

        t_seq, _, res = best_of(lambda: per_instance(1), repeat=1)
        assert len(res) == n
        rows.append(("peer: 1 GET per instance, sequential", n, f"{t_seq:.2f}", f"{t_seq:.2f}",
                     f"{t_seq / t_ours:.0f}x slower"))
        t_par, _, res = best_of(lambda: per_instance(4), repeat=1)
        rows.append(("peer: 1 GET per instance, 4 threads", n, f"{t_par:.2f}", f"{t_par:.2f}",
                     f"{t_par / t_ours:.0f}x slower"))

        sample = instances[:: max(1, n // 2000)]

        def simple_orthanc_way():
            out = []
            for iid in sample:  # a fresh requests.get each time, default (gzip) headers
                tags = requests.get(f"{url}/instances/{iid}/tags", params={"simplify": ""}).json()
                out.append([tags.get(k) for k in TAGS])
            return out

        t_so, _, res = best_of(simple_orthanc_way, repeat=1)
        t_so *= n / len(sample)
        rows.append((f"simple-orthanc way: requests.get per instance (x{n / len(sample):.0f} "
                     f"from {len(sample)})", n, f"{t_so:.2f}", f"{t_so:.2f}", f"{t_so / t_ours:.0f}x slower"))

        print(f"\nwith_tags{TAGS} on {n:,} instances / {n_series} series, Orthanc "
              f"{server.client().version}, loopback\n")
        print(table(rows, ("method", "requests", "best s", "median s", "vs ours")))


if __name__ == "__main__":
    main()
