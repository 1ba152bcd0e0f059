"""gateway.py: C-ECHO, C-FIND, C-MOVE/C-GET and C-STORE between throw-away Orthancs over real DICOM."""

from __future__ import annotations

import datetime
import io

import pandas as pd
import pydicom
import pytest

import orthanc_pandas as op
from orthanc_pandas._ops import gateway
from orthanc_pandas.testing import LocalOrthanc, link
from orthanc_pandas.testing._servers import free_port
from orthanc_pandas.testing.synthetic import generate_archive


def _with_accessions(blobs):
    """Synthetic files with an AccessionNumber per study (ACC0, ACC1, ...)."""
    out, numbers = [], {}
    for blob in blobs:
        ds = pydicom.dcmread(io.BytesIO(blob))
        ds.AccessionNumber = numbers.setdefault(ds.StudyInstanceUID, f"ACC{len(numbers)}")
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def net(orthanc_available):
    """A gateway (GW), a remote archive (PACS) and a third node (THIRD), all linked."""
    gw, pacs, third = LocalOrthanc(aet="GW"), LocalOrthanc(aet="PACS"), LocalOrthanc(aet="THIRD")
    link(gw, pacs, third)
    with gw, pacs, third:
        blobs = _with_accessions(generate_archive(3, 2, 2, 3, seed="gateway"))
        pacs.upload_bytes(blobs)
        originals = {pydicom.dcmread(io.BytesIO(b)).SOPInstanceUID: b for b in blobs}
        yield {"gw": gw, "pacs": pacs, "third": third, "originals": originals,
               "remote": op.read_orthanc(pacs.url)}


def _after_file_meta(blob: bytes) -> bytes:
    """The dataset's bytes after the File Meta group (which a DICOM receiver writes anew)."""
    assert blob[128:132] == b"DICM" and blob[132:138] == b"\x02\x00\x00\x00UL"
    group_length = int.from_bytes(blob[140:144], "little")  # (0002,0000) UL, explicit VR LE
    return blob[144 + group_length:]


def _clear(server):
    for pid in server.client().get_json("/patients"):
        server.client().delete(f"/patients/{pid}")


def _reduced(ref: pd.DataFrame, level: str, columns) -> pd.DataFrame:
    levels = ["patient", "study", "series", "instance"]
    drop = levels[levels.index(level) + 1:]
    out = ref.droplevel(drop) if drop else ref
    out = out[~out.index.duplicated()][list(columns)]
    return out.sort_index()


def test_echo_answers_or_says_why(net):
    gw = net["gw"]
    assert op.echo(gw.url, "PACS") is True
    gw.add_modality("DOWN", ("NOBODY", "127.0.0.1", free_port()))
    with pytest.raises(op.DicomNetworkError, match="DOWN.*DicomModalities"):
        op.echo(gw.url, "DOWN")
    with pytest.raises(op.SelectionError, match="no modality 'NOPE'"):
        op.echo(gw.url, "NOPE")


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_query_frame_is_the_remote_index_at_that_level(net, level):
    answers = op.query(net["gw"].url, "PACS", level)
    ref = net["remote"]
    assert answers.index.names == ref.index.names
    assert set(answers.columns) <= set(ref.columns)
    expected = _reduced(ref, level, answers.columns)
    got = _reduced(answers, level, answers.columns)
    assert list(got.dtypes.astype(str)) == list(expected.dtypes.astype(str))
    pd.testing.assert_frame_equal(got, expected, check_categorical=False)
    info = answers.attrs["orthanc"]
    assert info["url"] == net["gw"].url and info["query"]["modality"] == "PACS"
    assert info["query"]["level"] == level and len(info["query"]["ids"]) == 1


