"""masks.py: SEG (written by highdicom) and RTSTRUCT (built with pydicom) for generated CT
series, uploaded to a real Orthanc, read back as masks on the CT's grid; known answers. The
RTSTRUCT inside rules: an analytic answer for each, and rule="fillpoly" against rt-utils and
OpenCV's fillPoly voxel for voxel."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import orthanc_pandas as op
from orthanc_pandas._imaging.masks import RTSTRUCT_SOP_CLASS, rtstruct_mask
from orthanc_pandas.errors import GeometryError, MaskGeometryError, SelectionError
from orthanc_pandas.testing.synthetic import make_series, to_bytes, uid

hd = pytest.importorskip("highdicom")

OBLIQUE = (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2),
           np.sin(0.2))
NZ, NY, NX = 6, 24, 20
STUDY = uid("study", "masks")


def _ct(rows=NY, cols=NX, **kw):
    base = dict(seed="masks-ct", study_uid=STUDY, orientation=OBLIQUE, pixel_spacing=(0.75, 0.5),
                slice_spacing=2.0, instance_numbers="shuffled", series_description="ct")
    return make_series(NZ, rows, cols, **{**base, **kw})


def _known_segments() -> np.ndarray:
    """(segment, z, y, x) in the CT's position order: a box, and a random blob on slices 2-4."""
    m = np.zeros((2, NZ, NY, NX), dtype=bool)
    m[0, 1:4, 5:15, 3:12] = True
    m[1, 2:5] = np.random.default_rng(7).random((3, NY, NX)) > 0.6
    return m


