"""Slice headers -> geometry: positions, orientation, spacing, the affine. Pure.

One set of checks over arrays serves both ``volume()`` (headers from pydicom datasets)
and the geometry report (headers from index columns). Tolerances are keyword arguments.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydicom.datadict import keyword_dict
from pydicom.dataelem import RawDataElement

from orthanc_pandas._imaging.mosaic import is_mosaic, mosaic_layout
from orthanc_pandas._util.warn import warn
from orthanc_pandas.errors import (
    DuplicateSliceError,
    GantryTiltError,
    GeometryError,
    GeometryWarning,
    InconsistentSlicesError,
    MissingGeometryError,
    MixedOrientationError,
    SliceSpacingError,
)

#: Direction cosines of two slices agreeing within this (absolute; they are unit vectors).
ORIENTATION_ATOL = 1e-4


#: Consecutive slice distances agreeing within this fraction of the typical distance.
SPACING_RTOL = 1e-2


#: Two slices closer than this fraction of the typical distance are duplicates.
DUPLICATE_RTOL = 1e-2


#: In-plane drift per slice step, relative to the step along the normal (1e-3 ~ 0.06 degree).
TILT_TOL = 1e-3


#: PixelSpacing of two slices agreeing within this fraction.
PIXEL_SPACING_RTOL = 1e-4


#: Row and column direction cosines: unit length and perpendicular within this, relative to
#: their unit length (``R @ R.T == I``; 1e-3 ~ 0.06 degree, DS values written to 4 decimals pass).
ORTHONORMAL_TOL = 1e-3


#: Distances below this (mm) are zero (DS values carry ~6 significant digits).
_ABS_EPS = 1e-4


_NAMES_SHOWN = 6


@dataclass(frozen=True)
class SliceHeader:
    """What the geometry needs to know about one slice (one frame of a multi-frame file).

    ``position`` is ImagePositionPatient, ``orientation`` ImageOrientationPatient (row cosines
    then column cosines), ``pixel_spacing`` PixelSpacing (row spacing, i.e. between rows along
    the column direction, then column spacing); each ``None`` when absent. ``frame`` is the
    0-based frame index inside a multi-frame instance, ``None`` for single-frame files.
    """

    sop_instance_uid: str
    rows: int
    columns: int
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, float] | None = None
    instance: str = ""
    instance_number: int | None = None
    samples: int = 1
    frame: int | None = None
    slice_spacing: float | None = None  # SpacingBetweenSlices or SliceThickness, for 1 slice

    @property
    def label(self) -> str:
        return self.sop_instance_uid + (f" (frame {self.frame + 1})" if self.frame is not None else "")


@dataclass
class Geometry:
    """The sorted, checked geometry of a stack of slices.

    ``order[k]`` is the index (into the headers given) of the k-th slice in position order;
    ``z[k]`` its position along the normal in mm (or its rank when there is no geometry).
    ``affine`` maps ``(k, row, column, 1)`` to LPS mm; ``None`` without geometry.
    """

    order: np.ndarray
    z: np.ndarray
    affine: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    kind: str  # "regular", "irregular" or "none"
    problems: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> list[float] | None:
        """Voxel size along (z, y, x): the norms of the affine's first three columns."""
        if self.affine is None:
            return None
        return [float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0)]

    @property
    def direction(self) -> list[float] | None:
        """Unit LPS vectors of the z, y, x axes, as a row-major 3x3 flattened to 9 floats."""
        if self.affine is None:
            return None
        cols = self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)
        return [float(v) for v in cols.T.ravel()]

    @property
    def origin(self) -> list[float] | None:
        """LPS position (mm) of the centre of voxel (0, 0, 0): the first slice's IPP."""
        return None if self.affine is None else [float(v) for v in self.affine[:3, 3]]


