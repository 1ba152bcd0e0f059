"""Slices -> one :class:`xarray.DataArray` with true geometry. Pure: no HTTP in here.

The geometry comes only from each slice's own header: ImagePositionPatient (IPP),
ImageOrientationPatient (IOP) and PixelSpacing (for enhanced multi-frame files, the per-frame
and shared functional groups). Slices are sorted by their position along the slice normal,
never by InstanceNumber (which is only a fallback, with a warning, when no slice has a
position). Every irregularity is an error from :mod:`orthanc_pandas.errors` that names the
slices involved, unless ``allow_irregular=True``; nothing is ever interpolated.

Layout of the result (see ``docs/volumes.md``)
----------------------------------------------
* dims ``("z", "y", "x")``; ``"c"`` last for colour (RGB; YBR converted to RGB and PALETTE
  COLOR looked up to RGB as pydicom does); RT Dose frames are slices placed by
  GridFrameOffsetVector, DoseGridScaling applied when rescaling; a multi-frame instance without per-frame positions gives ``("frame", "y", "x")``
  (several such instances: ``("z", "frame", "y", "x")``).
* coords (float64, ``units="mm"``): positions in the patient frame (LPS) along the volume's own
  axes: ``z`` = ``dot(IPP, normal)`` of each slice, ``y`` = ``dot(IPP, column direction) +
  row index x row spacing``, ``x`` = ``dot(IPP, row direction) + column index x column
  spacing`` (IPP of the first slice), so ``direction @ (affine @ [k, r, c, 1])[:3] ==
  [z[k], y[r], x[c]]`` and two volumes with the same orientation in one frame of reference
  share their coordinates (``xr.align``, ``interp_like``). Per-slice coords on ``z``:
  ``sop_instance_uid``, ``instance`` (Orthanc id), ``frame`` (multi-frame sources only).
* attrs: ``affine`` (16 floats, the row-major 4x4 LPS affine; ``np.reshape(a, (4, 4))``)
  mapping ``(z, y, x, 1)`` array indices - in dims order - to LPS millimetres; ``spacing``,
  ``origin``, ``direction`` (9 floats, row-major 3x3 whose rows are the unit LPS vectors of
  the z, y and x axes), ``frame_of_reference_uid``, ``series_instance_uid``, ``modality``,
  ``units`` ("HU", CT only), ``window_center``/``window_width``, ``geometry``
  ("regular", "irregular" or "none"). Everything is a str, a float or a flat list of floats,
  so ``to_netcdf`` and ``json.dumps(da.attrs)`` work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from pydicom.datadict import keyword_dict
from pydicom.dataelem import RawDataElement

from ._threads import worker_count
from ._warn import warn
from .errors import (
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

__all__ = [
    "SliceHeader", "Geometry", "slice_headers", "slice_geometry", "affine_matrix",
    "from_datasets", "decode_pixels", "ORIENTATION_ATOL", "SPACING_RTOL", "DUPLICATE_RTOL",
    "TILT_TOL", "PIXEL_SPACING_RTOL", "ORTHONORMAL_TOL",
]

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


def _get(ds, keyword: str):
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


def _floats(value, n: int) -> tuple[float, ...] | None:
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


def _group(ds, frame_item, name: str):
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


def _number_of_frames(ds) -> int:
    n = _int(ds.get("NumberOfFrames", 1))
    return n if n and n > 0 else 1


def slice_headers(ds, instance: str = "") -> list[SliceHeader]:
    """The :class:`SliceHeader` of each slice in a dataset.

    One per frame when the file carries per-frame positions (enhanced CT/MR/PT
    ``PerFrameFunctionalGroupsSequence`` with ``PlanePositionSequence``), else one.

    Examples
    --------
    >>> from orthanc_pandas.synthetic import make_series
    >>> h = slice_headers(make_series(1, 4, 6)[0])[0]
    >>> h.rows, h.columns, h.position
    (4, 6, (-100.0, -110.0, 0.0))
    """
    common = dict(sop_instance_uid=str(ds.get("SOPInstanceUID", "")), instance=instance,
                  rows=int(ds.get("Rows", 0) or 0), columns=int(ds.get("Columns", 0) or 0),
                  samples=3 if _is_palette(ds) else int(ds.get("SamplesPerPixel", 1) or 1),
                  instance_number=_int(_get(ds, "InstanceNumber")),
                  slice_spacing=_floats(_get(ds, "SpacingBetweenSlices") or _get(ds, "SliceThickness"), 1))
    if common["slice_spacing"] is not None:
        common["slice_spacing"] = common["slice_spacing"][0] or None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    nframes = _number_of_frames(ds)
    if per_frame and len(per_frame) == nframes:
        out = []
        for f, item in enumerate(per_frame):
            pos = _group(ds, item, "PlanePositionSequence")
            if pos is None or _floats(_get(pos, "ImagePositionPatient"), 3) is None:
                out = []
                break
            ori = _group(ds, item, "PlaneOrientationSequence")
            meas = _group(ds, item, "PixelMeasuresSequence")
            thick = None
            if meas is not None:
                thick = _floats(_get(meas, "SpacingBetweenSlices") or _get(meas, "SliceThickness"), 1)
            out.append(SliceHeader(
                **{**common, "slice_spacing": thick[0] if thick else common["slice_spacing"]},
                position=_floats(_get(pos, "ImagePositionPatient"), 3),
                orientation=_floats(_get(ori, "ImageOrientationPatient"), 6) if ori is not None
                else _floats(_get(ds, "ImageOrientationPatient"), 6),
                pixel_spacing=_floats(_get(meas, "PixelSpacing"), 2) if meas is not None
                else _floats(_get(ds, "PixelSpacing"), 2),
                frame=f))
        if out:
            return out
    dose = _grid_frame_headers(ds, nframes, common)
    if dose:
        return dose
    # Enhanced files without per-frame positions may still have shared orientation/spacing.
    ori = _group(ds, None, "PlaneOrientationSequence")
    meas = _group(ds, None, "PixelMeasuresSequence")
    return [SliceHeader(
        **common,
        position=_floats(_get(ds, "ImagePositionPatient"), 3),
        orientation=_floats(_get(ds, "ImageOrientationPatient"), 6)
        or (_floats(_get(ori, "ImageOrientationPatient"), 6) if ori is not None else None),
        pixel_spacing=_floats(_get(ds, "PixelSpacing"), 2)
        or (_floats(_get(meas, "PixelSpacing"), 2) if meas is not None else None))]


def _is_palette(ds) -> bool:
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
    offsets = _floats(ds.get("GridFrameOffsetVector"), nframes)
    ipp = _floats(_get(ds, "ImagePositionPatient"), 3)
    iop = _floats(_get(ds, "ImageOrientationPatient"), 6)
    if offsets is None or ipp is None or not _valid_orientation(iop):
        return []
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    rel = np.asarray(offsets) - offsets[0]
    return [SliceHeader(**common, position=tuple(float(v) for v in np.asarray(ipp) + o * normal),
                        orientation=iop, pixel_spacing=_floats(_get(ds, "PixelSpacing"), 2),
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
            "df[(df.Rows == ...)] after df.orthanc.tags('Rows', 'Columns').",
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
    >>> from orthanc_pandas.synthetic import make_series
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


# -- pixels -----------------------------------------------------------------------------------
def decode_pixels(ds) -> np.ndarray:
    """The pixels of a dataset exactly as ``ds.pixel_array`` gives them, without caching them.

    YBR_FULL/YBR_FULL_422 become RGB, as pydicom does by default. Shapes: ``(rows, cols)``,
    ``(rows, cols, 3)``, ``(frames, rows, cols)`` or ``(frames, rows, cols, 3)``.

    Raises
    ------
    PixelDataError
        No pixel data, or no installed decoder for its transfer syntax.

    Examples
    --------
    >>> from orthanc_pandas.synthetic import make_series
    >>> decode_pixels(make_series(1, 4, 6)[0]).shape
    (4, 6)
    """
    from pydicom.pixels import pixel_array

    uid = ds.get("SOPInstanceUID", "?")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise PixelDataError(
            f"Instance {uid} (SOPClassUID {ds.get('SOPClassUID', '?')}, Modality "
            f"{ds.get('Modality', '?')}) has no pixel data: it is not an image. Select image "
            "instances only.")
    _set_transfer_syntax(ds)
    arr = _native_view(ds)
    try:
        if arr is None:
            arr = pixel_array(ds)
        if _is_palette(ds):
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
        return arr
    except Exception as exc:  # pydicom raises several types; give one with a remedy
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        tsname = getattr(ts, "name", ts)
        raise PixelDataError(
            f"Could not decode the pixels of instance {uid} (transfer syntax {tsname}): "
            f"{type(exc).__name__}: {exc}. Compressed syntaxes need pydicom's plugins: "
            "pip install 'orthanc-pandas[pixels]'.") from exc


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
        if _number_of_frames(ds) != 1 or "NumberOfFrames" in ds and ds.NumberOfFrames is None:
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


def _rescale_params(ds, frame: int | None):
    """(slope, intercept) or a LUT dataset for one frame; None when the LUT is the identity."""
    if ds.get("ModalityLUTSequence"):
        return "lut"
    item = None
    if frame is not None and ds.get("PerFrameFunctionalGroupsSequence"):
        pf = ds.PerFrameFunctionalGroupsSequence
        item = _group(ds, pf[frame] if frame < len(pf) else None, "PixelValueTransformationSequence")
    src = item if item is not None and "RescaleSlope" in item else ds
    slope = _floats(_get(src, "RescaleSlope"), 1)
    intercept = _floats(_get(src, "RescaleIntercept"), 1)
    if slope is None and "DoseGridScaling" in ds:  # RT Dose: stored value x scaling = dose
        slope = _floats(ds.get("DoseGridScaling"), 1)
    if slope is None and intercept is None:
        return None
    return (slope[0] if slope else 1.0, intercept[0] if intercept else 0.0)


def _apply_lut(raw: np.ndarray, ds, params, out: np.ndarray) -> None:
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
def _window(ds, keyword: str) -> list[float] | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    vals = _floats(v, len(v) if isinstance(v, Sequence) and not isinstance(v, str) else 1)
    return list(vals) if vals else None


def _stack_layout(datasets: Sequence, ids: Sequence[str]):
    """The slices of the datasets: ``(headers, owner, nframes, frame_dim)``.

    ``owner[i]`` is ``(dataset index, frame or None)`` of ``headers[i]``. A multi-frame file
    without per-frame positions keeps its frames on their own dim (``frame_dim``), one header
    per file; such files must all have the same NumberOfFrames.
    """
    per_ds = [slice_headers(ds, inst) for ds, inst in zip(datasets, ids, strict=True)]
    nframes = [_number_of_frames(ds) for ds in datasets]
    frame_dim = any(nf > 1 and len(h) == 1 for nf, h in zip(nframes, per_ds, strict=True))
    if not frame_dim:
        headers = [h for hs in per_ds for h in hs]
        return headers, [(d, h.frame) for d, hs in enumerate(per_ds) for h in hs], nframes, False
    if len(set(nframes)) > 1:
        raise InconsistentSlicesError(
            f"The multi-frame instances have different NumberOfFrames ({sorted(set(nframes))}) "
            "and no per-frame positions, so their frames cannot be stacked: select one instance.",
            slices=[str(ds.get("SOPInstanceUID", "")) for ds in datasets])
    return [h[0] for h in per_ds], [(d, None) for d in range(len(datasets))], nframes, True


def _fill_plan(owner: Sequence[tuple[int, int | None]], order: np.ndarray) -> dict:
    """``dataset index -> [(slot in the volume, frame or None)]``, in the order of first slot."""
    slot_of = np.empty(len(owner), dtype=np.intp)
    slot_of[order] = np.arange(len(owner))
    jobs: dict[int, list[tuple[int, int | None]]] = {}
    for i, (d, f) in enumerate(owner):
        jobs.setdefault(d, []).append((int(slot_of[i]), f))
    return {d: jobs[d] for d in sorted(jobs, key=lambda d: min(s for s, _ in jobs[d]))}


def _copy_frames(out: np.ndarray, raw: np.ndarray, ds, targets, *, multi: bool,
                 rescale: bool) -> None:
    """Copy (and rescale) the decoded pixels ``raw`` of ``ds`` into their slots of ``out``."""
    uid = str(ds.get("SOPInstanceUID", ""))
    for slot, f in targets:
        src = raw[f] if (f is not None and multi) else raw
        if src.shape != out.shape[1:]:
            raise InconsistentSlicesError(
                f"Instance {uid or '?'} decoded to shape {src.shape}, "
                f"expected {out.shape[1:]} from its header.", slices=[uid])
        if rescale:
            _apply_lut(src, ds, _rescale_params(ds, f), out[slot])
            continue
        if src.dtype != out.dtype and not np.can_cast(src.dtype, out.dtype, "safe"):
            raise InconsistentSlicesError(
                f"Instance {uid or '?'} stores {src.dtype} pixels, the "
                f"others {out.dtype}; use rescale=True to get one float array.", slices=[uid])
        out[slot] = src


def _release(datasets: Sequence, arrays: list | None, d: int) -> None:
    """Drop dataset ``d``'s decoded array (or its pixel data) once copied into the volume."""
    if arrays is not None:
        arrays[d] = None
        return
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in datasets[d]:
            del datasets[d][kw]


