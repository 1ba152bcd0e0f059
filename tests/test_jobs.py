"""jobs.py: job status rows (pure), bounded job runs, anonymize/modify with a mapping frame."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
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
    plan = cohort.orthanc.anonymize(level="study", replace={"PatientName": "CASE^ONE"})
    assert plan.attrs["dry_run"] and set(plan.status) == {"would anonymize"}
    assert sorted(plan.resource) == sorted(cohort.index.get_level_values("study").unique())
    assert server.client().statistics()["CountInstances"] == before
    # the dry run fills the source ids down to the level from the frame
    studies = cohort.index.to_frame(index=False).drop_duplicates("study").set_index("study")
    assert plan.set_index("resource").patient.to_dict() == studies.patient.to_dict()
    assert plan.series.isna().all() and plan.new_study.isna().all()

    mapping = cohort.orthanc.anonymize(level="study", replace={"PatientName": "CASE^ONE"},
                                       confirm=True, progress=False)
    # a dry run and a real run are the same report: columns, order and dtypes
    assert list(plan.columns) == list(mapping.columns)
    pd.testing.assert_series_equal(plan.dtypes, mapping.dtypes)
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
            df.orthanc.modify(level="study", replace={"InstitutionName": "Research"}, confirm=True,
                              progress=False)
    finally:
        os.rename(str(path) + ".away", path)
    report = err.value.report
    failed = report[report.status == "failed"]
    assert list(failed.resource) == [studies[-1]] and failed.reason.iloc[0]
    assert set(report[report.status == "done"].resource) == set(studies) - {studies[-1]}

    # a dry run with done= lists the rest to do and carries the rows done over, same dtypes
    plan = df.orthanc.modify(replace={"InstitutionName": "Research"}, done=report)
    assert set(plan[plan.status == "would modify"].resource) == {studies[-1]}
    assert set(plan[plan.status == "done before"].resource) == set(studies) - {studies[-1]}
    pd.testing.assert_series_equal(plan.dtypes, report.dtypes)
    assert plan.attrs["dry_run"] is True

    again = df.orthanc.modify(replace={"InstitutionName": "Research"}, confirm=True, done=report,
                              progress=False)
    pd.testing.assert_series_equal(plan.dtypes, again.dtypes)
    assert set(again[again.status == "done"].resource) == {studies[-1]}
    assert set(again[again.status == "done before"].resource) == set(studies) - {studies[-1]}
    assert len(again) == len(df)  # one row per source instance, each done exactly once
    news = set(again.new_study)
    assert len(news) == len(studies) and not news & set(studies)
    # no half-modified copy of the failed study stays behind
    assert set(server.client().get_json("/studies")) == set(studies) | news
    tags = server.client().get_json(f"/instances/{again.new_instance.iloc[0]}/simplified-tags")
    assert tags["InstitutionName"] == "Research"


def test_anonymize_and_modify_act_on_exactly_the_rows(archive):
    """Without a level, the rows decide: whole series -> series, a study's every instance ->
    the study; part of a series is refused; a named level reports what it adds beyond the rows
    (truth: the frame of the whole archive). A dry run refuses what the real run would."""
    server, _ = archive
    df = op.read_orthanc(server.url)
    series = df.index.get_level_values("series")
    one = df[series == series[0]]
    study = one.index.get_level_values("study")[0]
    in_study = int((df.index.get_level_values("study") == study).sum())
    assert in_study > len(one)
    plan = one.orthanc.anonymize()
    assert list(plan.level) == ["series"] and list(plan.resource) == [series[0]]
    assert list(plan.beyond_rows) == ["0"]
    wide = one.orthanc.anonymize(level="study")
    assert list(wide.resource) == [study] and int(wide.beyond_rows.iloc[0]) == in_study - len(one)
    whole_study = df[df.index.get_level_values("study") == study]
    assert list(whole_study.orthanc.modify(replace={"InstitutionName": "X"}).level) == ["study"]
    with pytest.raises(op.SelectionError, match="part of 1 series"):
        one.iloc[:1].orthanc.anonymize()
    before = server.client().statistics()["CountInstances"]
    for confirm in (False, True):  # the dry run refuses what the real run would
        with pytest.raises(op.SelectionError, match="force=True"):
            one.orthanc.anonymize(replace={"PatientID": "P1"}, confirm=confirm)
        with pytest.raises(op.SelectionError, match="force=True"):
            one.orthanc.modify(replace={"StudyInstanceUID": "1.2.3"}, confirm=confirm)
    assert server.client().statistics()["CountInstances"] == before
    done = one.orthanc.anonymize(replace={"PatientID": "P1"}, force=True, confirm=True,
                                 progress=False)
    assert set(done.status) == {"done"} and set(done.new_PatientID) == {"P1"}
    for sid in done.new_study.unique():
        server.client().delete(f"/studies/{sid}")

