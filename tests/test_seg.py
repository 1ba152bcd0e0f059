"""seg.py (vol.orthanc.to_seg): masks written as DICOM SEG on the volume's source images.

Known answers on generated axial, sagittal and oblique series: every SEG is read back two
independent ways, by ``mask(like=vol)`` (placement by each frame's position through the
volume's affine) and by highdicom (its own reading: segment descriptions, references to the
source series and instances, pixels per source instance, and its own volume geometry mapped
through LPS). Without a server (``sources=`` datasets) for the many orientations, dims orders
and mask forms; with a real Orthanc for the round trip mask -> ``to_seg(upload=True)`` ->
refresh -> ``mask(like=vol)`` and the Orthanc labels.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pydicom
import pytest
import xarray as xr
from pydicom.sr.codedict import codes

import orthanc_pandas as op
from orthanc_pandas._imaging.masks import seg_mask
from orthanc_pandas._imaging.seg import default_codes
from orthanc_pandas.errors import (
    GeometryError,
    MaskGeometryError,
    SelectionError,
    ServerCapabilityError,
)
from orthanc_pandas.testing import LocalOrthanc, assert_index_frame_equal
from orthanc_pandas.testing.synthetic import make_multiframe, make_series, to_bytes, uid

hd = pytest.importorskip("highdicom")

OBLIQUE = (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2),
           np.sin(0.2))
ORIENTATIONS = {"axial": (1, 0, 0, 0, 1, 0), "sagittal": (0, 1, 0, 0, 0, -1),
                "coronal": (1, 0, 0, 0, 0, -1), "oblique": OBLIQUE}
NZ, NY, NX = 6, 24, 20


def _ct(name: str, **kw):
    base = dict(orientation=ORIENTATIONS[name], pixel_spacing=(0.75, 0.5), slice_spacing=2.0,
                instance_numbers="shuffled", seed=f"seg-{name}", series_description=name,
                study_uid=uid("seg-study", name))
    return make_series(NZ, NY, NX, **{**base, **kw})


def _known(seed: int = 7) -> np.ndarray:
    """(segment, z, y, x): an off-centre box (a flip or a transposition moves it) and a blob."""
    m = np.zeros((2, NZ, NY, NX), dtype=bool)
    m[0, 1:4, 5:15, 3:12] = True
    m[0, 2, 5, 3] = False                                   # one corner out: no symmetry at all
    m[1, 2:5] = np.random.default_rng(seed).random((3, NY, NX)) > 0.6
    return m


def _read(seg) -> pydicom.Dataset:
    """The SEG as a receiver reads it: encoded, then decoded."""
    return pydicom.dcmread(io.BytesIO(to_bytes(seg)))


def _points(mask: np.ndarray, affine: np.ndarray) -> set:
    """LPS voxel centres (rounded to 1e-3 mm) of the True voxels of a 3-D mask."""
    idx = np.argwhere(mask)
    lps = idx @ affine[:3, :3].T + affine[:3, 3]
    return set(map(tuple, np.round(lps, 3).tolist()))


def check_with_highdicom(seg_ds, vol, known: np.ndarray, labels: list[str]) -> None:
    """highdicom's own reading of the SEG agrees with ``known`` on ``vol`` (unflipped)."""
    seg = hd.seg.segread(io.BytesIO(to_bytes(seg_ds)))
    numbers = list(seg.segment_numbers)
    assert [seg.get_segment_description(n).segment_label for n in numbers] == labels
    refs = {tuple(map(str, t)) for t in seg.get_source_image_uids()}
    assert {t[1] for t in refs} == {vol.attrs["series_instance_uid"]}      # the source series
    assert {t[2] for t in refs} == set(vol.sop_instance_uid.values)        # every source image
    # pixels by source instance: frame-to-image links only, no geometry involved
    by_source = seg.get_pixels_by_source_instance(list(vol.sop_instance_uid.values))
    assert np.array_equal(np.moveaxis(by_source, -1, 0).astype(bool), known)
    # highdicom's volume (its own geometry, its own slice order) -> LPS points: the same places
    hv = seg.get_volume(combine_segments=False)
    affine = np.reshape(vol.attrs["affine"], (4, 4))
    for s in range(len(labels)):
        assert _points(hv.array[..., s] > 0, hv.affine) == _points(known[s], affine)


