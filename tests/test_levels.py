"""df.orthanc.series()/studies()/patients() and the geometry report, against a real Orthanc.

The truths are independent of series_frame.py: pandas groupby on the instance frame, the
geometry make_series was asked for, and what volume() actually does on the same series.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pydicom
import pydicom.data
import pytest

import orthanc_pandas as op
from orthanc_pandas._accessors.frame import INSTANCE_ONLY, InstanceAccessor, LevelAccessor
from orthanc_pandas.errors import (
    GeometryError,
    GeometryWarning,
    InconsistentTagError,
    NotAnIndexError,
    OrthancPandasError,
    PixelDataError,
    SelectionError,
)
from orthanc_pandas.testing.synthetic import make_mosaic, make_multiframe, make_series, to_bytes

SAGITTAL = (0, 1, 0, 0, 0, -1)

#: name -> (datasets in a series of their own, whether volume() succeeds)
SERIES = {
    "axial": lambda: make_series(6, 8, 8, slice_spacing=1.25, pixel_spacing=(0.5, 0.6), seed="ax"),
    "sagittal": lambda: make_series(4, 8, 8, orientation=SAGITTAL, slice_spacing=3.0, seed="sag"),
    "gap": lambda: make_series(5, 6, 6, positions=[(0, 0, z) for z in (0, 2, 4, 8, 10)], seed="gap"),
    "duplicate": lambda: make_series(4, 6, 6, positions=[(0, 0, z) for z in (0, 2, 2, 4)], seed="dup"),
    "tilt": lambda: make_series(5, 6, 6, positions=[(0.0, 0.4 * k, 2.0 * k) for k in range(5)],
                                seed="tilt"),
    "localizer": lambda: make_series(4, 6, 6, seed="loc") + make_series(
        1, 6, 6, orientation=SAGITTAL, seed="loc2", origin=(0, 0, 50)),
    "sizes": lambda: make_series(3, 6, 6, seed="sz") + make_series(1, 8, 6, seed="sz2", origin=(0, 0, 30)),
    "spacings": lambda: make_series(3, 6, 6, seed="ps") + make_series(
        1, 6, 6, pixel_spacing=(0.9, 0.9), seed="ps2", origin=(-100, -110, 7.5)),
    "skewed": lambda: make_series(4, 6, 6, orientation=(1, 0, 0, 0.7071068, 0.7071068, 0),
                                  seed="skew"),  # row and column 45 degrees apart
    "multiframe": lambda: [make_multiframe(5, 8, 8, frame_order="descending", seed="mf")],
    "multiframe-gap": lambda: [_multiframe_gap()],
    "cine": lambda: [make_multiframe(4, 8, 8, per_frame_positions=False, seed="cine")],
    # one file, many slices: read from Orthanc's JSON (tags, the CSA header), never the file
    "mosaic": lambda: [make_mosaic(5, 4, 6, normal_sign=-1.0, slice_spacing=3.0, seed="mos")],
    "mosaic-volumes": lambda: make_mosaic(4, 4, 4, n_volumes=2, seed="fmri"),  # 2 time points
    "mosaic-no-csa": lambda: [make_mosaic(4, 4, 6, csa=False, seed="nocsa")],
    "rtdose": lambda: [pydicom.dcmread(pydicom.data.get_testdata_file("rtdose.dcm"))],
}
BROKEN = {"gap", "duplicate", "tilt", "localizer", "sizes", "spacings", "multiframe-gap", "skewed",
          "mosaic-volumes", "mosaic-no-csa"}


def _multiframe_gap():
    ds = make_multiframe(4, 8, 8, seed="mfgap")
    pos = ds.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence[0]
    pos.ImagePositionPatient = [-100, -110, 12.5]  # frame 3 at 12.5 mm instead of 7.5 mm
    return ds


def _reread(ds):
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


@pytest.fixture(scope="module")
def server(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc

    blobs = []
    for k, (name, make) in enumerate(SERIES.items()):
        datasets = [_reread(d) for d in make()]
        for ds in datasets:  # one series per name, whatever make_series chose
            ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1234.77"
            ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.1234.77.{k}"
            ds.SeriesDescription = name
            ds.PatientID = "GEO" if name != "cine" else "CINE"
            ds.ProtocolName = f"protocol {name}"  # a series-level tag the index does not store
            ds.AdmittingDiagnosesDescription = f"dx {ds.PatientID}"  # a study-level one
        for i, ds in enumerate(datasets):
            ds.ImageComments = f"{name} image {i}"  # differs between the instances of a series
        blobs += [to_bytes(d) for d in datasets]
    with LocalOrthanc(name="series-frame") as srv:
        srv.upload_bytes(blobs)
        yield srv


@pytest.fixture(scope="module")
def frame(server):
    return op.read_orthanc(server.url)


def _by_description(s: pd.DataFrame) -> pd.DataFrame:
    return s.reset_index().set_index("SeriesDescription")


# -- the frames ---------------------------------------------------------------------------------
def test_series_rows_counts_and_tags_equal_a_groupby_of_the_instances(corpus_frame):
    df = corpus_frame
    s = df.orthanc.series()
    assert list(s.index.names) == ["patient", "study", "series"]
    truth = df.groupby(level=["patient", "study", "series"], sort=False, observed=True).size()
    assert s.index.equals(truth.index)
    assert s.instance_count.tolist() == truth.tolist()
    frames = df.NumberOfFrames.fillna(1).clip(lower=1)
    assert s.slice_count.tolist() == frames.groupby(level="series", sort=False).sum().tolist()
    firsts = df.groupby(level="series", sort=False).head(1)
    for col in ("PatientName", "StudyDate", "Modality", "SeriesInstanceUID", "SeriesNumber"):
        assert s[col].dtype == df[col].dtype, col
        assert s[col].astype(object).tolist() == firsts[col].astype(object).tolist(), col
    for col in ("SOPInstanceUID", "InstanceNumber", "orthanc_file_size", "orthanc_labels"):
        assert col not in s.columns  # instance-level values do not describe a series
    assert s.attrs["orthanc"]["level"] == "series"
    assert "level" not in df.attrs["orthanc"]  # the instance frame's attrs are not changed
    assert s.attrs["orthanc"]["url"] == df.attrs["orthanc"]["url"]


def test_studies_and_patients_count_like_nunique(corpus_frame):
    df = corpus_frame
    st, pa = df.orthanc.studies(), df.orthanc.patients()
    assert list(st.index.names) == ["patient", "study"] and pa.index.name == "patient"
    by_study = df.reset_index().groupby(["patient", "study"], sort=False)
    assert st.series_count.tolist() == by_study.series.nunique().tolist()
    assert st.instance_count.tolist() == by_study.size().tolist()
    truth = by_study.Modality.agg(lambda m: "\\".join(sorted(set(m.dropna().astype(str)))))

    def text(values):
        return [v if isinstance(v, str) and v else None for v in values]
    assert text(st.modalities.astype(object)) == text(truth)
    by_patient = df.reset_index().groupby("patient", sort=False)
    assert pa.study_count.tolist() == by_patient.study.nunique().tolist()
    assert pa.instance_count.sum() == len(df)
    assert "StudyDate" in st and "SeriesDate" not in st and "StudyDate" not in pa
    assert pa.orthanc.instance_count == len(df) and st.orthanc.series_count == df.orthanc.series_count


def test_series_needs_no_server(corpus_frame):
    dead = corpus_frame.copy()
    dead.attrs = {"orthanc": {**corpus_frame.attrs["orthanc"], "url": "http://127.0.0.1:9"}}
    s = dead.orthanc.series()  # a request would fail: nothing listens on port 9
    assert len(s) == corpus_frame.orthanc.series_count


def test_slice_spacing_orientation_and_pixel_spacing_are_the_generated_ones(frame):
    s = _by_description(frame.orthanc.series(geometry=True))
    assert s.loc["axial", "slice_spacing"] == pytest.approx(1.25)
    assert s.loc["sagittal", "slice_spacing"] == pytest.approx(3.0)
    assert s.loc["gap", "slice_spacing"] == pytest.approx(2.0)  # the median step
    assert s.loc["axial", "orientation"] == "axial" and s.loc["sagittal", "orientation"] == "sagittal"
    assert (s.loc["axial", "PixelSpacing_0"], s.loc["axial", "PixelSpacing_1"]) == (0.5, 0.6)
    assert s.loc["axial", "slice_count"] == 6 and s.loc["multiframe", "slice_count"] == 5
    assert s.loc["multiframe", "instance_count"] == 1
    assert s.FrameOfReferenceUID.notna().loc["axial"]
    assert s.volume_ok.dtype == "boolean" and s.volume_problem.dtype == frame.SOPInstanceUID.dtype


def test_parquet_round_trip_keeps_rows_dtypes_attrs_and_the_accessor(frame, tmp_path):
    for level_frame in (frame.orthanc.series(geometry=True), frame.orthanc.studies(),
                        frame.orthanc.patients()):
        path = tmp_path / "f.parquet"
        level_frame.to_parquet(path)
        back = pd.read_parquet(path)
        pd.testing.assert_frame_equal(back, level_frame)
        assert back.attrs == level_frame.attrs
        assert isinstance(back.orthanc, LevelAccessor)
        assert back.orthanc.instance_count == len(frame)


# -- the way back to the instances ----------------------------------------------------------------
def test_instances_from_a_frame_and_from_the_server_are_the_same_rows(frame):
    s = frame.orthanc.series()
    pick = s[s.SeriesDescription.isin(["axial", "localizer"])]
    truth = frame[frame.SeriesDescription.isin(["axial", "localizer"])]
    local = pick.orthanc.instances(frame)
    assert local.index.equals(truth.index)
    fetched = pick.orthanc.instances()
    assert sorted(fetched.index) == sorted(truth.index)
    pd.testing.assert_series_equal(fetched.SOPInstanceUID.sort_index(), truth.SOPInstanceUID.sort_index())
    assert type(fetched.orthanc) is InstanceAccessor and "level" not in fetched.attrs["orthanc"]
    studies = frame.orthanc.studies()
    assert sorted(studies.orthanc.instances().index) == sorted(frame.index)
    patients = frame.orthanc.patients()
    one = patients[patients.PatientID == "CINE"].orthanc.instances()
    assert one.SeriesDescription.astype(str).unique().tolist() == ["cine"]


def test_volume_of_a_series_row_equals_the_instance_frames_volume(frame):
    s = _by_description(frame.orthanc.series()).reset_index().set_index(["patient", "study", "series"])
    s.attrs = frame.orthanc.series().attrs
    row = s[s.SeriesDescription == "axial"]
    expected = frame[frame.SeriesDescription == "axial"].orthanc.volume()
    for got in (row.orthanc.volume(), row.orthanc.volume(frame)):
        np.testing.assert_array_equal(got.values, expected.values)
        assert got.attrs["affine"] == expected.attrs["affine"]
    with pytest.raises(SelectionError, match="exactly one series row"):
        s.orthanc.volume()
    ok = s[s.SeriesDescription.isin(["axial", "sagittal"])]
    vols = ok.orthanc.volumes(frame)
    assert sorted(vols) == sorted(ok.index.get_level_values("series"))
    assert {v.shape for v in vols.values()} == {(6, 8, 8), (4, 8, 8)}


def test_select_on_a_series_frame_is_a_mask_on_its_columns(frame):
    s = frame.orthanc.series()
    got = s.orthanc.select(SeriesDescription=["axial", "sag*"], slice_spacing=(None, 2))
    truth = s[s.SeriesDescription.isin(["axial", "sagittal"]) & (s.slice_spacing <= 2)]
    assert got.index.equals(truth.index) and len(got) == 1
    assert got.attrs["orthanc"]["level"] == "series" and isinstance(got.orthanc, LevelAccessor)
    with pytest.raises(SelectionError, match=r"df\.orthanc\.select\(SliceThickness=\.\.\.\)\.orthanc\.series"):
        s.orthanc.select(SliceThickness=(0, 2))
    with pytest.raises(SelectionError, match=r"orthanc\.studies\(\)"):
        frame.orthanc.studies().orthanc.select(InstanceNumber=1)


def test_with_tags_on_a_series_frame_gives_the_value_its_instances_share(frame):
    s = frame.orthanc.series()
    got = s.orthanc.with_tags("ProtocolName", "0008,1080", df=frame)
    assert got.index.equals(s.index) and got.attrs == s.attrs and isinstance(got.orthanc, LevelAccessor)
    truth = "protocol " + s.SeriesDescription.astype(str)  # what each file was written with
    assert got.ProtocolName.tolist() == truth.tolist()
    assert str(got.ProtocolName.dtype) == str(frame.orthanc.with_tags("ProtocolName").ProtocolName.dtype)
    assert got.AdmittingDiagnosesDescription.tolist() == ("dx " + s.PatientID.astype(str)).tolist()
    # the rows from the server instead of df, and one instance per row: the same values
    from_server = s.orthanc.with_tags("ProtocolName")
    pd.testing.assert_frame_equal(from_server, got.drop(columns="AdmittingDiagnosesDescription"))
    sampled = s.orthanc.with_tags("ProtocolName", sample=True)
    assert sampled.ProtocolName.tolist() == truth.tolist()
    # a tag that already is a column of the level frame is not fetched again
    assert s.orthanc.with_tags("SeriesDescription") is s


def test_with_tags_on_a_level_frame_refuses_values_that_differ_within_a_row(frame):
    s = frame.orthanc.series()
    several = int((s.instance_count > 1).sum())  # the multi-frame series are one file each
    assert 0 < several < len(s)
    with pytest.raises(InconsistentTagError, match=fr"ImageComments in {several} of {len(s)} rows") as info:
        s.orthanc.with_tags("ImageComments", df=frame)
    assert "sample=True" in str(info.value) and "instances(df)" in str(info.value)
    assert isinstance(info.value, SelectionError)
    first = s.orthanc.with_tags("ImageComments", sample=True, df=frame)
    per_instance = frame.orthanc.with_tags("ImageComments").ImageComments  # the rows' first instance
    assert first.ImageComments.tolist() == per_instance.groupby(level="series", sort=False).first().tolist()
    assert all(c.startswith(f"{d} image ") for c, d in zip(first.ImageComments, s.SeriesDescription, strict=True))
    # a vector tag: PixelSpacing differs within the "spacings" series only
    with pytest.raises(InconsistentTagError, match=fr"PixelSpacing in 1 of {len(s)} rows"):
        s.orthanc.with_tags("PixelSpacing", df=frame.drop(columns=["PixelSpacing_0", "PixelSpacing_1"],
                                                          errors="ignore"))
    fine = s[s.SeriesDescription != "spacings"]
    spacing = fine.drop(columns=["PixelSpacing_0", "PixelSpacing_1"], errors="ignore") \
        .orthanc.with_tags("PixelSpacing", df=frame)
    truth = frame.orthanc.with_tags("PixelSpacing").groupby(level="series", sort=False).first()
    assert spacing.PixelSpacing_0.tolist() == truth.PixelSpacing_0.reindex(
        fine.index.get_level_values("series")).tolist()
    # at the study level, the series' protocols differ and the study's diagnosis does not
    studies = frame.orthanc.studies()
    with pytest.raises(InconsistentTagError, match=r"Not a study-level value.*ProtocolName"):
        studies.orthanc.with_tags("ProtocolName", df=frame)
    dx = studies.orthanc.with_tags("AdmittingDiagnosesDescription", df=frame)
    assert dx.AdmittingDiagnosesDescription.tolist() == ("dx " + studies.PatientID.astype(str)).tolist()
    with pytest.raises(op.UnknownTagError):  # before any request
        s.orthanc.with_tags("NoSuchTag", df=frame)


def test_warnings_point_at_the_callers_line(frame):
    gap = frame.orthanc.series().query("SeriesDescription == 'gap'")
    with pytest.warns(GeometryWarning, match="not uniform") as caught:
        gap.orthanc.volume(frame, allow_irregular=True)  # five library frames below this line
    assert [w.filename for w in caught if w.category is GeometryWarning] == [__file__]


def test_level_accessor_refuses_instance_operations_and_keeps_instance_frames_as_they_were(frame):
    s = frame.orthanc.series()
    assert type(frame.orthanc) is InstanceAccessor
    with pytest.raises(NotAnIndexError, match=r"instances\(\)\.orthanc\.unique_tag_values"):
        s.orthanc.unique_tag_values("SliceThickness")
    with pytest.raises(AttributeError):  # a level frame that lost its index is no frame
        s.reset_index().orthanc  # noqa: B018
    wrong = s.copy()
    wrong.attrs = {"orthanc": {**s.attrs["orthanc"], "level": "study"}}
    with pytest.raises(NotAnIndexError):
        wrong.orthanc  # noqa: B018
    assert len(s.orthanc.headers(frame)) == len(frame)


def test_a_level_accessor_offers_only_what_works_on_a_level_frame(frame, tmp_path):
    """No method that only raises: instance operations are absent, and say where they live."""
    s = frame.orthanc.series()
    level, inst = s.orthanc, frame.orthanc
    assert type(level) is LevelAccessor and type(inst) is InstanceAccessor
    assert not issubclass(LevelAccessor, InstanceAccessor) and not issubclass(InstanceAccessor, LevelAccessor)
    public = {n for n in dir(level) if not n.startswith("_")}
    instance_only = {"tag_values", "unique_tag_values", "tags", "sort_by", "header", "to_zip", "delete",
                     "retrieve", "send", "anonymize", "modify", "add_labels",
                     "remove_labels", "map_series", "series", "studies", "patients"}
    assert instance_only <= INSTANCE_ONLY and not public & INSTANCE_ONLY
    for name in sorted(instance_only | {"with_labels", "values", "unique"}):
        assert not hasattr(level, name), name
    for name in sorted(instance_only):
        assert hasattr(inst, name), name
        with pytest.raises(AttributeError, match=fr"{name}\(\) works on instance frames.*"
                                                  fr"frame\.orthanc\.instances\(\)\.orthanc\.{name}\("):
            getattr(level, name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        level.no_such_thing  # noqa: B018
    # everything the level accessor offers works on it (one small series row, real calls)
    one = s[s.SeriesDescription == "axial"]
    works = {
        "client": lambda a: a.client(), "counts": lambda a: a.counts, "info": lambda a: a.info,
        "url": lambda a: a.url, "level": lambda a: a.level,
        "patient_count": lambda a: a.patient_count, "study_count": lambda a: a.study_count,
        "series_count": lambda a: a.series_count, "instance_count": lambda a: a.instance_count,
        "instances": lambda a: a.instances(frame), "select": lambda a: a.select(Modality="CT"),
        "with_tags": lambda a: a.with_tags("ProtocolName", df=frame),
        "volume": lambda a: a.volume(frame), "volumes": lambda a: dict(a.volumes(frame)),
        "headers": lambda a: a.headers(frame), "download": lambda a: a.download(tmp_path, frame),
        "mask": None,  # needs a SEG: tests/test_masks.py
        "refresh": None,  # a level-first frame's: tests/test_read_levels.py
        "annotations": lambda a: a.annotations(frame),   # none here: tests/test_annotations.py
        "with_annotation": lambda a: a.with_annotation(label="x", df=frame),
        "with_protocol": lambda a: a.with_protocol(df=frame),   # tests/test_protocol.py
        "show": lambda a: repr(a.show()),
        "thumbnails": lambda a: a.thumbnails(frame, save=tmp_path / "one.png"),
    }
    assert set(works) == public
    for call in works.values():
        if call is not None:
            call(one.orthanc)


# -- geometry from the index against volume() ------------------------------------------------------
def _volume_verdict(rows) -> tuple[str, str | None]:
    """What volume() does on the rows: ("ok", None), ("geometry", message) or ("pixels", ...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GeometryWarning)
            rows.orthanc.volume()
    except GeometryError as exc:
        return "geometry", str(exc)
    except PixelDataError as exc:
        return "pixels", str(exc)
    return "ok", None


