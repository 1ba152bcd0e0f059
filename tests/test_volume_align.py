"""Two series of one frame of reference line up through their coordinates (real Orthanc).

The truth is independent of the coordinates: every voxel's value encodes the LPS position of
its centre (computed from the generated headers), so two volumes are registered exactly when
the values they hold at equal coordinates are equal, and the overlap is known from the offsets.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import xarray as xr

import orthanc_pandas as op
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import make_series, to_bytes, uid

N, SIZE, STEP = 12, 32, 2.0  # slices, rows = columns, slice spacing (mm); pixel spacing 1 mm
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
OBLIQUE = (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2),
           np.sin(0.2))


def _encoder(origin, orientation, spacing=1.0):
    """pixels(k, rows, cols, z) giving each voxel a code of its LPS position (1 mm grid)."""
    iop = np.asarray(orientation, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)

    def pixels(k, rows, cols, z):
        r, c = np.mgrid[0:rows, 0:cols]
        p = (np.asarray(origin, float) + k * STEP * normal)[:, None, None] \
            + spacing * (c * row[:, None, None] + r * col[:, None, None])
        # coordinates along the volume's own axes, relative to a common reference point
        u, v, w = (np.tensordot(d, p, axes=1) for d in (row, col, normal))
        return np.rint(u + 60) + 100 * np.rint(v + 60) + 10000 * np.rint(w / STEP)
    return pixels


def _pair(orientation, offset, seed):
    """Two series ("ct", "pet") of one study / frame of reference; pet is moved by
    ``offset`` = (along row, along column, along normal) in mm."""
    iop = np.asarray(orientation, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    study = uid("study", seed)
    o_ct = np.array([-10.0, -12.0, 4.0])
    o_pet = o_ct + offset[0] * row + offset[1] * col + offset[2] * normal
    out = {}
    for name, origin, number in (("ct", o_ct, 1), ("pet", o_pet, 2)):
        out[name] = [pydicom.dcmread(io.BytesIO(to_bytes(d))) for d in make_series(
            N, SIZE, SIZE, orientation=orientation, pixel_spacing=(1.0, 1.0), slice_spacing=STEP,
            origin=origin, study_uid=study, series_number=number, seed=f"{seed}-{name}",
            intercept=0.0, pixels=_encoder(origin, orientation), dtype=np.int32)]
    assert out["ct"][0].FrameOfReferenceUID == out["pet"][0].FrameOfReferenceUID
    return out


CASES = {
    # 10 mm along x and y, 2 slices along z: overlap 22 x 22 in-plane, 10 slices
    "axial": (AXIAL, (10.0, 10.0, 2 * STEP)),
    "axial-negative": (AXIAL, (-7.0, 3.0, -3 * STEP)),
    "oblique": (OBLIQUE, (5.0, -9.0, STEP)),
}


@pytest.fixture(scope="module")
def volumes(orthanc_available):
    pairs = {name: _pair(iop, off, name) for name, (iop, off) in CASES.items()}
    with LocalOrthanc(name="volume-align") as srv:
        srv.upload_bytes(to_bytes(d) for p in pairs.values() for dss in p.values() for d in dss)
        df = op.read_orthanc(srv.url)
        out = {}
        for name, pair in pairs.items():
            out[name] = {k: df[df.SeriesInstanceUID == dss[0].SeriesInstanceUID].orthanc.volume()
                         for k, dss in pair.items()}
        yield out


def _expected_overlap(offset):
    """(z, y, x) sizes of the true overlap."""
    return (N - round(abs(offset[2]) / STEP), SIZE - round(abs(offset[1])),
            SIZE - round(abs(offset[0])))


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("axial")])
def test_xr_align_gives_the_true_overlap(volumes, name):
    ct, pet = volumes[name]["ct"], volumes[name]["pet"]
    a, b = xr.align(ct, pet, join="inner")
    assert dict(a.sizes) == dict(zip(("z", "y", "x"), _expected_overlap(CASES[name][1]), strict=True))
    # registered: both hold the same patient position at every shared voxel
    np.testing.assert_array_equal(a.values, b.values)
    # interp_like onto the CT grid: the same values where the PET exists, NaN elsewhere
    on_ct = pet.interp_like(ct)
    inside = on_ct.notnull()
    assert int(inside.sum()) == int(np.prod(_expected_overlap(CASES[name][1])))
    np.testing.assert_array_equal(on_ct.values[inside.values], ct.values[inside.values])


def test_oblique_volumes_line_up_within_a_tolerance(volumes):
    """Oblique coordinates are not exact binary fractions: exact-equality joins may miss, a
    nearest join with a tolerance finds the true overlap."""
    ct, pet = volumes["oblique"]["ct"], volumes["oblique"]["pet"]
    on_ct = pet.reindex_like(ct, method="nearest", tolerance=1e-3)
    inside = on_ct.notnull()
    assert int(inside.sum()) == int(np.prod(_expected_overlap(CASES["oblique"][1])))
    np.testing.assert_array_equal(on_ct.values[inside.values], ct.values[inside.values])


@pytest.mark.parametrize("name", list(CASES))
def test_coordinates_are_positions_along_the_volume_axes(volumes, name):
    """x, y, z are the projections of each voxel's LPS position (from the affine) on the
    row, column and normal directions of ImageOrientationPatient."""
    iop = np.asarray(CASES[name][0], float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    for vol in volumes[name].values():
        A = np.reshape(vol.attrs["affine"], (4, 4))
        for k, r, c in [(0, 0, 0), (N - 1, SIZE - 1, SIZE - 1), (3, 7, 20)]:
            p = (A @ [k, r, c, 1])[:3]
            np.testing.assert_allclose([vol.z.values[k], vol.y.values[r], vol.x.values[c]],
                                       [p @ normal, p @ col, p @ row], atol=1e-6)
        assert vol.x.attrs["units"] == vol.y.attrs["units"] == vol.z.attrs["units"] == "mm"
