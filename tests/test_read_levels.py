"""read_orthanc(url, level=...): level frames read level-first, against the frames of a full read.

The truth is ``read_orthanc(url).orthanc.series()`` (``.studies()``, ``.patients()``) on the
same server: equal on every column a level-first frame keeps, with no instance list requested.
"""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pandas as pd
import pydicom
import pytest

import orthanc_pandas as op
from orthanc_pandas._accessors.frame import InstanceAccessor, LevelAccessor
from orthanc_pandas.errors import NotAnIndexError, ParseWarning, RefreshWarning
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import make_multiframe, make_series, to_bytes

METHODS = {"series": "series", "study": "studies", "patient": "patients"}

#: the series aggregates taken from the series' stored value (docs/series.md)
FROM_SERIES = ["orientation", *(f"ImageOrientationPatient_{i}" for i in range(6)),
               "PixelSpacing_0", "PixelSpacing_1", "FrameOfReferenceUID"]

#: attrs that say how and when a frame was read
READ_KEYS = {"read_at", "last_change", "read_level", "missing_columns"}


class Recorder:
    """Every request a client sends: (method, path, JSON body or None)."""

    def __init__(self, client):
        self.sent: list[tuple[str, str, dict | None]] = []
        client.session.hooks["response"].append(self._hook)

    def _hook(self, resp, *args, **kwargs):
        req = resp.request
        body = json.loads(req.body) if req.body and req.headers.get("Content-Type") == "application/json" else None
        path = req.path_url.split("?")[0]
        self.sent.append((req.method, path, body))

    def instance_lists(self) -> list:
        """Requests that list instances: GET /instances[?...], or a find/count at instance level."""
        return [(m, p, b) for m, p, b in self.sent
                if (m == "GET" and p.rstrip("/").endswith("/instances"))
                or (b or {}).get("Level", "").lower() == "instance"]


def _quiet_read(url, **kw):
    with warnings.catch_warnings():  # some corpus files hold invalid values on purpose
        warnings.simplefilter("ignore", ParseWarning)
        return op.read_orthanc(url, **kw)


def _compare(first: pd.DataFrame, truth: pd.DataFrame, instances: pd.DataFrame, level: str) -> None:
    """``first`` (read level-first) against ``truth`` (the level frame of a full read)."""
    assert list(first.columns) == list(truth.columns)
    missing = first.attrs["orthanc"]["missing_columns"]
    assert missing == (["slice_count", "slice_spacing"] if level == "series" else [])
    for col in missing:  # typed as in .series(), all missing
        assert first[col].dtype == truth[col].dtype and first[col].isna().all(), col
    differ = set(missing) | (set(FROM_SERIES) if level == "series" else set())
    kept = [c for c in truth.columns if c not in differ]
    pd.testing.assert_frame_equal(first[kept], truth[kept])
    a, b = dict(first.attrs["orthanc"]), dict(truth.attrs["orthanc"])
    assert {k: v for k, v in a.items() if k not in READ_KEYS} == \
        {k: v for k, v in b.items() if k not in READ_KEYS}
    if level != "series":
        return
    # the series' stored orientation: .series()'s value wherever the instances share one
    iop = [f"ImageOrientationPatient_{i}" for i in range(6)]
    shared = instances[iop].astype("float64").round(6).groupby(
        level="series", sort=False).nunique(dropna=False).max(axis=1) <= 1
    same = first.index.get_level_values("series").isin(shared[shared].index)
    for col in [c for c in FROM_SERIES if c in truth.columns]:
        assert first[col].dtype == truth[col].dtype or col == "orientation", col
        left = first.loc[same, col].astype(object).where(first.loc[same, col].notna(), None)
        right = truth.loc[same, col].astype(object).where(truth.loc[same, col].notna(), None)
        assert left.tolist() == right.tolist(), col


# -- the corpus: pydicom's test files ---------------------------------------------------------
@pytest.mark.parametrize("level", ["series", "study", "patient"])
def test_level_first_equals_the_level_frame_of_a_full_read_without_listing_instances(
        corpus, corpus_frame, level):
    client = op.OrthancClient(corpus.url)
    log = Recorder(client)
    first = _quiet_read(client, level=level)
    truth = getattr(corpus_frame.orthanc, METHODS[level])()
    _compare(first, truth, corpus_frame, level)
    assert log.instance_lists() == []
    finds = [b for m, p, b in log.sent if p.endswith("/tools/find")]
    if client.capabilities().extended_find:  # the series from extended find, with their counts
        # one find per level, sent side by side (their order in the log is the threads')
        lists = [b for b in finds if "Status" not in b["ResponseContent"]]
        assert sorted(b["Level"] for b in lists) == ["Patient", "Series", "Study"]
        series_find = next(b for b in lists if b["Level"] == "Series")
        assert series_find["RequestedTags"] == ["NumberOfSeriesRelatedInstances"]
        # Status (which makes 1.13 read every instance's metadata) only for series that
        # expect a number of instances, by their UIDs
        assert all(b["Level"] == "Series" and set(b["Query"]) == {"SeriesInstanceUID"}
                   for b in finds if "Status" in b["ResponseContent"])
    else:
        assert finds == [] and ("GET", "/series", None) in log.sent
    assert len(log.sent) < 20  # a page per level plus the consistency checks
    assert isinstance(first.orthanc, LevelAccessor) and first.orthanc.level == level