def affine_matrix(position: Sequence[float], orientation: Sequence[float],
                  pixel_spacing: Sequence[float], step: Sequence[float]) -> np.ndarray:
    """The 4x4 LPS affine of a stack, mapping ``(slice, row, column, 1)`` indices to mm.

    Parameters
    ----------
    position : 3 floats
        ImagePositionPatient of the first slice: the centre of its first transmitted voxel.
    orientation : 6 floats
        ImageOrientationPatient: the row direction (along which the column index grows), then
        the column direction (along which the row index grows).
    pixel_spacing : 2 floats
        PixelSpacing: distance between rows (along the column direction), then between
        columns (along the row direction).
    step : 3 floats
        LPS vector from one slice's IPP to the next (``normal * spacing`` for a regular stack).

    Returns
    -------
    numpy.ndarray
        ``A`` with ``A @ [k, r, c, 1] = IPP + k * step + r * dr * col_dir + c * dc * row_dir``.

    Examples
    --------
    >>> A = affine_matrix([-100, -110, 0], [1, 0, 0, 0, 1, 0], [0.7, 0.8], [0, 0, 2.5])
    >>> (A @ [1, 2, 3, 1])[:3].round(6).tolist()   # slice 1, row 2, column 3
    [-97.6, -108.6, 2.5]
    """
    iop = np.asarray(orientation, float)
    dr, dc = (float(v) for v in pixel_spacing)
    a = np.eye(4)
    a[:3, 0] = np.asarray(step, float)
    a[:3, 1] = iop[3:] * dr
    a[:3, 2] = iop[:3] * dc
    a[:3, 3] = np.asarray(position, float)
    return a


# -- headers from pydicom datasets ------------------------------------------------------------
_TEXT_TAGS = {kw: keyword_dict[kw] for kw in (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SpacingBetweenSlices",
    "SliceThickness", "RescaleSlope", "RescaleIntercept", "InstanceNumber")}


def header_value(ds, keyword: str):
    """A DS/IS value, read from the raw bytes when pydicom has not converted it yet.

    pydicom's DS conversion (validation, DSfloat objects) costs ~50 us per element; geometry
    needs only the numbers, and reading them here keeps volume() near the download floor.
    """
    tag = _TEXT_TAGS[keyword]
    if tag not in ds:
        return None
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement):
        v = elem.value
        return None if v is None else v.decode("latin-1").strip(" \x00")
    return elem.value


def float_tuple(value, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes):
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        if not value.strip():
            return None
        value = value.split("\\")
    try:
        vals = tuple(float(v) for v in (value if isinstance(value, Sequence | np.ndarray)
                                        and not isinstance(value, str) else [value]))
    except (TypeError, ValueError):
        return None
    if len(vals) != n or not all(np.isfinite(vals)):
        return None
    return vals


def _first_item(ds, *path: str):
    """``ds.A[0].B[0]...`` or None: walks functional-group sequences."""
    cur = ds
    for name in path:
        seq = getattr(cur, name, None) if cur is not None else None
        if not seq:
            return None
        cur = seq[0]
    return cur


def functional_group(ds, frame_item, name: str):
    """A functional-group macro item for one frame: per-frame first, else shared."""
    for src in (frame_item, _first_item(ds, "SharedFunctionalGroupsSequence")):
        if src is not None and getattr(src, name, None):
            return src[name].value[0]
    return None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))  # IS written as "5.0" by some writers
        except (TypeError, ValueError):
            return None


def number_of_frames(ds) -> int:
    """Frames as decoded: NumberOfFrames, or the slices tiled in a Siemens mosaic."""
    if is_mosaic(ds):
        return mosaic_layout(ds).count
    n = _int(ds.get("NumberOfFrames", 1))
    return n if n and n > 0 else 1


