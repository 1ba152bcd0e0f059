"""vol.orthanc (xarray_accessor.py) against independent readers of the same downloaded files:
SimpleITK's DICOM series reader, dcm2niix + nibabel, and pydicom."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import xarray as xr

import orthanc_pandas as op
from orthanc_pandas.errors import GeometryError, GeometryWarning, NotAVolumeError
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import make_series, to_bytes

sitk = pytest.importorskip("SimpleITK")
nib = pytest.importorskip("nibabel")

ROOT = Path(__file__).resolve().parents[1]

# rotated 0.3 rad about z then tilted 0.2 rad: not aligned with any patient axis
OBLIQUE = (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2),
           np.sin(0.2))
SERIES = {
    "axial": dict(orientation=(1, 0, 0, 0, 1, 0)),
    "sagittal": dict(orientation=(0, 1, 0, 0, 0, -1), pixel_spacing=(0.9, 0.6), slice_spacing=1.5),
    "coronal": dict(orientation=(1, 0, 0, 0, 0, -1), slice_spacing=3.0, origin=(-50, 20, 30)),
    "oblique": dict(orientation=OBLIQUE, pixel_spacing=(0.75, 0.5), slice_spacing=2.0),
}


def _noise(k, rows, cols, z):
    # no symmetry, so any flip or transpose of the voxel order shows
    return np.random.default_rng(k).integers(0, 3000, (rows, cols))


@pytest.fixture(scope="module")
def served(orthanc_available, tmp_path_factory):
    """One Orthanc with the four series; per name: its rows, volume and downloaded files."""
    out = {}
    with LocalOrthanc(name="interop") as server:
        blobs = []
        for i, (name, kw) in enumerate(SERIES.items()):
            dss = make_series(7, 24, 20, seed=f"interop-{name}", series_number=i + 1,
                              series_description=name, pixels=_noise,
                              instance_numbers="shuffled", **kw)
            blobs += [to_bytes(ds) for ds in dss]
        server.upload_bytes(blobs)
        df = op.read_orthanc(server.url)
        for name in SERIES:
            rows = df[df.SeriesDescription == name]
            folder = tmp_path_factory.mktemp(name)
            paths = rows.orthanc.download(folder)
            out[name] = (rows, rows.orthanc.volume(), [Path(p) for p in paths], folder)
        yield out


@pytest.mark.parametrize("name", list(SERIES))
def test_affine_matches_pydicom_on_every_voxel_corner(served, name):
    _, vol, paths, _ = served[name]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, paths)}
    a = vol.orthanc.affine
    assert a.shape == (4, 4)
    nz, ny, nx = vol.shape
    for k, sop in enumerate(vol.sop_instance_uid.values):
        ds = by_uid[sop]
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        for r, c in ((0, 0), (ny - 1, 0), (0, nx - 1), (ny - 1, nx - 1)):
            truth = ipp + r * dr * iop[3:] + c * dc * iop[:3]  # DICOM PS3.3 C.7.6.2.1.1
            np.testing.assert_allclose((a @ [k, r, c, 1])[:3], truth, atol=1e-4)
        np.testing.assert_array_equal(vol.values[k], ds.pixel_array.astype(np.float32) - 1024)


@pytest.mark.parametrize("name", list(SERIES))
def test_to_sitk_equals_sitk_series_reader(served, name):
    _, vol, _, folder = served[name]
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    assert len(files) == vol.sizes["z"]
    reader.SetFileNames(files)
    truth = reader.Execute()
    img = vol.orthanc.to_sitk()
    assert img.GetSize() == truth.GetSize() == (20, 24, 7)
    np.testing.assert_allclose(img.GetOrigin(), truth.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), truth.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(img.GetDirection(), truth.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img),
                                  sitk.GetArrayFromImage(truth).astype(np.float32))
    # the same physical point for a voxel away from the origin
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((19, 23, 6)),
                               truth.TransformIndexToPhysicalPoint((19, 23, 6)), atol=1e-4)


def _dcm2niix(folder: Path, out: Path) -> Path:
    exe = shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("dcm2niix is not installed (apt-get install dcm2niix; scripts/setup.sh test does)")
    out.mkdir()
    res = subprocess.run([exe, "-b", "n", "-z", "n", "-f", "%s", "-o", str(out), str(folder)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    found = sorted(out.glob("*.nii"))
    assert len(found) == 1, (found, res.stdout)
    return found[0]


@pytest.mark.parametrize("name", list(SERIES))
def test_to_nifti_equals_dcm2niix(served, name, tmp_path):
    _, vol, _, folder = served[name]
    truth = nib.load(_dcm2niix(folder, tmp_path / "dcm2niix"))
    ours = nib.load(vol.orthanc.to_nifti(tmp_path / "ours.nii.gz").get_filename())
    assert ours.header.get_sform(coded=True)[1] == 1
    assert ours.header.get_qform(coded=True)[1] == 1
    np.testing.assert_allclose(ours.header.get_qform(), ours.affine, atol=1e-4)
    # dcm2niix flips the row axis on disk; bring both to the closest RAS+ voxel order
    t, o = nib.as_closest_canonical(truth), nib.as_closest_canonical(ours)
    np.testing.assert_allclose(o.affine, t.affine, atol=1e-3)
    assert o.shape == t.shape
    np.testing.assert_array_equal(o.get_fdata(), t.get_fdata())
    # and without reorientation: our voxel (i, j, k) is the DataArray's (x, y, z)
    np.testing.assert_array_equal(np.asarray(ours.dataobj)[3, 5, 2], vol.values[2, 5, 3])


def test_nifti_axes_are_ras(served, tmp_path):
    # axial with identity orientation: +x is the patient's left in LPS, so -x in RAS
    _, vol, _, _ = served["axial"]
    img = vol.orthanc.to_nifti(tmp_path / "a.nii")
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    lps = vol.orthanc.affine @ [2, 3, 4, 1]
    ras = img.affine @ [4, 3, 2, 1]
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]])


def test_to_netcdf_round_trip(served, tmp_path):
    _, vol, _, _ = served["oblique"]
    vol = vol.assign_attrs(flag=True, nothing=None, nested={"a": [1, 2]})
    path = tmp_path / "v.nc"
    vol.orthanc.to_netcdf(path)
    with xr.open_dataarray(path) as back:
        np.testing.assert_array_equal(back.values, vol.values)
        np.testing.assert_allclose(np.reshape(back.attrs["affine"], (4, 4)), vol.orthanc.affine)
        assert list(back.sop_instance_uid.values) == list(vol.sop_instance_uid.values)
        assert back.attrs["flag"] == 1 and "nothing" not in back.attrs
        assert back.attrs["nested"] == '{"a": [1, 2]}'
        np.testing.assert_allclose(back.orthanc.affine, vol.orthanc.affine)


def test_to_netcdf_works_without_netcdf4(served, tmp_path):
    """A base install has h5netcdf (a dependency), not netCDF4: both vol.to_netcdf and
    vol.orthanc.to_netcdf must write."""
    deps = (ROOT / "pyproject.toml").read_text().split("dependencies = [", 1)[1].split("]\n", 1)[0]
    assert '"h5netcdf[h5py]' in deps
    _, vol, _, _ = served["axial"]
    src = tmp_path / "src.nc"
    vol.orthanc.to_netcdf(src)
    code = f"""
