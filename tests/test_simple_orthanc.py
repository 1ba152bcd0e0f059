"""Every example of simple-orthanc's description, run against a real Orthanc.

The server holds pydicom's test files plus patient ``JaneDoe`` with a CT series ``ct_scan``
(the demo's data). Each result is checked against the server's own answers.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings

import numpy as np
import pydicom
import pytest

from orthanc_pandas import Orthanc
from orthanc_pandas.errors import ParseWarning
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.samples import load_samples
from orthanc_pandas.testing.synthetic import make_series, to_bytes

USER, PASSWORD = "orthanc_user", "orthanc_password"


@pytest.fixture(scope="module")
def server(orthanc_available):
    with LocalOrthanc(users={USER: PASSWORD}) as s:
        load_samples(s)
        yield s


@pytest.fixture
def orthanc(server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        return Orthanc(host="127.0.0.1", port=server.port, username=USER, password=PASSWORD)


def find(client, level="Instance", **query):
    return set(client.post_json("/tools/find", {"Level": level, "Query": query}))


def test_counts_equal_statistics(server, orthanc):
    stats = server.client().statistics()
    assert orthanc.patient_count == stats["CountPatients"]
    assert orthanc.study_count == stats["CountStudies"]
    assert orthanc.series_count == stats["CountSeries"]
    assert orthanc.instance_count == stats["CountInstances"]


def test_tag_attributes_singular_and_plural(server, orthanc):
    patients = server.client().get_json("/patients", params={"expand": ""})
    names = sorted({p["MainDicomTags"].get("PatientName", "").rstrip() for p in patients} - {""})
    assert orthanc.PatientNames == names
    assert orthanc.PatientName == names
    series = server.client().get_json("/series", params={"expand": ""})
    descriptions = sorted({s["MainDicomTags"].get("SeriesDescription", "").rstrip() for s in series} - {""})
    assert orthanc.SeriesDescriptions == descriptions
    with pytest.raises(AttributeError):
        orthanc.NotADicomKeywords  # noqa: B018


def test_select_selection_reset(server, orthanc):
    client = server.client()
    assert orthanc.select(PatientName="JaneDoe", StudyDescription="CT Examination") is orthanc
    expected = find(client, PatientName="JaneDoe", StudyDescription="CT Examination")
    assert set(orthanc.df.index.get_level_values("instance")) == expected
    assert orthanc.selection == {"PatientName": "JaneDoe", "StudyDescription": "CT Examination"}
    assert orthanc.PatientName == ["JaneDoe"]
    assert orthanc.SeriesDescriptions == ["ct_scan", "scout"]
    assert orthanc.instance_count == len(expected)
    orthanc.select(SeriesDescription="ct_scan")
    assert orthanc.instance_count == len(find(client, PatientName="JaneDoe", SeriesDescription="ct_scan"))
    orthanc.reset("SeriesDescription")
    assert orthanc.instance_count == len(expected)
    orthanc.reset()
    assert orthanc.selection == {}
    assert orthanc.instance_count == client.statistics()["CountInstances"]


def test_sort_by_really_sorts_and_headers_follow(orthanc):
    orthanc.select(PatientName="JaneDoe", SeriesDescription="ct_scan")
    orthanc.sort_by("SliceLocation")
    locations = orthanc.SliceLocation
    assert locations == sorted(locations) and len(locations) == 40
    orthanc.sort_by("InstanceNumber", order="descending")
    numbers = orthanc.get_dicom_tag("InstanceNumber", unique=False)
    assert numbers == sorted(numbers, reverse=True)
    headers = orthanc.get_headers()
    assert [int(h.InstanceNumber) for h in headers] == numbers
    with pytest.raises(ValueError):
        orthanc.sort_by("InstanceNumber", order="sideways")


def test_headers(server, orthanc):
    orthanc.select(PatientName="JaneDoe", SeriesDescription="ct_scan", InstanceNumber=7)
    header = orthanc.get_header()
    iid = orthanc.df.index.get_level_values("instance")[0]
    stored = pydicom.dcmread(io.BytesIO(server.client().get_bytes(f"/instances/{iid}/file")),
                             stop_before_pixels=True)
    assert header == stored and "PixelData" not in header
    orthanc.reset("InstanceNumber")
    assert len(orthanc.get_headers()) == 40
    assert orthanc.get_headers(index=0, silent=False).SOPInstanceUID == \
        orthanc.get_dicom_tag("SOPInstanceUID", unique=False)[0]


def test_get_array_and_volume(orthanc):
    image = orthanc.select(PatientName="JaneDoe", SeriesDescription="ct_scan").get_array()
    assert image.shape == (40, 128, 128, 1) and image.dtype == np.float32
    headers = sorted(orthanc.get_headers(), key=lambda h: float(h.ImagePositionPatient[2]))
    vol = orthanc.get_volume()
    assert [str(u) for u in vol["sop_instance_uid"].values] == [h.SOPInstanceUID for h in headers]
    assert np.array_equal(image[..., 0], vol.values)


def test_one_liner(server):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        image = Orthanc(port=server.port, username=USER, password=PASSWORD).select(
            PatientName="JaneDoe", SeriesDescription="ct_scan").get_array()
    assert image.shape[0] == 40


def test_get_dicom_tag_and_all_tags(orthanc):
    names = orthanc.get_dicom_tag("PatientName", unique=False)
    assert len(names) == orthanc.instance_count
    assert orthanc.get_dicom_tag("PatientName", unique=True) == orthanc.PatientNames
    # the seed: "orthanc.get_dicom_tag('PatientName', unique=False) will give a list of
    # PatientNames", i.e. unique values unless unique=False is asked for
    assert orthanc.get_dicom_tag("PatientName") == orthanc.PatientNames
    assert set(orthanc.get_all_dicom_tags()) == set(orthanc.interface.main_dicom_tags)
    orthanc.select(PatientName="JaneDoe", SeriesDescription="ct_scan")
    all_tags = orthanc.get_all_dicom_tags()
    assert {"SliceThickness", "PixelSpacing", "RescaleIntercept", "PatientName"} <= set(all_tags)
    assert "PatientName" in orthanc.interface.main_dicom_tags


def test_download(server, orthanc, tmp_path, monkeypatch):
    orthanc.select(PatientName="JaneDoe", SeriesDescription="scout")
    files = orthanc.download(tmp_path)
    assert len(files) == 2
    client = server.client()
    stored = {hashlib.sha256(client.get_bytes(f"/instances/{i}/file")).hexdigest()
              for i in orthanc.df.index.get_level_values("instance")}
    assert {hashlib.sha256(open(f, "rb").read()).hexdigest() for f in files} == stored
    # without a folder, files go to a new folder in the system temp dir: tmp_path here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-temp"))
    (tmp_path / "system-temp").mkdir()
    default = orthanc.download()
    assert len(default) == 2 and all("orthanc-pandas" in f for f in default)


def test_upload_refresh_delete(orthanc_available, tmp_path):
    with LocalOrthanc() as s, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = make_series(3, 8, 8, patient_name="Up^Load", series_description="first", seed="u1")
        two = make_series(2, 8, 8, patient_name="Up^Load", series_description="second",
                          study_uid=one[0].StudyInstanceUID, series_number=2, seed="u2")
        (tmp_path / "sub").mkdir()
        paths = []
        for k, ds in enumerate(one):
            p = tmp_path / f"a{k}.dcm"
            p.write_bytes(to_bytes(ds))
            paths.append(p)
        for k, ds in enumerate(two):
            (tmp_path / "sub" / f"b{k}.dcm").write_bytes(to_bytes(ds))
        (tmp_path / "notes.txt").write_text("not dicom")
        orthanc = Orthanc(port=s.port)
        assert orthanc.instance_count == 0
        orthanc.upload_file(str(paths[0]), test_dicom=True)
        orthanc.upload_file([str(p) for p in paths[1:]])
        orthanc.refresh()
        assert orthanc.instance_count == 3
        orthanc.select(InstanceNumber=1).sort_by("InstanceNumber", order="descending")
        assert orthanc.instance_count == 1
        orthanc.upload_folder(str(tmp_path), test_dicom=True, recursive=False)  # sub/ not included
        orthanc.refresh()  # as in simple-orthanc: the selection is cleared, the whole server shown
        assert orthanc.selection == {} and orthanc.instance_count == 3
        assert orthanc.get_dicom_tag("InstanceNumber", unique=False) == [1, 2, 3]
        orthanc.upload_folder(str(tmp_path), recursive=True)
        orthanc.refresh()
        assert orthanc.instance_count == 5 == s.client().statistics()["CountInstances"]
        orthanc.select(SeriesDescription="second").delete_selected_series()
        assert s.client().statistics()["CountInstances"] == 3
        # the seed clears the selection after a deletion: the whole (remaining) server
        assert orthanc.selection == {} and orthanc.instance_count == 3
        assert orthanc.SeriesDescriptions == ["first"]
        orthanc.select(SeriesDescription="first")
        with pytest.warns(UserWarning, match="cannot be undone"):
            orthanc.delete_selected_patient()
        assert s.client().statistics()["CountPatients"] == 0
