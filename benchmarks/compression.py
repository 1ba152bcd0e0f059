"""HTTP compression on Orthanc 1.10: JSON and binary routes, gzip vs identity, one run.

    python benchmarks/compression.py

Orthanc gzips answers on the fly whenever the client accepts it (python-requests does by
default). This measures what that costs on loopback for the index's JSON lists and for DICOM
files, to justify the client's `Accept-Encoding: identity` default.
"""

from __future__ import annotations

import requests
from _common import archive_server, best_of, table

from orthanc_pandas.testing.synthetic import make_series, to_bytes


def main() -> None:
    with archive_server("20k") as server:
        url = server.url
        big = [to_bytes(d) for d in make_series(20, 512, 512, seed="compression")]
        ids = [a["ID"] for a in server.upload_bytes(big)]
        rows = []
        for enc in ("identity", "gzip"):
            s = requests.Session()
            s.headers["Accept-Encoding"] = enc

            def lists(s=s):
                n = 0
                for level in ("instances", "series", "studies", "patients"):
                    n += len(s.get(f"{url}/{level}", params={"expand": "", "since": 0, "limit": 100000}).content)
                return n

            t_json, _, nbytes = best_of(lists, 3)
            wire = s.get(f"{url}/instances", params={"expand": "", "since": 0, "limit": 100000}, stream=True)
            wire_bytes = len(wire.raw.read(decode_content=False))

            def files(s=s):
                return sum(len(s.get(f"{url}/instances/{i}/file").content) for i in ids)

            t_bin, _, fbytes = best_of(files, 3)
            rows.append((enc, f"{t_json:.3f}", f"{nbytes / 1e6:.1f}", f"{wire_bytes / 1e6:.2f}",
                         f"{t_bin / len(ids) * 1000:.1f}", f"{fbytes / len(ids) / 1e3:.0f}"))
        print(f"\n{server.client().statistics()['CountInstances']} instances, Orthanc {server.client().version}\n")
        print(table(rows, ("Accept-Encoding", "4 index lists s", "JSON MB", "instances list on the wire MB",
                           "512x512 file ms", "file KB")))
        for i in ids:
            server.client().delete(f"/instances/{i}")


if __name__ == "__main__":
    main()