def test_a_list_is_many_concurrent_queries_answered_as_one_frame(net):
    ref = net["remote"]
    wanted = ["ACC0", "ACC3", "ACC5", "ACC-missing"]
    answers = op.query(net["gw"].url, "PACS", "study", AccessionNumber=wanted, progress=False)
    assert sorted(answers.AccessionNumber) == ["ACC0", "ACC3", "ACC5"]
    assert len(answers.attrs["orthanc"]["query"]["ids"]) == 4
    assert set(answers.index.get_level_values("study")) == set(
        ref[ref.AccessionNumber.isin(wanted)].index.get_level_values("study"))
    none = op.query(net["gw"].url, "PACS", "study", AccessionNumber="ACC-missing")
    assert len(none) == 0 and none.index.names == ref.index.names
    assert none.StudyDate.dtype == ref.StudyDate.dtype


def test_criteria_forms_and_clear_errors(net):
    url, ref = net["gw"].url, net["remote"]
    dated = op.query(url, "PACS", "study", StudyDate=("20100201", None), PatientName="Synthetic*")
    expected = ref.orthanc.select(StudyDate="20100201-", PatientName="Synthetic*")
    assert set(dated.index.get_level_values("study")) == set(expected.index.get_level_values("study"))
    assert 0 < len(dated) < ref.orthanc.study_count
    # every date form select takes gives what select gives on the remote's own index
    for form in [("2010-02-01", None), "2010-02-01-", (datetime.date(2010, 2, 1), None),
                 (pd.Timestamp("2010-02-01"), pd.Timestamp("2100-01-01"))]:
        got = op.query(url, "PACS", "study", StudyDate=form, PatientName="Synthetic*")
        want = ref.orthanc.select(StudyDate=form, PatientName="Synthetic*")
        assert set(got.index.get_level_values("study")) == \
            set(want.index.get_level_values("study")) == set(dated.index.get_level_values("study")), form
    with pytest.raises(op.SelectionError, match="not a date"):
        op.query(url, "PACS", "study", StudyDate=("01/02/2010", None))
    with pytest.raises(op.SelectionError, match="function"):
        op.query(url, "PACS", "series", SeriesNumber=lambda c: c > 1)
    with pytest.raises(op.SelectionError, match="ranges only for dates"):
        op.query(url, "PACS", "series", SeriesNumber=(1, 2))
    with pytest.raises(op.SelectionError, match="missing value"):
        op.query(url, "PACS", "study", AccessionNumber=None)
    with pytest.raises(op.UnknownTagError):
        op.query(url, "PACS", "study", NotATag="x")


def test_retrieve_copies_exactly_the_selected_studies_byte_for_byte(net):
    gw = net["gw"]
    _clear(gw)
    answers = op.query(gw.url, "PACS", "study", AccessionNumber=["ACC1", "ACC4"])
    report = answers.orthanc.retrieve(progress=False)
    assert list(report.status) == ["retrieved", "retrieved"]
    here = op.read_orthanc(gw.url)
    assert set(here.index.get_level_values("study")) == set(answers.index.get_level_values("study"))
    remote = net["remote"]
    chosen = remote[remote.AccessionNumber.isin(["ACC1", "ACC4"])]
    assert len(here) == len(chosen) and report.instances.sum() == len(chosen)
    for iid, uid in zip(here.index.get_level_values("instance"), here.SOPInstanceUID, strict=True):
        mine = pydicom.dcmread(io.BytesIO(gw.client().get_bytes(f"/instances/{iid}/file")))
        theirs = pydicom.dcmread(io.BytesIO(net["originals"][uid]))
        assert _after_file_meta(gw.client().get_bytes(f"/instances/{iid}/file")) == \
            _after_file_meta(net["originals"][uid])  # byte for byte past the receiver's meta
        del mine.file_meta, theirs.file_meta
        assert mine == theirs
    again = answers.orthanc.retrieve(progress=False)
    assert list(again.status) == ["already there", "already there"]
    assert gw.client().statistics()["CountInstances"] == len(chosen)


