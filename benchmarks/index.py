"""read_orthanc vs the floor and vs peers, on one 20,000-instance server, in one run.

    python benchmarks/index.py [--server system|sid] [--repeat 3] [--peer-sample 2000]

``--server sid`` runs Debian sid's Orthanc 1.13 (installed once with
``orthanc-pandas install-orthanc``), where read_orthanc takes extended /tools/find.

(a) floor of the GET-list route: the same paged GET requests with requests + json.loads
(a2) floor of the find route (1.12.5+): the same three concurrent streams read_orthanc sends
     (the two halves of the instances from /tools/find, the parent GET lists)
(b) orthanc_pandas.read_orthanc (auto route), and (b2) with route="lists" where find is used
(c) pyorthanc: its fastest route to a per-instance table of main tags (the same expanded GET
    lists through its client, joined with pandas)
(c') pyorthanc's resource API (find_instances, then each instance's main tags and its series')
(d) one GET per instance, the simple-orthanc way (requests with default headers)
(c') and (d) are timed on --peer-sample instances and scaled linearly to the whole archive.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import requests
from _common import archive_server, best_of, table

import orthanc_pandas as op
from orthanc_pandas._ops.read import choose_route
from orthanc_pandas.testing import orthanc_root


def floor(url: str, page: int = 5000) -> int:
    s = requests.Session()
    s.headers["Accept-Encoding"] = "identity"
    n = 0
    for level in ("instances", "series", "studies", "patients"):
        since = 0
        while True:
            r = s.get(f"{url}/{level}", params={"expand": "", "since": since, "limit": page})
            items = json.loads(r.content)
            n += len(items)
            if len(items) < page:
                break
            since += page
    return n


def floor_find(url: str, page: int = 5000, labels: bool = False) -> int:
    """The find route's requests, bare: the two halves of the instances (tags, parent, file
    size) and the parent GET lists as three concurrent streams, JSON decoded."""
    content = ["MainDicomTags", "Parent", "Attachments"] + (["Labels"] if labels else [])
    s0 = requests.Session()
    s0.headers["Accept-Encoding"] = "identity"
    total = json.loads(s0.get(f"{url}/statistics").content)["CountInstances"]

    def find(start: int, end: int) -> int:
        s = requests.Session()
        s.headers["Accept-Encoding"] = "identity"
        n = start
        while n < end:
            items = json.loads(s.post(f"{url}/tools/find", json={
                "Level": "Instance", "Query": {}, "ResponseContent": content,
                "Limit": min(page, end - n), "Since": n}).content)
            if not items:
                break
            n += len(items)
        return n - start

    def parents() -> int:
        s = requests.Session()
        s.headers["Accept-Encoding"] = "identity"
        return sum(len(json.loads(s.get(f"{url}/{lvl}", params={"expand": "", "since": 0,
                                                                  "limit": 100_000}).content))
                   for lvl in ("series", "studies", "patients"))

    half = total // 2
    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(find, 0, half), pool.submit(find, half, total), pool.submit(parents)]
        return sum(j.result() for j in jobs)


def floor_series_find(url: str, page: int = 5000) -> int:
    """The series-first route's requests, bare: the series from extended find (tags, parent,
    metadata, instance count) as two concurrent ranges beside the study and patient finds,
    JSON decoded; as ``read_orthanc(url, level="series")`` sends them on a 1.13 server."""
    from orthanc_pandas._frame.level_read import SERIES_COUNT_TAG, SERIES_FIND_CONTENT
    from orthanc_pandas._ops.read_levels import PARENT_FIND_CONTENT

    def session():
        s = requests.Session()
        s.headers["Accept-Encoding"] = "identity"
        return s

    total = json.loads(session().get(f"{url}/statistics").content)["CountSeries"]

    def find(level: str, content, start: int, end: int, **extra) -> int:
        s, n = session(), start
        while n < end:
            items = json.loads(s.post(f"{url}/tools/find", json={
                "Level": level, "Query": {}, "ResponseContent": content,
                "Limit": min(page, end - n), "Since": n, **extra}).content)
            if not items:
                break
            n += len(items)
        return n - start

    def parents() -> int:
        return sum(find(level.capitalize(), PARENT_FIND_CONTENT[level], 0, 10 ** 9)
                   for level in ("study", "patient"))

    half = total // 2
    with ThreadPoolExecutor(3) as pool:
        jobs = [pool.submit(find, "Series", SERIES_FIND_CONTENT, 0, half,
                            RequestedTags=[SERIES_COUNT_TAG]),
                pool.submit(find, "Series", SERIES_FIND_CONTENT, half, total,
                            RequestedTags=[SERIES_COUNT_TAG]),
                pool.submit(parents)]
        return sum(j.result() for j in jobs)


def floor_gzip(url: str, page: int = 5000) -> int:
    s = requests.Session()  # requests' default Accept-Encoding: gzip, deflate
    n = 0
    for level in ("instances", "series", "studies", "patients"):
        since = 0
        while True:
            items = s.get(f"{url}/{level}", params={"expand": "", "since": since, "limit": page}).json()
            n += len(items)
            if len(items) < page:
                break
            since += page
    return n


def pyorthanc_expand(url: str) -> pd.DataFrame:
    import pyorthanc

    client = pyorthanc.Orthanc(url)
    rows = {}
    for level, getter in (("instances", client.get_instances), ("series", client.get_series),
                          ("studies", client.get_studies), ("patients", client.get_patients)):
        items = getter(params={"expand": True})
        rows[level] = pd.DataFrame([{"ID": r["ID"], "Parent": r.get("ParentSeries") or r.get("ParentStudy")
                                     or r.get("ParentPatient"), **r["MainDicomTags"]} for r in items])
    df = rows["instances"].merge(rows["series"], left_on="Parent", right_on="ID", suffixes=("", "_series"))
    df = df.merge(rows["studies"], left_on="Parent_series", right_on="ID", suffixes=("", "_study"))
    return df.merge(rows["patients"], left_on="Parent_study", right_on="ID", suffixes=("", "_patient"))


def pyorthanc_resources(url: str, sample: int) -> int:
    import pyorthanc

    client = pyorthanc.Orthanc(url)
    ids = client.get_instances()[:sample]
    n = 0
    for iid in ids:
        inst = pyorthanc.Instance(iid, client)
        tags = dict(inst.get_main_information()["MainDicomTags"])
        series = inst.parent_series
        tags.update(series.get_main_information()["MainDicomTags"])
        tags.update(series.parent_study.get_main_information()["MainDicomTags"])
        n += 1
    return n


def one_get_per_instance(url: str, sample: int) -> int:
    ids = requests.get(f"{url}/instances").json()[:sample]
    n = 0
    for iid in ids:  # simple-orthanc: a request per resource, default headers
        info = requests.get(f"{url}/instances/{iid}").json()
        requests.get(f"{url}/series/{info['ParentSeries']}").json()
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", choices=["system", "sid", "trixie"], default="system",
                    help="this machine's Orthanc (1.10 on bookworm) or Debian sid's 1.13 / trixie's 1.12")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peer-sample", type=int, default=2000)
    args = ap.parse_args()
    root = None if args.server == "system" else orthanc_root(args.server)
    with archive_server("20k", root=root) as server:
        url = server.url
        client = server.client()
        n = client.statistics()["CountInstances"]
        route = choose_route(client)
        warnings.simplefilter("ignore")
        results = []
        t_lists, m_lists, _ = best_of(lambda: floor(url), args.repeat)
        results.append(("(a) floor of GET lists: requests + json.loads (identity)", t_lists, m_lists, ""))
        t_floor = t_lists
        if route == "find":
            labels = client.capabilities().labels
            t_find, m_find, _ = best_of(lambda: floor_find(url, labels=labels), args.repeat)
            results.append(("(a2) floor of find route: 3 concurrent streams, bare", t_find, m_find, ""))
            t_floor = t_find
        t_gz, m_gz, _ = best_of(lambda: floor_gzip(url), args.repeat)
        results.append(("(a') GET lists, requests' default gzip", t_gz, m_gz, ""))
        t_ours, m_ours, df = best_of(lambda: op.read_orthanc(url, progress=False), args.repeat)
        results.append((f"(b) orthanc_pandas.read_orthanc (route {route})", t_ours, m_ours, ""))
        if route == "find":
            t_ol, m_ol, df_lists = best_of(lambda: op.read_orthanc(url, progress=False, route="lists"),
                                           args.repeat)
            pd.testing.assert_frame_equal(df_lists, df)
            results.append(("(b2) read_orthanc(route='lists'): same frame", t_ol, m_ol, ""))
        t_pe, m_pe, df_pe = best_of(lambda: pyorthanc_expand(url), args.repeat)
        results.append(("(c) pyorthanc: expanded lists + pandas merge", t_pe, m_pe, ""))
        sample = min(args.peer_sample, n)
        t_pr, _, _ = best_of(lambda: pyorthanc_resources(url, sample), 1)
        results.append((f"(c') pyorthanc resource API (x{n / sample:.0f} from {sample})",
                        t_pr * n / sample, t_pr * n / sample, "extrapolated"))
        t_d, _, _ = best_of(lambda: one_get_per_instance(url, sample), 1)
        results.append((f"(d) one GET per instance (x{n / sample:.0f} from {sample})",
                        t_d * n / sample, t_d * n / sample, "extrapolated"))
        rows = [(name, f"{best:.3f}", f"{med:.3f}", f"{best / t_floor:.2f}", f"{best / t_ours:.1f}", note)
                for name, best, med, note in results]
        print(f"\n{n} instances, Orthanc {client.version} ({args.server}), route {route}, "
              f"best/median of {args.repeat}\n")
        print(table(rows, ("method", "best s", "median s", "x floor", "x read_orthanc", "note")))
        mem = df.memory_usage(deep=True).sum()
        print(f"\nframe: {len(df)} rows x {df.shape[1]} columns, {mem / 1e6:.2f} MB = "
              f"{mem / len(df):.0f} bytes per instance (memory_usage(deep=True))")
        mem_pe = df_pe.memory_usage(deep=True).sum()
        print(f"(c)'s frame: {len(df_pe)} rows x {df_pe.shape[1]} untyped object columns, "
              f"{mem_pe / len(df_pe):.0f} bytes per instance (no dates, numbers or index)")
        print(f"targets: (b)/floor of its route = {t_ours / t_floor:.2f} (<= 1.25); GET lists' floor "
              f"/ (b) = {t_lists / t_ours:.2f} (>= 1.8 on 1.13); (c)/(b) = {t_pe / t_ours:.1f}, "
              f"(d)/(b) = {results[-1][1] / t_ours:.1f} (>= 10); bytes/instance <= 300")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