def _agree(df, series: pd.DataFrame) -> dict:
    """series id -> (index verdict, volume verdict) for every series where they differ."""
    out, seen = {}, {}
    for sid, row in series.iterrows():
        rows = df.xs(sid[2], level="series", drop_level=False)
        kind, message = _volume_verdict(rows)
        seen[kind] = seen.get(kind, 0) + 1
        index_ok, problem = bool(row.volume_ok), row.volume_problem
        if kind == "ok" and not index_ok or kind == "geometry" and problem != message:
            out[sid[2]] = (problem, kind, message)
        # no pixel data: the index knows it from Rows; an undecodable file it cannot know
        if kind == "pixels" and not index_ok and "not an image" not in problem.lower():
            out[sid[2]] = (problem, kind, message)
    return out, seen


def test_index_verdict_is_what_volume_does_on_generated_defects(frame):
    s = frame.orthanc.series(geometry=True)
    by = _by_description(s)
    assert {d for d, ok in by.volume_ok.items() if not ok} == BROKEN
    assert by.volume_problem.isna().tolist() == by.volume_ok.tolist()
    assert "not uniform" in by.loc["gap", "volume_problem"]
    assert "orthonormal" in by.loc["skewed", "volume_problem"]
    assert "multiframe-gap" in BROKEN and "not uniform" in by.loc["multiframe-gap", "volume_problem"]
    mismatches, seen = _agree(frame, s)
    assert mismatches == {}
    assert seen == {"ok": len(SERIES) - len(BROKEN), "geometry": len(BROKEN)}