def test_retrieve_to_a_third_node_and_send_back(net):
    gw, third = net["gw"], net["third"]
    _clear(third)
    answers = op.query(gw.url, "PACS", "series", AccessionNumber="ACC2")
    report = answers.iloc[:1].orthanc.retrieve(target="THIRD", progress=False)
    assert list(report.status) == ["retrieved"]
    there = op.read_orthanc(third.url)
    assert list(there.index.get_level_values("series").unique()) == [answers.index[0][2]]
    _clear(gw)
    sent = there.orthanc.send("GW", progress=False)
    assert set(sent.status) == {"sent"} and len(sent) == len(there)  # one row per instance
    assert gw.client().statistics()["CountInstances"] == len(there)
    _clear(gw)
    gw_peer = third.client().get_json("/peers")
    assert "GW" in gw_peer
    # GW is a modality and a peer of THIRD under the same name: modalities win (C-STORE)
    assert list(there.orthanc.send("GW", level="series", progress=False).status) == ["sent"]
    assert gw.client().statistics()["CountInstances"] == len(there)


def test_send_ships_exactly_the_rows_unless_a_level_is_named(net):
    """Data leaving the archive beyond the rows is a privacy incident: by default send() ships
    the rows' instances and nothing else; a named level ships the whole resources and the
    report counts what that adds (truth: the sender's own frame)."""
    pacs, third, remote = net["pacs"], net["third"], net["remote"]
    _clear(third)
    series = remote.index.get_level_values("series")[0]
    rows = remote[remote.index.get_level_values("series") == series].iloc[:2]
    study = rows.index.get_level_values("study")[0]
    in_study = int((remote.index.get_level_values("study") == study).sum())
    assert in_study > len(rows)  # the study holds more than the rows
    sent = rows.orthanc.send("THIRD", progress=False)
    assert list(sent.status) == ["sent", "sent"] and list(sent.level) == ["instance"] * 2
    assert set(sent.resource) == set(rows.index.get_level_values("instance"))
    there = op.read_orthanc(third.url)
    assert set(there.SOPInstanceUID) == set(rows.SOPInstanceUID)  # not one instance more
    whole = rows.orthanc.send("THIRD", level="study", progress=False)
    assert list(whole.resource) == [study] and int(whole.beyond_rows.iloc[0]) == in_study - len(rows)
    assert third.client().statistics()["CountInstances"] == in_study
    assert pacs.client().statistics()["CountInstances"] == len(remote)
    _clear(third)


def test_a_remote_that_is_down_or_refuses_fails_clearly_with_a_report(net):
    gw = net["gw"]
    _clear(gw)
    answers = op.query(gw.url, "PACS", "study", AccessionNumber=["ACC0", "ACC1"])
    with pytest.raises(op.JobError, match="2 of 2") as err:
        answers.orthanc.retrieve(target="UNKNOWN_AET", progress=False)  # PACS refuses the move
    assert list(err.value.report.status) == ["failed", "failed"]
    assert err.value.report.reason.str.len().min() > 0
    gw.add_modality("GONE", ("GONE", "127.0.0.1", free_port()))
    gone = answers.copy()
    gone.attrs = {"orthanc": {**answers.attrs["orthanc"],
                              "query": {**answers.attrs["orthanc"]["query"], "modality": "GONE"}}}
    report = gone.orthanc.retrieve(progress=False, errors="report")
    assert list(report.status) == ["failed", "failed"]
    assert report.reason.str.len().min() > 0
    assert gw.client().statistics()["CountInstances"] == 0  # nothing half-done


def test_cget_where_the_server_has_it(net):
    gw = net["gw"]
    _clear(gw)
    answers = op.query(gw.url, "PACS", "study", AccessionNumber="ACC5")
    if not gateway._has_cget(gw.client(), "PACS"):
        with pytest.raises(op.ServerCapabilityError, match="C-GET"):
            answers.orthanc.retrieve(method="get")
        return
    report = answers.orthanc.retrieve(method="get", progress=False)
    assert list(report.status) == ["retrieved"]
    assert set(op.read_orthanc(gw.url).index.get_level_values("study")) == {answers.index[0][1]}


def test_retrieve_needs_a_query_frame(net):
    with pytest.raises(op.SelectionError, match="query"):
        net["remote"].orthanc.retrieve()
