"""Pixel data -> numbers: decoding, rescale and lookup tables. Pure: no HTTP in here."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orthanc_pandas._imaging.geometry import (
    float_tuple,
    functional_group,
    header_value,
    is_palette,
    number_of_frames,
)
from orthanc_pandas._imaging.mosaic import is_mosaic, mosaic_layout, split_mosaic
from orthanc_pandas.errors import (
    PixelDataError,
)


# -- pixels -----------------------------------------------------------------------------------
def decode_pixels(ds) -> np.ndarray:
    """The pixels of a dataset exactly as ``ds.pixel_array`` gives them, without caching them.

    YBR_FULL/YBR_FULL_422 become RGB, as pydicom does by default. Shapes: ``(rows, cols)``,
    ``(rows, cols, 3)``, ``(frames, rows, cols)`` or ``(frames, rows, cols, 3)``; a Siemens
    mosaic comes back as its ``(slices, rows, cols)``.

    Raises
    ------
    PixelDataError
        No pixel data, or no installed decoder for its transfer syntax.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_series
    >>> decode_pixels(make_series(1, 4, 6)[0]).shape
    (4, 6)
    """
    arr = _decoded(ds, None)
    if is_mosaic(ds):
        return split_mosaic(arr, mosaic_layout(ds))
    return arr


def decode_frame(ds, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) of a multi-frame dataset, decoding that frame only.

    What ``decode_pixels(ds)[index]`` gives, without decoding (and colour-converting) the
    other frames: a thumbnail of a 120-frame ultrasound clip costs one frame. A mosaic is
    decoded whole (its slices are tiles of one image) and its slice ``index`` returned.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_multiframe
    >>> ds = make_multiframe(4, 3, 5)
    >>> bool((decode_frame(ds, 2) == decode_pixels(ds)[2]).all())
    True
    """
    if is_mosaic(ds):
        return decode_pixels(ds)[index]
    if number_of_frames(ds) <= 1:
        return decode_pixels(ds)
    return _decoded(ds, index)


def _decoded(ds, index: int | None) -> np.ndarray:
    """pydicom's pixels of ``ds`` (one frame when ``index`` is given), with one error type."""
    from pydicom.pixels import pixel_array

    uid = ds.get("SOPInstanceUID", "?")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise PixelDataError(
            f"Not an image: no pixel data in instance {uid} (SOPClassUID "
            f"{ds.get('SOPClassUID', '?')}, Modality {ds.get('Modality', '?')}). Select image "
            "instances only.")
    _set_transfer_syntax(ds)
    arr = _native_view(ds) if index is None else None
    try:
        if arr is None:
            arr = pixel_array(ds) if index is None else pixel_array(ds, index=index)
        if is_palette(ds):
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
    except Exception as exc:  # pydicom raises several types; give one with a remedy
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        tsname = getattr(ts, "name", ts)
        raise PixelDataError(
            f"Could not decode the pixels of instance {uid} (transfer syntax {tsname}): "
            f"{type(exc).__name__}: {exc}. Compressed syntaxes need pydicom's plugins: "
            "pip install 'orthanc-pandas[pixels]'.") from exc
    return arr


_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _set_transfer_syntax(ds) -> None:
    """Give a dataset read with ``force=True`` from a file without File Meta (no preamble)
    the transfer syntax it was read in, as pydicom's error message advises; else no-op."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                              ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _native_view(ds) -> np.ndarray | None:
    """A zero-copy view of uncompressed little-endian single-frame grey pixels, when it is
    exactly what pydicom would return (all stored bits used, so no masking or sign extension
    is needed); else None and pydicom decodes."""
    try:
        ts = str(ds.file_meta.TransferSyntaxUID)
        if ts not in _NATIVE_LE or "PixelData" not in ds:
            return None
        bits, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        if bits not in (8, 16, 32) or stored != bits or int(ds.get("SamplesPerPixel", 1)) != 1:
            return None
        if number_of_frames(ds) != 1 or "NumberOfFrames" in ds and ds.NumberOfFrames is None:
            return None
        signed = int(ds.PixelRepresentation)
        if signed not in (0, 1):
            return None
        rows, cols = int(ds.Rows), int(ds.Columns)
        data = ds.PixelData
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        size = rows * cols * dtype.itemsize
        # Exactly one frame's bytes (plus the even-length pad): anything else is unusual
        # enough (bad NumberOfFrames, excess data) to leave to pydicom's checks.
        if not isinstance(data, bytes | bytearray) or len(data) not in (size, size + 1):
            return None
        return np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    except (AttributeError, TypeError, ValueError, KeyError):
        return None


def rescale_params(ds, frame: int | None):
    """(slope, intercept) or a LUT dataset for one frame; None when the LUT is the identity."""
    if ds.get("ModalityLUTSequence"):
        return "lut"
    item = None
    if frame is not None and ds.get("PerFrameFunctionalGroupsSequence"):
        pf = ds.PerFrameFunctionalGroupsSequence
        item = functional_group(ds, pf[frame] if frame < len(pf) else None, "PixelValueTransformationSequence")
    src = item if item is not None and "RescaleSlope" in item else ds
    slope = float_tuple(header_value(src, "RescaleSlope"), 1)
    intercept = float_tuple(header_value(src, "RescaleIntercept"), 1)
    if slope is None and "DoseGridScaling" in ds:  # RT Dose: stored value x scaling = dose
        slope = float_tuple(ds.get("DoseGridScaling"), 1)
    if slope is None and intercept is None:
        return None
    return (slope[0] if slope else 1.0, intercept[0] if intercept else 0.0)


def apply_lut(raw: np.ndarray, ds, params, out: np.ndarray) -> None:
    """Write the modality-LUT output of ``raw`` into ``out`` (float)."""
    if params is None:
        out[...] = raw
    elif params == "lut":
        from pydicom.pixels import apply_modality_lut

        out[...] = apply_modality_lut(raw, ds)
    else:
        slope, intercept = params
        # One pass in the output precision (the cast happens inside the ufunc loop): exact for
        # integer slope/intercept (the usual CT case), within 1 ulp of pydicom's float64
        # apply_modality_lut otherwise.
        t = out.dtype.type
        if slope == 1.0:
            np.add(raw, t(intercept), out=out, dtype=out.dtype)
        else:
            np.multiply(raw, t(slope), out=out, dtype=out.dtype)
            if intercept != 0.0:
                np.add(out, t(intercept), out=out)


# -- assembly ---------------------------------------------------------------------------------
def window_values(ds, keyword: str) -> list[float] | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    vals = float_tuple(v, len(v) if isinstance(v, Sequence) and not isinstance(v, str) else 1)
    return list(vals) if vals else None