def _seg(ct: list[Dataset], known: np.ndarray, *, fractional: bool = False) -> Dataset:
    order = [3, 0, 5, 1, 4, 2]  # source images in another order than positions
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=label,
            segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
            segmented_property_type=hd.sr.CodedConcept("10200004", "SCT", "Liver"),
            algorithm_type="MANUAL")
        for i, label in enumerate(["box", "blob"])]
    return hd.seg.Segmentation(
        source_images=[ct[k] for k in order],
        pixel_array=(np.moveaxis(known[:, order], 0, -1).astype(np.float32) * 0.8 if fractional
                     else np.moveaxis(known[:, order], 0, -1).astype(np.uint8)),
        segmentation_type="FRACTIONAL" if fractional else "BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=uid("seg-series", fractional), series_number=50 + fractional,
        sop_instance_uid=uid("seg-sop", fractional),
        instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")


def _point(ds: Dataset, r: float, c: float) -> list[float]:
    """LPS of (row r, column c) of a slice, from its own header (PS3.3 C.7.6.2.1.1)."""
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return (ipp + r * dr * iop[3:] + c * dc * iop[:3]).tolist()


def _rect(ds, r0, r1, c0, c1, shift=0.0) -> list[float]:
    """A contour around the voxels r0..r1 x c0..c1 (corners half a voxel outside their centres)."""
    corners = [(r0 - 0.5, c0 - 0.5), (r0 - 0.5, c1 + 0.5), (r1 + 0.5, c1 + 0.5), (r1 + 0.5, c0 - 0.5)]
    pts = np.array([_point(ds, r, c) for r, c in corners])
    pts += shift * np.cross(np.array(ds.ImageOrientationPatient[:3], float),
                            np.array(ds.ImageOrientationPatient[3:], float))
    return [round(float(v), 6) for v in pts.ravel()]


def _rtstruct(ct: list[Dataset], rois: dict[str, list[tuple[int, list[float]]]]) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for kw in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
               "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, kw, getattr(ct[0], kw))
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 60
    ds.StructureSetLabel = "test"
    frame = ct[0].FrameOfReferenceUID
    ref = Dataset()
    ref.FrameOfReferenceUID = frame
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for n, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = n, name
        roi.ReferencedFrameOfReferenceUID = frame
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = n
        rc.ContourSequence = Sequence()
        for _k, data in contours:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(data) // 3
            c.ContourData = data
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    return ds


@pytest.fixture(scope="module")
def served(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc

    ct = _ct()
    other_grid = _ct(seed="masks-ct2", pixel_spacing=(0.5, 0.5), series_number=2,
                     series_description="ct-other-grid")   # same study: same frame of reference
    other_frame = _ct(seed="masks-ct3", study_uid=uid("study", "masks-other"), series_number=3,
                      series_description="ct-other-frame")
    # same grid, 3 more rows before and after: SEG rows land 3 rows further down
    col_dir = np.array(OBLIQUE[3:])
    bigger = _ct(rows=NY + 6, seed="masks-ct4", series_number=4, series_description="ct-bigger",
                 origin=(np.array([-100.0, -110.0, 0.0]) - 3 * 0.75 * col_dir).tolist())
    assert other_grid[0].FrameOfReferenceUID == ct[0].FrameOfReferenceUID == bigger[0].FrameOfReferenceUID
    known = _known_segments()
    seg = _seg(ct, known)
    fractional = _seg(ct, known, fractional=True)
    rt_known = np.zeros((2, NZ, NY, NX), dtype=bool)
    rt_known[0, 1:4, 4:10, 2:8] = True
    rt_known[1, 2, 8:20, 5:17] = True
    rt_known[1, 2, 11:17, 8:14] = False   # the hole
    rt = _rtstruct(ct, {
        "box": [(k, _rect(ct[k], 4, 9, 2, 7)) for k in (1, 2, 3)],
        "ring": [(2, _rect(ct[2], 8, 19, 5, 16)), (2, _rect(ct[2], 11, 16, 8, 13))],
    })
    with LocalOrthanc(name="masks") as server:
        server.upload_bytes([to_bytes(d) for d in ct + other_grid + other_frame + bigger]
                            + [to_bytes(seg), to_bytes(fractional), to_bytes(rt)])
        df = op.read_orthanc(server.url)
        vols = {name: df[df.SeriesDescription == name].orthanc.volume()
                for name in ("ct", "ct-other-grid", "ct-other-frame", "ct-bigger")}
        yield dict(df=df, ct=ct, vols=vols, known=known, rt_known=rt_known, rt=rt)


def _in_volume_order(known: np.ndarray, ct: list[Dataset], vol) -> np.ndarray:
    """The known masks (in make_series' position order) in the volume's slice order, by UID."""
    pos = {str(ds.SOPInstanceUID): k for k, ds in enumerate(ct)}
    return known[:, [pos[u] for u in vol.sop_instance_uid.values]]


def _binary_seg(df):
    return df[(df.Modality == "SEG") & (df.SeriesNumber == 50)]


def test_seg_mask_on_ct_grid(served):
    df, vol = served["df"], served["vols"]["ct"]
    m = _binary_seg(df).orthanc.mask(like=vol)
    assert m.dims == ("segment", "z", "y", "x") and m.dtype == bool
    assert list(m.segment.values) == ["box", "blob"]
    assert list(m.segment_number.values) == [1, 2]
    truth = _in_volume_order(served["known"], served["ct"], vol)
    np.testing.assert_array_equal(m.values, truth)
    assert int(m.sel(segment="box").sum()) == 3 * 10 * 9
    np.testing.assert_allclose(m.orthanc.affine, vol.orthanc.affine)
    assert list(m.sop_instance_uid.values) == list(vol.sop_instance_uid.values)


def test_seg_mask_is_read_by_highdicom_the_same_way(served, tmp_path):
    """highdicom's own lookup by source instance (the SEG's references, not its positions)
    gives the same frames as our placement by geometry."""
    df, vol = served["df"], served["vols"]["ct"]
    rows = _binary_seg(df)
    m = rows.orthanc.mask(like=vol)
    seg = hd.seg.segread(rows.orthanc.download(tmp_path).iloc[0])
    pixels = seg.get_pixels_by_source_instance(list(vol.sop_instance_uid.values),
                                               segment_numbers=[1, 2], skip_overlap_checks=True)
    np.testing.assert_array_equal(m.values, np.moveaxis(pixels, -1, 0).astype(bool))


def test_seg_mask_other_grid_or_frame_of_reference_says_so(served):
    df, vols = served["df"], served["vols"]
    seg = _binary_seg(df)
    with pytest.raises(MaskGeometryError, match="pixel spacing") as exc:
        seg.orthanc.mask(like=vols["ct-other-grid"])
    assert isinstance(exc.value, GeometryError) and isinstance(exc.value, ValueError)
    with pytest.raises(MaskGeometryError, match="frame of reference"):
        seg.orthanc.mask(like=vols["ct-other-frame"])


def test_rtstruct_mask_on_ct_grid(served):
    df, vol = served["df"], served["vols"]["ct"]
    m = df[df.Modality == "RTSTRUCT"].orthanc.mask(like=vol)
    assert m.dims == ("roi", "z", "y", "x") and m.dtype == bool
    assert list(m.roi.values) == ["box", "ring"]
    truth = _in_volume_order(served["rt_known"], served["ct"], vol)
    np.testing.assert_array_equal(m.values, truth)
    assert int(m.sel(roi="ring").sum()) == 12 * 12 - 6 * 6


def test_rtstruct_other_frame_or_off_plane_says_so(served):
    df, vols, ct = served["df"], served["vols"], served["ct"]
    with pytest.raises(MaskGeometryError, match="frame of reference"):
        df[df.Modality == "RTSTRUCT"].orthanc.mask(like=vols["ct-other-frame"])
    between = _rtstruct(ct, {"half": [(2, _rect(ct[2], 4, 9, 2, 7, shift=1.0))]})  # half a 2 mm step
    with pytest.raises(MaskGeometryError, match="not in a slice plane"):
        rtstruct_mask(between, vols["ct"])


def test_mask_needs_one_seg_or_rtstruct(served):
    df, vol = served["df"], served["vols"]["ct"]
    with pytest.raises(SelectionError, match="SEG or RTSTRUCT"):
        df[df.SeriesDescription == "ct"].iloc[[0]].orthanc.mask(like=vol)
    with pytest.raises(SelectionError, match="exactly one"):
        df[df.SeriesDescription == "ct"].orthanc.mask(like=vol)


def test_mask_exports_on_the_ct_geometry(served, tmp_path):
    pytest.importorskip("SimpleITK")
    pytest.importorskip("nibabel")
    df, vol = served["df"], served["vols"]["ct"]
    m = _binary_seg(df).orthanc.mask(like=vol)
    img, ct_img = m.sel(segment="box").orthanc.to_sitk(), vol.orthanc.to_sitk()
    assert img.GetOrigin() == ct_img.GetOrigin() and img.GetDirection() == ct_img.GetDirection()
    nii = m.sel(segment="blob").orthanc.to_nifti(tmp_path / "blob.nii.gz")
    np.testing.assert_array_equal(np.asarray(nii.dataobj).transpose(2, 1, 0),
                                  m.sel(segment="blob").values.astype(np.uint8))


def test_fractional_seg_thresholds_at_half(served):
    df, vol = served["df"], served["vols"]["ct"]
    rows = df[(df.Modality == "SEG") & (df.SeriesNumber == 51)]
    assert rows.orthanc.header().SegmentationType == "FRACTIONAL"
    m = rows.orthanc.mask(like=vol)
    np.testing.assert_array_equal(m.values, _in_volume_order(served["known"], served["ct"], vol))


def test_seg_is_placed_by_geometry_on_another_series(served):
    """Another CT of the same frame of reference and grid, 3 rows larger on each side: the SEG
    (whose references name the first CT) lands 3 rows further down, found by position alone."""
    df, big = served["df"], served["vols"]["ct-bigger"]
    m = _binary_seg(df).orthanc.mask(like=big)
    assert m.shape == (2, NZ, NY + 6, NX)
    truth = np.zeros(m.shape, dtype=bool)
    truth[:, :, 3:3 + NY] = _in_volume_order(served["known"], served["ct"], served["vols"]["ct"])
    np.testing.assert_array_equal(m.values, truth)
    rt = df[df.Modality == "RTSTRUCT"].orthanc.mask(like=big)
    np.testing.assert_array_equal(rt.values[:, :, 3:3 + NY],
                                  _in_volume_order(served["rt_known"], served["ct"], served["vols"]["ct"]))
    assert not rt.values[:, :, :3].any() and not rt.values[:, :, 3 + NY:].any()


def test_mask_from_a_series_row(served):
    """A row of df.orthanc.series() maps onto its instance (read from the server)."""
    df, vol = served["df"], served["vols"]["ct"]
    series = df.orthanc.series()
    rows = series[(series.Modality == "RTSTRUCT")]
    assert len(rows) == 1 and "instance" not in rows.index.names
    np.testing.assert_array_equal(rows.orthanc.mask(like=vol).values,
                                  df[df.Modality == "RTSTRUCT"].orthanc.mask(like=vol).values)


# -- the inside rules, without a server ---------------------------------------------------------
AXIAL = dict(seed="masks-axial", study_uid=uid("study", "masks-axial"), pixel_spacing=(0.75, 0.5),
             slice_spacing=2.0, instance_numbers="shuffled", series_description="axial")


def _mm_square(ds, x0, x1, y0, y1) -> list[float]:
    """A contour through four LPS corners (mm) in the plane of an axial slice."""
    z = float(ds.ImagePositionPatient[2])
    return [v for x, y in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)] for v in (x, y, z)]