def slice_headers(ds, instance: str = "") -> list[SliceHeader]:
    """The :class:`SliceHeader` of each slice in a dataset.

    One per frame when the file carries per-frame positions (enhanced CT/MR/PT
    ``PerFrameFunctionalGroupsSequence`` with ``PlanePositionSequence``), one per tile of a
    Siemens mosaic (see :mod:`orthanc_pandas._imaging.mosaic`), else one.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_series
    >>> h = slice_headers(make_series(1, 4, 6)[0])[0]
    >>> h.rows, h.columns, h.position
    (4, 6, (-100.0, -110.0, 0.0))
    """
    common = dict(sop_instance_uid=str(ds.get("SOPInstanceUID", "")), instance=instance,
                  rows=int(ds.get("Rows", 0) or 0), columns=int(ds.get("Columns", 0) or 0),
                  samples=3 if is_palette(ds) else int(ds.get("SamplesPerPixel", 1) or 1),
                  instance_number=_int(header_value(ds, "InstanceNumber")),
                  slice_spacing=float_tuple(header_value(ds, "SpacingBetweenSlices") or header_value(ds, "SliceThickness"), 1))
    if common["slice_spacing"] is not None:
        common["slice_spacing"] = common["slice_spacing"][0] or None
    if is_mosaic(ds):
        layout = mosaic_layout(ds)
        common.update(rows=layout.rows, columns=layout.columns)
        return [SliceHeader(**common, position=tuple(float(v) for v in pos),
                            orientation=float_tuple(header_value(ds, "ImageOrientationPatient"), 6),
                            pixel_spacing=float_tuple(header_value(ds, "PixelSpacing"), 2), frame=k)
                for k, pos in enumerate(layout.positions)]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    nframes = number_of_frames(ds)
    if per_frame and len(per_frame) == nframes:
        out = []
        for f, item in enumerate(per_frame):
            pos = functional_group(ds, item, "PlanePositionSequence")
            if pos is None or float_tuple(header_value(pos, "ImagePositionPatient"), 3) is None:
                out = []
                break
            ori = functional_group(ds, item, "PlaneOrientationSequence")
            meas = functional_group(ds, item, "PixelMeasuresSequence")
            thick = None
            if meas is not None:
                thick = float_tuple(header_value(meas, "SpacingBetweenSlices") or header_value(meas, "SliceThickness"), 1)
            out.append(SliceHeader(
                **{**common, "slice_spacing": thick[0] if thick else common["slice_spacing"]},
                position=float_tuple(header_value(pos, "ImagePositionPatient"), 3),
                orientation=float_tuple(header_value(ori, "ImageOrientationPatient"), 6) if ori is not None
                else float_tuple(header_value(ds, "ImageOrientationPatient"), 6),
                pixel_spacing=float_tuple(header_value(meas, "PixelSpacing"), 2) if meas is not None
                else float_tuple(header_value(ds, "PixelSpacing"), 2),
                frame=f))
        if out:
            return out
    dose = _grid_frame_headers(ds, nframes, common)
    if dose:
        return dose
    # Enhanced files without per-frame positions may still have shared orientation/spacing.
    ori = functional_group(ds, None, "PlaneOrientationSequence")
    meas = functional_group(ds, None, "PixelMeasuresSequence")
    return [SliceHeader(
        **common,
        position=float_tuple(header_value(ds, "ImagePositionPatient"), 3),
        orientation=float_tuple(header_value(ds, "ImageOrientationPatient"), 6)
        or (float_tuple(header_value(ori, "ImageOrientationPatient"), 6) if ori is not None else None),
        pixel_spacing=float_tuple(header_value(ds, "PixelSpacing"), 2)
        or (float_tuple(header_value(meas, "PixelSpacing"), 2) if meas is not None else None))]


def is_palette(ds) -> bool:
    return str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR"


def _grid_frame_headers(ds, nframes: int, common: dict) -> list[SliceHeader]:
    """One header per frame of an RT Dose-style file whose GridFrameOffsetVector places its
    frames along the normal; ``[]`` when it has none (or an unusable one).

    DICOM (C.8.8.3.2): with a first offset of 0 the offsets are relative to ImagePositionPatient;
    otherwise they are absolute positions along the normal, the first being the IPP's own. Both
    give ``IPP + (offset[k] - offset[0]) * normal``.
    """
    if nframes < 2 or "GridFrameOffsetVector" not in ds:
        return []
    offsets = float_tuple(ds.get("GridFrameOffsetVector"), nframes)
    ipp = float_tuple(header_value(ds, "ImagePositionPatient"), 3)
    iop = float_tuple(header_value(ds, "ImageOrientationPatient"), 6)
    if offsets is None or ipp is None or not _valid_orientation(iop):
        return []
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    rel = np.asarray(offsets) - offsets[0]
    return [SliceHeader(**common, position=tuple(float(v) for v in np.asarray(ipp) + o * normal),
                        orientation=iop, pixel_spacing=float_tuple(header_value(ds, "PixelSpacing"), 2),
                        frame=f) for f, o in enumerate(rel)]