def _sent(client, call):
    """(method, path without query) of every request ``client`` sends during ``call()``."""
    sent: list[tuple[str, str]] = []

    def hook(resp, *args, **kwargs):
        sent.append((resp.request.method, resp.request.path_url.split("?")[0]))

    client.session.hooks["response"].append(hook)
    try:
        return call(), sent
    finally:
        client.session.hooks["response"].remove(hook)


def test_the_geometry_report_downloads_no_file(frame):
    """Multi-frame, mosaic and RT Dose series are read from Orthanc's JSON and, for a mosaic's
    CSA header, the one element's value: never /file (nor /header-like routes)."""
    with_tags = frame.orthanc.with_tags("PixelSpacing", "Rows", "Columns", "SamplesPerPixel",
                                        "FrameOfReferenceUID", "ImageType")
    s, sent = _sent(frame.orthanc.client(), lambda: with_tags.orthanc.series(geometry=True))
    paths = [p for _, p in sent]

    def ids(*names):
        return set(with_tags[with_tags.SeriesDescription.isin(names)].index.get_level_values("instance"))

    read = ids("multiframe", "multiframe-gap", "cine", "mosaic", "mosaic-volumes", "mosaic-no-csa",
               "rtdose")
    csa = ids("mosaic", "mosaic-volumes")  # the ones with a CSA header
    assert {m for m, _ in sent} == {"GET"}
    assert not [p for p in paths if p.endswith("/file") or "/header" in p or "archive" in p]
    assert sorted(p.split("/")[2] for p in paths if p.endswith("/tags")) == sorted(read)
    contents = [p for p in paths if "/content/" in p]
    assert {p.split("/")[2] for p in contents if p.endswith("/0029-1010")} == csa
    assert all(p.endswith(("/0029-1010", "/0019-100a")) for p in contents)
    assert len(paths) == len(read) + len(contents)  # nothing else: the tags were columns