@pytest.mark.parametrize(("corners", "centre", "fillpoly"), [
    # make_series' axial grid: column c at x = -100 + 0.5 c mm, row r at y = -110 + 0.75 r mm.
    # Corners on voxel centres (columns 3 and 12, rows 2 and 8): the centre rule leaves out
    # the centres on the edges (rows 3..7 x columns 4..11); fillpoly keeps them.
    ((-98.5, -94.0, -108.5, -104.0), (3, 7, 4, 11), (2, 8, 3, 12)),
    # Corners off the centres (columns 3.4 and 12.4, rows 2.13 and 8.13): strictly inside are
    # rows 3..8 x columns 4..12; fillpoly rounds the corners to rows 2, 8 and columns 3, 12.
    ((-98.3, -93.8, -108.4, -103.9), (3, 8, 4, 12), (2, 8, 3, 12)),
])
def test_rtstruct_rules_give_the_analytic_answer(corners, centre, fillpoly):
    """A square contour at known mm positions, written as decimal strings: exactly the voxels
    of the rectangle each rule names, on its slice only."""
    ct = make_series(NZ, NY, NX, **AXIAL)
    like = op.volume_from_datasets(ct)
    k = 3
    rt = _rtstruct(ct, {"square": [(k, _mm_square(ct[k], *corners))]})
    z = list(like.sop_instance_uid.values).index(str(ct[k].SOPInstanceUID))
    for rule, (r0, r1, c0, c1) in (("centre", centre), ("fillpoly", fillpoly)):
        m = rtstruct_mask(rt, like, rule=rule)
        assert m.attrs["rtstruct_rule"] == rule
        expected = np.zeros(m.shape[1:], dtype=bool)
        expected[z, r0:r1 + 1, c0:c1 + 1] = True
        np.testing.assert_array_equal(m.sel(roi="square").values, expected, err_msg=rule)


