"""Segmentations on an image's grid: DICOM SEG and RTSTRUCT as boolean DataArrays.

``seg_rows.orthanc.mask(like=ct)`` gives ``(segment, z, y, x)`` for a DICOM SEG,
``rt_rows.orthanc.mask(like=ct)`` gives ``(roi, z, y, x)`` for an RT Structure Set, both on the
grid of ``ct`` (a volume from ``df.orthanc.volume()``): same shape, coordinates and affine.

Both paths place the segmentation by geometry alone - every SEG frame's position and every
contour point is mapped through the inverse of ``like``'s affine - never by the source
instances a SEG says it was derived from, so a SEG drawn on one series lines up on another
series of the same frame of reference and grid. Nothing is resampled: a SEG frame must land
on the grid exactly (same orientation and pixel spacing, an integer voxel offset) and each
contour must lie in one slice plane, else :class:`MaskGeometryError` says what differs.

* SEG: read with highdicom (segment numbers and labels, binary or fractional type); frames
  decoded by pydicom (1-bit unpacking); a fractional frame is ``True`` where
  ``value / MaximumFractionalValue >= 0.5``.
* RTSTRUCT: CLOSED_PLANAR contours rasterised with ``skimage.draw.polygon`` (a voxel is
  inside when its centre is inside the polygon); several contours of one ROI on one slice
  combine by XOR (even-odd), so a contour inside another is a hole, as DICOM PS3.3 C.8.8.6
  intends. POINT and OPEN contours have no inside and are skipped.

``pip install 'orthanc-pandas[masks]'`` (highdicom, scikit-image). See ``docs/interop.md``.
"""

from __future__ import annotations

import numpy as np

from orthanc_pandas._imaging.interop import volume_affine
from orthanc_pandas.errors import MaskGeometryError

#: Tolerance, in voxels, on a SEG frame's offset from the grid and on a contour's distance
#: from its slice plane (in slice steps).
GRID_ATOL = 1e-3


#: Tolerance on direction cosines and on the ratio of pixel spacings.
PLANE_ATOL = 1e-4


SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"Masks need {module}: pip install 'orthanc-pandas[masks]'.") from exc


def _grid(like) -> tuple[np.ndarray, tuple[int, int, int]]:

    if tuple(like.dims[-3:]) != ("z", "y", "x") or like.ndim != 3:
        raise ValueError(f"like= must be a volume with dims ('z', 'y', 'x'); it has {like.dims}.")
    return volume_affine(like), (like.sizes["z"], like.sizes["y"], like.sizes["x"])


def _check_frame_of_reference(uid, like, what: str) -> None:
    ref = like.attrs.get("frame_of_reference_uid")
    if not uid or not ref:
        raise MaskGeometryError(
            f"Cannot tell whether the {what} belongs to this image: "
            f"{'the ' + what if not uid else 'like='} has no FrameOfReferenceUID.")
    if str(uid) != str(ref):
        raise MaskGeometryError(
            f"The {what} is in frame of reference {uid}, the image (like=) in {ref}: they are "
            "not in the same patient space. Use an image of the series the segmentation was "
            "drawn on (same FrameOfReferenceUID).")


def _result(data: np.ndarray, dim: str, labels: list[str], numbers: list[int], like, attrs: dict):
    import xarray as xr

    coords = {dim: (dim, np.array(labels, dtype=object)),
              f"{dim}_number": (dim, np.array(numbers, dtype=np.int64))}
    for name, c in like.coords.items():
        if set(c.dims) <= {"z", "y", "x"}:
            coords[name] = c
    keep = ("affine", "spacing", "origin", "direction", "geometry", "frame_of_reference_uid",
            "orthanc_series")
    out_attrs = {k: like.attrs[k] for k in keep if k in like.attrs}
    out_attrs.update(attrs)
    return xr.DataArray(data, dims=(dim, "z", "y", "x"), coords=coords, attrs=out_attrs,
                        name="mask")


# -- SEG --------------------------------------------------------------------------------------
def _first(seq_owner, name):
    seq = getattr(seq_owner, name, None)
    return seq[0] if seq else None


def _frame_item(ds, f: int, name: str):
    """A functional group of frame f: per-frame, else shared."""
    per = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per is not None and f < len(per):
        item = _first(per[f], name)
        if item is not None:
            return item
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    return _first(shared, name) if shared is not None else None


