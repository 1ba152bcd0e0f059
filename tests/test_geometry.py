"""Pure geometry and assembly (orthanc_pandas.volume) on in-memory pydicom datasets."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pydicom
import pytest
import xarray as xr
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence

from orthanc_pandas._imaging.assemble import from_datasets
from orthanc_pandas._imaging.geometry import affine_matrix, slice_geometry, slice_headers
from orthanc_pandas.errors import (
    DuplicateSliceError,
    GantryTiltError,
    GeometryError,
    GeometryWarning,
    InconsistentSlicesError,
    MissingGeometryError,
    MixedOrientationError,
    PixelDataError,
    SliceSpacingError,
)
from orthanc_pandas.testing.synthetic import make_multiframe, make_series, to_bytes

OBLIQUE = (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2),
           np.sin(0.2))
ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "coronal": (1, 0, 0, 0, 0, -1),
    "oblique": OBLIQUE,
}


def roundtrip(ds: Dataset) -> Dataset:
    """Encode and read back, as a downloaded file would be."""
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def shuffled(slices, seed=0):
    idx = np.random.default_rng(seed).permutation(len(slices))
    return [slices[i] for i in idx]


def expected_volume(slices_in_position_order, rescale=True):
    """The truth, built directly with pydicom."""
    out = []
    for ds in slices_in_position_order:
        arr = ds.pixel_array
        out.append(apply_modality_lut(arr, ds).astype(np.float32) if rescale else arr)
    return np.stack(out)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_affine_maps_voxels_to_each_slice_position(name):
    iop = ORIENTATIONS[name]
    slices = [roundtrip(d) for d in make_series(6, 10, 7, orientation=iop, pixel_spacing=(0.6, 0.9),
                                                slice_spacing=1.25, origin=(-50.5, 20.0, 7.0),
                                                instance_numbers="shuffled")]
    da = from_datasets(shuffled(slices))
    A = np.reshape(da.attrs["affine"], (4, 4))
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = np.cross(row, col)
    first = np.array(slices[0].ImagePositionPatient, float)
    np.testing.assert_allclose(A @ [0, 0, 0, 1], [*first, 1], atol=1e-6)
    # steps by the expected spacing vectors: PixelSpacing is (between rows, between columns)
    np.testing.assert_allclose(A[:3, 0], 1.25 * normal, atol=1e-6)
    np.testing.assert_allclose(A[:3, 1], 0.6 * col, atol=1e-6)
    np.testing.assert_allclose(A[:3, 2], 0.9 * row, atol=1e-6)
    np.testing.assert_allclose(da.attrs["spacing"], [1.25, 0.6, 0.9], rtol=1e-6)
    np.testing.assert_allclose(da.attrs["origin"], first, atol=1e-6)
    np.testing.assert_allclose(np.reshape(da.attrs["direction"], (3, 3)), [normal, col, row], atol=1e-6)
    # every slice k lands where its own header says, and z is its position along the normal
    by_uid = {ds.SOPInstanceUID: ds for ds in slices}
    for k, u in enumerate(da.sop_instance_uid.values):
        ipp = np.array(by_uid[u].ImagePositionPatient, float)
        np.testing.assert_allclose(A @ [k, 0, 0, 1], [*ipp, 1], atol=1e-6)
        assert da.z.values[k] == pytest.approx(ipp @ normal, abs=1e-6)
    # the last voxel of the last slice
    corner = np.array(slices[-1].ImagePositionPatient, float) + 9 * 0.6 * col + 6 * 0.9 * row
    np.testing.assert_allclose(A @ [5, 9, 6, 1], [*corner, 1], atol=1e-6)
    np.testing.assert_array_equal(da.values, expected_volume(slices))
    assert da.y.attrs["units"] == da.x.attrs["units"] == da.z.attrs["units"] == "mm"
    # y, x: positions along the column / row directions, from the first slice's IPP
    np.testing.assert_allclose(da.y.values, first @ col + np.arange(10) * 0.6, atol=1e-6)
    np.testing.assert_allclose(da.x.values, first @ row + np.arange(7) * 0.9, atol=1e-6)
    # and the affine agrees: direction @ (A @ index) = (z, y, x) coords of that voxel
    D = np.reshape(da.attrs["direction"], (3, 3))
    for k, r, c in [(0, 0, 0), (5, 9, 6), (2, 4, 3)]:
        np.testing.assert_allclose(D @ (A @ [k, r, c, 1])[:3],
                                   [da.z.values[k], da.y.values[r], da.x.values[c]], atol=1e-6)
    assert da.z.dtype == da.y.dtype == np.float64


def test_affine_matrix_docstring_convention():
    A = affine_matrix([0, 0, 0], [0, 1, 0, 1, 0, 0], [2.0, 3.0], [0, 0, 5.0])
    # one row down moves along the column direction (x here) by the row spacing (2)
    np.testing.assert_allclose(A @ [0, 1, 0, 1], [2, 0, 0, 1])
    np.testing.assert_allclose(A @ [0, 0, 1, 1], [0, 3, 0, 1])


def test_sorted_by_position_not_instance_number_and_rescaled():
    slices = [roundtrip(d) for d in make_series(5, 8, 8, instance_numbers="descending", slope=2,
                                                intercept=-100)]
    assert [int(d.InstanceNumber) for d in slices] == [5, 4, 3, 2, 1]
    da = from_datasets(slices[::-1])
    assert list(da.sop_instance_uid.values) == [d.SOPInstanceUID for d in slices]
    np.testing.assert_array_equal(da.values, expected_volume(slices))
    assert da.dtype == np.float32 and da.attrs["units"] == "HU"
    raw = from_datasets(slices, rescale=False)
    assert raw.dtype == np.int16 and "units" not in raw.attrs
    np.testing.assert_array_equal(raw.values, expected_volume(slices, rescale=False))


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int8])
def test_stored_types(dtype):
    slices = [roundtrip(d) for d in make_series(3, 6, 5, dtype=dtype, modality="MR", slope=1.5,
                                                intercept=3)]
    raw = from_datasets(slices, rescale=False)
    assert raw.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(raw.values, expected_volume(slices, rescale=False))
    da = from_datasets(slices)
    np.testing.assert_allclose(da.values, expected_volume(slices), rtol=1e-6)
    assert "units" not in da.attrs  # HU only for CT
    assert from_datasets(slices, dtype="float64").dtype == np.float64


def test_per_slice_rescale_and_modality_lut_sequence():
    slices = [roundtrip(d) for d in make_series(3, 6, 6, modality="MR", dtype=np.uint16,
                                                pixels=lambda k, r, c, z: np.arange(r * c).reshape(r, c) % 4)]
    slices[1].RescaleSlope = "3"  # per-slice slopes (as in PET) must be honoured
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 16]
    lut.ModalityLUTType = "US"
    lut.LUTData = np.array([10, 20, 30, 4000], "<u2").tobytes()
    slices[2].ModalityLUTSequence = Sequence([lut])
    del slices[2].RescaleSlope, slices[2].RescaleIntercept
    slices = [roundtrip(d) for d in slices]
    da = from_datasets(slices)
    np.testing.assert_array_equal(da.values, expected_volume(slices))
    assert set(np.unique(da.values[2])) == {10, 20, 30, 4000}


def test_rgb():
    rng = np.random.default_rng(1)
    slices = [roundtrip(d) for d in make_series(
        3, 5, 4, modality="OT", dtype=np.uint8,
        pixels=lambda k, r, c, z: rng.integers(0, 255, (r, c, 3)))]
    da = from_datasets(slices)
    assert da.dims == ("z", "y", "x", "c") and da.dtype == np.uint8
    assert list(da.c.values) == ["R", "G", "B"]
    np.testing.assert_array_equal(da.values, np.stack([d.pixel_array for d in slices]))


def test_multiframe_with_per_frame_positions_sorted_along_z():
    ds = roundtrip(make_multiframe(5, 8, 6, frame_order="descending", slope=2, intercept=-100))
    da = from_datasets([ds])
    assert da.dims == ("z", "y", "x")
    assert list(da.frame.values) == [4, 3, 2, 1, 0]
    truth = (ds.pixel_array[::-1] * 2.0 - 100).astype(np.float32)
    np.testing.assert_array_equal(da.values, truth)
    A = np.reshape(da.attrs["affine"], (4, 4))
    last = ds.PerFrameFunctionalGroupsSequence[-1].PlanePositionSequence[0].ImagePositionPatient
    np.testing.assert_allclose(A @ [0, 0, 0, 1], [*np.array(last, float), 1], atol=1e-6)
    np.testing.assert_allclose(da.attrs["spacing"], [2.5, 0.7, 0.8])


def test_multiframe_without_positions_keeps_a_frame_dim():
    ds = roundtrip(make_multiframe(4, 6, 6, per_frame_positions=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one instance: nothing was guessed, no warning
        da = from_datasets([ds], rescale=False)
    assert da.dims == ("frame", "y", "x")
    np.testing.assert_array_equal(da.values, ds.pixel_array)
    assert da.attrs["geometry"] == "none" and "affine" not in da.attrs


def test_attrs_are_json_and_netcdf_friendly(tmp_path):
    slices = [roundtrip(d) for d in make_series(4, 6, 6)]
    da = from_datasets(slices, instances=[f"id{i}" for i in range(4)])
    json.dumps(da.attrs)
    path = tmp_path / "v.nc"
    da.to_netcdf(path)
    back = xr.open_dataarray(path)
    np.testing.assert_array_equal(back.values, da.values)
    np.testing.assert_allclose(np.reshape(back.attrs["affine"], (4, 4)),
                               np.reshape(da.attrs["affine"], (4, 4)))
    assert list(back.instance.values) == ["id0", "id1", "id2", "id3"]
    assert back.attrs["series_instance_uid"] == slices[0].SeriesInstanceUID
    back.close()


# -- irregular geometry ----------------------------------------------------------------------
def positions(n, spacing=2.0, shift=(0.0, 0.0)):
    return [(shift[0] * k, shift[1] * k, spacing * k) for k in range(n)]


CASES = {
    "tilt": (GantryTiltError, dict(positions=positions(5, shift=(0.0, 0.35))), [0, 4]),
    "gap": (SliceSpacingError, dict(positions=[p for k, p in enumerate(positions(6)) if k != 3]), [2, 3]),
    "duplicate": (DuplicateSliceError, dict(positions=positions(4) + [(0.0, 0.0, 4.0)]), [2, 4]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_irregular_series_raise_then_return_real_positions(case):
    exc_type, kw, involved = CASES[case]
    slices = [roundtrip(d) for d in make_series(8, 6, 6, **kw)]
    with pytest.raises(exc_type) as info:
        from_datasets(shuffled(slices))
    assert isinstance(info.value, GeometryError) and isinstance(info.value, ValueError)
    names = {slices[i].SOPInstanceUID for i in involved}
    assert names <= set(info.value.slices)
    assert all(n in str(info.value) for n in names)
    with pytest.warns(GeometryWarning):
        da = from_datasets(shuffled(slices), allow_irregular=True)
    truth_z = sorted(float(d.ImagePositionPatient[2]) for d in slices)
    np.testing.assert_allclose(da.z.values, truth_z)
    assert da.attrs["geometry"] == "irregular"


@pytest.mark.parametrize("case, tolerance", [("tilt", "tilt_tol"), ("gap", "spacing_rtol")])
def test_tolerances_are_arguments(case, tolerance):
    exc_type, kw, _ = CASES[case]
    hs = [slice_headers(roundtrip(d))[0] for d in make_series(8, 6, 6, **kw)]
    with pytest.raises(exc_type):
        slice_geometry(hs)
    assert slice_geometry(hs, **{tolerance: 10.0}).kind == "regular"


def test_each_file_is_decoded_once(monkeypatch):
    import orthanc_pandas._imaging.assemble as volume

    calls = []
    decode = volume.decode_pixels
    monkeypatch.setattr(volume, "decode_pixels", lambda ds: calls.append(ds) or decode(ds))
    slices = [roundtrip(d) for d in make_series(4, 6, 6)]
    da = from_datasets(shuffled(slices))
    assert len(calls) == 4 and da.shape == (4, 6, 6)
    np.testing.assert_array_equal(da.values, expected_volume(slices))


def test_tilted_series_affine_is_sheared_and_exact():
    slices = [roundtrip(d) for d in make_series(5, 6, 6, positions=positions(5, shift=(0.0, 0.35)))]
    with pytest.warns(GeometryWarning, match="degrees"):
        da = from_datasets(slices, allow_irregular=True)
    A = np.reshape(da.attrs["affine"], (4, 4))
    for k, ds in enumerate(slices):
        np.testing.assert_allclose(A @ [k, 0, 0, 1], [*np.array(ds.ImagePositionPatient, float), 1],
                                   atol=1e-6)


SKEWED = (1.0, 0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5), 0.0)  # row and column 45 degrees apart


def test_skewed_orientation_is_a_geometry_error():
    from orthanc_pandas._imaging.geometry import ORTHONORMAL_TOL, _check_orthonormal
    from orthanc_pandas.errors import GeometryError

    slices = [roundtrip(d) for d in make_series(3, 6, 6, orientation=SKEWED, seed="skew")]
    with pytest.raises(GeometryError, match="not orthonormal.*45 degrees apart") as info:
        from_datasets(slices)
    assert set(info.value.slices) == {d.SOPInstanceUID for d in slices}
    with pytest.warns(GeometryWarning, match="not orthonormal"):
        assert from_datasets(slices, allow_irregular=True).attrs["geometry"] == "irregular"
    # the check alone, on arrays, with its tolerance as an argument
    found = []
    hs = [slice_headers(d)[0] for d in slices]
    _check_orthonormal(hs, np.array(SKEWED), lambda *a: found.append(a))
    assert found and found[0][0] is GeometryError
    found.clear()
    # DS values rounded to 4 decimals (a real writer's habit) stay within the default tolerance
    tilted = np.round([1, 0, 0, 0, np.cos(0.05), -np.sin(0.05)], 4)
    _check_orthonormal(hs, tilted, lambda *a: found.append(a))
    assert not found
    nearly = np.array([1, 0, 0, 0.002, 1, 0])
    _check_orthonormal(hs, nearly, lambda *a: found.append(a), tol=ORTHONORMAL_TOL)
    assert found  # 0.11 degrees off perpendicular
    found.clear()
    _check_orthonormal(hs, nearly, lambda *a: found.append(a), tol=1e-2)
    assert not found


def test_mixed_orientation():
    axial = [roundtrip(d) for d in make_series(4, 6, 6, seed="a")]
    localizer = roundtrip(make_series(1, 6, 6, orientation=(0, 1, 0, 0, 0, -1), seed="b")[0])
    with pytest.raises(MixedOrientationError) as info:
        from_datasets(axial + [localizer])
    assert info.value.slices == [localizer.SOPInstanceUID]
    with pytest.warns(GeometryWarning):
        da = from_datasets(axial + [localizer], allow_irregular=True)
    assert da.sizes["z"] == 5


def test_inconsistent_pixel_spacing_and_shape():
    a = [roundtrip(d) for d in make_series(3, 6, 6, seed="a")]
    b = roundtrip(make_series(4, 6, 6, pixel_spacing=(0.5, 0.5), seed="a")[3])
    with pytest.raises(InconsistentSlicesError, match="PixelSpacing") as info:
        from_datasets(a + [b])
    assert info.value.slices == [b.SOPInstanceUID]
    c = roundtrip(make_series(4, 8, 6, seed="a")[3])
    with pytest.raises(InconsistentSlicesError, match="Rows x Columns"):
        from_datasets(a + [c], allow_irregular=True)  # cannot be stacked at all


def test_missing_geometry():
    slices = [roundtrip(d) for d in make_series(4, 6, 6, instance_numbers="descending")]
    del slices[1].ImagePositionPatient
    with pytest.raises(MissingGeometryError) as info:
        from_datasets(slices)
    assert info.value.slices == [slices[1].SOPInstanceUID]
    for ds in slices:
        ds.pop("ImagePositionPatient", None)
        del ds.ImageOrientationPatient
    with pytest.warns(GeometryWarning, match="InstanceNumber"):
        da = from_datasets(slices)
    assert list(da.sop_instance_uid.values) == [d.SOPInstanceUID for d in slices[::-1]]
    assert da.attrs["geometry"] == "none" and "affine" not in da.attrs
    np.testing.assert_array_equal(da.z.values, np.arange(4.0))


def test_no_pixel_data():
    ds = roundtrip(make_series(1, 4, 4)[0])
    del ds.PixelData
    with pytest.raises(PixelDataError, match="no pixel data"):
        from_datasets([ds])


def test_geometry_on_headers_only():
    hs = [slice_headers(d)[0] for d in make_series(4, 3, 3, slice_spacing=3.0)]
    g = slice_geometry(hs[::-1])
    assert g.order.tolist() == [3, 2, 1, 0]
    np.testing.assert_allclose(g.z, [0, 3, 6, 9])
    assert g.kind == "regular" and g.problems == []


def test_several_multiframe_instances_without_positions():
    a = roundtrip(make_multiframe(3, 4, 4, per_frame_positions=False, seed="c1"))
    b = roundtrip(make_multiframe(3, 4, 4, per_frame_positions=False, seed="c1"))
    b.SOPInstanceUID = "1.2.3.4"
    b.InstanceNumber = 0  # sorts first: InstanceNumber is the only order there is
    with pytest.warns(GeometryWarning, match="InstanceNumber"):
        da = from_datasets([a, b], rescale=False)
    assert da.dims == ("z", "frame", "y", "x")
    assert list(da.sop_instance_uid.values) == ["1.2.3.4", a.SOPInstanceUID]
    np.testing.assert_array_equal(da.values, np.stack([b.pixel_array, a.pixel_array]))
    c = roundtrip(make_multiframe(2, 4, 4, per_frame_positions=False, seed="c2"))
    with pytest.raises(InconsistentSlicesError, match="NumberOfFrames"):
        from_datasets([a, c])