def test_both_routes_give_the_same_series_frame(corpus, corpus_frame):
    by_lists = _quiet_read(corpus.url, level="series", route="lists")
    auto = _quiet_read(corpus.url, level="series")
    cols = [c for c in auto.columns if c != "orthanc_series_status"]
    pd.testing.assert_frame_equal(by_lists[cols], auto[cols])
    # 1.13's find answers Status from the series' metadata; the GET list too
    assert by_lists.orthanc_series_status.astype(object).tolist() == \
        auto.orthanc_series_status.astype(object).tolist()
    assert by_lists.instance_count.sum() == len(corpus_frame)


def test_series_status_is_the_servers_own(orthanc_available):
    """Status asked only for the series that expect a count: equal to ``GET /series/{id}``
    (the server's own answer) and to the level frame of a full read, for every status."""
    shapes = {"complete": (4, 4), "missing": (3, 5), "no count": (3, None)}
    blobs = []
    for k, (name, (n, expected)) in enumerate(shapes.items()):
        for ds in make_series(n, 8, 8, seed=f"status-{k}", series_description=name,
                              patient_id="STATUS"):
            ds = _reread(ds)
            if expected is not None:  # what Orthanc makes ExpectedNumberOfInstances of
                ds.ImagesInAcquisition, ds.NumberOfTemporalPositions = expected, 1
            blobs.append(to_bytes(ds))
    with LocalOrthanc(name="read-levels-status") as srv:
        srv.upload_bytes(blobs)
        client = op.OrthancClient(srv.url)
        first = _quiet_read(client, level="series")
        truth = _quiet_read(client).orthanc.series()
        server = {s: client.get_json(f"/series/{s}")["Status"]
                  for s in first.index.get_level_values("series")}
    got = dict(zip(first.index.get_level_values("series"),
                   first.orthanc_series_status.astype(object), strict=True))
    assert got == server
    assert sorted(server.values()) == ["Complete", "Missing", "Unknown"]
    pd.testing.assert_series_equal(first.orthanc_series_status, truth.orthanc_series_status)


# -- a server whose series defy the stored orientation ------------------------------------------
SAGITTAL = (0, 1, 0, 0, 0, -1)


def _reread(ds):
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


@pytest.fixture(scope="module")
def server(orthanc_available):
    series = {
        "axial": make_series(6, 8, 8, slice_spacing=1.25, seed="ax"),
        "sagittal": make_series(4, 8, 8, orientation=SAGITTAL, slice_spacing=3.0, seed="sag"),
        # the localizer first: Orthanc stores its orientation for the series
        "localizer": make_series(1, 6, 6, orientation=SAGITTAL, seed="loc2", origin=(0, 0, 50))
        + make_series(4, 6, 6, seed="loc"),
        "multiframe": [make_multiframe(5, 8, 8, seed="mf")],
    }
    blobs = []
    for k, (name, datasets) in enumerate(series.items()):
        for i, ds in enumerate(_reread(d) for d in datasets):
            ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1234.88"
            ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.1234.88.{k}"
            ds.SeriesDescription = name
            ds.PatientID = "LVL"
            ds.ProtocolName = f"protocol {name}"
            if name == "localizer":
                ds.InstanceNumber = 9 if i == 0 else i  # the localizer sorts last in the frame
            blobs.append(to_bytes(ds))
    with LocalOrthanc(name="read-levels") as srv:
        for blob in blobs:  # one at a time: the localizer reaches the server first
            srv.upload_bytes([blob])
        yield srv


@pytest.fixture(scope="module")
def frame(server):
    return op.read_orthanc(server.url)


@pytest.fixture
def series(server):
    return op.read_orthanc(server.url, level="series")


def _row(s, name):
    return s[s.SeriesDescription == name]


def test_stored_orientation_is_the_series_value_and_the_rest_equals_series(series, frame):
    truth = frame.orthanc.series()
    _compare(series, truth, frame, "series")
    by_name = series.reset_index().set_index("SeriesDescription")
    assert by_name.loc["axial", "orientation"] == "axial"
    assert by_name.loc["sagittal", "orientation"] == "sagittal"
    # .series() takes the first instance in frame order (axial); Orthanc kept the first received
    assert _row(truth, "localizer").orientation.iloc[0] == "axial"
    assert by_name.loc["localizer", "orientation"] == "sagittal"
    assert by_name.loc["multiframe", "instance_count"] == 1
    assert by_name.instance_count.tolist() == [6, 4, 5, 1]
    # what is missing comes back through the instances
    full = series.orthanc.instances().orthanc.series()
    pd.testing.assert_series_equal(full.slice_count, truth.slice_count)
    pd.testing.assert_series_equal(full.slice_spacing, truth.slice_spacing)


