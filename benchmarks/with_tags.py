"""with_tags for 3 non-main tags on 20,000 instances vs one request per instance, per server.

Run: ``PYTHONPATH=. python benchmarks/with_tags.py [--server system|sid]`` (``sid``: Debian sid's
Orthanc 1.13 from ``orthanc_pandas.testing.orthanc_root("sid")``). The 20k archive is generated
on the first run and cached per (server, config) under benchmarks/.cache/.

Rows (best and median of 3 unless marked; the machine has 2 cores and is shared):
* ``df.orthanc.with_tags`` - ours: the route the server's capabilities choose (instances-tags
  on 1.10, requested-tags on 1.11+), one request per series, 4 threads, typed columns.
* floor - the same requests with a bare requests session and 4 threads, JSON decoded only.
* the other routes, forced (``fetch_tag_columns(route=...)``); routes slower than 10 s are
  sampled on 40 series and scaled.
* one row of each series: ours (instance by instance) vs the whole series.
* peer way - one ``GET /instances/{id}/simplified-tags`` per instance, sampled and scaled.
* on ``sid``: the same 3 tags stored as ``ExtraMainDicomTags`` (the archive ingested by a server
  so configured): answered from the index, the frame's columns dropped so that they are fetched.
"""

from __future__ import annotations

import argparse
import warnings
from concurrent.futures import ThreadPoolExecutor

import requests
from _common import archive_server, best_of, table

import orthanc_pandas as op
from orthanc_pandas._frame.tags import resolve_tag
from orthanc_pandas._ops.fetch_tags import fetch_tag_columns
from orthanc_pandas.testing import orthanc_root

TAGS = ("SliceThickness", "PixelSpacing", "RescaleIntercept")
KEYS = ("0018,0050", "0028,0030", "0028,1052")
INFOS = [resolve_tag(t) for t in TAGS]


def bare_session() -> requests.Session:
    s = requests.Session()
    s.headers["Accept-Encoding"] = "identity"
    s.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8))
    return s


def floor_fn(url: str, series: list[str], requested_tags: bool):
    sess = bare_session()

    def one_series(sid):
        if requested_tags:
            r = sess.get(f"{url}/series/{sid}/instances?expand&short&requested-tags={';'.join(KEYS)}")
            r.raise_for_status()
            return {a["ID"]: [a["RequestedTags"].get(k) for k in KEYS] for a in r.json()}
        r = sess.get(f"{url}/series/{sid}/instances-tags?short&ignore-length=00180050,00280030,00281052")
        r.raise_for_status()
        return {i: [t.get(k) for k in KEYS] for i, t in r.json().items()}

    def floor():
        with ThreadPoolExecutor(4) as pool:
            return sum(len(p) for p in pool.map(one_series, series))
    return floor


