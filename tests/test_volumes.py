"""df.orthanc.volume() against a real Orthanc, compared with pydicom reading the originals."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import apply_modality_lut

import orthanc_pandas as op
from orthanc_pandas.errors import (
    DuplicateSliceError,
    GantryTiltError,
    GeometryWarning,
    MixedOrientationError,
    OrthancConnectionError,
    ParseWarning,
    PixelDataError,
    SelectionError,
    SliceSpacingError,
)
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import make_multiframe, make_series, to_bytes, uid

OBLIQUE = (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2),
           np.sin(0.2))


def _rgb(k, r, c, z):
    return (np.random.default_rng(k).integers(0, 256, (r, c, 3))).astype(np.uint8)


def _tilted():
    return [(0.0, 0.4 * k, 2.0 * k) for k in range(5)]


# name -> list of datasets in position order (make_series returns them so)
REGULAR = {
    "axial": lambda: make_series(6, 12, 10, seed="axial"),
    "sagittal": lambda: make_series(5, 12, 10, orientation=(0, 1, 0, 0, 0, -1), seed="sagittal"),
    "oblique": lambda: make_series(5, 9, 11, orientation=OBLIQUE, pixel_spacing=(0.5, 0.9),
                                   slice_spacing=1.5, seed="oblique"),
    "reversed": lambda: make_series(5, 8, 8, instance_numbers="descending", seed="reversed"),
    "slope": lambda: make_series(4, 8, 8, slope=2, intercept=-100, seed="slope"),
    "uint16": lambda: make_series(4, 8, 8, dtype=np.uint16, modality="MR", intercept=0, seed="u16"),
    "uint8": lambda: make_series(4, 8, 8, dtype=np.uint8, modality="MR", intercept=0, seed="u8"),
    "rgb": lambda: make_series(3, 8, 8, dtype=np.uint8, modality="OT", pixels=_rgb, seed="rgb"),
    "multiframe": lambda: [make_multiframe(5, 8, 8, frame_order="descending", slope=2,
                                           intercept=-100, seed="mf")],
    "cine": lambda: [make_multiframe(4, 8, 8, per_frame_positions=False, seed="cine")],
}
IRREGULAR = {
    "tilt": (GantryTiltError, lambda: make_series(5, 6, 6, positions=_tilted(), seed="tilt")),
    "gap": (SliceSpacingError, lambda: make_series(
        5, 6, 6, positions=[(0, 0, z) for z in (0, 2, 4, 8, 10)], seed="gap")),
    "duplicate": (DuplicateSliceError, lambda: make_series(
        4, 6, 6, positions=[(0, 0, z) for z in (0, 2, 2, 4)], seed="dup")),
    "mixed": (MixedOrientationError, lambda: make_series(4, 6, 6, seed="mixed") + make_series(
        1, 6, 6, orientation=(0, 1, 0, 0, 0, -1), seed="mixed", series_number=1,
        origin=(0, 0, 50))),
}


def _reread(ds):
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


@pytest.fixture(scope="module")
def server(orthanc_available):
    generated = {name: [_reread(d) for d in make()] for name, make in REGULAR.items()}
    for name, (_, make) in IRREGULAR.items():
        generated[name] = [_reread(d) for d in make()]
    # the localizer of "mixed" must join its series: same study/series UIDs
    loc = generated["mixed"][-1]
    loc.SeriesInstanceUID = generated["mixed"][0].SeriesInstanceUID
    loc.StudyInstanceUID = generated["mixed"][0].StudyInstanceUID
    loc.SOPInstanceUID = loc.file_meta.MediaStorageSOPInstanceUID = uid("localizer")
    with LocalOrthanc(name="volume-tests") as srv:
        blobs = [to_bytes(d) for dss in generated.values() for d in dss]
        order = np.random.default_rng(3).permutation(len(blobs))  # upload out of order
        srv.upload_bytes(blobs[i] for i in order)
        df = op.read_orthanc(srv.url)
        yield srv, df, generated


def rows_of(df, datasets):
    uid = datasets[0].SeriesInstanceUID
    return df[df.SeriesInstanceUID == uid]


def truth(datasets, rescale=True):
    """The volume built directly with pydicom from the originals, in position order."""
    arrays = []
    for ds in datasets:
        arr = ds.pixel_array
        if rescale and ds.SamplesPerPixel == 1:
            if "PerFrameFunctionalGroupsSequence" in ds:
                pv = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
                arr = arr * float(pv.RescaleSlope) + float(pv.RescaleIntercept)
            else:
                arr = apply_modality_lut(arr, ds)
            arr = arr.astype(np.float32)
        arrays.append(arr)
    return np.stack(arrays)


@pytest.mark.parametrize("name", [n for n in REGULAR if n not in ("multiframe", "cine")])
@pytest.mark.parametrize("rescale", [True, False])
def test_generated_series_equal_pydicom(server, name, rescale):
    _, df, generated = server
    originals = generated[name]
    rows = rows_of(df, originals)
    assert len(rows) == len(originals)
    vol = rows.orthanc.volume(rescale=rescale)
    np.testing.assert_array_equal(vol.values, truth(originals, rescale))
    assert vol.dtype == (np.float32 if rescale and name != "rgb" else originals[0].pixel_array.dtype)
    assert list(vol.sop_instance_uid.values) == [d.SOPInstanceUID for d in originals]
    # each slice traces back to its row of the frame
    by_uid = dict(zip(rows.SOPInstanceUID.astype(str), rows.index.get_level_values("instance"),
                      strict=True))
    assert list(vol.instance.values) == [by_uid[d.SOPInstanceUID] for d in originals]
    A = np.reshape(vol.attrs["affine"], (4, 4))
    for k, ds in enumerate(originals):
        np.testing.assert_allclose(A @ [k, 0, 0, 1], [*map(float, ds.ImagePositionPatient), 1],
                                   atol=1e-6)
    assert vol.attrs["orthanc_series"] == rows.index.get_level_values("series")[0]
    assert vol.attrs["series_instance_uid"] == originals[0].SeriesInstanceUID
    assert vol.attrs["frame_of_reference_uid"] == originals[0].FrameOfReferenceUID
    assert (vol.attrs.get("units") == "HU") == (rescale and originals[0].Modality == "CT")


def test_multiframe_instances(server):
    _, df, generated = server
    (ds,) = generated["multiframe"]
    vol = rows_of(df, [ds]).orthanc.volume()
    assert vol.dims == ("z", "y", "x")
    np.testing.assert_array_equal(vol.values, truth([ds])[0][::-1])  # frames were stored descending
    assert list(vol.frame.values) == [4, 3, 2, 1, 0]
    np.testing.assert_allclose(np.diff(vol.z.values), 2.5)
    (cine,) = generated["cine"]
    vol = rows_of(df, [cine]).orthanc.volume(rescale=False)
    assert vol.dims == ("frame", "y", "x")
    np.testing.assert_array_equal(vol.values, cine.pixel_array)


@pytest.mark.parametrize("name", list(IRREGULAR))
def test_irregular_series_raise_documented_errors(server, name):
    _, df, generated = server
    exc_type, _ = IRREGULAR[name]
    originals = generated[name]
    rows = rows_of(df, originals)
    assert len(rows) == len(originals)
    with pytest.raises(exc_type) as info:
        rows.orthanc.volume()
    assert set(info.value.slices) <= {d.SOPInstanceUID for d in originals} and info.value.slices
    with pytest.warns(GeometryWarning):
        vol = rows.orthanc.volume(allow_irregular=True)
    iop = np.array(originals[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    real = sorted(float(np.array(d.ImagePositionPatient, float) @ normal) for d in originals)
    np.testing.assert_allclose(vol.z.values, real, atol=1e-6)
    assert vol.attrs["geometry"] == "irregular"


def test_selection_errors_and_lazy_volumes(server):
    srv, df, generated = server
    n = df.orthanc.series_count
    with pytest.raises(SelectionError, match=f"{n} series.*select\\(SeriesInstanceUID="):
        df.orthanc.volume()
    with pytest.raises(SelectionError, match="0 series"):
        df.iloc[:0].orthanc.volume()
    some = df[df.SeriesInstanceUID.isin([generated[k][0].SeriesInstanceUID for k in ("axial", "slope")])]
    vols = some.orthanc.volumes()
    assert len(vols) == 2 and set(vols) == set(some.index.get_level_values("series"))
    for sid in vols:
        sub = some.xs(sid, level="series", drop_level=False)
        np.testing.assert_array_equal(vols[sid].values, sub.orthanc.volume().values)
    with pytest.raises(KeyError):
        vols["no-such-series"]
    # lazy: a mapping over a dead server lists its series; only access fetches (and fails)
    dead = some.copy()
    dead.attrs = {"orthanc": {**some.attrs["orthanc"], "url": "http://127.0.0.1:9"}}
    lazy = dead.orthanc.volumes()
    assert len(lazy) == 2 and "2 series" in repr(lazy)
    with pytest.raises(OrthancConnectionError):
        lazy[next(iter(lazy))]


def test_non_image_instance(server):
    srv = server[0]
    ds = make_series(1, 4, 4, seed="noimage")[0]
    del ds.PixelData
    srv.upload_bytes([to_bytes(ds)])
    df = op.read_orthanc(srv.url)
    with pytest.raises(PixelDataError, match="no pixel data"):
        df[df.SeriesInstanceUID == ds.SeriesInstanceUID].orthanc.volume()


# -- every image of pydicom's test corpus -----------------------------------------------------
def _image_files() -> list[Path]:
    out = []
    for p in sorted(Path(p) for p in pydicom.data.get_testdata_files() if os.path.isfile(p)):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=False)
        except Exception:
            continue
        if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            out.append(p)
    return out


def _compare(vol, path) -> str | None:
    try:
        ds = pydicom.dcmread(path)
        local = ds.pixel_array
        if ds.get("PhotometricInterpretation") == "PALETTE COLOR":  # RGB, as pydicom gives it
            from pydicom.pixels import apply_color_lut

            local = apply_color_lut(local, ds)
    except Exception as exc:  # pydicom itself cannot decode it: we must fail too
        return None if isinstance(vol, PixelDataError) else (
            f"pydicom fails ({type(exc).__name__}) but volume() returned {vol.shape}")
    if isinstance(vol, Exception):
        return f"volume() raised {type(vol).__name__}: {vol}"
    if "frame" in vol.dims:
        got = vol.values
    elif "frame" in vol.coords:
        frames = vol.frame.values
        want = local[frames] if local.ndim > 2 + (vol.ndim == 4) else local[None]
        got, local = vol.values, want
    else:
        got, local = vol.values, local[None]
    if got.dtype != local.dtype:
        return f"dtype {got.dtype} != pydicom {local.dtype}"
    if got.shape != local.shape or not np.array_equal(got, local, equal_nan=got.dtype.kind == "f"):
        return f"pixels differ (shape {got.shape} vs {local.shape})"
    return None


def test_every_corpus_image_decodes_like_pydicom(orthanc_available):
    """Files sharing a SOPInstanceUID (MR_small*.dcm ...) are checked in rounds on one server,
    each round deleting the previous holders."""
    images = pending = _image_files()
    checked, rejected, problems, undecodable = [], [], [], []
    with LocalOrthanc(name="volume-corpus") as srv:
        client = srv.client()
        while pending:
            answers = srv.upload(pending)
            stored = {a["ID"]: Path(p) for p, a in answers.items() if a.get("Status") == "Success"}
            pending = [Path(p) for p, a in answers.items() if a.get("Status") == "AlreadyStored"
                       and a.get("ID") in stored]
            rejected += [p for p, a in answers.items() if a.get("Status") not in ("Success", "AlreadyStored")]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ParseWarning)
                df = op.read_orthanc(srv.url)
            for iid, path in stored.items():
                rows = df.xs(iid, level="instance", drop_level=False)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", GeometryWarning)
                        vol = rows.orthanc.volume(rescale=False, allow_irregular=True)
                except PixelDataError as exc:
                    vol = exc
                    undecodable.append(path.name)
                msg = _compare(vol, path)
                if msg:
                    problems.append(f"{path.name}: {msg}")
                checked.append(path)
                client.delete(f"/instances/{iid}")
    # every image file was tried; Orthanc 1.10.1 refuses a few (8 of 95 here)
    assert len(checked) + len(rejected) == len(images) and len(checked) >= 80, rejected
    # the few that fail also fail in pydicom itself (checked by _compare)
    assert len(undecodable) <= 5, undecodable
    assert len(set(p.name for p in checked)) == len(checked)
    assert not problems, "\n".join(problems)


# -- RT Dose, palette colour, files without a preamble (pydicom's own files) ------------------
def _pydicom_original(name):
    """pydicom's reading of one of its test files (force=True and the transfer syntax it was
    read in, as pydicom's error advises, for a file without File Meta)."""
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(name), force=True)
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        assert little
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit
                                          else pydicom.uid.ExplicitVRLittleEndian)
    return ds