def test_rtstruct_unknown_rule_says_which_exist():
    ct = make_series(NZ, NY, NX, **AXIAL)
    rt = _rtstruct(ct, {"square": [(3, _mm_square(ct[3], -98.5, -94.0, -108.5, -104.0))]})
    with pytest.raises(ValueError, match="centre"):
        rtstruct_mask(rt, op.volume_from_datasets(ct), rule="inside")


def _rt_utils_case(tmp_path, spacing, origin, n_slices=6, size=40):
    """An axial CT written to a folder, known masks, and the RTSTRUCT rt-utils builds from them."""
    rt_utils = pytest.importorskip("rt_utils")
    ct = make_series(n_slices, size, size, seed="masks-rtutils", study_uid=uid("study", "rtutils"),
                     pixel_spacing=(spacing, spacing),   # square: rt-utils swaps row/column spacing
                     origin=origin, slice_spacing=2.5, instance_numbers="shuffled",
                     series_description="ct")
    folder = tmp_path / "ct"
    folder.mkdir()
    for k, ds in enumerate(ct):
        (folder / f"{k}.dcm").write_bytes(to_bytes(ds))
    z, y, x = np.ogrid[0:n_slices, 0:size, 0:size]
    known = {
        "ball": ((z - 2.5) / 2.5) ** 2 + ((y - 20) / 12.0) ** 2 + ((x - 18) / 14.0) ** 2 <= 1,
        "ring": np.broadcast_to((((y - 12) ** 2 + (x - 28) ** 2) <= 49)
                                & (((y - 12) ** 2 + (x - 28) ** 2) > 9), (n_slices, size, size)),
        "node": ((z - 3) ** 2 + (y - 30) ** 2 + (x - 8) ** 2) <= 4,
        "voxel": (z == 1) & (y == 5) & (x == 5),
        "edge": (z >= 2) & (y <= 6) & (x >= 30),              # touches two borders of the image
        "diagonal": (z == 4) & (np.abs(y - x) <= 1) & (y > 20) & (y < 38),
    }
    builder = rt_utils.RTStructBuilder.create_new(dicom_series_path=str(folder))
    order = np.argsort([float(ds.ImagePositionPatient[2]) for ds in ct])  # rt-utils' slice order
    assert list(order) == list(range(n_slices))                            # make_series': by position
    for name, m in known.items():
        builder.add_roi(mask=np.ascontiguousarray(np.moveaxis(np.array(m), 0, -1)), name=name)
    path = tmp_path / "rt.dcm"
    builder.save(str(path))
    theirs = rt_utils.RTStructBuilder.create_from(dicom_series_path=str(folder), rt_struct_path=str(path))
    return ct, known, path, theirs