def seg_mask(ds, like, *, atol: float = GRID_ATOL, plane_atol: float = PLANE_ATOL):
    """A DICOM SEG dataset as a boolean ``(segment, z, y, x)`` DataArray on ``like``'s grid.

    Parameters
    ----------
    ds : pydicom.Dataset
        The SEG instance, with its pixel data.
    like : xarray.DataArray
        A volume from ``df.orthanc.volume()`` (dims ``("z", "y", "x")`` and ``attrs["affine"]``).
    atol : float
        Tolerance in voxels on each frame's offset from the grid.
    plane_atol : float
        Tolerance on direction cosines and on pixel spacing (relative).

    Returns
    -------
    xarray.DataArray
        bool, dims ``("segment", "z", "y", "x")``; coords ``segment`` (SegmentLabel),
        ``segment_number``, and ``like``'s coords; attrs ``like``'s geometry plus
        ``seg_sop_instance_uid``.

    Raises
    ------
    MaskGeometryError
        Another frame of reference, orientation or pixel spacing; a frame between slices, off
        the pixel grid, or outside the volume.

    Examples
    --------
    >>> m = seg_mask(pydicom.dcmread("seg.dcm"), ct)            # doctest: +SKIP
    >>> m.sel(segment="liver").sum()                             # doctest: +SKIP
    """
    hd = _need("highdicom")
    seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    a, shape = _grid(like)
    _check_frame_of_reference(getattr(ds, "FrameOfReferenceUID", None), like, "SEG")
    numbers = [int(n) for n in seg.segment_numbers]
    labels = [str(seg.get_segment_description(n).segment_label) for n in numbers]
    index_of = {n: i for i, n in enumerate(numbers)}
    frames = np.asarray(ds.pixel_array)
    if frames.ndim == 2:
        frames = frames[None]
    fractional = str(seg.segmentation_type.value) == "FRACTIONAL"
    if fractional:
        frames = frames / float(ds.MaximumFractionalValue) >= 0.5
    else:
        frames = frames != 0
    inv = np.linalg.inv(a)
    col_dir = a[:3, 1] / np.linalg.norm(a[:3, 1])
    row_dir = a[:3, 2] / np.linalg.norm(a[:3, 2])
    dr, dc = np.linalg.norm(a[:3, 1]), np.linalg.norm(a[:3, 2])
    out = np.zeros((len(numbers), *shape), dtype=bool)
    nrows, ncols = frames.shape[1:3]
    for f in range(frames.shape[0]):
        ident = _frame_item(ds, f, "SegmentIdentificationSequence")
        pos = _frame_item(ds, f, "PlanePositionSequence")
        ori = _frame_item(ds, f, "PlaneOrientationSequence")
        meas = _frame_item(ds, f, "PixelMeasuresSequence")
        if ident is None or pos is None or ori is None or meas is None:
            raise MaskGeometryError(
                f"SEG frame {f + 1} has no segment number, position, orientation or pixel "
                "spacing in its functional groups; it cannot be placed on a grid.")
        iop = np.asarray(ori.ImageOrientationPatient, float)
        if not (np.allclose(iop[:3], row_dir, atol=plane_atol)
                and np.allclose(iop[3:], col_dir, atol=plane_atol)):
            raise MaskGeometryError(
                f"SEG frame {f + 1} has orientation {np.round(iop, 6).tolist()}, the image "
                f"{np.round(np.r_[row_dir, col_dir], 6).tolist()}: the grids differ (nothing is "
                "resampled).")
        ps = np.asarray(meas.PixelSpacing, float)
        if not np.allclose(ps, [dr, dc], rtol=plane_atol, atol=0):
            raise MaskGeometryError(
                f"SEG frame {f + 1} has pixel spacing {ps.tolist()} mm, the image "
                f"{[round(dr, 6), round(dc, 6)]} mm: the grids differ (nothing is resampled).")
        idx = (inv @ np.r_[np.asarray(pos.ImagePositionPatient, float), 1.0])[:3]
        k, r0, c0 = np.rint(idx).astype(int)
        if not np.allclose(idx, [k, r0, c0], atol=atol):
            raise MaskGeometryError(
                f"SEG frame {f + 1} at {np.asarray(pos.ImagePositionPatient, float).tolist()} "
                f"falls at voxel index (z, y, x) = {np.round(idx, 4).tolist()} of the image, "
                "not on its grid (between slices or off by part of a pixel).")
        frame = frames[f]
        s = index_of[int(ident.ReferencedSegmentNumber)]
        rs, re = max(r0, 0), min(r0 + nrows, shape[1])
        cs, ce = max(c0, 0), min(c0 + ncols, shape[2])
        inside = frame[rs - r0:re - r0, cs - c0:ce - c0] if re > rs and ce > cs else frame[:0, :0]
        if not 0 <= k < shape[0] or inside.sum() != frame.sum():
            if frame.any():
                raise MaskGeometryError(
                    f"SEG frame {f + 1} (segment {labels[s]!r}) has voxels outside the image: "
                    f"it starts at voxel (z, y, x) = ({k}, {r0}, {c0}) of a {shape} volume.")
            continue
        out[s, k, rs:re, cs:ce] |= inside
    return _result(out, "segment", labels, numbers, like,
                   {"seg_sop_instance_uid": str(ds.SOPInstanceUID),
                    "seg_series_instance_uid": str(ds.SeriesInstanceUID)})


