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

from collections.abc import Sequence

import numpy as np

from orthanc_pandas._imaging.decode import apply_lut, decode_pixels, rescale_params, window_values
from orthanc_pandas._imaging.geometry import (
    Geometry,
    number_of_frames,
    slice_geometry,
    slice_headers,
)
from orthanc_pandas._util.fanout import fan_out, worker_count
from orthanc_pandas._util.progress import progress_bar
from orthanc_pandas.errors import (
    InconsistentSlicesError,
)


def stack_layout(datasets: Sequence, ids: Sequence[str]):
    """The slices of the datasets: ``(headers, owner, nframes, frame_dim)``.

    ``owner[i]`` is ``(dataset index, frame or None)`` of ``headers[i]``. A multi-frame file
    without per-frame positions keeps its frames on their own dim (``frame_dim``), one header
    per file; such files must all have the same NumberOfFrames.
    """
    per_ds = [slice_headers(ds, inst) for ds, inst in zip(datasets, ids, strict=True)]
    nframes = [number_of_frames(ds) for ds in datasets]
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
            apply_lut(src, ds, rescale_params(ds, f), out[slot])
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
    >>> from orthanc_pandas.testing.synthetic import make_series
    >>> da = from_datasets(make_series(5, 16, 12, slope=2, intercept=-100))
    >>> da.dims, da.shape, str(da.dtype), da.attrs["units"]
    (('z', 'y', 'x'), (5, 16, 12), 'float32', 'HU')
    """


    datasets = list(datasets)
    if not datasets:
        raise InconsistentSlicesError("No instances to build a volume from.")
    ids = list(instances) if instances is not None else [""] * len(datasets)
    headers, owner, nframes, frame_dim = stack_layout(datasets, ids)
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
        # CPU work, no connection pool to bound: max_workers alone; Ctrl-C stops it too
        fan_out(fill, rest, worker_count(max_workers, jobs=len(rest)), name="orthanc-decode")
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
        w = window_values(first, kw)
        if w is not None:
            attrs[key] = w
    if geo.problems:
        attrs["geometry_problems"] = " ".join(geo.problems)
    da = xr.DataArray(out, dims=dims, coords=coords, attrs=attrs,
                      name=str(first.get("SeriesDescription", "") or "") or "volume")
    if frame_dim and out.shape[0] == 1:
        da = da.isel(z=0)  # one multi-frame instance: ("frame", "y", "x"); z stays a scalar coord
    return da