def from_datasets(datasets: Sequence, *, instances: Sequence[str] | None = None,
                  rescale: bool = True, allow_irregular: bool = False, dtype="float32",
                  max_workers: int = 1, release: bool = False, progress=None,
                  arrays: list | None = None):
    """Build one volume from the pydicom datasets of a series (no server needed).

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        The instances, in any order.
    instances : sequence of str, optional
        The Orthanc id of each dataset (the ``instance`` coord); default ``""``.
    rescale : bool, default True
        Apply the modality LUT (RescaleSlope/RescaleIntercept per slice or per frame, or the
        ModalityLUTSequence) and return ``dtype``; ``False`` returns the stored values in
        their stored integer type. Colour images are never rescaled.
    allow_irregular : bool, default False
        See :func:`slice_geometry`.
    dtype : numpy dtype, default float32
        Type of rescaled values.
    max_workers : int, default 1
        Threads decoding slices (compressed series decode faster with 2-4).
    release : bool, default False
        Drop each dataset's pixel data once decoded (keeps peak memory near the final array;
        only for datasets nobody else uses).
    progress : bool or tqdm, optional
        Progress over decoded instances.
    arrays : list of numpy.ndarray, optional
        The pixels of each dataset already decoded by :func:`decode_pixels` (then the
        datasets need no pixel data). With ``release=True`` the list entries are dropped as
        they are copied into the volume.

    Returns
    -------
    xarray.DataArray
        See the module documentation for dims, coords and attrs.

    Examples
    --------
    >>> from orthanc_pandas.synthetic import make_series
    >>> da = from_datasets(make_series(5, 16, 12, slope=2, intercept=-100))
    >>> da.dims, da.shape, str(da.dtype), da.attrs["units"]
    (('z', 'y', 'x'), (5, 16, 12), 'float32', 'HU')
    """

    from ._progress import progress_bar

    datasets = list(datasets)
    if not datasets:
        raise InconsistentSlicesError("No instances to build a volume from.")
    ids = list(instances) if instances is not None else [""] * len(datasets)
    headers, owner, nframes, frame_dim = _stack_layout(datasets, ids)
    geo = slice_geometry(headers, allow_irregular=allow_irregular)
    jobs = _fill_plan(owner, geo.order)
    colour = headers[0].samples > 1
    shape = ((len(headers),) + ((nframes[0],) if frame_dim else ())
             + (headers[0].rows, headers[0].columns) + ((headers[0].samples,) if colour else ()))
    bar = progress_bar(progress, total=len(datasets), desc="Decoding", unit="file", min_total=50)

    def fill(d: int, raw: np.ndarray | None = None) -> None:
        ds = datasets[d]
        if raw is None:
            raw = decode_pixels(ds) if arrays is None else arrays[d]
        _copy_frames(out, raw, ds, jobs[d], multi=nframes[d] > 1, rescale=rescale and not colour)
        del raw
        if release:
            _release(datasets, arrays, d)
        bar.update(1)

    try:
        # The first decode fixes the stored dtype before the one allocation; it is then
        # copied in, not decoded again.
        d0, *rest = jobs
        raw0 = decode_pixels(datasets[d0]) if arrays is None else arrays[d0]
        out = np.empty(shape, dtype=np.dtype(dtype) if rescale and not colour else raw0.dtype)
        fill(d0, raw0)
        del raw0
        workers = worker_count(max_workers, jobs=len(rest))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(fill, rest):
                    pass
        else:
            for d in rest:
                fill(d)
    finally:
        bar.close()

    return _assemble(out, geo, headers, datasets[0], frame_dim=frame_dim,
                     multiframe=any(nf > 1 for nf in nframes) or any(h.frame is not None for h in headers),
                     rescaled=rescale and not colour, colour=colour)