import sys
sys.modules["netCDF4"] = None          # as if not installed
import numpy as np, xarray as xr
import orthanc_pandas
vol = xr.open_dataarray({str(src)!r}, engine="h5netcdf").load()
vol.orthanc.to_netcdf({str(tmp_path / 'a.nc')!r})
vol.to_netcdf({str(tmp_path / 'b.nc')!r})
for p in ("a.nc", "b.nc"):
    back = xr.open_dataarray({str(tmp_path)!r} + "/" + p)
    assert np.array_equal(back.values, vol.values)
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_sheared_volume_refuses_sitk_but_nifti_keeps_the_shear(empty_server, tmp_path):
    tilted = [(0.0, 0.4 * k, 2.0 * k) for k in range(5)]
    empty_server.upload_bytes([to_bytes(d) for d in make_series(positions=tilted, rows=8, cols=6,
                                                                 seed="shear")])
    df = op.read_orthanc(empty_server.url)
    with pytest.warns(GeometryWarning):
        vol = df.orthanc.volume(allow_irregular=True)
    with pytest.raises(GeometryError, match="not orthonormal"):
        vol.orthanc.to_sitk()
    img = vol.orthanc.to_nifti(tmp_path / "s.nii")
    assert img.header.get_qform(coded=True)[1] == 0  # a qform cannot hold a shear
    # every slice's first voxel still lands on its own ImagePositionPatient (LPS -> RAS)
    for k, p in enumerate(tilted):
        np.testing.assert_allclose(img.affine @ [0, 0, k, 1], [-p[0], -p[1], p[2], 1], atol=1e-6)


def test_colour_volume_becomes_a_vector_image(empty_server):
    rgb = make_series(3, 6, 5, seed="rgb", modality="OT", dtype=np.uint8,
                      pixels=lambda k, r, c, z: np.random.default_rng(k).integers(0, 256, (r, c, 3)))
    empty_server.upload_bytes([to_bytes(d) for d in rgb])
    vol = op.read_orthanc(empty_server.url).orthanc.volume()
    img = vol.orthanc.to_sitk()
    assert img.GetNumberOfComponentsPerPixel() == 3
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.values)


def test_no_affine_and_not_a_volume():
    vol = xr.DataArray(np.zeros((2, 3, 4)), dims=("z", "y", "x"), attrs={"geometry": "none"})
    with pytest.raises(GeometryError, match="no affine"):
        _ = vol.orthanc.affine
    with pytest.raises(NotAVolumeError, match="dims"):
        _ = xr.DataArray(np.zeros(3), dims=("t",)).orthanc


def test_missing_extra_says_which(monkeypatch):
    vol = xr.DataArray(np.zeros((2, 3, 4)), dims=("z", "y", "x"),
                       attrs={"affine": np.eye(4).ravel().tolist()})
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"orthanc-pandas\[interop\]"):
        vol.orthanc.to_sitk()
    with pytest.raises(ImportError, match=r"orthanc-pandas\[interop\]"):
        vol.orthanc.to_nifti()
