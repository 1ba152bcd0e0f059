"""jobs.py: job status rows (pure), bounded job runs, anonymize/modify with a mapping frame."""

from __future__ import annotations

import io
import os

import numpy as np
import pydicom
import pytest

import orthanc_pandas as op
from orthanc_pandas._ops.jobs import job_status, run_jobs
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import generate_archive


def test_job_status_rows_from_job_json():
    ok = job_status({"ID": "j", "Type": "ResourceModification", "State": "Success", "Progress": 100,
                     "Content": {"ID": "new", "FailedInstancesCount": 0}})
    assert ok["ok"] and ok["done"] and ok["content"]["ID"] == "new" and ok["reason"] == ""
    running = job_status({"ID": "j", "State": "Running", "Progress": 40})
    assert not running["done"] and not running["ok"] and running["progress"] == 40.0
    failed = job_status({"ID": "j", "State": "Failure", "ErrorDescription": "Inexistent file",
                         "ErrorDetails": "/x/y"})
    assert failed["done"] and not failed["ok"] and failed["reason"] == "Inexistent file: /x/y"
    partial = job_status({"ID": "j", "State": "Success", "Content": {"FailedInstancesCount": 2}})
    assert not partial["ok"] and "2 instance(s)" in partial["reason"]


class _Clock:
    """Stands in for the time module of jobs.py: sleeping advances it, nothing waits."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class _StuckServer:
    """A client whose jobs never finish; records polls and cancellations (with the clock)."""

    def __init__(self, clock):
        self.clock, self.polls, self.cancelled = clock, [], []

    def get_json(self, path):
        self.polls.append(path)
        return {"ID": path.rsplit("/", 1)[-1], "State": "Running", "Progress": 10}

    def post_json(self, path, body):
        self.cancelled.append((path, self.clock.now))
        return {}


def test_run_jobs_bounds_concurrency_and_times_out_with_a_status_for_every_item(monkeypatch):
    from orthanc_pandas._ops import jobs

    clock = _Clock()
    monkeypatch.setattr(jobs, "time", clock)
    client = _StuckServer(clock)
    started = []

    def submit(item):
        started.append(item)
        if item == "bad":
            raise op.OrthancHTTPError("refused", status=400, method="POST", url="u")
        return f"job-{item}"

    out = run_jobs(client, ["a", "bad", "b", "c"], submit, max_workers=2, timeout=30, poll=1)
    assert list(out) == ["a", "bad", "b", "c"]
    assert all(s["done"] and not s["ok"] for s in out.values())
    assert "refused" in out["bad"]["reason"]
    assert "job cancelled" in out["a"]["reason"] and "not started" in out["c"]["reason"]
    assert started == ["a", "bad", "b"]  # never more than 2 running: c waited, then timed out
    # the running jobs were watched until the timeout, then cancelled, not before
    assert {"/jobs/job-a", "/jobs/job-b"} == set(client.polls) and len(client.polls) >= 2 * 30
    assert sorted(p for p, _ in client.cancelled) == ["/jobs/job-a/cancel", "/jobs/job-b/cancel"]
    assert all(when >= 30 for _, when in client.cancelled)


@pytest.fixture(scope="module")
def archive(orthanc_available):
    with LocalOrthanc(config={"MaximumStorageCacheSize": 0}) as server:  # files read from disk
        blobs = list(generate_archive(2, 2, 2, 3, rows=8, cols=8, seed="jobs"))
        server.upload_bytes(blobs)
        originals = {pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID: b for b in blobs}
        yield server, originals


def _file_path(server, instance_id):
    uuid = server.client().get_json(f"/instances/{instance_id}/attachments/dicom/info")["Uuid"]
    return server.storage_dir / uuid[:2] / uuid[2:4] / uuid


def test_anonymize_dry_run_then_mapping_matches_the_new_files(archive):
    server, originals = archive
    df = op.read_orthanc(server.url)
    cohort = df[df.PatientID == df.PatientID.iloc[0]]
    before = server.client().statistics()["CountInstances"]
    plan = cohort.orthanc.anonymize(replace={"PatientName": "CASE^ONE"})
    assert plan.attrs["dry_run"] and set(plan.status) == {"would anonymize"}
    assert sorted(plan.resource) == sorted(cohort.index.get_level_values("study").unique())
    assert server.client().statistics()["CountInstances"] == before

    mapping = cohort.orthanc.anonymize(replace={"PatientName": "CASE^ONE"}, confirm=True, progress=False)
    assert set(mapping.status) == {"done"} and len(mapping) == len(cohort)
    assert set(mapping.instance) == set(cohort.index.get_level_values("instance"))
    for row in mapping.itertuples():
        new = pydicom.dcmread(io.BytesIO(server.client().get_bytes(f"/instances/{row.new_instance}/file")))
        old = pydicom.dcmread(io.BytesIO(originals[row.SOPInstanceUID]))
        assert new.SOPInstanceUID == row.new_SOPInstanceUID != old.SOPInstanceUID
        assert new.StudyInstanceUID == row.new_StudyInstanceUID != old.StudyInstanceUID
        assert new.SeriesInstanceUID == row.new_SeriesInstanceUID != old.SeriesInstanceUID
        assert new.PatientID == row.new_PatientID != old.PatientID
        assert str(new.PatientName) == "CASE^ONE"
        np.testing.assert_array_equal(new.pixel_array, old.pixel_array)
    # the originals are kept (keep_source=True), the copies are new resources
    assert server.client().statistics()["CountInstances"] == before + len(cohort)
    for sid in mapping.new_study.unique():
        server.client().delete(f"/studies/{sid}")


def test_a_failing_job_is_reported_and_the_rerun_finishes_the_rest(archive):
    server, _ = archive
    df = op.read_orthanc(server.url)
    studies = list(df.index.get_level_values("study").unique())
    victim = df.xs(studies[-1], level="study", drop_level=False)
    path = _file_path(server, victim.index[0][3])
    os.rename(path, str(path) + ".away")  # the disk loses a file
    try:
        with pytest.raises(op.JobError, match=f"1 of {len(studies)}") as err:
            df.orthanc.modify(replace={"InstitutionName": "Research"}, confirm=True, progress=False)
    finally:
        os.rename(str(path) + ".away", path)
    report = err.value.report
    failed = report[report.status == "failed"]
    assert list(failed.resource) == [studies[-1]] and failed.reason.iloc[0]
    assert set(report[report.status == "done"].resource) == set(studies) - {studies[-1]}

    again = df.orthanc.modify(replace={"InstitutionName": "Research"}, confirm=True, done=report,
                              progress=False)
    assert set(again[again.status == "done"].resource) == {studies[-1]}
    assert set(again[again.status == "done before"].resource) == set(studies) - {studies[-1]}
    assert len(again) == len(df)  # one row per source instance, each done exactly once
    news = set(again.new_study)
    assert len(news) == len(studies) and not news & set(studies)
    # no half-modified copy of the failed study stays behind
    assert set(server.client().get_json("/studies")) == set(studies) | news
    tags = server.client().get_json(f"/instances/{again.new_instance.iloc[0]}/simplified-tags")
    assert tags["InstitutionName"] == "Research"