def _assemble(out, geo: Geometry, headers, first, *, frame_dim, multiframe, rescaled, colour):
    import xarray as xr

    ordered = [headers[i] for i in geo.order]
    zname = "z"
    dims: list[str] = [zname] + (["frame"] if frame_dim else []) + ["y", "x"] + (["c"] if colour else [])
    ps = geo.pixel_spacing
    space_units = "mm" if ps is not None else "pixel"
    dr, dc = ps if ps is not None else (1.0, 1.0)
    rows, cols = out.shape[dims.index("y")], out.shape[dims.index("x")]
    # In-plane coords start where the first voxel is along the row / column direction (as z
    # does along the normal), so volumes of one frame of reference share their coordinates.
    y0 = x0 = 0.0
    if geo.affine is not None:
        first_pos, col_dir, row_dir = geo.affine[:3, 3], geo.affine[:3, 1], geo.affine[:3, 2]
        y0 = float(first_pos @ (col_dir / np.linalg.norm(col_dir)))
        x0 = float(first_pos @ (row_dir / np.linalg.norm(row_dir)))
    coords: dict = {
        "z": ("z", geo.z, {"units": "mm" if geo.kind != "none" else "1",
                           "long_name": "position along the slice normal" if geo.kind != "none"
                           else "slice rank (no position in the headers)"}),
        "y": ("y", y0 + np.arange(rows, dtype=np.float64) * dr,
              {"units": space_units, "long_name": "position along the column direction"}),
        "x": ("x", x0 + np.arange(cols, dtype=np.float64) * dc,
              {"units": space_units, "long_name": "position along the row direction"}),
        "sop_instance_uid": ("z", np.array([h.sop_instance_uid for h in ordered], dtype=object)),
        "instance": ("z", np.array([h.instance for h in ordered], dtype=object)),
    }
    if multiframe and not frame_dim:
        coords["frame"] = ("z", np.array([-1 if h.frame is None else h.frame for h in ordered],
                                         dtype=np.int64), {"long_name": "0-based frame in the instance"})
    if frame_dim:
        coords["frame"] = ("frame", np.arange(out.shape[1], dtype=np.int64))
    if colour:
        photometric = str(first.get("PhotometricInterpretation", "RGB"))
        coords["c"] = ("c", np.array(list("RGB") if out.shape[-1] == 3 else
                                     [str(i) for i in range(out.shape[-1])], dtype=object))
    attrs: dict = {"geometry": geo.kind}
    if geo.affine is not None:
        attrs["affine"] = [float(v) for v in geo.affine.ravel()]
        attrs["spacing"] = geo.spacing
        attrs["origin"] = geo.origin
        attrs["direction"] = geo.direction
    for key, kw in (("frame_of_reference_uid", "FrameOfReferenceUID"),
                    ("series_instance_uid", "SeriesInstanceUID"), ("modality", "Modality")):
        v = first.get(kw)
        if v:
            attrs[key] = str(v)
    if colour:
        attrs["photometric_interpretation"] = "RGB" if photometric.startswith("YBR") or \
            photometric == "PALETTE COLOR" else photometric
    if rescaled and str(first.get("Modality", "")) == "CT":
        attrs["units"] = "HU"
    elif rescaled and first.get("DoseUnits"):
        attrs["units"] = str(first.DoseUnits)  # RT Dose: GY or RELATIVE
    for key, kw in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        w = _window(first, kw)
        if w is not None:
            attrs[key] = w
    if geo.problems:
        attrs["geometry_problems"] = " ".join(geo.problems)
    da = xr.DataArray(out, dims=dims, coords=coords, attrs=attrs,
                      name=str(first.get("SeriesDescription", "") or "") or "volume")
    if frame_dim and out.shape[0] == 1:
        da = da.isel(z=0)  # one multi-frame instance: ("frame", "y", "x"); z stays a scalar coord
    return da


def __getattr__(name: str):
    # LazyVolumes downloads, so it lives in series_volume.py; the old import path still works.
    if name == "LazyVolumes":
        from .series_volume import LazyVolumes

        return LazyVolumes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