# -- RTSTRUCT ---------------------------------------------------------------------------------
def rtstruct_mask(ds, like, *, atol: float = GRID_ATOL):
    """An RT Structure Set as a boolean ``(roi, z, y, x)`` DataArray on ``like``'s grid.

    Every CLOSED_PLANAR contour is mapped into ``like``'s voxel indices through the inverse
    affine, must lie in one slice plane, and is filled with ``skimage.draw.polygon`` (voxel
    centres inside the polygon); contours of one ROI on one slice combine by XOR (holes).

    Parameters
    ----------
    ds : pydicom.Dataset
        The RTSTRUCT instance.
    like : xarray.DataArray
        A volume from ``df.orthanc.volume()``.
    atol : float
        Tolerance, in slice steps, on a contour's distance from its slice plane.

    Returns
    -------
    xarray.DataArray
        bool, dims ``("roi", "z", "y", "x")``; coords ``roi`` (ROIName), ``roi_number`` and
        ``like``'s coords.

    Raises
    ------
    MaskGeometryError
        Another frame of reference, or a contour that is not in one of ``like``'s slice
        planes (another orientation, or between slices).

    Examples
    --------
    >>> m = rtstruct_mask(pydicom.dcmread("rtstruct.dcm"), ct)  # doctest: +SKIP
    >>> ct.orthanc.plot(mask=m.sel(roi="PTV"))                  # doctest: +SKIP
    """
    draw = _need("skimage.draw")
    a, shape = _grid(like)
    rois = list(getattr(ds, "StructureSetROISequence", []))
    numbers = [int(r.ROINumber) for r in rois]
    labels = [str(getattr(r, "ROIName", "") or r.ROINumber) for r in rois]
    refs = {str(r.ReferencedFrameOfReferenceUID) for r in rois
            if getattr(r, "ReferencedFrameOfReferenceUID", None)}
    if not refs:
        refs = {str(f.FrameOfReferenceUID) for f in getattr(ds, "ReferencedFrameOfReferenceSequence", [])
                if getattr(f, "FrameOfReferenceUID", None)}
    if len(refs) > 1:
        raise MaskGeometryError(f"The RTSTRUCT's ROIs are in several frames of reference {sorted(refs)}.")
    _check_frame_of_reference(next(iter(refs), None), like, "RTSTRUCT")
    index_of = {n: i for i, n in enumerate(numbers)}
    inv = np.linalg.inv(a)
    out = np.zeros((len(numbers), *shape), dtype=bool)
    for rc in getattr(ds, "ROIContourSequence", []):
        i = index_of.get(int(rc.ReferencedROINumber))
        if i is None:
            continue
        for n, contour in enumerate(getattr(rc, "ContourSequence", [])):
            if str(getattr(contour, "ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            pts = np.asarray(contour.ContourData, float).reshape(-1, 3)
            idx = (inv @ np.c_[pts, np.ones(len(pts))].T)[:3]
            k = int(np.rint(idx[0].mean()))
            if not np.allclose(idx[0], k, atol=atol) or not 0 <= k < shape[0]:
                raise MaskGeometryError(
                    f"Contour {n + 1} of ROI {labels[i]!r} is not in a slice plane of the image: "
                    f"its points are at slice index {np.round(idx[0].min(), 4)} to "
                    f"{np.round(idx[0].max(), 4)} of 0..{shape[0] - 1} (another orientation, "
                    "or between slices; nothing is resampled).")
            rr, cc = draw.polygon(idx[1], idx[2], shape=shape[1:])
            filled = np.zeros(shape[1:], dtype=bool)
            filled[rr, cc] = True
            out[i, k] ^= filled
    return _result(out, "roi", labels, numbers, like,
                   {"rtstruct_sop_instance_uid": str(ds.SOPInstanceUID),
                    "rtstruct_series_instance_uid": str(ds.SeriesInstanceUID)})
