"""Siemens mosaics (orthanc_pandas._imaging.mosaic) and the other "one file, many slices" forms.

Independent answers: dcm2niix (Debian's package) on the same files, read back with nibabel;
the untiled slices the synthetic mosaic was made from; the server's own copy of the files.
The real files are nibabel's test data (a Siemens DWI mosaic, a Philips enhanced MR), which
nobody here wrote.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

import orthanc_pandas as op
from orthanc_pandas.errors import MissingGeometryError
from orthanc_pandas.testing.synthetic import make_mosaic, to_bytes

nib = pytest.importorskip("nibabel")
NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"
DCM2NIIX = shutil.which("dcm2niix")


def _real(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name.removesuffix(".gz")
    with gzip.open(NIBABEL_DATA / name) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def _dcm2niix(path: Path, tmp_path: Path):
    """dcm2niix's NIfTI of one file, reoriented to the closest canonical (RAS) orientation."""
    if DCM2NIIX is None:
        pytest.fail("dcm2niix is missing: scripts/setup.sh test installs Debian's dcm2niix")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    shutil.copy(path, src / path.name)
    subprocess.run([DCM2NIIX, "-z", "n", "-f", "ref", "-o", str(out), str(src)], check=True,
                   capture_output=True)
    return nib.as_closest_canonical(nib.load(out / "ref.nii"))


def _ours(vol, tmp_path: Path):
    vol.orthanc.to_nifti(tmp_path / "ours.nii")
    return nib.as_closest_canonical(nib.load(tmp_path / "ours.nii"))


def _assert_same_nifti(ours, ref) -> None:
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))


@pytest.mark.parametrize("name", ["siemens_dwi_1000.dcm.gz", "siemens_dwi_0.dcm.gz"])
def test_siemens_mosaic_equals_dcm2niix(name, tmp_path):
    path = _real(name, tmp_path)
    ds = pydicom.dcmread(path)
    assert "MOSAIC" in ds.ImageType and ds.Rows > 128  # the stored image is the tiled one
    vol = op.volume_from_datasets([ds], rescale=False)
    ref = _dcm2niix(path, tmp_path)
    assert vol.dims == ("z", "y", "x") and vol.shape[0] == ref.shape[2] > 1
    _assert_same_nifti(_ours(vol, tmp_path), ref)


def test_philips_enhanced_mr_equals_dcm2niix(tmp_path):
    path = _real("philips_mprage.dcm.gz", tmp_path)
    vol = op.volume_from_datasets([pydicom.dcmread(path)], rescale=False)
    _assert_same_nifti(_ours(vol, tmp_path), _dcm2niix(path, tmp_path))


@pytest.mark.parametrize("orientation,normal_sign", [
    ((1, 0, 0, 0, 1, 0), 1.0),     # axial, slices along +normal
    ((1, 0, 0, 0, 1, 0), -1.0),    # slices stored against the row x column normal
    ((0, 1, 0, 0, 0, -1), 1.0),    # sagittal
    ((1, 0, 0, 0, 0.8, -0.6), 1.0),  # oblique
])
@pytest.mark.parametrize("n", [1, 5, 9, 10])
def test_synthetic_mosaic_equals_its_untiled_slices(orientation, normal_sign, n):
    mosaic = make_mosaic(n, 4, 6, orientation=orientation, normal_sign=normal_sign, seed="m")
    got = op.volume_from_datasets([pydicom.dcmread(io.BytesIO(to_bytes(mosaic)))])
    ref = op.volume_from_datasets(mosaic.slices)
    assert got.shape == ref.shape == (n, 4, 6)
    np.testing.assert_allclose(got.attrs["affine"], ref.attrs["affine"], atol=1e-6)
    np.testing.assert_array_equal(got.values, ref.values)
    assert list(got.sop_instance_uid.values) == [str(mosaic.SOPInstanceUID)] * n


def test_a_mosaic_without_its_slice_direction_is_refused_not_returned_as_one_slice():
    mosaic = make_mosaic(5, 4, 6, csa=False, seed="no-csa")
    with pytest.raises(MissingGeometryError, match="mosaic.*SliceNormalVector"):
        op.volume_from_datasets([mosaic])
    del mosaic[0x0019100A]
    with pytest.raises(MissingGeometryError, match="slice count"):
        op.volume_from_datasets([mosaic])


def test_mosaic_series_on_the_server_report_and_volume(empty_server, tmp_path):
    """The geometry report and volume() on a server agree with the local reading."""
    dwi = _real("siemens_dwi_1000.dcm.gz", tmp_path)
    broken = make_mosaic(4, 4, 6, csa=False, seed="broken", series_number=7)
    empty_server.upload([dwi])
    empty_server.upload_bytes([to_bytes(broken)])
    df = op.read_orthanc(empty_server.url)
    report = df.orthanc.series(geometry=True).set_index("SeriesNumber")
    dwi_number = int(pydicom.dcmread(dwi, stop_before_pixels=True).SeriesNumber)
    assert bool(report.loc[dwi_number, "volume_ok"]) is True
    assert bool(report.loc[7, "volume_ok"]) is False
    assert "mosaic" in report.loc[7, "volume_problem"]
    rows = df[df.SeriesInstanceUID == str(pydicom.dcmread(dwi, stop_before_pixels=True).SeriesInstanceUID)]
    vol = rows.orthanc.volume(rescale=False)
    local = op.volume_from_datasets([pydicom.dcmread(dwi)], rescale=False)
    np.testing.assert_array_equal(vol.values, local.values)
    np.testing.assert_allclose(vol.attrs["affine"], local.attrs["affine"])
