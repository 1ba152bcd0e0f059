"""Benchmark: retrieve 20 studies (2,000 instances) from one local Orthanc into another.

    PYTHONPATH=. .venv/bin/python benchmarks/retrieve.py [--workers 2]

Two throw-away servers talk real DICOM on 127.0.0.1: ``PACS`` holds 20 studies of 100
instances (4 x 4 pixels, so the DICOM exchange dominates, not the disk); the gateway ``GW``
retrieves them (C-MOVE), emptied between the rows. Rows, in one run:

* ``ours``: ``op.query(gw, "PACS")`` then ``answers.orthanc.retrieve()``: one asynchronous
  Orthanc job per study, ``--workers`` in flight (the server's ``ConcurrentJobs`` bounds the
  useful number), with a report.
* ``one request per study``: the pyorthanc way, for each study in sequence a C-FIND
  (``POST /modalities/PACS/query``) then a synchronous ``POST /queries/{id}/answers/0/retrieve``.
Both end with the same 2,000 instances on the gateway (checked).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orthanc_pandas as op  # noqa: E402
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing._servers import link  # noqa: E402
from orthanc_pandas.testing.synthetic import generate_archive  # noqa: E402

SHAPE = (10, 2, 2, 50)  # patients x studies x series x instances = 20 studies, 2,000 instances


def _clear(server) -> None:
    for pid in server.client().get_json("/patients"):
        server.client().delete(f"/patients/{pid}")


def ours(gw, workers: int) -> None:
    answers = op.query(gw.url, "PACS", "study")
    report = answers.orthanc.retrieve(max_workers=workers, progress=False)
    assert (report.status == "retrieved").all(), report


def one_request_per_study(gw, uids) -> None:
    c = gw.client()
    for uid in uids:
        q = c.post_json("/modalities/PACS/query", {"Level": "Study", "Query": {"StudyInstanceUID": uid}})
        c.post_json(f"/queries/{q['ID']}/answers/0/retrieve", {"TargetAet": "GW", "Synchronous": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    expected = SHAPE[0] * SHAPE[1] * SHAPE[2] * SHAPE[3]
    gw, pacs = (LocalOrthanc(aet="GW", config={"ConcurrentJobs": args.workers}), LocalOrthanc(aet="PACS"))
    link(gw, pacs)
    with gw, pacs:
        pacs.upload_bytes(generate_archive(*SHAPE, rows=4, cols=4, seed="retrieve-bench"))
        remote = op.read_orthanc(pacs.url)
        uids = list(remote.StudyInstanceUID.unique())
        rows = []
        for name, run in [("ours (query + retrieve, jobs)", lambda: ours(gw, args.workers)),
                          ("one request per study (pyorthanc way)", lambda: one_request_per_study(gw, uids))]:
            _clear(gw)
            t = time.perf_counter()
            run()
            seconds = time.perf_counter() - t
            got = gw.client().statistics()["CountInstances"]
            assert got == expected, (name, got)
            rows.append((name, seconds))
        print(f"Orthanc {gw.client().version}: retrieve {len(uids)} studies, {expected} instances, "
              f"C-MOVE between two local servers ({args.workers} concurrent jobs)")
        print(f"{'method':42s} {'seconds':>8s} {'instances/s':>12s}")
        for name, seconds in rows:
            print(f"{name:42s} {seconds:8.2f} {expected / seconds:12.0f}")


if __name__ == "__main__":
    main()
