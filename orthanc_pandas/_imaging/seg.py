"""A mask on a volume's grid -> a DICOM SEG of the volume's source images. Pure: no HTTP.

The reverse of :func:`orthanc_pandas._imaging.masks.seg_mask`. ``vol.orthanc.to_seg(mask,
labels)`` calls :func:`seg_plan` first (the mask, its grid, its values and its labels are
checked before anything is downloaded), then :func:`build_seg` with the headers of the
volume's source instances, which highdicom turns into the SEG.

Where each voxel goes
---------------------
Nothing here assumes an orientation, a slice order or an order of dims:

1. The mask is laid on the volume's grid by dim *names* (a DataArray, in any dims order) or in
   the volume's own dims order (a numpy array): same shape, and for a DataArray the same
   ``z``/``y``/``x`` coordinates and ``attrs["affine"]``, else :class:`MaskGeometryError` says
   which differs and what to do. Nothing is resampled.
2. Every source image (or frame of one enhanced multi-frame image) is placed by its own header,
   never by its rank or InstanceNumber: its ImagePositionPatient projected on the volume's
   normal picks the mask slice (whose ``sop_instance_uid`` coordinate must then name that very
   image), and ``(coordinate - position) / PixelSpacing`` along the row and column directions
   gives the image column of each ``x`` and the image row of each ``y`` (whole numbers, inside
   the image). A volume that was transposed, cut (``isel``) or reversed
   (``isel(y=slice(None, None, -1))``) therefore still writes each voxel on its own pixel.
3. highdicom writes frame ``i`` of the pixel array on ``source_images[i]`` (or on frame ``i`` of
   one multi-frame image): its documented correspondence when no plane positions are given. It
   copies each image's position, orientation and pixel spacing into the SEG's functional
   groups, so the SEG's geometry is the source's own, on axial, sagittal and oblique series
   alike.

Segments (see ``docs/interop.md``, "Writing a SEG")
---------------------------------------------------
* a boolean (or 0/1) ``(z, y, x)`` mask: one segment;
* one more dim ``segment`` (``roi`` too, as ``rt_rows.orthanc.mask(like=vol)`` gives), or a
  4-D numpy array with segments first: one segment each, overlaps allowed; labels from
  ``labels=`` or the ``segment`` coordinate;
* an integer label map: value ``k`` is segment ``k`` (labelled ``labels[k - 1]``, or
  ``labels[k]`` for a dict ``{k: label}`` with keys 1..n), 0 is background;
* ``fractional=True``: values in [0, 1] (probabilities, or occupancy), stored as
  ``round(value * 255)``; :func:`~orthanc_pandas._imaging.masks.seg_mask` reads them back as
  ``value >= 0.5``.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from orthanc_pandas._imaging.geometry import number_of_frames, slice_headers
from orthanc_pandas._imaging.masks import GRID_ATOL, PLANE_ATOL, need_masks_extra
from orthanc_pandas._imaging.mosaic import is_mosaic
from orthanc_pandas.errors import GeometryError, MaskGeometryError, SelectionError

SPATIAL = ("z", "y", "x")


#: Names of the dim that holds one segment each.
SEGMENT_DIMS = ("segment", "roi")


ALGORITHM_TYPES = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")


FRACTIONAL_TYPES = ("PROBABILITY", "OCCUPANCY")


#: A fractional SEG stores ``round(value * MAX_FRACTIONAL_VALUE)`` in 8 bits.
MAX_FRACTIONAL_VALUE = 255


#: SegmentLabel and SeriesDescription are LO: at most 64 characters.
_LO = 64


#: Labels that name a code under another keyword.
_SYNONYMS = {"tumor": "neoplasm", "tumour": "neoplasm", "vessel": "bloodvessel"}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


@functools.cache
def _groups():
    """(category, {normalised keyword or meaning: code}) for the type CIDs that imply a
    category, in the order a label is looked up: anatomy first."""
    from pydicom.sr.codedict import codes

    cat = codes.cid7150
    out = []
    for cid, category in ((codes.cid7192, cat.AnatomicalStructure), (codes.cid7166, cat.Tissue),
                          (codes.cid7159, cat.MorphologicallyAbnormalStructure),
                          (codes.cid7157, cat.PhysicalObject)):
        table = {}
        for kw, code in cid.concepts.items():
            table.setdefault(_key(kw), code)
            table.setdefault(_key(code.meaning), code)
        out.append((category, table))
    return out


def default_codes(label: str):
    """The ``(category, type)`` codes a segment label gets when none are given.

    The label is looked up (case, spaces and punctuation ignored; "tumor" -> Neoplasm) among
    DICOM's segmentation property types in pydicom's code dictionary: anatomical structures
    (CID 7192, category Anatomical Structure), common tissues (CID 7166, Tissue), lesions
    (CID 7159, Morphologically Abnormal Structure) and devices (CID 7157, Physical Object).
    Any other label is Tissue / Tissue, 3D Slicer's default for a new segment; the label itself
    is kept as SegmentLabel either way.

    Examples
    --------
    >>> cat, typ = default_codes("Liver")
    >>> cat.meaning, typ.value, typ.scheme_designator, typ.meaning
    ('Anatomical Structure', '10200004', 'SCT', 'Liver')
    >>> default_codes("tumour")[1].meaning
    'Neoplasm'
    >>> [c.meaning for c in default_codes("my model output")]
    ['Tissue', 'Tissue']
    """
    from pydicom.sr.codedict import codes

    key = _key(label)
    key = _SYNONYMS.get(key, key)
    for category, table in _groups():
        if key in table:
            return category, table[key]
    return codes.cid7150.Tissue, codes.cid7166.Tissue


def _category_of(code):
    for category, table in _groups():
        for known in table.values():
            if known.value == code.value and known.scheme_designator == code.scheme_designator:
                return category
    return None


def as_code(value, what: str = "code"):
    """A pydicom ``Code`` from a Code, a highdicom CodedConcept, a ``(value, scheme, meaning)``
    tuple or a keyword of pydicom's ``codes.SCT`` / ``codes.DCM``.

    Examples
    --------
    >>> as_code(("10200004", "SCT", "Liver")).meaning
    'Liver'
    >>> as_code("Spleen").value
    '78961009'
    """
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    if isinstance(value, Code):
        return value
    if all(hasattr(value, a) for a in ("value", "scheme_designator", "meaning")):  # CodedConcept
        return Code(str(value.value), str(value.scheme_designator), str(value.meaning),
                    getattr(value, "scheme_version", None) or None)
    if isinstance(value, str):
        for scheme in (codes.SCT, codes.DCM):
            try:
                return getattr(scheme, value)
            except AttributeError:
                pass
    if isinstance(value, tuple | list) and len(value) in (3, 4) and all(isinstance(v, str) for v in value):
        return Code(*value)
    raise SelectionError(
        f"{what}: {value!r} is not a code. Give a pydicom Code, a highdicom CodedConcept, a "
        "(value, scheme, meaning) tuple such as ('10200004', 'SCT', 'Liver'), or a keyword of "
        "pydicom's codes.SCT such as 'Liver'.")


def _explicit_codes(label: str, entry):
    """``(category, type)`` from one ``codes=`` entry: a type code, or a (category, type) pair."""
    if isinstance(entry, tuple | list) and len(entry) == 2:
        return as_code(entry[0], f"codes[{label!r}] category"), as_code(entry[1], f"codes[{label!r}] type")
    typ = as_code(entry, f"codes[{label!r}]")
    category = _category_of(typ)
    if category is None:
        raise SelectionError(
            f"codes[{label!r}] = {typ.value} ({typ.scheme_designator}, {typ.meaning!r}) is not one "
            "of DICOM's segmentation property types whose category is known here (CIDs 7192, "
            "7166, 7159, 7157): give the category too, as a pair (category, type), e.g. "
            "(codes.cid7150.MorphologicallyAbnormalStructure, your_code).")
    return category, typ


def segment_descriptions(labels: Sequence[str], *, codes: Mapping | None = None,
                         algorithm: str | None = None, algorithm_version: str | None = None,
                         algorithm_type: str | None = None,
                         algorithm_family="ArtificialIntelligence") -> list:
    """highdicom ``SegmentDescription`` objects, segment ``k`` for ``labels[k - 1]``.

    Parameters
    ----------
    labels : sequence of str
        SegmentLabel of each segment (1 to 64 characters).
    codes : mapping, optional
        ``label -> type code`` or ``label -> (category code, type code)``; a code is a pydicom
        ``Code``, a highdicom ``CodedConcept``, a ``(value, scheme, meaning)`` tuple or a
        ``codes.SCT`` keyword. A type alone gets the category of the CID it belongs to. Labels
        not in it get :func:`default_codes`.
    algorithm, algorithm_version : str, optional
        AlgorithmName and AlgorithmVersion (both, or neither).
    algorithm_type : {"AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"}, optional
        Default ``"AUTOMATIC"`` with an algorithm, else ``"MANUAL"``.
    algorithm_family : str or code
        A keyword of CID 7162 (``"ArtificialIntelligence"``, ``"EdgeDetection"`` ...) or a code.

    Examples
    --------
    >>> d = segment_descriptions(["liver"], algorithm="nnU-Net", algorithm_version="2.5")
    >>> d[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning, d[0].SegmentAlgorithmType
    ('Liver', 'AUTOMATIC')
    """
    hd = need_masks_extra("highdicom", "to_seg()")
    from pydicom.sr.codedict import codes as dicom_codes

    codes = dict(codes or {})
    unknown = [k for k in codes if k not in labels]
    if unknown:
        raise SelectionError(f"codes= names labels that no segment has: {unknown}; the segments "
                             f"are {list(labels)}.")
    kind = algorithm_type or ("AUTOMATIC" if algorithm is not None else "MANUAL")
    if str(kind).upper() not in ALGORITHM_TYPES:
        raise SelectionError(f"algorithm_type={algorithm_type!r}: use one of {ALGORITHM_TYPES}.")
    kind = str(kind).upper()
    ident = None
    if (algorithm is None) != (algorithm_version is None):
        raise SelectionError(
            "Give algorithm= and algorithm_version= together (DICOM requires both AlgorithmName "
            "and AlgorithmVersion), e.g. algorithm='nnU-Net liver', algorithm_version='2.5'.")
    if algorithm is not None:
        family = algorithm_family
        if isinstance(family, str) and family in dicom_codes.cid7162.dir():
            family = getattr(dicom_codes.cid7162, family)
        ident = hd.AlgorithmIdentificationSequence(
            name=str(algorithm), version=str(algorithm_version),
            family=as_code(family, "algorithm_family"))
    elif kind != "MANUAL":
        raise SelectionError(f"algorithm_type={kind!r} needs algorithm= and algorithm_version= "
                             "(the AlgorithmIdentificationSequence); or use 'MANUAL'.")
    out = []
    for number, label in enumerate(labels, start=1):
        category, typ = (_explicit_codes(label, codes[label]) if label in codes
                         else default_codes(label))
        out.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=category,
            segmented_property_type=typ, algorithm_type=kind, algorithm_identification=ident))
    return out


# -- the mask on the volume's grid -----------------------------------------------------------------
@dataclass
class SegPlan:
    """A checked mask, ready to be written on the volume's source images (:func:`seg_plan`).

    ``array`` is ``(z, y, x)`` (a label map, or one fractional segment) or ``(z, y, x, segment)``
    in the order of the volume's ``z``, ``y``, ``x`` coordinates (given here in that order).
    """

    array: np.ndarray
    labelmap: bool
    fractional: bool
    fractional_type: str
    labels: list[str]
    descriptions: list
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    direction: np.ndarray          # rows: unit LPS vectors of z, y, x
    spacing: np.ndarray            # [dz, dy, dx] mm, for the tolerances
    sop_instance_uids: list[str]   # per z
    frames: list[int | None]       # per z: the frame in its instance (None: single-frame)
    instances: list[str]           # per z: Orthanc instance id ("" when unknown)
    frame_of_reference_uid: str | None
    atol: float
    plane_atol: float

    @property
    def source_instances(self) -> list[str]:
        """The Orthanc ids of the source instances, in slice order, each once."""
        return list(dict.fromkeys(self.instances))


def _spatial_order(vol) -> tuple[str, ...]:
    spatial = tuple(d for d in vol.dims if d != "c")
    if sorted(spatial) != sorted(SPATIAL):
        raise GeometryError(
            f"to_seg() needs a volume with dims z, y, x (any order; c for colour) as "
            f"df.orthanc.volume() gives; this one has {tuple(vol.dims)}. A slice picked with "
            "vol.isel(z=k) has lost its z dim: keep it with vol.isel(z=[k]).")
    return spatial


def _coord(vol, name: str) -> np.ndarray:
    return np.asarray(vol[name].values, dtype=np.float64)


def _volume_spacing(vol) -> np.ndarray:
    spacing = vol.attrs.get("spacing")
    if spacing is not None and len(spacing) == 3:
        return np.abs(np.asarray(spacing, dtype=np.float64))
    out = []
    for d in SPATIAL:
        c = _coord(vol, d)
        out.append(float(np.median(np.abs(np.diff(c)))) if c.size > 1 else 1.0)
    return np.asarray(out)


def _per_slice(vol, name: str, n: int, default):
    if name not in vol.coords:
        return [default] * n
    values = np.asarray(vol.coords[name].values)
    if values.ndim == 0:
        values = np.repeat(values, n)
    return list(values)


def _grid_error(what: str) -> MaskGeometryError:
    return MaskGeometryError(
        f"The mask is not on the volume's grid: {what}. Nothing is resampled. Make the mask on "
        "this volume (your model's output on vol.values, or seg_rows.orthanc.mask(like=vol)), "
        "or bring it onto the grid first, e.g. mask.interp_like(vol, method='nearest') for "
        "another grid of the same frame of reference.")


def _on_grid(mask, vol, order: tuple[str, ...], spacing: np.ndarray, atol: float):
    """``(array, has segment axis, labels from a coordinate)``; array ``(z, y, x[, segment])``."""
    import xarray as xr

    if isinstance(mask, xr.DataArray):
        extra = [d for d in mask.dims if d not in SPATIAL]
        missing = [d for d in SPATIAL if d not in mask.dims]
        if missing or len(extra) > 1 or (extra and extra[0] not in SEGMENT_DIMS):
            raise MaskGeometryError(
                f"The mask has dims {tuple(mask.dims)}: to_seg() needs the volume's z, y and x "
                f"(in any order) and at most one more, 'segment' ({' or '.join(map(repr, SEGMENT_DIMS))}), "
                "one segment each. Rename its dims (mask.rename(...)), or pass a numpy array "
                f"in the volume's dims order {order}.")
        sizes = [f"{d} {mask.sizes[d]} in the mask, {vol.sizes[d]} in the volume" for d in SPATIAL
                 if mask.sizes[d] != vol.sizes[d]]
        if sizes:
            raise _grid_error(f"its shape differs: {'; '.join(sizes)}")
        for k, d in enumerate(SPATIAL):
            if d in mask.coords and d in vol.coords and mask[d].dims == (d,):
                m, v = np.asarray(mask[d].values), _coord(vol, d)
                if not np.issubdtype(m.dtype, np.number):
                    continue
                m = m.astype(np.float64)
                gap = float(np.max(np.abs(m - v))) if m.size else 0.0
                if gap > atol * spacing[k]:
                    how = (" (the same values reversed: mask.isel("
                           f"{d}=slice(None, None, -1)) lines it up)" if m.size > 1 and np.allclose(m[::-1], v) else "")
                    raise _grid_error(
                        f"its {d} coordinates differ from the volume's by up to {gap:.4g} mm "
                        f"(mask {m[0]:.6g} .. {m[-1]:.6g}, volume {v[0]:.6g} .. {v[-1]:.6g}){how}: "
                        "the same shape in another place (a crop, a shift, a flip, another "
                        "series' grid)")
        if mask.attrs.get("affine") is not None and vol.attrs.get("affine") is not None:
            am = np.asarray(mask.attrs["affine"], dtype=np.float64).reshape(4, 4)
            av = np.asarray(vol.attrs["affine"], dtype=np.float64).reshape(4, 4)
            gap = float(np.max(np.abs(am - av)))
            if gap > atol * float(np.min(spacing)):
                raise _grid_error(
                    f"its attrs['affine'] differs from the volume's by up to {gap:.4g} mm: it "
                    "was made on another grid (another series, or a resampled volume)")
        seg_dim = extra[0] if extra else None
        labels = None
        if seg_dim is not None and seg_dim in mask.coords:
            values = np.asarray(mask.coords[seg_dim].values)
            if values.ndim == 1 and all(isinstance(v, str) for v in values.tolist()):
                labels = [str(v) for v in values.tolist()]
        arr = np.asarray(mask.transpose(*SPATIAL, *extra).values)
        return arr, seg_dim is not None, labels
    arr = np.asarray(mask)
    shape = tuple(vol.sizes[d] for d in order)
    perm = [order.index(d) for d in SPATIAL]
    if arr.shape == shape:
        return arr.transpose(perm), False, None
    if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
        return arr.transpose([p + 1 for p in perm] + [0]), True, None
    named = "(" + ", ".join(f"{d} {n}" for d, n in zip(order, shape, strict=True)) + ")"
    hint = ""
    if arr.ndim == len(shape) + 1 and arr.shape[:-1] == shape:
        hint = " Segments go first in a numpy mask: np.moveaxis(mask, -1, 0)."
    elif sorted(arr.shape[-3:]) == sorted(shape):
        hint = (f" It looks transposed: a numpy mask is read in the volume's dims order {order}; "
                "wrap it as xr.DataArray(mask, dims=(...)) to say which axis is which.")
    err = _grid_error(f"it has shape {arr.shape}, the volume {named} (a numpy mask is read in "
                      f"the volume's dims order {order}, with segments first if several)")
    if hint:
        err = MaskGeometryError(f"{err}{hint}")
    raise err


def _as_labels(labels, coord_labels, n: int | None, labelmap_max: int | None) -> list[str]:
    """The label of each segment, from ``labels=`` or the segment coordinate."""
    if labels is None:
        labels = coord_labels
    if labels is None:
        raise SelectionError(
            "Name the segments: to_seg(mask, 'liver') for one, a list for a mask with a "
            "'segment' dim or for an integer label map (value k -> labels[k - 1]), or a dict "
            "{value: label} for a label map.")
    if isinstance(labels, str):
        labels = [labels]
    elif isinstance(labels, Mapping):
        keys = list(labels)
        if all(isinstance(k, int | np.integer) for k in keys):
            keys = sorted(keys)
        if keys != list(range(1, len(keys) + 1)):
            raise SelectionError(
                f"labels= as a dict maps the values of a label map to labels, with keys 1..n "
                f"(segment numbers); these keys are {keys}.")
        labels = [labels[k] for k in keys]
    labels = list(labels)
    bad = [lab for lab in labels if not isinstance(lab, str) or not lab.strip() or len(lab) > _LO]
    if bad:
        raise SelectionError(f"Segment labels must be text of 1 to {_LO} characters; not {bad}.")
    if len(set(labels)) != len(labels):
        raise SelectionError(f"Segment labels must differ from each other: {labels}.")
    if n is not None and len(labels) != n:
        raise SelectionError(f"The mask holds {n} segment(s) and {len(labels)} label(s) were given: "
                             f"{labels}. Give one label per segment.")
    if labelmap_max is not None and labelmap_max > len(labels):
        raise SelectionError(
            f"The label map holds values up to {labelmap_max} and only {len(labels)} label(s) were "
            f"given ({labels}): value k is segment k, labelled labels[k - 1]. Label every value.")
    return labels


def _binary(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == bool:
        return arr
    if np.issubdtype(arr.dtype, np.number) and (arr.size == 0 or bool(((arr == 0) | (arr == 1)).all())):
        return arr.astype(bool)
    raise SelectionError(
        f"{what} holds values other than 0 and 1 (dtype {arr.dtype}): pass fractional=True for "
        "probabilities in [0, 1], threshold it (mask >= 0.5), or give an integer label map "
        "without a 'segment' dim.")


def _fraction(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        return _binary(arr, what).astype(np.float32)
    if not np.issubdtype(arr.dtype, np.floating):
        raise SelectionError(f"{what} has dtype {arr.dtype}: a fractional SEG needs numbers in [0, 1].")
    if arr.size and (np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1):
        raise SelectionError(f"{what} holds values outside [0, 1] (or NaN): a fractional SEG stores "
                             "probabilities or occupancies between 0 and 1.")
    return arr.astype(np.float32, copy=False)


def _segments(arr, has_axis: bool, labels, coord_labels, fractional: bool):
    """``(array, is a label map, labels)``: the array as highdicom takes it, segments last."""
    if has_axis:
        labels = _as_labels(labels, coord_labels, arr.shape[-1], None)
        return (_fraction(arr, "The mask") if fractional else _binary(arr, "The mask")), False, labels
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.floating) or fractional:
        labels = _as_labels(labels, coord_labels, 1, None)
        one = _fraction(arr, "The mask") if fractional else _binary(arr, "The mask")
        return one[..., None], False, labels
    if not np.issubdtype(arr.dtype, np.integer):
        raise SelectionError(f"The mask has dtype {arr.dtype}: give booleans, 0/1 or fractions, or "
                             "integers for a label map.")
    low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if low < 0:
        raise SelectionError(f"The label map holds negative values ({low}): 0 is background, k > 0 "
                             "is segment k.")
    labels = _as_labels(labels, coord_labels, None, high)
    dtype = np.uint8 if len(labels) < 256 else np.uint16
    if len(labels) == 1:
        return (arr != 0)[..., None], False, labels
    return arr.astype(dtype, copy=False), True, labels


def seg_plan(vol, mask, labels=None, *, codes: Mapping | None = None, fractional: bool = False,
             fractional_type: str = "PROBABILITY", algorithm: str | None = None,
             algorithm_version: str | None = None, algorithm_type: str | None = None,
             algorithm_family="ArtificialIntelligence", atol: float = GRID_ATOL,
             plane_atol: float = PLANE_ATOL) -> SegPlan:
    """Check ``mask`` against ``vol``'s grid and make its segments (no source needed yet).

    Parameters are those of ``vol.orthanc.to_seg()``.

    Returns
    -------
    SegPlan

    Raises
    ------
    MaskGeometryError
        The mask is not on the volume's grid (dims, shape, coordinates or affine differ).
    GeometryError
        The volume has no geometry (no direction) or not the dims of a volume.
    SelectionError
        Labels, codes, values or algorithm options that do not fit.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_series
    >>> from orthanc_pandas._imaging.assemble import from_datasets
    >>> vol = from_datasets(make_series(3, 4, 5))
    >>> plan = seg_plan(vol, vol.values > 0, "body")
    >>> plan.labels, plan.array.shape, plan.labelmap
    (['body'], (3, 4, 5, 1), False)
    """
    if fractional_type not in FRACTIONAL_TYPES:
        raise SelectionError(f"fractional_type={fractional_type!r}: use one of {FRACTIONAL_TYPES}.")
    order = _spatial_order(vol)
    direction = vol.attrs.get("direction")
    if direction is None or len(direction) != 9:
        raise GeometryError(
            "The volume has no direction (attrs['direction']): its slices have no position or "
            f"orientation (geometry={vol.attrs.get('geometry', 'unknown')!r}), so a SEG could not "
            "say where its frames are.")
    spacing = _volume_spacing(vol)
    arr, has_axis, coord_labels = _on_grid(mask, vol, order, spacing, atol)
    array, labelmap, labels = _segments(arr, has_axis, labels, coord_labels, fractional)
    descriptions = segment_descriptions(labels, codes=codes, algorithm=algorithm,
                                        algorithm_version=algorithm_version,
                                        algorithm_type=algorithm_type, algorithm_family=algorithm_family)
    n = vol.sizes["z"]
    frames = [None if f is None or int(f) < 0 else int(f) for f in _per_slice(vol, "frame", n, None)]
    return SegPlan(
        array=array, labelmap=labelmap, fractional=fractional, fractional_type=fractional_type,
        labels=labels, descriptions=descriptions, z=_coord(vol, "z"), y=_coord(vol, "y"),
        x=_coord(vol, "x"), direction=np.asarray(direction, dtype=np.float64).reshape(3, 3),
        spacing=spacing,
        sop_instance_uids=[str(u) for u in _per_slice(vol, "sop_instance_uid", n, "")],
        frames=frames, instances=[str(i) for i in _per_slice(vol, "instance", n, "")],
        frame_of_reference_uid=vol.attrs.get("frame_of_reference_uid"), atol=atol,
        plane_atol=plane_atol)


# -- the source images ---------------------------------------------------------------------------------
def _name(h) -> str:
    return h.sop_instance_uid + ("" if h.frame is None else f" (frame {h.frame + 1})")


def _pixels_of(coord: np.ndarray, start: float, step: float, size: int, atol: float,
               what: str, axis: str, name: str) -> np.ndarray:
    """The pixel index along one image axis of each coordinate value (whole numbers, inside)."""
    idx = (coord - start) / step
    near = np.rint(idx)
    off = float(np.max(np.abs(idx - near))) if idx.size else 0.0
    if off > atol:
        raise MaskGeometryError(
            f"The volume's {axis} coordinates do not fall on the pixel {what}s of source image "
            f"{name}: up to {off:.4g} of a pixel off (PixelSpacing {step:.6g} mm). A resampled "
            "volume, or a sheared one (gantry tilt read with allow_irregular=True), cannot be "
            "written on its source images; write the SEG from the volume as read.")
    near = near.astype(np.int64)
    if near.size and (near.min() < 0 or near.max() >= size):
        raise MaskGeometryError(
            f"The volume's {axis} coordinates reach {what} {int(near.min())} .. {int(near.max())} of "
            f"source image {name}, which has {size} {what}s: its coordinates no longer describe "
            "its source images (were they changed?).")
    if np.unique(near).size != near.size:
        raise MaskGeometryError(
            f"The volume repeats {what}s of source image {name} along {axis}: a SEG holds each "
            "pixel once.")
    return near


def place_on_sources(plan: SegPlan, sources: Sequence):
    """``(source images for highdicom, units)``: one unit per frame highdicom will write,
    ``(mask slice or None, image row of each y, image column of each x)``, placed by position.

    Raises
    ------
    SelectionError
        ``sources`` lack some of the volume's instances.
    GeometryError
        Sources highdicom cannot reference frame by frame (several multi-frame images, a
        mosaic, frames without per-frame positions), or without geometry.
    MaskGeometryError
        A source image that is not where the volume says its slice is.
    """
    by_uid: dict = {}
    for ds in sources:
        by_uid.setdefault(str(ds.get("SOPInstanceUID", "")), ds)
    needed = list(dict.fromkeys(plan.sop_instance_uids))
    missing = [u for u in needed if u not in by_uid]
    if missing:
        raise SelectionError(
            f"{len(missing)} of the volume's {len(needed)} source instances are not among the "
            f"sources given (first: SOPInstanceUID {missing[0]}). Pass the datasets of the "
            "series the volume was read from (headers are enough).")
    images = [by_uid[u] for u in needed]
    for ds in images:
        if is_mosaic(ds):
            raise GeometryError(
                f"Source image {ds.SOPInstanceUID} is a Siemens mosaic: its slices are tiles of "
                "one stored frame, which a SEG cannot reference slice by slice.")
    multi = [ds for ds in images if number_of_frames(ds) > 1]
    if multi:
        if len(images) > 1:
            raise GeometryError(
                f"The volume comes from {len(images)} instances, {len(multi)} of them multi-frame: "
                "a SEG (highdicom) is written on single-frame images or on one multi-frame image.")
        if not images[0].get("PerFrameFunctionalGroupsSequence"):
            raise GeometryError(
                f"Source image {images[0].SOPInstanceUID} has {number_of_frames(images[0])} frames "
                "without per-frame functional groups (an RT Dose, a cine clip): a SEG cannot "
                "reference its frames one by one.")
        headers = slice_headers(images[0])
    else:
        headers = [slice_headers(ds)[0] for ds in images]
    for ds in images:
        ref = ds.get("FrameOfReferenceUID")
        if plan.frame_of_reference_uid and ref and str(ref) != str(plan.frame_of_reference_uid):
            raise MaskGeometryError(
                f"Source image {ds.SOPInstanceUID} is in frame of reference {ref}, the volume in "
                f"{plan.frame_of_reference_uid}: these are not the volume's source images.")
    nz, ny, nx = plan.direction
    tol_z = plan.atol * plan.spacing[0]
    units = []
    taken: dict[int, str] = {}
    for h in headers:
        name = _name(h)
        if h.position is None or h.orientation is None or h.pixel_spacing is None:
            raise GeometryError(
                f"Source image {name} has no ImagePositionPatient, ImageOrientationPatient or "
                "PixelSpacing: a SEG of it could not say where its frames are.")
        iop = np.asarray(h.orientation, dtype=np.float64)
        if not (np.allclose(iop[:3], nx, atol=plan.plane_atol)
                and np.allclose(iop[3:], ny, atol=plan.plane_atol)):
            raise MaskGeometryError(
                f"Source image {name} has orientation {np.round(iop, 6).tolist()}; the volume's "
                f"x and y directions are {np.round(np.r_[nx, ny], 6).tolist()}: the volume's "
                "attrs['direction'] no longer describes its source images.")
        pos = np.asarray(h.position, dtype=np.float64)
        along = float(pos @ nz)
        dist = np.abs(plan.z - along)
        k = int(np.argmin(dist))
        if dist[k] > tol_z:
            if h.frame is not None:
                units.append((None, None, None))  # a frame the volume left out (vol.isel(z=...))
                continue
            raise MaskGeometryError(
                f"Source image {name} lies at {along:.6g} mm along the volume's normal, where the "
                f"volume has no slice (nearest: z[{k}] = {plan.z[k]:.6g} mm): the volume's z "
                "coordinates no longer describe its source images (were they changed?).")
        said = (plan.sop_instance_uids[k], plan.frames[k])
        if said[0] != h.sop_instance_uid or (h.frame is not None and said[1] != h.frame):
            raise MaskGeometryError(
                f"Slice {k} of the volume (z = {plan.z[k]:.6g} mm) names source image {said[0]}"
                f"{'' if said[1] is None else f' (frame {said[1] + 1})'}, but the image at that "
                f"position is {name}: its sop_instance_uid coordinate does not match its place.")
        if k in taken:
            raise MaskGeometryError(
                f"Source images {taken[k]} and {name} both lie at slice {k} of the volume "
                f"(z = {plan.z[k]:.6g} mm).")
        taken[k] = name
        rows = _pixels_of(plan.y, float(pos @ ny), float(h.pixel_spacing[0]), h.rows, plan.atol,
                          "row", "y", name)
        cols = _pixels_of(plan.x, float(pos @ nx), float(h.pixel_spacing[1]), h.columns, plan.atol,
                          "column", "x", name)
        units.append((k, rows, cols))
    left = sorted(set(range(len(plan.z))) - set(taken))
    if left:
        raise MaskGeometryError(
            f"Slices {left[:6]} of the volume (z = {np.round(plan.z[left[:6]], 4).tolist()} mm) lie on "
            "none of their source images: the volume's coordinates no longer describe them.")
    return images, units


def seg_frames(plan: SegPlan, units, rows: int, cols: int) -> np.ndarray:
    """The pixel array for highdicom: one frame per unit, the source image's full size."""
    out = np.zeros((len(units), rows, cols) + plan.array.shape[3:], dtype=plan.array.dtype)
    for u, (k, r, c) in enumerate(units):
        if k is not None:
            out[u][np.ix_(r, c)] = plan.array[k]
    return out


def build_seg(plan: SegPlan, sources: Sequence, *, series_description: str | None = None,
              series_number: int | None = None, series_instance_uid: str | None = None,
              sop_instance_uid: str | None = None, content_label: str | None = None,
              content_description: str | None = None, content_creator_name: str | None = None,
              software_versions: str = "unknown"):
    """The DICOM SEG of ``plan`` on ``sources`` (pydicom datasets; headers are enough).

    Returns
    -------
    highdicom.seg.Segmentation
        A ``pydicom.Dataset``: ``seg.save_as(path)`` writes it.

    Examples
    --------
    >>> seg = build_seg(seg_plan(vol, mask, "liver"), datasets)           # doctest: +SKIP
    """
    hd = need_masks_extra("highdicom", "to_seg()")
    from pydicom.uid import generate_uid

    images, units = place_on_sources(plan, sources)
    first = images[0]
    frames = seg_frames(plan, units, int(first.Rows), int(first.Columns))
    if series_number is None:
        try:
            series_number = 1000 + int(first.get("SeriesNumber") or 0)
        except (TypeError, ValueError):
            series_number = 1000
    if series_description is None:
        series_description = "Segmentation: " + ", ".join(plan.labels)
    if len(series_description) > _LO:
        series_description = series_description[:_LO - 3] + "..."
    kind = "FRACTIONAL" if plan.fractional else "BINARY"
    options = {"fractional_type": plan.fractional_type,
               "max_fractional_value": MAX_FRACTIONAL_VALUE} if plan.fractional else {}
    return hd.seg.Segmentation(
        source_images=images, pixel_array=frames, segmentation_type=kind,
        segment_descriptions=plan.descriptions,
        series_instance_uid=series_instance_uid or generate_uid(), series_number=int(series_number),
        sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1,
        manufacturer="orthanc-pandas", manufacturer_model_name="orthanc-pandas vol.orthanc.to_seg",
        software_versions=software_versions, device_serial_number="0",
        content_label=content_label, content_description=content_description,
        content_creator_name=content_creator_name, series_description=series_description,
        # highdicom keeps empty frames out; an empty mask keeps them all (one frame at least)
        omit_empty_frames=bool(frames.any()), **options)


def seg_bytes(seg) -> bytes:
    """A SEG dataset as the bytes of a DICOM Part 10 file."""
    import pydicom

    buf = io.BytesIO()
    pydicom.dcmwrite(buf, seg, enforce_file_format=True)
    return buf.getvalue()