# -- geometry ---------------------------------------------------------------------------------
def _names(headers: Sequence[SliceHeader], idx) -> str:
    idx = list(idx)
    shown = ", ".join(headers[i].label for i in idx[:_NAMES_SHOWN])
    more = len(idx) - _NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _uids(headers, idx) -> list[str]:
    return list(dict.fromkeys(headers[i].sop_instance_uid for i in idx))


def _clusters(vectors: np.ndarray, close: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[list[int]]:
    """Greedy grouping: each row joins the first group (in order of creation) whose first
    member it is ``close`` to; ``close(first, rows)`` is a boolean mask over ``rows``. One
    vectorised comparison per group, not per row.

    Examples
    --------
    >>> _clusters(np.array([[1.0], [5.0], [1.05], [5.0], [9.0]]),
    ...           lambda a, rows: np.abs(rows - a).max(axis=1) <= 0.1)
    [[0, 2], [1, 3], [4]]
    """
    left = np.arange(len(vectors))
    groups: list[list[int]] = []
    while len(left):
        near = np.asarray(close(vectors[left[0]], vectors[left]), dtype=bool)
        near[0] = True
        groups.append(left[near].tolist())
        left = left[~near]
    return sorted(groups, key=len, reverse=True)


def _valid_orientations(iops: Sequence) -> np.ndarray:
    """Per ImageOrientationPatient (6 cosines, or None): whether its row and column directions
    span a plane (``|row x col| > 0.5``), for many at once.

    Examples
    --------
    >>> _valid_orientations([(1, 0, 0, 0, 1, 0), None, (1, 0, 0, 1, 0, 0)]).tolist()
    [True, False, False]
    """
    m = np.array([iop if iop is not None else (np.nan,) * 6 for iop in iops], float).reshape(-1, 6)
    with np.errstate(invalid="ignore"):
        return np.linalg.norm(np.cross(m[:, :3], m[:, 3:]), axis=1) > 0.5


def _valid_orientation(iop) -> bool:
    return bool(_valid_orientations([iop])[0])


def _check_shapes(headers: Sequence[SliceHeader]) -> None:
    """Raise unless every slice has the same Rows x Columns x SamplesPerPixel (never allowed)."""
    if not headers:
        raise InconsistentSlicesError("No slices to build a volume from.")
    shapes = _clusters(np.array([[h.rows, h.columns, h.samples] for h in headers]),
                       lambda a, rows: (rows == a).all(axis=1))
    if len(shapes) > 1:
        desc = "; ".join(f"{headers[g[0]].rows}x{headers[g[0]].columns}"
                         f"{'x' + str(headers[g[0]].samples) if headers[g[0]].samples > 1 else ''}:"
                         f" {len(g)} slice(s) ({_names(headers, g)})" for g in shapes)
        raise InconsistentSlicesError(
            f"The slices do not all have the same Rows x Columns (x SamplesPerPixel), so they "
            f"cannot be stacked: {desc}. Select the slices of one size, e.g. "
            "df[(df.Rows == ...)] after df = df.orthanc.with_tags('Rows', 'Columns').",
            slices=_uids(headers, [i for g in shapes[1:] for i in g]))


#: ``report(exc_type, message, slice_indices)``: raise, or record a problem when irregular
#: geometry is allowed.
_Report = Callable[[type, str, Sequence[int]], None]


def _check_positions(headers: Sequence[SliceHeader], report: _Report) -> bool:
    """Whether the slices have a geometry: all a position and orientation (True) or none."""
    has = (_valid_orientations([h.orientation for h in headers])
           & np.array([h.position is not None for h in headers])).tolist()
    if all(has):
        return True
    if any(has):
        missing = [i for i, ok in enumerate(has) if not ok]
        report(MissingGeometryError,
               f"{len(missing)} of {len(headers)} slices have no usable ImagePositionPatient/"
               f"ImageOrientationPatient ({_names(headers, missing)}), so they cannot be "
               "placed in space.", missing)
    return False


def _check_orientation(headers: Sequence[SliceHeader], report: _Report, *,
                       atol: float = ORIENTATION_ATOL) -> np.ndarray:
    """The orientation (6 cosines) of most slices; reports the others."""
    iops = np.array([h.orientation for h in headers], float)
    groups = _clusters(iops, lambda a, rows: (np.abs(rows - a) <= atol).all(axis=1))
    if len(groups) > 1:
        desc = "; ".join(f"{np.round(iops[g[0]], 4).tolist()}: {len(g)} slice(s) "
                         f"({_names(headers, g)})" for g in groups)
        report(MixedOrientationError,
               f"The slices have {len(groups)} different ImageOrientationPatient values: {desc}. "
               "A localizer or a second stack is probably in the series; select one orientation, "
               "e.g. df[df.ImageOrientationPatient_0.round(3) == ...].",
               [i for g in groups[1:] for i in g])
    return iops[groups[0][0]]


def _check_orthonormal(headers: Sequence[SliceHeader], iop: np.ndarray, report: _Report, *,
                       tol: float = ORTHONORMAL_TOL) -> None:
    """Report an ImageOrientationPatient whose row and column directions are not orthonormal.

    As nibabel checks a rotation (``np.allclose(R @ R.T, I)``): ``R`` holds the row then the
    column direction cosines; each entry of ``R @ R.T`` may be off by ``tol`` (relative to the
    unit length of the cosines). A skewed orientation would give a non-orthogonal voxel grid.
    """
    r = np.asarray(iop, float).reshape(2, 3)
    gram = r @ r.T
    if np.allclose(gram, np.eye(2), rtol=0, atol=tol):
        return
    norms = np.sqrt(np.clip(np.diag(gram), 0, None))
    cos = gram[0, 1] / max(norms[0] * norms[1], 1e-12)
    angle = float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    report(GeometryError,
           f"ImageOrientationPatient {np.round(r.ravel(), 6).tolist()} is not orthonormal: the "
           f"row and column directions have lengths {norms[0]:.6g} and {norms[1]:.6g} and are "
           f"{angle:.4g} degrees apart (90 expected, tolerance {tol:g}), so the voxel grid would "
           "be skewed. The header is probably corrupt; fix ImageOrientationPatient.",
           range(len(headers)))


def _check_pixel_spacing(headers: Sequence[SliceHeader], report: _Report, *,
                         rtol: float = PIXEL_SPACING_RTOL) -> tuple[float, float] | None:
    """The PixelSpacing of most slices (``None`` if a slice has none); reports the others."""
    spacings = [h.pixel_spacing for h in headers]
    if any(s is None for s in spacings):
        return None
    ps = np.array(spacings, float)
    groups = _clusters(ps, lambda a, rows: np.isclose(a, rows, rtol=rtol, atol=0).all(axis=1))
    if len(groups) > 1:
        desc = "; ".join(f"{ps[g[0]].tolist()}: {len(g)} slice(s) ({_names(headers, g)})"
                         for g in groups)
        report(InconsistentSlicesError,
               f"The slices have {len(groups)} different PixelSpacing values: {desc}.",
               [i for g in groups[1:] for i in g])
    return tuple(float(v) for v in ps[groups[0][0]])  # type: ignore[return-value]


def _sort_along(headers: Sequence[SliceHeader], normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slice order by position along ``normal`` (ties: InstanceNumber, frame), and z."""
    z = np.array([h.position for h in headers], float) @ normal
    number = np.array([h.instance_number or 0 for h in headers], dtype=np.int64)
    frame = np.array([h.frame or 0 for h in headers], dtype=np.int64)
    order = np.lexsort((np.arange(len(headers)), frame, number, z)).astype(np.intp)
    return order, z[order]


def _check_duplicates(headers: Sequence[SliceHeader], order: np.ndarray, zs: np.ndarray,
                      report: _Report, *, rtol: float = DUPLICATE_RTOL,
                      atol: float = _ABS_EPS) -> np.ndarray:
    """Mask of the steps between sorted slices that are duplicates (no move along z)."""
    dz = np.diff(zs)
    moving = dz > atol
    typical = float(np.median(dz[moving])) if moving.any() else 0.0
    dup = ~moving | (dz <= rtol * typical)
    if dup.any():
        pairs = np.flatnonzero(dup)
        desc = ", ".join(f"{headers[order[k]].label} and {headers[order[k + 1]].label} "
                         f"(z={zs[k]:.4g} mm)" for k in pairs[:_NAMES_SHOWN])
        more = f" and {len(pairs) - _NAMES_SHOWN} more pairs" if len(pairs) > _NAMES_SHOWN else ""
        report(DuplicateSliceError,
               f"{len(pairs)} pair(s) of slices share a position along the normal: "
               f"{desc}{more}. The series may hold several acquisitions or time points; "
               "select one, e.g. by AcquisitionNumber or TemporalPositionIdentifier.",
               [order[k] for p in pairs for k in (p, p + 1)])
    return dup


def _check_gaps(headers: Sequence[SliceHeader], order: np.ndarray, dz: np.ndarray,
                good: np.ndarray, report: _Report, *, rtol: float = SPACING_RTOL) -> None:
    """Report steps (among ``good`` ones) that differ from the median step: missing slices."""
    spacing = float(np.median(dz[good]))
    off = good & (np.abs(dz - spacing) > rtol * spacing)
    if not off.any():
        return
    ks = np.flatnonzero(off)
    desc = ", ".join(
        f"{dz[k]:.4g} mm between {headers[order[k]].label} and "
        f"{headers[order[k + 1]].label}"
        + (f" (~{round(dz[k] / spacing) - 1} missing)" if dz[k] > spacing else "")
        for k in ks[:_NAMES_SHOWN])
    report(SliceSpacingError,
           f"The slice spacing is not uniform (typical {spacing:.4g} mm): {desc}"
           f"{' ...' if len(ks) > _NAMES_SHOWN else ''}. Slices may be missing: check "
           "the series is complete on the server.",
           [order[k] for p in ks for k in (p, p + 1)])


def _check_tilt(headers: Sequence[SliceHeader], order: np.ndarray, steps: np.ndarray,
                normal: np.ndarray, report: _Report, *, tol: float = TILT_TOL) -> None:
    """Report steps that drift in-plane (gantry tilt, shear) by more than ``tol`` per mm."""
    along = steps @ normal
    drift = np.linalg.norm(steps - np.outer(along, normal), axis=1) / np.abs(along)
    if drift.max() > tol:
        worst = int(np.argmax(drift))
        angle = float(np.degrees(np.arctan(drift[worst])))
        report(GantryTiltError,
               f"The slice positions step at {angle:.3g} degrees to the slice normal "
               f"(gantry tilt or a sheared stack), from {headers[order[0]].label} to "
               f"{headers[order[-1]].label}: the voxel grid is not orthogonal.",
               [order[0], order[-1]])


def _slice_step(headers: Sequence[SliceHeader], order: np.ndarray, zs: np.ndarray,
                normal: np.ndarray, report: _Report, *, duplicate_rtol: float,
                spacing_rtol: float, tilt_tol: float) -> np.ndarray:
    """The LPS step between consecutive slices, after the duplicate, gap and tilt checks."""
    fallback = normal * (headers[0].slice_spacing or 1.0)
    if len(headers) == 1:
        return fallback
    dup = _check_duplicates(headers, order, zs, report, rtol=duplicate_rtol)
    good = ~dup
    if not good.any():
        return fallback
    _check_gaps(headers, order, np.diff(zs), good, report, rtol=spacing_rtol)
    pos = np.array([headers[i].position for i in order], float)
    steps = np.diff(pos, axis=0)[good]
    _check_tilt(headers, order, steps, normal, report, tol=tilt_tol)
    return np.median(steps, axis=0)


def slice_geometry(headers: Sequence[SliceHeader], *, allow_irregular: bool = False,
                   orientation_atol: float = ORIENTATION_ATOL,
                   pixel_spacing_rtol: float = PIXEL_SPACING_RTOL,
                   duplicate_rtol: float = DUPLICATE_RTOL, spacing_rtol: float = SPACING_RTOL,
                   tilt_tol: float = TILT_TOL, orthonormal_tol: float = ORTHONORMAL_TOL) -> Geometry:
    """Sort slices along their normal and check that they form a regular grid.

    Checks, in order (each raising its own :class:`~orthanc_pandas.errors.GeometryError`
    subclass that names the slices involved): equal Rows/Columns/SamplesPerPixel
    (:class:`~orthanc_pandas.errors.InconsistentSlicesError`, raised even with
    ``allow_irregular`` since such slices cannot be stacked), every slice has a position and
    orientation or none has (``MissingGeometryError``), one orientation
    (``MixedOrientationError``), orthonormal row and column directions (``GeometryError``),
    equal PixelSpacing (``InconsistentSlicesError``), no two
    slices at the same position (``DuplicateSliceError``), uniform spacing
    (``SliceSpacingError``: missing slices), steps parallel to the normal (``GantryTiltError``).

    Parameters
    ----------
    headers : sequence of SliceHeader
    allow_irregular : bool, default False
        Warn (:class:`~orthanc_pandas.errors.GeometryWarning`) instead of raising; ``z`` then
        holds the real positions, and the affine uses the median step between slices.
    orientation_atol : float, default ``ORIENTATION_ATOL``
        Direction cosines of two slices agreeing within this are one orientation.
    pixel_spacing_rtol : float, default ``PIXEL_SPACING_RTOL``
        PixelSpacing values agreeing within this fraction are equal.
    duplicate_rtol : float, default ``DUPLICATE_RTOL``
        Slices closer than this fraction of the typical step are duplicates.
    spacing_rtol : float, default ``SPACING_RTOL``
        Steps further than this fraction from the typical step are gaps.
    tilt_tol : float, default ``TILT_TOL``
        In-plane drift per slice step, relative to the step along the normal.
    orthonormal_tol : float, default ``ORTHONORMAL_TOL``
        Entries of ``R @ R.T`` (R: row and column cosines) may differ from the identity by this.

    Returns
    -------
    Geometry

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_series
    >>> hs = [slice_headers(ds)[0] for ds in make_series(3, 4, 4, slice_spacing=2.0)][::-1]
    >>> g = slice_geometry(hs)
    >>> g.order.tolist(), g.z.tolist(), g.spacing
    ([2, 1, 0], [0.0, 2.0, 4.0], [2.0, 0.7, 0.8])
    """
    _check_shapes(headers)
    problems: list[str] = []

    def report(exc_type, message: str, idx) -> None:
        if not allow_irregular:
            raise exc_type(message + " Pass allow_irregular=True to get the slices at their real "
                           "positions anyway (with a warning).", slices=_uids(headers, idx))
        problems.append(message)

    if not _check_positions(headers, report):
        return _no_geometry(headers, problems)
    iop = _check_orientation(headers, report, atol=orientation_atol)
    _check_orthonormal(headers, iop, report, tol=orthonormal_tol)
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    pixel_spacing = _check_pixel_spacing(headers, report, rtol=pixel_spacing_rtol)
    order, zs = _sort_along(headers, normal)
    step = _slice_step(headers, order, zs, normal, report, duplicate_rtol=duplicate_rtol,
                       spacing_rtol=spacing_rtol, tilt_tol=tilt_tol)
    affine = affine_matrix(headers[order[0]].position, np.concatenate([row, col]),
                           pixel_spacing or (1.0, 1.0), step)
    if problems:
        warn("Irregular geometry, returned at the real slice positions (z) without "
                      "interpolation: " + " ".join(problems), GeometryWarning)
    return Geometry(order=order, z=zs.astype(np.float64), affine=affine, pixel_spacing=pixel_spacing,
                    kind="irregular" if problems else "regular", problems=problems)


def _no_geometry(headers: Sequence[SliceHeader], problems: list[str]) -> Geometry:
    n = len(headers)
    order = np.array(sorted(range(n), key=lambda i: (
        headers[i].instance_number is None, headers[i].instance_number or 0, headers[i].frame or 0, i)),
        dtype=np.intp)
    if n > 1 or problems:
        problems = [*problems, f"No ImagePositionPatient/ImageOrientationPatient on "
                    f"{'these' if problems else 'any of the'} {n} slices: sorted by InstanceNumber; "
                    "z is the slice rank, not a position, and there is no affine."]
        warn(" ".join(problems), GeometryWarning)
    spacing = headers[0].pixel_spacing
    same = all(h.pixel_spacing == spacing for h in headers)
    return Geometry(order=order, z=np.arange(n, dtype=np.float64), affine=None,
                    pixel_spacing=spacing if same else None, kind="none", problems=problems)


# -- slice headers from index columns (the geometry report) ------------------------------
_IPP = [f"ImagePositionPatient_{i}" for i in range(3)]
_IOP = [f"ImageOrientationPatient_{i}" for i in range(6)]
_PS = ["PixelSpacing_0", "PixelSpacing_1"]


def _column_floats(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    if not all(c in df.columns for c in cols):
        return np.full((len(df), len(cols)), np.nan)
    return df[cols].to_numpy(dtype=np.float64, na_value=np.nan)


def _tuples(values: np.ndarray) -> list:
    """Each row of a float matrix as a tuple, or None where a component is missing."""
    finite = np.isfinite(values).all(axis=1).tolist()
    return [tuple(v) if ok else None for v, ok in zip(values.tolist(), finite, strict=True)]


def index_headers(rows: pd.DataFrame):
    """One :class:`~orthanc_pandas._imaging.geometry.SliceHeader` per row, from index columns."""

    n = len(rows)
    ipp, iop, ps = _column_floats(rows, _IPP), _column_floats(rows, _IOP), _column_floats(rows, _PS)

    def ints(col, default):
        if col not in rows.columns:
            return [default] * n
        return [default if pd.isna(v) else int(v) for v in rows[col].to_numpy(object, na_value=None)]

    sop = rows["SOPInstanceUID"].astype(object).where(rows["SOPInstanceUID"].notna(), "").tolist() \
        if "SOPInstanceUID" in rows.columns else [""] * n
    inst = rows.index.get_level_values("instance").tolist()
    nums = ints("InstanceNumber", None)
    r, c, s = ints("Rows", 0), ints("Columns", 0), ints("SamplesPerPixel", 1)
    pos, ori, spa = _tuples(ipp), _tuples(iop), _tuples(ps)
    return [SliceHeader(sop_instance_uid=str(sop[k]), rows=r[k], columns=c[k], position=pos[k],
                        orientation=ori[k], pixel_spacing=spa[k], instance=inst[k],
                        instance_number=nums[k], samples=s[k] or 1) for k in range(n)]


def stack_spacing(headers: Sequence[SliceHeader]) -> float | None:
    """The series frame's ``slice_spacing`` of slices read from headers: the median step (mm)
    between their positions sorted along the first slice's normal, steps below 1e-4 mm ignored;
    None with fewer than two distinct positions or without orientation.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_multiframe
    >>> stack_spacing(slice_headers(make_multiframe(4, 8, 8, slice_spacing=3.0, frame_order="descending")))
    3.0
    """
    if not headers or headers[0].orientation is None:
        return None
    iop = np.asarray(headers[0].orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    pos = np.array([h.position if h.position is not None else (np.nan,) * 3 for h in headers], float)
    z = np.sort((pos @ normal)[np.isfinite(pos).all(axis=1)])
    dz = np.diff(z)
    dz = dz[dz > _ABS_EPS]
    return float(np.median(dz)) if len(dz) else None


def series_verdict(headers, **tolerances) -> str | None:
    """The message ``volume()`` raises for these slice headers, or None when it succeeds."""

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GeometryWarning)
            slice_geometry(headers, **tolerances)
    except GeometryError as exc:
        return str(exc)
    missing = [h for h in headers if not h.rows or not h.columns]
    if missing:
        # the reason first: a report column cut for display still says it
        return (f"Not an image: no Rows/Columns (no pixel data) in instance "
                f"{missing[0].sop_instance_uid}"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                + ". Select image instances only.")
    return None