def peer_rows(url: str, instances: list[str], t_ours: float, label: str = "") -> list[tuple]:
    """One request per instance, sampled (2,000 instances) and scaled to all of them."""
    sess = bare_session()
    n = len(instances)
    sample = instances[:: max(1, n // 2000)]
    scale = n / len(sample)

    def one_instance(iid):
        r = sess.get(f"{url}/instances/{iid}/simplified-tags")
        r.raise_for_status()
        tags = r.json()
        return [tags.get(k) for k in TAGS]

    rows = []
    t_seq, _, res = best_of(lambda: [one_instance(i) for i in sample], repeat=1)
    assert all(v[0] is not None for v in res)
    rows.append((f"peer{label}: 1 GET per instance, sequential (x{scale:.0f} from {len(sample)}, 1 run)",
                 n, f"{t_seq * scale:.2f}", "", f"{t_seq * scale / t_ours:.0f}x slower"))
    with ThreadPoolExecutor(4) as pool:
        t_par, _, _ = best_of(lambda: list(pool.map(one_instance, sample)), repeat=1)
    rows.append((f"peer{label}: 1 GET per instance, 4 threads (x{scale:.0f} from {len(sample)}, 1 run)",
                 n, f"{t_par * scale:.2f}", "", f"{t_par * scale / t_ours:.0f}x slower"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("system", "sid"), default="system",
                        help="the machine's Orthanc, or Debian sid's (1.13) from its root")
    args = parser.parse_args()
    root = orthanc_root("sid") if args.server == "sid" else None
    warnings.simplefilter("ignore")
    rows = []
    with archive_server("20k", root=root) as server:
        url = server.url
        client = op.connect(url)
        caps = client.capabilities()
        version = client.version
        df = op.read_orthanc(url, progress=False)
        n, n_series = len(df), df.orthanc.series_count
        assert n == 20_000, n

        t_ours, med_ours, out = best_of(lambda: df.orthanc.with_tags(*TAGS, progress=False))
        assert out["SliceThickness"].notna().all() and out["PixelSpacing_1"].notna().all()
        ours_route = "requested-tags" if caps.requested_tags else "instances-tags"
        rows.append((f"df.orthanc.with_tags (ours: {ours_route}), read from files", n_series,
                     f"{t_ours:.2f}", f"{med_ours:.2f}", "1.0x"))

        series = list(df.index.get_level_values("series").unique())
        t_floor, med_floor, got = best_of(floor_fn(url, series, caps.requested_tags))
        assert got == n
        rows.append((f"floor: bare requests, same {ours_route} requests, 4 threads", n_series,
                     f"{t_floor:.2f}", f"{med_floor:.2f}", f"ours {t_ours / t_floor:.2f}x floor"))

        others = ["instances-tags"] + (["requested-tags"] if caps.requested_tags else []) + \
                 (["find"] if caps.extended_find else [])
        for route in others:
            if route == ours_route:
                continue
            part = df[df.index.get_level_values("series").isin(series[:40])]
            t_part, _, _ = best_of(lambda part=part, route=route: fetch_tag_columns(
                part, client, INFOS, route=route), repeat=1)
            if t_part * n_series / 40 < 10:
                t, med, _ = best_of(lambda route=route: fetch_tag_columns(df, client, INFOS, route=route))
                rows.append((f"route={route!r} (forced)", n_series, f"{t:.2f}", f"{med:.2f}",
                             f"{t / t_ours:.1f}x ours"))
            else:
                t = t_part * n_series / 40
                rows.append((f"route={route!r} (forced; x{n_series / 40:.0f} from 40 series, 1 run)",
                             n_series, f"{t:.2f}", "", f"{t / t_ours:.1f}x ours"))

        one_each = df.groupby(level="series", sort=False).head(1)
        t1, med1, _ = best_of(lambda: one_each.orthanc.with_tags(*TAGS, progress=False))
        rows.append(("one row of each series: with_tags (instance by instance)", len(one_each),
                     f"{t1:.2f}", f"{med1:.2f}", ""))
        t1w, med1w, _ = best_of(lambda: fetch_tag_columns(one_each, client, INFOS, route=ours_route))
        rows.append((f"one row of each series: whole series (route={ours_route!r})", n_series,
                     f"{t1w:.2f}", f"{med1w:.2f}", f"{t1w / t1:.1f}x the above"))

        rows += peer_rows(url, list(df.index.get_level_values("instance")), t_ours)

    if caps.requested_tags:
        with archive_server("20k", root=root, extra_main_dicom_tags={"Instance": list(TAGS)}) as server:
            url = server.url
            full = op.read_orthanc(url, progress=False)
            assert {"SliceThickness", "PixelSpacing_0", "RescaleIntercept"} <= set(full.columns)
            t0, med0, _ = best_of(lambda: full.orthanc.with_tags(*TAGS, progress=False))
            rows.append(("ExtraMainDicomTags: with_tags, already columns (read_orthanc)", 0,
                         f"{t0:.4f}", f"{med0:.4f}", ""))
            bare = full.drop(columns=["SliceThickness", "PixelSpacing_0", "PixelSpacing_1", "RescaleIntercept"])
            t_emt, med_emt, got = best_of(lambda: bare.orthanc.with_tags(*TAGS, progress=False))
            assert got["SliceThickness"].notna().all()
            rows.append(("ExtraMainDicomTags: with_tags (ours), columns dropped: from the index",
                         n_series, f"{t_emt:.2f}", f"{med_emt:.2f}", "1.0x"))
            t_ef, med_ef, _ = best_of(floor_fn(url, series, True))
            rows.append(("ExtraMainDicomTags: floor, bare requests", n_series, f"{t_ef:.2f}",
                         f"{med_ef:.2f}", f"ours {t_emt / t_ef:.2f}x floor"))
            rows += peer_rows(url, list(full.index.get_level_values("instance")), t_emt,
                              " (ExtraMainDicomTags)")

    print(f"\nwith_tags{TAGS} on {n:,} instances / {n_series} series, Orthanc {version} "
          f"({args.server}), loopback, 2 shared cores: best of 3 unless marked\n")
    print(table(rows, ("method", "requests", "best s", "median s", "vs ours")))


if __name__ == "__main__":
    main()