@pytest.mark.filterwarnings("ignore:'FileDataset.is_:DeprecationWarning")  # rt-utils' save()
@pytest.mark.parametrize(("spacing", "origin"), [
    (0.8, (-100.0, -110.0, 0.0)),
    # numbers that are not binary fractions: the decimal round trip moves the contour points
    # off the voxel centres by ~1e-13 voxel, which the snapping must absorb (on such a grid
    # the earlier scikit-image fill lost 104 of the 422 voxels of a node of radius 4)
    (0.977, (-249.511, -231.77, -80.3)),
])
def test_rtstruct_fillpoly_equals_rt_utils_voxel_for_voxel(tmp_path, spacing, origin):
    """rt-utils writes contours through the centres of each mask's boundary voxels (OpenCV's
    findContours) and reads them back with cv2.fillPoly: rule="fillpoly" gives its masks
    exactly, which here are also the known masks; rule="centre" gives them less exactly the
    voxels on the contours (the whole boundary ring, and the voxels around a hole)."""
    pydicom = pytest.importorskip("pydicom")
    cv2 = pytest.importorskip("cv2")
    ct, known, path, theirs = _rt_utils_case(tmp_path, spacing, origin)
    like = op.volume_from_datasets(ct)
    ds = pydicom.dcmread(path)
    fill, centre = rtstruct_mask(ds, like, rule="fillpoly"), rtstruct_mask(ds, like)
    uids = [str(d.SOPInstanceUID) for d in theirs.series_data]
    to_like = [uids.index(u) for u in like.sop_instance_uid.values]
    by_position = [[str(d.SOPInstanceUID) for d in ct].index(u) for u in like.sop_instance_uid.values]
    for name, truth in known.items():
        rt_mask = np.moveaxis(theirs.get_roi_mask_by_name(name), -1, 0)[to_like]
        f, c = fill.sel(roi=name).values, centre.sel(roi=name).values
        np.testing.assert_array_equal(f, rt_mask, err_msg=name)
        np.testing.assert_array_equal(f, np.asarray(truth)[by_position], err_msg=name)
        # the centre rule: exactly the voxels that are not on a contour line
        on_lines = np.zeros_like(f)
        roi = next(r for r in ds.StructureSetROISequence if r.ROIName == name)
        contours = next(rc for rc in ds.ROIContourSequence
                        if rc.ReferencedROINumber == roi.ROINumber).ContourSequence
        inv = np.linalg.inv(np.reshape(like.attrs["affine"], (4, 4)))
        for contour in contours:
            pts = np.reshape(np.asarray(contour.ContourData, float), (-1, 3))
            idx = (inv @ np.c_[pts, np.ones(len(pts))].T)[:3].T
            k = int(np.rint(idx[0, 0]))
            img = np.zeros(f.shape[1:], np.uint8)
            cv2.polylines(img, [np.rint(idx[:, [2, 1]]).astype(np.int32)], True, 1)
            on_lines[k] |= img.astype(bool)
        np.testing.assert_array_equal(c, f & ~on_lines, err_msg=name)


def test_rtstruct_fillpoly_equals_opencv_on_any_polygon():
    """Random polygons (float vertices, some beyond the image, several per ROI and slice so
    they overlap and make holes): rule="fillpoly" equals cv2.fillPoly on the vertices rounded
    as rt-utils rounds them, voxel for voxel, OpenCV's clipping at the image border included."""
    cv2 = pytest.importorskip("cv2")
    ct = make_series(NZ, NY, NX, **AXIAL)
    like = op.volume_from_datasets(ct)
    inv = np.linalg.inv(np.reshape(like.attrs["affine"], (4, 4)))
    rng = np.random.default_rng(11)
    rois, expected = {}, {}
    for n in range(60):
        k = int(rng.integers(NZ))
        polygons = [rng.uniform(-6, [NY + 5, NX + 5], size=(int(rng.integers(3, 9)), 2))
                    for _ in range(int(rng.integers(1, 4)))]
        contours = [(k, [round(float(v), 6) for r, c in p for v in _point(ct[k], r, c)])
                    for p in polygons]
        rois[f"p{n}"] = contours
        img = np.zeros((NY, NX), np.uint8)
        pts = []
        for _, data in contours:   # rounded as rt-utils rounds: from the stored mm, not r, c
            lps = np.reshape(data, (-1, 3))
            idx = (inv @ np.c_[lps, np.ones(len(lps))].T)[:3].T
            pts.append(np.around(idx[:, [2, 1]]).astype(np.int32))
        cv2.fillPoly(img, pts, 1)
        expected[f"p{n}"] = (k, img.astype(bool))
    m = rtstruct_mask(_rtstruct(ct, rois), like, rule="fillpoly")
    positions = list(like.sop_instance_uid.values)
    for name, (k, img) in expected.items():
        got = m.sel(roi=name).values
        z = positions.index(str(ct[k].SOPInstanceUID))
        np.testing.assert_array_equal(got[z], img, err_msg=name)
        assert int(got.sum()) == int(img.sum())