# -- without a server ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ORIENTATIONS)
def test_round_trip_on_each_orientation(name):
    ct = _ct(name)
    vol = op.volume_from_datasets(ct)
    known = _known()
    mask = xr.DataArray(known, dims=("segment", "z", "y", "x"),
                        coords={"segment": ["liver", "blob"]})
    seg = vol.orthanc.to_seg(mask, sources=ct)
    back = seg_mask(_read(seg), vol)
    assert back.segment.values.tolist() == ["liver", "blob"]
    assert np.array_equal(back.values, known)
    check_with_highdicom(seg, vol, known, ["liver", "blob"])


@pytest.mark.parametrize("name", ORIENTATIONS)
@pytest.mark.parametrize("dims", [("x", "z", "y"), ("y", "x", "z"), ("z", "x", "y")])
def test_any_dims_order_of_volume_and_mask(name, dims):
    """A transposed volume with a transposed mask (numpy, in the volume's order; or a DataArray in
    yet another order) writes the same voxels."""
    ct = _ct(name)
    vol = op.volume_from_datasets(ct)
    known = _known()
    tv = vol.transpose(*dims)
    perm = [("z", "y", "x").index(d) for d in dims]
    numpy_mask = known.transpose([0] + [p + 1 for p in perm])           # segments first, then dims
    as_da = xr.DataArray(known, dims=("segment", "z", "y", "x")).transpose("x", "segment", "y", "z")
    for mask in (numpy_mask, as_da):
        seg = tv.orthanc.to_seg(mask, ["a", "b"], sources=ct)
        assert np.array_equal(seg_mask(_read(seg), vol).values, known)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_reversed_and_cut_volumes_write_each_voxel_on_its_pixel(name):
    ct = _ct(name)
    vol = op.volume_from_datasets(ct)
    known = _known()
    flipped = vol.isel(z=slice(None, None, -1), y=slice(None, None, -1))
    seg = flipped.orthanc.to_seg(known[:, ::-1, ::-1], ["a", "b"], sources=ct)
    assert np.array_equal(seg_mask(_read(seg), vol).values, known)
    # a crop of slices and rows: the SEG references those slices and leaves the rest empty
    part = vol.isel(z=slice(1, 5), y=slice(4, 20), x=slice(2, None))
    seg = part.orthanc.to_seg(known[:, 1:5, 4:20, 2:], ["a", "b"], sources=ct)
    expected = np.zeros_like(known)
    expected[:, 1:5, 4:20, 2:] = known[:, 1:5, 4:20, 2:]
    assert np.array_equal(seg_mask(_read(seg), vol).values, expected)
    refs = {str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == set(part.sop_instance_uid.values)


def test_integer_label_map_and_its_labels():
    ct = _ct("oblique")
    vol = op.volume_from_datasets(ct)
    known = _known()
    labelmap = np.zeros(vol.shape, dtype=np.int16)
    labelmap[known[1]] = 2
    labelmap[known[0]] = 1                                   # a label map cannot overlap
    for labels in (["liver", "spleen", "kidney"], {1: "liver", 2: "spleen", 3: "kidney"}):
        seg = vol.orthanc.to_seg(labelmap, labels, sources=ct)
        back = seg_mask(_read(seg), vol)
        assert back.segment.values.tolist() == ["liver", "spleen", "kidney"]
        assert back.segment_number.values.tolist() == [1, 2, 3]
        for k in (1, 2, 3):
            assert np.array_equal(back.values[k - 1], labelmap == k)   # kidney: empty, described
    with pytest.raises(SelectionError, match="values up to 2 and only 1 label"):
        vol.orthanc.to_seg(labelmap, ["liver"], sources=ct)
    with pytest.raises(SelectionError, match="keys 1..n"):
        vol.orthanc.to_seg(labelmap, {1: "liver", 3: "kidney"}, sources=ct)


def test_one_segment_as_bool_or_01_or_from_a_mask_read_back():
    ct = _ct("sagittal")
    vol = op.volume_from_datasets(ct)
    one = _known()[0]
    for mask in (one, one.astype(np.uint8), one.astype(np.float32), vol.copy(data=one)):
        seg = vol.orthanc.to_seg(mask, "liver", sources=ct)
        assert np.array_equal(seg_mask(_read(seg), vol).values[0], one)
    # an RTSTRUCT's mask as mask(like=vol) gives it: a 'roi' dim named by ROIName
    rois = xr.DataArray(_known(), dims=("roi", "z", "y", "x"), coords={"roi": ["PTV", "cord"]})
    back = seg_mask(_read(vol.orthanc.to_seg(rois, sources=ct)), vol)
    assert back.segment.values.tolist() == ["PTV", "cord"] and np.array_equal(back.values, _known())
    # a mask read back (segment coord, affine and coords of vol) goes back unchanged
    back = seg_mask(_read(seg), vol)
    again = seg_mask(_read(vol.orthanc.to_seg(back, sources=ct)), vol)
    assert np.array_equal(again.values, back.values) and again.segment.values.tolist() == ["liver"]


def test_fractional_stores_probabilities_in_255_steps():
    ct = _ct("oblique")
    vol = op.volume_from_datasets(ct)
    p = np.random.default_rng(3).random(vol.shape).astype(np.float32)
    seg = vol.orthanc.to_seg(p, "lesion", fractional=True, fractional_type="OCCUPANCY", sources=ct)
    ds = _read(seg)
    assert ds.SegmentationType == "FRACTIONAL" and ds.SegmentationFractionalType == "OCCUPANCY"
    assert int(ds.MaximumFractionalValue) == 255
    read = hd.seg.segread(io.BytesIO(to_bytes(seg)))
    stored = read.get_pixels_by_source_instance(list(vol.sop_instance_uid.values),
                                                rescale_fractional=False)[..., 0]
    assert np.array_equal(stored, np.round(p * 255).astype(np.uint8))
    assert np.array_equal(seg_mask(ds, vol).values[0], np.round(p * 255) / 255 >= 0.5)
    with pytest.raises(SelectionError, match="outside \\[0, 1\\]"):
        vol.orthanc.to_seg(p * 2, "lesion", fractional=True, sources=ct)
    with pytest.raises(SelectionError, match="fractional=True"):
        vol.orthanc.to_seg(p, "lesion", sources=ct)


def test_codes_default_explicit_and_algorithm():
    assert [c.meaning for c in default_codes("Liver")] == ["Anatomical Structure", "Liver"]
    assert [c.meaning for c in default_codes("left_ventricle")][0] == "Anatomical Structure"
    assert [c.meaning for c in default_codes("tumour")] == ["Morphologically Abnormal Structure", "Neoplasm"]
    assert [c.meaning for c in default_codes("fat")] == ["Tissue", "Fat"]
    assert [c.meaning for c in default_codes("model output 3")] == ["Tissue", "Tissue"]
    ct = _ct("axial")
    vol = op.volume_from_datasets(ct)
    known = _known()
    seg = vol.orthanc.to_seg(
        known, ["liver", "met"], sources=ct, algorithm="nnU-Net liver", algorithm_version="2.5",
        codes={"met": (codes.cid7150.MorphologicallyAbnormalStructure,
                       ("94381002", "SCT", "Secondary malignant neoplasm of liver"))},
        series_description="model v2", series_number=77, content_description="AI draft")
    read = hd.seg.segread(io.BytesIO(to_bytes(seg)))
    liver, met = (read.get_segment_description(n) for n in (1, 2))
    assert (liver.segmented_property_category.value, liver.segmented_property_type.value) == ("91723000", "10200004")
    assert met.segmented_property_category.meaning == "Morphologically Abnormal Structure"
    assert met.segmented_property_type.value == "94381002"
    for d in (liver, met):
        assert d.algorithm_type.value == "AUTOMATIC"
        assert d.algorithm_identification[0].AlgorithmName == "nnU-Net liver"
        assert d.algorithm_identification[0].AlgorithmVersion == "2.5"
        assert d.algorithm_identification[0].AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert (read.SeriesDescription, int(read.SeriesNumber), read.ContentDescription) == ("model v2", 77, "AI draft")
    manual = vol.orthanc.to_seg(known[0], "liver", sources=ct)
    assert manual.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    assert manual.SeriesDescription == "Segmentation: liver"
    with pytest.raises(SelectionError, match="algorithm_version"):
        vol.orthanc.to_seg(known[0], "liver", sources=ct, algorithm="x")
    with pytest.raises(SelectionError, match="give the category too"):
        vol.orthanc.to_seg(known[0], "liver", sources=ct, codes={"liver": ("1", "99X", "made up")})
    with pytest.raises(SelectionError, match="no segment has"):
        vol.orthanc.to_seg(known[0], "liver", sources=ct, codes={"lung": "Lung"})


def test_a_mask_on_another_grid_is_refused_saying_what_differs():
    ct = _ct("oblique")
    vol = op.volume_from_datasets(ct)
    known = _known()[0]
    with pytest.raises(MaskGeometryError, match="its shape differs: z 5 in the mask, 6 in the volume"):
        vol.orthanc.to_seg(vol.isel(z=slice(1, None)).copy(data=known[1:]), "a", sources=ct)
    with pytest.raises(MaskGeometryError, match="it has shape \\(20, 24, 6\\).*looks transposed"):
        vol.orthanc.to_seg(known.T, "a", sources=ct)
    with pytest.raises(MaskGeometryError, match="Segments go first"):
        vol.orthanc.to_seg(known[..., None], "a", sources=ct)
    shifted = vol.copy(data=known).assign_coords(y=vol.y + 0.75)
    with pytest.raises(MaskGeometryError, match="its y coordinates differ .* by up to 0.75 mm"):
        vol.orthanc.to_seg(shifted, "a", sources=ct)
    reversed_x = vol.copy(data=known).assign_coords(x=vol.x.values[::-1])
    with pytest.raises(MaskGeometryError, match="reversed: mask.isel\\(x=slice"):
        vol.orthanc.to_seg(reversed_x, "a", sources=ct)
    other = op.volume_from_datasets(_ct("oblique", pixel_spacing=(0.5, 0.5), seed="seg-other"))
    with pytest.raises(MaskGeometryError, match="attrs\\['affine'\\] differs"):
        vol.orthanc.to_seg(other.copy(data=known).assign_coords(y=vol.y, x=vol.x), "a", sources=ct)
    with pytest.raises(MaskGeometryError, match="dims \\('a', 'b', 'c'\\)"):
        vol.orthanc.to_seg(xr.DataArray(known, dims=("a", "b", "c")), "a", sources=ct)
    assert issubclass(MaskGeometryError, ValueError)


def test_volume_and_sources_must_agree():
    ct = _ct("axial")
    vol = op.volume_from_datasets(ct)
    known = _known()[0]
    with pytest.raises(SelectionError, match="3 of the volume's 6 source instances"):
        vol.orthanc.to_seg(known, "a", sources=ct[:3])
    moved = vol.assign_coords(z=vol.z + 1.0)
    with pytest.raises(MaskGeometryError, match="no longer describe its source images"):
        moved.orthanc.to_seg(known, "a", sources=ct)
    swapped = vol.assign_coords(sop_instance_uid=("z", vol.sop_instance_uid.values[::-1]))
    with pytest.raises(MaskGeometryError, match="does not match its place"):
        swapped.orthanc.to_seg(known, "a", sources=ct)
    with pytest.raises(GeometryError, match="lost its z dim"):
        vol.isel(z=2).orthanc.to_seg(known[2], "a", sources=ct)
    with pytest.raises(op.OrthancPandasError, match="attrs\\['orthanc_url'\\] is missing"):
        vol.orthanc.to_seg(known, "a")


def test_enhanced_multiframe_source_and_refused_sources():
    ds = make_multiframe(5, 8, 8, orientation=OBLIQUE, frame_order="descending", seed="seg-mf")
    vol = op.volume_from_datasets([ds])
    known = np.zeros(vol.shape, dtype=bool)
    known[1:4, 2:6, 1:5] = True
    known[1, 2, 1] = False
    seg = vol.orthanc.to_seg(known, "a", sources=[ds])
    assert np.array_equal(seg_mask(_read(seg), vol).values[0], known)
    # each SEG frame is written on the source frame at its position (stored descending)
    read = hd.seg.segread(io.BytesIO(to_bytes(seg)))
    frames = read.pixel_array.reshape(-1, 8, 8)
    for f, item in enumerate(read.PerFrameFunctionalGroupsSequence):
        src = int(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber) - 1
        ipp = ds.PerFrameFunctionalGroupsSequence[src].PlanePositionSequence[0].ImagePositionPatient
        assert [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient] == \
            [float(v) for v in ipp]
        k = int(np.flatnonzero(vol.frame.values == src)[0])
        assert np.array_equal(frames[f].astype(bool), known[k])
    cine = make_multiframe(4, 8, 8, per_frame_positions=False, seed="seg-cine")
    cine_vol = op.volume_from_datasets([cine])
    with pytest.raises(GeometryError):
        cine_vol.orthanc.to_seg(np.zeros(cine_vol.shape, bool), "a", sources=[cine])


def test_missing_highdicom_names_the_masks_extra(monkeypatch):
    ct = _ct("axial")
    vol = op.volume_from_datasets(ct)
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(ImportError, match=r"pip install 'orthanc-pandas\[masks\]'"):
        vol.orthanc.to_seg(_known()[0], "a", sources=ct)


# -- with a server ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(orthanc_available):
    with LocalOrthanc(name="seg") as server:
        server.upload_bytes([to_bytes(d) for name in ORIENTATIONS for d in _ct(name)])
        df = op.read_orthanc(server.url)
        vols = {name: df[df.SeriesDescription == name].orthanc.volume() for name in ORIENTATIONS}
        yield dict(server=server, df=df, vols=vols)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_upload_refresh_and_read_back_voxel_for_voxel(served, name):
    vol, df = served["vols"][name], served["df"]
    known = _known(seed=len(name))
    mask = xr.DataArray(known, dims=("segment", "z", "y", "x"), coords={"segment": ["liver", "blob"]})
    rows = vol.orthanc.to_seg(mask, algorithm="test model", algorithm_version="1", upload=True)
    # the new rows: one SEG instance of a new series in the source's study, as a refresh shows it
    assert len(rows) == 1 and rows.Modality.tolist() == ["SEG"]
    study = df[df.SeriesDescription == name].index.get_level_values("study")[0]
    assert rows.index.get_level_values("study")[0] == study
    fresh = df.orthanc.refresh()
    iid = rows.index.get_level_values("instance")[0]
    in_fresh = fresh[fresh.index.get_level_values("instance") == iid]
    assert len(in_fresh) == 1 and iid not in df.index.get_level_values("instance")
    back = in_fresh.orthanc.mask(like=vol)
    assert back.segment.values.tolist() == ["liver", "blob"]
    assert np.array_equal(back.values, known)
    assert np.array_equal(rows.orthanc.mask(like=vol).values, known)
    # the rows are what a fresh read selected on the SEG's SOPInstanceUID gives
    uid_ = rows.SOPInstanceUID.iloc[0]
    selected = op.read_orthanc(served["server"].url).orthanc.select(SOPInstanceUID=uid_)
    moments = ("read_at", "last_change")  # the server logs changes (StableSeries...) meanwhile
    assert_index_frame_equal(rows, selected, ignore_attrs=moments, check_categorical=False)
    assert_index_frame_equal(rows.orthanc.refresh(), rows, ignore_attrs=moments,
                             check_categorical=False)
    stored = served["server"].client().get_bytes(f"/instances/{iid}/file")
    check_with_highdicom(pydicom.dcmread(io.BytesIO(stored)), vol, known, ["liver", "blob"])


def test_without_upload_the_seg_is_built_on_headers_read_from_the_server(served):
    vol = served["vols"]["axial"]
    seg = vol.orthanc.to_seg(_known()[0], "liver")       # sources read from the server
    assert isinstance(seg, pydicom.Dataset) and seg.Modality == "SEG"
    assert np.array_equal(seg_mask(_read(seg), vol).values[0], _known()[0])


@pytest.mark.orthanc_min("1.12")
def test_orthanc_labels_on_the_stored_seg(served):
    vol = served["vols"]["sagittal"]
    rows = vol.orthanc.to_seg(_known()[0], "liver", upload=True, orthanc_labels=["ai-draft", "v2"])
    assert rows.orthanc_labels.astype(str).tolist() == ["ai-draft,v2"]


@pytest.mark.orthanc_before("1.12")
def test_orthanc_labels_need_1_12_and_nothing_is_stored_before_saying_so(served):
    vol = served["vols"]["sagittal"]
    client = served["server"].client()
    before = client.statistics()["CountInstances"]
    with pytest.raises(ServerCapabilityError, match="Labels need Orthanc >= 1.12"):
        vol.orthanc.to_seg(_known()[0], "liver", upload=True, orthanc_labels="ai-draft")
    assert client.statistics()["CountInstances"] == before