def test_instances_volume_with_tags_and_download_work_on_a_series_first_frame(series, frame, tmp_path):
    pick = series[series.SeriesDescription.isin(["axial", "localizer"])]
    fetched = pick.orthanc.instances()
    truth = frame[frame.SeriesDescription.isin(["axial", "localizer"])]
    assert type(fetched.orthanc) is InstanceAccessor
    assert sorted(fetched.index) == sorted(truth.index)
    assert not {"level", "read_level", "missing_columns"} & set(fetched.attrs["orthanc"])
    assert pick.orthanc.instances(frame).index.equals(truth.index)
    # the geometry report of those rows
    report = fetched.orthanc.series(geometry=True)
    assert report.set_index("SeriesDescription").volume_ok.to_dict() == {"axial": True,
                                                                         "localizer": False}
    vol = _row(series, "axial").orthanc.volume()
    expected = frame[frame.SeriesDescription == "axial"].orthanc.volume()
    np.testing.assert_array_equal(vol.values, expected.values)
    assert vol.attrs["affine"] == expected.attrs["affine"]
    tagged = series.orthanc.with_tags("ProtocolName")
    assert tagged.ProtocolName.tolist() == ("protocol " + series.SeriesDescription.astype(str)).tolist()
    assert tagged.attrs == series.attrs
    paths = _row(series, "sagittal").orthanc.download(tmp_path)
    assert len(paths) == 4 and all(pydicom.dcmread(p).SeriesDescription == "sagittal" for p in paths)
    headers = _row(series, "sagittal").orthanc.headers()
    assert sorted(h.SOPInstanceUID for h in headers) == sorted(pydicom.dcmread(p).SOPInstanceUID
                                                             for p in paths)
    # instance operations go through the instances, as on any level frame
    with pytest.raises(NotAnIndexError, match=r"instances\(\)\.orthanc\.anonymize"):
        series.orthanc.anonymize()


def test_refresh_reads_a_level_first_frame_again(server, series):
    subset = series.orthanc.select(SeriesDescription="sag*")
    cut = series.iloc[:2]
    extra = make_series(3, 6, 6, seed="new")
    for ds in extra:
        ds.SeriesDescription = "sagittal new"
    server.upload_bytes([to_bytes(d) for d in extra])
    fresh = series.orthanc.refresh()
    assert len(fresh) == len(series) + 1 and fresh.attrs["orthanc"]["last_change"] > \
        series.attrs["orthanc"]["last_change"]
    pd.testing.assert_frame_equal(fresh, op.read_orthanc(server.url, level="series"))
    again = subset.orthanc.refresh()  # the recorded select is replayed
    assert sorted(again.SeriesDescription.astype(str)) == ["sagittal", "sagittal new"]
    with pytest.warns(RefreshWarning, match="keeps only the series this frame has"):
        kept = cut.orthanc.refresh()
    assert kept.index.equals(cut.index)
    studies = op.read_orthanc(server.url, level="study")
    assert studies.orthanc.refresh().instance_count.sum() == fresh.instance_count.sum()
    with pytest.raises(NotAnIndexError, match=r"refresh that frame and call \.orthanc\.series\(\)"):
        op.read_orthanc(server.url).orthanc.series().orthanc.refresh()


def test_parquet_round_trip_of_level_first_frames(server, tmp_path):
    for level in METHODS:
        first = op.read_orthanc(server.url, level=level)
        path = tmp_path / f"{level}.parquet"
        first.to_parquet(path)
        back = pd.read_parquet(path)
        pd.testing.assert_frame_equal(back, first)
        assert back.attrs == first.attrs and isinstance(back.orthanc, LevelAccessor)
        assert back.orthanc.level == level
        assert sorted(back.orthanc.instances().index.get_level_values(level).unique()) == \
            sorted(first.index.get_level_values(level))


def test_unknown_level_is_refused(server):
    with pytest.raises(ValueError, match="level must be one of 'instance'"):
        op.read_orthanc(server.url, level="instances")


def test_untyped_and_empty_reads_match_too(server, frame, orthanc_factory):
    raw = op.read_orthanc(server.url, typed=False)
    first = op.read_orthanc(server.url, level="series", typed=False)
    kept = [c for c in first.columns if c not in ["slice_count", "slice_spacing", *FROM_SERIES]]
    pd.testing.assert_frame_equal(first[kept], raw.orthanc.series()[kept])
    empty = orthanc_factory()
    for level, method in METHODS.items():
        got = op.read_orthanc(empty.url, level=level)
        truth = getattr(op.read_orthanc(empty.url).orthanc, method)()
        pd.testing.assert_frame_equal(got, truth)
