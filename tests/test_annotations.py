"""annotations.py: the SEG/RTSTRUCT index against independent readings.

Every SEG is read again by highdicom (``segread``: segment descriptions, ``get_source_image_uids``)
and every RTSTRUCT by plain pydicom code written here (ROI names, referenced frame of reference
and series), on generated data with known answers (highdicom SEGs over synthetic CT series,
rt-utils and hand-built RTSTRUCTs, a SEG and an RTSTRUCT that name only source instances, a
source that is not on the server, a frame of reference that differs) and on the SEG and
RTSTRUCT files of pydicom's test data. The suite runs on each Orthanc (1.10 and 1.13).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

import orthanc_pandas as op
from orthanc_pandas._frame.annotations import (
    ANNOTATION_COLUMNS,
    RTSTRUCT_SOP_CLASS,
    annotation_frame,
    annotation_records,
)
from orthanc_pandas.errors import SelectionError
from orthanc_pandas.testing.synthetic import make_series, to_bytes, uid

hd = pytest.importorskip("highdicom")

# rt-utils' save() sets the deprecated FileDataset.is_little_endian / is_implicit_VR
pytestmark = pytest.mark.filterwarnings("ignore:'FileDataset.is_:DeprecationWarning")

STUDY = uid("study", "annotations")
NZ, NY, NX = 5, 20, 16


def _ct(name: str, **kw) -> list[Dataset]:
    base = dict(seed=f"ann-{name}", study_uid=STUDY, pixel_spacing=(0.8, 0.8), slice_spacing=2.0,
                series_description=name, patient_id="ANN0001")
    return make_series(NZ, NY, NX, **{**base, **kw})


def _code(value, scheme, meaning):
    return hd.sr.CodedConcept(value, scheme, meaning)


def _seg(ct, segments, *, name: str, algorithm: str | None = None) -> Dataset:
    """A binary SEG of ``ct``: ``segments`` = [(label, category code, type code)]."""
    masks = np.zeros((NZ, NY, NX, len(segments)), dtype=np.uint8)
    for k in range(len(segments)):
        masks[1 + k % 3, 2 + k:9 + k, 3:10, k] = 1
    ident = (hd.AlgorithmIdentificationSequence(
        name=algorithm, family=_code("123109", "DCM", "Artificial Intelligence"), version="1.0")
        if algorithm else None)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=k + 1, segment_label=label, segmented_property_category=_code(*cat),
        segmented_property_type=_code(*typ),
        algorithm_type="AUTOMATIC" if algorithm else "MANUAL", algorithm_identification=ident)
        for k, (label, cat, typ) in enumerate(segments)]
    return hd.seg.Segmentation(
        source_images=ct, pixel_array=masks, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=uid("ann-seg-series", name),
        series_number=70, sop_instance_uid=uid("ann-seg-sop", name), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="1",
        device_serial_number="1")


ORGAN = ("123037004", "SCT", "Anatomical Structure")
LIVER = ("10200004", "SCT", "Liver")
SPLEEN = ("78961009", "SCT", "Spleen")
TUMOR = ("108369006", "SCT", "Neoplasm")
MORPH = ("49755003", "SCT", "Morphologically Altered Structure")


def _rtstruct(ct, rois, *, name: str, series_refs: bool, contour_refs: bool = True,
              frame: str | None = None) -> Dataset:
    """An RTSTRUCT built with pydicom: ``rois`` = [(name, interpreted type, slice indices)].

    ``series_refs``: the frame of reference item names the series (RTReferencedStudySequence);
    else only the contours' ContourImageSequence names images. ``frame`` overrides the ROIs'
    and the structure set's frame of reference.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = uid("ann-rt-sop", name)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, kw, getattr(ct[0], kw))
    ds.SeriesInstanceUID = uid("ann-rt-series", name)
    ds.SeriesNumber = 80
    ds.StructureSetLabel = name
    frame = frame or ct[0].FrameOfReferenceUID
    ref = Dataset()
    ref.FrameOfReferenceUID = frame
    if series_refs:
        study, series = Dataset(), Dataset()
        study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        study.ReferencedSOPInstanceUID = ct[0].StudyInstanceUID
        series.SeriesInstanceUID = ct[0].SeriesInstanceUID
        study.RTReferencedSeriesSequence = Sequence([series])
        ref.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for n, (roi_name, kind, slices) in enumerate(rois, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = n, roi_name, frame
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = n
        rc.ContourSequence = Sequence()
        for k in slices:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            z = float(ct[k].ImagePositionPatient[2])
            c.ContourData = [-90.0, -100.0, z, -85.0, -100.0, z, -85.0, -95.0, z]
            c.NumberOfContourPoints = 3
            if contour_refs:
                img = Dataset()
                img.ReferencedSOPClassUID = ct[k].SOPClassUID
                img.ReferencedSOPInstanceUID = ct[k].SOPInstanceUID
                c.ContourImageSequence = Sequence([img])
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = n, n
        obs.RTROIInterpretedType, obs.ROIInterpreter = kind, ""
        ds.RTROIObservationsSequence.append(obs)
    return ds


def _rt_utils(ct, tmp_path) -> Dataset:
    rt_utils = pytest.importorskip("rt_utils")
    folder = tmp_path / "rtutils-ct"
    folder.mkdir()
    for k, d in enumerate(ct):
        (folder / f"{k}.dcm").write_bytes(to_bytes(d))
    builder = rt_utils.RTStructBuilder.create_new(dicom_series_path=str(folder))
    m = np.zeros((NY, NX, NZ), dtype=bool)
    m[4:12, 3:9, 1:4] = True
    builder.add_roi(mask=m, name="GTV")
    m2 = np.zeros_like(m)
    m2[10:16, 8:14, 2] = True
    builder.add_roi(mask=m2, name="Lung_L")
    path = tmp_path / "rtutils.dcm"
    builder.save(str(path))
    return pydicom.dcmread(path)


def _testdata() -> dict[str, str]:
    """pydicom's SEG (pydicom-data's multi-frame liver.dcm, else the one-frame one) and RTSTRUCT."""
    from pydicom.data import get_testdata_file

    out = {}
    for name in ("liver.dcm", "liver_1frame.dcm"):
        try:
            path = get_testdata_file(name)
        except Exception:  # pydicom-data absent: the one-frame file ships with pydicom
            path = None
        if path:
            out["seg"] = path
            break
    out["rt"] = get_testdata_file("rtstruct.dcm")
    return out


@pytest.fixture(scope="module")
def annotated(orthanc_available, tmp_path_factory):
    from orthanc_pandas.testing import LocalOrthanc

    tmp = tmp_path_factory.mktemp("annotations")
    cts = {name: _ct(name, series_number=k + 1) for k, name in enumerate(
        ["ct-seg", "ct-seg-instances", "ct-rtutils", "ct-rt", "ct-plain"])}
    absent = _ct("ct-absent", series_number=9)          # never uploaded
    objects = {
        "seg": _seg(cts["ct-seg"], [("Liver", ORGAN, LIVER), ("Spleen", ORGAN, SPLEEN)],
                    name="seg", algorithm="unet"),
        "seg-instances": _seg(cts["ct-seg-instances"], [("liver tumor", MORPH, TUMOR)],
                              name="seg-instances"),
        "seg-absent": _seg(absent, [("liver", ORGAN, LIVER)], name="seg-absent"),
        "rtutils": _rt_utils(cts["ct-rtutils"], tmp),
        "rt-instances": _rtstruct(cts["ct-rt"], [("Liver", "ORGAN", [1, 2]), ("ptv", "PTV", [2])],
                                  name="rt-instances", series_refs=False),
        "rt-other-frame": _rtstruct(cts["ct-rt"], [("liver", "ORGAN", [3])], name="rt-other-frame",
                                    series_refs=False, frame=uid("another frame")),
    }
    # a SEG that names only its source instances (as older writers do): no ReferencedSeriesSequence
    del objects["seg-instances"].ReferencedSeriesSequence
    files = {k: to_bytes(v) for k, v in objects.items()}
    data = _testdata()
    with LocalOrthanc(name="annotations") as server:
        server.upload_bytes([to_bytes(d) for ct in cts.values() for d in ct] + list(files.values()))
        server.upload([data["seg"], data["rt"]])
        df = op.read_orthanc(server.url)
        yield dict(server=server, df=df, cts=cts, absent=absent, files=files, testdata=data,
                   ann=df.orthanc.annotations())


def _series_id(df, series_uid):
    hit = df[df.SeriesInstanceUID.astype("string") == str(series_uid)]
    return hit.index.get_level_values("series")[0] if len(hit) else None


def _rows(ann, sop_uid):
    return ann[ann.SOPInstanceUID == str(sop_uid)].sort_values("number")


def _highdicom_expected(raw: bytes) -> list[dict]:
    """What highdicom reads in a SEG, as rows of our table."""
    seg = hd.seg.segread(io.BytesIO(raw))
    series = list(dict.fromkeys(s for _st, s, _sop in seg.get_source_image_uids()))
    out = []
    for n in seg.segment_numbers:
        d = seg.get_segment_description(n)
        cat, typ = d.segmented_property_category, d.segmented_property_type
        ident = d.algorithm_identification
        out.append({"number": n, "label": d.segment_label,
                    "category_code": cat.value, "category_scheme": cat.scheme_designator,
                    "category_meaning": cat.meaning, "type_code": typ.value,
                    "type_scheme": typ.scheme_designator, "type_meaning": typ.meaning,
                    "algorithm_type": d.algorithm_type.value,
                    "algorithm_name": getattr(d, "SegmentAlgorithmName", None)
                    or (ident[0].AlgorithmName if ident else None),
                    "frame_of_reference_uid": getattr(seg, "FrameOfReferenceUID", None),
                    "source_series_uid": series[0] if series else None})
    return out


def _pydicom_expected(ds: Dataset) -> list[dict]:
    """What plain pydicom reads in an RTSTRUCT, as rows of our table (series per frame)."""
    series_of = {}
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        for st in ref.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                series_of.setdefault(ref.FrameOfReferenceUID, se.SeriesInstanceUID)
    kinds = {int(o.ReferencedROINumber): o.get("RTROIInterpretedType") or None
             for o in ds.get("RTROIObservationsSequence", [])}
    return [{"number": int(r.ROINumber), "label": r.ROIName,
             "frame_of_reference_uid": r.ReferencedFrameOfReferenceUID,
             "roi_interpreted_type": kinds.get(int(r.ROINumber)),
             "source_series_uid": series_of.get(r.ReferencedFrameOfReferenceUID)}
            for r in ds.StructureSetROISequence]


def _check(rows: pd.DataFrame, expected: list[dict]) -> None:
    assert len(rows) == len(expected)
    for (_, row), exp in zip(rows.iterrows(), expected, strict=True):
        for key, value in exp.items():
            got = row[key]
            got = None if pd.isna(got) else got
            assert got == (str(value) if isinstance(value, pydicom.uid.UID) else value), (key, got, value)


@pytest.mark.parametrize("name", ["seg", "seg-absent"])
def test_seg_rows_equal_highdicom(annotated, name):
    raw = annotated["files"][name]
    rows = _rows(annotated["ann"], pydicom.dcmread(io.BytesIO(raw)).SOPInstanceUID)
    _check(rows, _highdicom_expected(raw))
    assert set(rows.Modality) == {"SEG"}


def test_seg_source_series_and_frame_of_reference(annotated):
    df, ann, ct = annotated["df"], annotated["ann"], annotated["cts"]["ct-seg"]
    rows = _rows(ann, annotated["files"] and pydicom.dcmread(io.BytesIO(annotated["files"]["seg"])).SOPInstanceUID)
    sid = _series_id(df, ct[0].SeriesInstanceUID)
    assert set(rows.source_series) == {sid}
    assert set(rows.source_study) == {df.index.get_level_values("study")[
        df.index.get_level_values("series") == sid][0]}
    assert set(rows.source_frame_of_reference_uid) == {ct[0].FrameOfReferenceUID}
    assert rows.frame_of_reference_matches.tolist() == [True, True]
    assert rows.algorithm_name.tolist() == ["unet", "unet"]
    # the annotation's own ids are those of its row in the frame
    own = df[df.SOPInstanceUID.astype("string") == rows.SOPInstanceUID.iloc[0]].index[0]
    assert tuple(rows.iloc[0][["annotation_patient", "annotation_study", "annotation_series",
                               "annotation_instance"]]) == own


def test_source_not_on_the_server_keeps_its_uid(annotated):
    rows = _rows(annotated["ann"], uid("ann-seg-sop", "seg-absent"))
    assert rows.source_series_uid.tolist() == [annotated["absent"][0].SeriesInstanceUID]
    assert rows.source_series.isna().all() and rows.frame_of_reference_matches.isna().all()


def test_seg_naming_only_instances_is_resolved_through_them(annotated):
    df, ct = annotated["df"], annotated["cts"]["ct-seg-instances"]
    raw = annotated["files"]["seg-instances"]
    assert "ReferencedSeriesSequence" not in pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    rows = _rows(annotated["ann"], uid("ann-seg-sop", "seg-instances"))
    assert rows.label.tolist() == ["liver tumor"]
    assert rows.source_instance_uid.iloc[0] in {str(d.SOPInstanceUID) for d in ct}
    assert rows.source_series_uid.tolist() == [ct[0].SeriesInstanceUID]
    assert rows.source_series.tolist() == [_series_id(df, ct[0].SeriesInstanceUID)]
    assert rows.type_code.tolist() == ["108369006"] and rows.category_meaning.tolist() == [MORPH[2]]


@pytest.mark.parametrize("name", ["rtutils", "rt-instances", "rt-other-frame"])
def test_rtstruct_rows_equal_pydicom(annotated, name):
    ds = pydicom.dcmread(io.BytesIO(annotated["files"][name]))
    rows = _rows(annotated["ann"], ds.SOPInstanceUID)
    expected = _pydicom_expected(ds)
    if name != "rtutils":  # these name no series: it comes from their contours' images
        for e in expected:
            assert e.pop("source_series_uid") is None
    _check(rows, expected)
    assert set(rows.Modality) == {"RTSTRUCT"} and rows.category_code.isna().all()


def test_rtstruct_sources_and_frame_match(annotated):
    df, ann, cts = annotated["df"], annotated["ann"], annotated["cts"]
    rt_utils = _rows(ann, pydicom.dcmread(io.BytesIO(annotated["files"]["rtutils"])).SOPInstanceUID)
    assert rt_utils.label.tolist() == ["GTV", "Lung_L"]
    assert set(rt_utils.source_series) == {_series_id(df, cts["ct-rtutils"][0].SeriesInstanceUID)}
    assert rt_utils.frame_of_reference_matches.tolist() == [True, True]
    by_images = _rows(ann, uid("ann-rt-sop", "rt-instances"))
    sid = _series_id(df, cts["ct-rt"][0].SeriesInstanceUID)
    assert by_images.source_series.tolist() == [sid, sid]
    assert by_images.source_series_uid.tolist() == [cts["ct-rt"][0].SeriesInstanceUID] * 2
    assert by_images.roi_interpreted_type.tolist() == ["ORGAN", "PTV"]
    assert by_images.frame_of_reference_matches.tolist() == [True, True]
    other = _rows(ann, uid("ann-rt-sop", "rt-other-frame"))
    assert other.source_series.tolist() == [sid]
    assert other.frame_of_reference_matches.tolist() == [False]
    assert other.source_frame_of_reference_uid.tolist() == [cts["ct-rt"][0].FrameOfReferenceUID]


def test_pydicom_testdata_seg_and_rtstruct(annotated):
    """liver.dcm read by highdicom, rtstruct.dcm by pydicom: their sources are not on the
    server, so the UIDs are kept and the Orthanc ids are missing."""
    ann, data = annotated["ann"], annotated["testdata"]
    with open(data["seg"], "rb") as f:
        raw = f.read()
    rows = _rows(ann, pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID)
    _check(rows, _highdicom_expected(raw))
    assert rows.label.tolist() == ["Liver"] and rows.algorithm_name.tolist() == ["SlicerEditor"]
    rt = pydicom.dcmread(data["rt"], force=True)
    rows = _rows(ann, rt.SOPInstanceUID)
    _check(rows, _pydicom_expected(rt))
    assert rows.label.tolist() == ["patient", "Isocenter 1", "Isocenter 2"]
    assert rows.roi_interpreted_type.tolist() == ["EXTERNAL", "ISOCENTER", "ISOCENTER"]
    assert rows.source_series.isna().all()


def test_every_annotation_is_there_once(annotated):
    ann = annotated["ann"]
    assert list(ann.columns) == list(ANNOTATION_COLUMNS)
    assert ann.groupby("Modality").size().to_dict() == {"RTSTRUCT": 2 + 2 + 1 + 3, "SEG": 2 + 1 + 1 + 1}
    assert not ann.duplicated(["annotation_instance", "number"]).any()
    assert ann.attrs["orthanc"]["table"] == "annotations"
    assert ann.attrs["orthanc"]["url"] == annotated["df"].attrs["orthanc"]["url"]
    with pytest.raises(AttributeError):
        ann.orthanc  # noqa: B018  (not an Orthanc frame)


def test_parquet_round_trip_is_exact(annotated, tmp_path):
    ann = annotated["ann"]
    ann.to_parquet(tmp_path / "ann.parquet")
    back = pd.read_parquet(tmp_path / "ann.parquet")
    pd.testing.assert_frame_equal(back, ann)
    assert back.attrs == ann.attrs
    assert not any(ann[c].dtype == object for c in ann.columns)


def test_level_frames_give_the_same_table(annotated):
    df, ann = annotated["df"], annotated["ann"]
    key = ["annotation_instance", "number"]

    def same(other):
        a = ann.sort_values(key).reset_index(drop=True)
        b = other.sort_values(key).reset_index(drop=True)
        b.attrs = a.attrs
        pd.testing.assert_frame_equal(a, b)

    same(df.orthanc.series().orthanc.annotations(df))
    url = annotated["server"].url
    for level in ("series", "study", "patient"):
        same(op.read_orthanc(url, level=level).orthanc.annotations())   # listed on the server
    same(df.orthanc.studies().orthanc.annotations())
    # a frame without its SEG/RTSTRUCT rows has no annotation
    none = df[df.Modality == "CT"].orthanc.annotations()
    assert len(none) == 0 and list(none.columns) == list(ANNOTATION_COLUMNS)


def test_with_annotation_gives_the_annotated_series(annotated):
    df, cts = annotated["df"], annotated["cts"]
    sids = {name: _series_id(df, ct[0].SeriesInstanceUID) for name, ct in cts.items()}
    livers = df.orthanc.with_annotation(label="liver*")
    got = set(livers.index.get_level_values("series"))
    # "Liver" (seg), "liver tumor" (seg-instances), "Liver" and "liver" (rt-instances,
    # rt-other-frame); liver.dcm's and seg-absent's sources are not on the server
    assert got == {sids["ct-seg"], sids["ct-seg-instances"], sids["ct-rt"]}
    assert len(livers) == 3 * NZ and livers.attrs == df.attrs
    series = df.orthanc.series()
    by_code = series.orthanc.with_annotation(type_code=LIVER[0], df=df)
    assert set(by_code.index.get_level_values("series")) == {sids["ct-seg"]}
    ann = annotated["ann"]
    ct_only = series[series.Modality == "CT"]
    assert set(ct_only.orthanc.with_annotation(label="LIVER", case_sensitive=True,
                                               annotations=ann).index) == set()
    assert len(ct_only.orthanc.with_annotation(label=["gtv", "ptv"], annotations=ann)) == 2
    assert len(df.orthanc.studies().orthanc.with_annotation(Modality="RTSTRUCT", annotations=ann)) == 1
    with pytest.raises(SelectionError, match="not a column of the annotation table"):
        df.orthanc.with_annotation(organ="liver", annotations=ann)
    with pytest.raises(SelectionError, match="at least one criterion"):
        df.orthanc.with_annotation(annotations=ann)


# -- the parser alone, without a server ---------------------------------------------------------
def test_records_of_every_pydicom_seg_equal_highdicom():
    from pydicom.data import get_testdata_files

    paths = sorted(get_testdata_files("liver*.dcm"))
    assert paths
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read()
        rows = annotation_frame(annotation_records(pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)))
        little = raw if "expb" not in path else open(path.replace("_expb", ""), "rb").read()
        # highdicom parses little endian files only: a big endian one must read as its twin
        _check(rows, _highdicom_expected(little))


def test_rtstruct_with_one_series_and_no_frame_match_takes_that_series():
    ct = _ct("pure")
    ds = _rtstruct(ct, [("a", "ORGAN", [1])], name="pure", series_refs=True, contour_refs=False)
    ds.StructureSetROISequence[0].ReferencedFrameOfReferenceUID = "1.2.3"   # names no item
    rec = annotation_records(ds)[0]
    assert rec["source_series_uid"] == ct[0].SeriesInstanceUID and rec["source_instance_uid"] is None
    assert annotation_records(Dataset()) == []