def test_rt_dose_and_mosaic_rows_carry_their_slice_count_and_spacing(frame):
    """RT Dose: NumberOfFrames slices GridFrameOffsetVector apart (pydicom on the file); a
    mosaic: its tiles at SpacingBetweenSlices; both as volume() stacks them."""
    s = _by_description(frame.orthanc.series(geometry=True))
    dose = pydicom.dcmread(pydicom.data.get_testdata_file("rtdose.dcm"), stop_before_pixels=True)
    offsets = np.asarray(dose.GridFrameOffsetVector, float)
    assert s.loc["rtdose", "slice_count"] == int(dose.NumberOfFrames) == len(offsets)
    assert s.loc["rtdose", "slice_spacing"] == pytest.approx(np.median(np.abs(np.diff(offsets))))
    assert s.loc["mosaic", "slice_count"] == 5 and s.loc["mosaic", "slice_spacing"] == pytest.approx(3.0)
    assert s.loc["mosaic-volumes", "slice_count"] == 8  # 2 time points of 4 tiles
    assert s.loc["multiframe", "slice_spacing"] == pytest.approx(2.5)
    assert pd.isna(s.loc["mosaic-no-csa", "slice_spacing"])  # refused: no tiles to count
    for name in ("rtdose", "mosaic", "multiframe"):
        vol = frame[frame.SeriesDescription == name].orthanc.volume()
        assert vol.sizes["z"] == s.loc[name, "slice_count"]
        assert vol.attrs["spacing"][0] == pytest.approx(s.loc[name, "slice_spacing"])
    plain = _by_description(frame.orthanc.series())  # no request: the index alone
    assert pd.isna(plain.loc["rtdose", "slice_spacing"]) and plain.loc["rtdose", "slice_count"] == 15