@pytest.fixture(scope="module")
def pydicom_files(orthanc_available):
    names = ["rtdose.dcm", "OT-PAL-8-face.dcm"]
    with LocalOrthanc(name="volume-pydicom-files") as srv:
        answers = srv.upload([pydicom.data.get_testdata_file(n) for n in names])
        assert all(a.get("Status") == "Success" for a in answers.values()), answers
        df = op.read_orthanc(srv.url)
        yield {n: df[df.SOPInstanceUID == str(_pydicom_original(n).SOPInstanceUID)] for n in names}


def test_rtdose_is_a_dose_volume_placed_by_grid_frame_offsets(pydicom_files):
    ds = _pydicom_original("rtdose.dcm")
    vol = pydicom_files["rtdose.dcm"].orthanc.volume(dtype="float64")
    offsets = np.array(ds.GridFrameOffsetVector, float)
    assert vol.dims == ("z", "y", "x") and vol.sizes["z"] == int(ds.NumberOfFrames) == 15
    # pydicom's truth: stored values x DoseGridScaling, frame k at IPP + offset[k] x normal
    want = ds.pixel_array * float(ds.DoseGridScaling)
    np.testing.assert_allclose(vol.values, want[vol.frame.values], rtol=1e-12)
    assert float(vol.max()) == pytest.approx(float(want.max()))
    assert 0.5 < float(vol.max()) < 10  # Gy, not raw stored values in the millions
    iop = np.array(ds.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    ipp = np.array(ds.ImagePositionPatient, float)
    np.testing.assert_allclose(vol.z.values, np.sort(ipp @ normal + offsets - offsets[0]), atol=1e-6)
    np.testing.assert_allclose(np.diff(vol.z.values), np.diff(np.sort(offsets)), atol=1e-6)
    A = np.reshape(vol.attrs["affine"], (4, 4))
    for k, f in enumerate(vol.frame.values):
        np.testing.assert_allclose(A @ [k, 0, 0, 1], [*(ipp + (offsets[f] - offsets[0]) * normal), 1],
                                   atol=1e-6)
    assert vol.attrs["spacing"][0] == pytest.approx(abs(offsets[1] - offsets[0]))
    assert vol.attrs["units"] == str(ds.DoseUnits)
    assert vol.attrs["geometry"] == "regular"
    # float32 default: within float32 rounding of pydicom's float64
    np.testing.assert_allclose(pydicom_files["rtdose.dcm"].orthanc.volume().values,
                               want[vol.frame.values], rtol=1e-6)
    stored = pydicom_files["rtdose.dcm"].orthanc.volume(rescale=False)
    np.testing.assert_array_equal(stored.values, ds.pixel_array[vol.frame.values])
    assert "units" not in stored.attrs


def test_palette_colour_without_preamble_is_rgb_as_pydicom(pydicom_files):
    from pydicom.pixels import apply_color_lut

    ds = _pydicom_original("OT-PAL-8-face.dcm")
    rows = pydicom_files["OT-PAL-8-face.dcm"]
    assert rows.orthanc.header().PhotometricInterpretation == "PALETTE COLOR"
    vol = rows.orthanc.volume()
    want = apply_color_lut(ds.pixel_array, ds)
    assert want.shape == (ds.Rows, ds.Columns, 3)
    assert vol.dims == ("z", "y", "x", "c") and list(vol.c.values) == ["R", "G", "B"]
    assert vol.dtype == want.dtype
    np.testing.assert_array_equal(vol.values[0], want)
    assert vol.attrs["photometric_interpretation"] == "RGB"