def test_tolerances_reach_the_checks(frame):
    s = _by_description(frame.orthanc.series(geometry=True, spacing_rtol=1.5, tilt_tol=0.5))
    assert s.loc["gap", "volume_ok"] and s.loc["tilt", "volume_ok"]
    assert not s.loc["duplicate", "volume_ok"]


def test_index_verdict_is_what_volume_does_on_every_corpus_series(corpus, corpus_frame):
    s = corpus_frame.orthanc.series(geometry=True)
    mismatches, seen = _agree(corpus_frame, s)
    assert mismatches == {}
    assert seen.get("ok", 0) > 10 and seen.get("pixels", 0) > 0  # the corpus has both


def test_geometry_needs_a_server_only_for_missing_tags(frame):
    dead = frame.orthanc.with_tags("PixelSpacing", "Rows", "Columns", "SamplesPerPixel",
                                   "FrameOfReferenceUID", "ImageType")
    # multi-frame and mosaic headers come from the server
    dead = dead[(dead.NumberOfFrames.fillna(1) <= 1) & ~dead.ImageType.astype(str).str.contains("MOSAIC")]
    dead.attrs = {"orthanc": {**frame.attrs["orthanc"], "url": "http://127.0.0.1:9"}}
    s = _by_description(dead.orthanc.series(geometry=True))
    assert not s.loc["gap", "volume_ok"] and s.loc["axial", "volume_ok"]
    nourl = frame.copy()
    nourl.attrs = dead.attrs
    nourl.orthanc.series()  # no geometry: no request
    with pytest.raises(OrthancPandasError):  # PixelSpacing... must be fetched
        nourl.orthanc.series(geometry=True)
