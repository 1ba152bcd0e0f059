"""Looking at a volume: windows, planes the right way up, mm axes, overlays. Pure (no HTTP).

``vol.orthanc.plot()`` calls :func:`plot_volume`; everything it decides is a small function
here that the tests call directly:

* :func:`choose_window` / :func:`apply_window`: CT presets in HU (:data:`CT_WINDOWS`), the
  file's own window, or robust percentiles (MR, PET, anything not in HU), then DICOM's
  linear window to gray levels in ``[0, 1]``.
* :func:`plane_layout` / :func:`extract_plane`: which array axis a plane cuts, which array
  axis runs down and which across the screen, and whether either is reversed, all from
  ``attrs["direction"]`` (the LPS unit vectors of the ``z``, ``y``, ``x`` axes), never by
  assuming an axial stack.
* :func:`edge_letters`, :func:`plane_extent`, :func:`plot_title`: orientation letters at the
  image edges, the image's extent in mm (so ``aspect="equal"`` is the true aspect ratio) and
  a title from the series description, modality and slice position (never a UID).

The display convention is radiological (the patient faces you, lying on their back):

========  =============  ===============  ==================  ==================
plane     screen top     screen bottom    screen left         screen right
========  =============  ===============  ==================  ==================
axial     anterior (A)   posterior (P)    patient right (R)   patient left (L)
coronal   superior (S)   inferior (I)     patient right (R)   patient left (L)
sagittal  superior (S)   inferior (I)     anterior (A)        posterior (P)
========  =============  ===============  ==================  ==================

For the usual axial acquisition (ImageOrientationPatient ``1\\0\\0\\0\\1\\0``) this is the
stored image as ``pixel_array`` shows it: row 0 at the top, column 0 at the left. matplotlib
is needed only to draw (``pip install 'orthanc-pandas[plot]'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["CT_WINDOWS", "PERCENTILES", "PlaneLayout", "apply_window", "choose_window",
           "plane_layout", "extract_plane", "edge_letters", "orientation_letters",
           "plane_extent", "plot_title", "plot_volume", "require_matplotlib"]

#: CT window presets, name -> (center, width) in HU. Lung, brain and bone are Radiopaedia's
#: "Windowing (CT)" values (lung W1500 L-600, brain W80 L40, bone W1800 L400); soft tissue is
#: W400 L40, inside its soft-tissue range (W350-400, L20-60).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}

#: Percentiles of the whole volume that set the default window of MR, PET and anything whose
#: values are not Hounsfield units (robust to a few hot or dead voxels).
PERCENTILES: tuple[float, float] = (1.0, 99.0)

#: Voxels the percentiles are taken from, at most (a strided sample of bigger volumes).
PERCENTILE_SAMPLE = 1_000_000

#: plane -> (LPS axis of its normal, LPS vector pointing up the screen, LPS vector pointing to
#: the screen's right). LPS: +x to the patient's Left, +y Posterior, +z Superior.
PLANES: dict[str, tuple[int, tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": (2, (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),      # anterior up, patient left right
    "coronal": (1, (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),     # superior up, patient left right
    "sagittal": (0, (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),    # superior up, posterior right
}

#: Letters of the +/- LPS axes.
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))

#: A direction component this large (cosine) earns its letter: 0.2 is ~11.5 degrees off axis.
LETTER_MIN_COSINE = 0.2

#: Coordinates that name a mask's structures (SEG, RTSTRUCT, label maps).
_LABEL_COORDS = ("segment", "roi", "label")

_UID = re.compile(r"^\s*\d+(\.\d+){3,}\s*$")
_DIMS = ("z", "y", "x")


# --------------------------------------------------------------------------- windows


def apply_window(values, center: float, width: float) -> np.ndarray:
    """Gray levels in ``[0, 1]`` from values: DICOM's exact linear window (LINEAR_EXACT).

    ``center - width / 2`` and below is black (0), ``center + width / 2`` and above is white
    (1), linear between (PS3.3 C.11.2.1.3.2); NaN stays NaN.

    Parameters
    ----------
    values : array_like
        Rescaled values (HU for CT).
    center, width : float
        Window center (level) and width, in the values' units; ``width > 0``.

    Returns
    -------
    numpy.ndarray of float64

    Examples
    --------
    >>> apply_window([-1000, -160, 40, 240, 1000], 40, 400)
    array([0. , 0. , 0.5, 1. , 1. ])
    """
    if not width > 0:
        raise ValueError(f"A window width must be positive; got {width}.")
    v = np.asarray(values, dtype=np.float64)
    return np.clip((v - (center - width / 2.0)) / width, 0.0, 1.0)


def _is_hu(da: xr.DataArray) -> bool:
    return da.attrs.get("units") == "HU"


def _first(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return float(value[0]) if len(value) else None
    return float(value)


def percentile_window(values, percentiles: tuple[float, float] = PERCENTILES
                      ) -> tuple[float, float]:
    """``(center, width)`` spanning two percentiles of the finite values.

    Examples
    --------
    >>> percentile_window(np.arange(101.0), (10, 90))
    (50.0, 80.0)
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    step = max(1, flat.size // PERCENTILE_SAMPLE)
    flat = flat[::step]
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(flat, percentiles))
    if hi <= lo:  # a constant image: any width shows it as mid gray
        return lo, 1.0
    return (lo + hi) / 2.0, hi - lo


def choose_window(da: xr.DataArray, window=None, *,
                  percentiles: tuple[float, float] = PERCENTILES) -> tuple[float, float]:
    """The ``(center, width)`` a volume is shown with.

    Parameters
    ----------
    da : xarray.DataArray
        The volume (its ``attrs`` say modality, units and the file's window).
    window : None, str or (center, width)
        ``None``: for CT in HU the file's first WindowCenter/WindowWidth
        (``attrs["window_center"]``/``["window_width"]``), else the "soft tissue" preset;
        for everything else (MR, PET, CT not in HU) the ``percentiles`` of the volume.
        A name of :data:`CT_WINDOWS` (``"soft tissue"``, ``"lung"``, ``"bone"``,
        ``"brain"``; only for values in HU). ``"auto"``: the percentiles whatever the
        modality. A pair: that center and width.
    percentiles : (low, high)
        Percentiles that set the automatic window (default 1st and 99th).

    Returns
    -------
    (center, width) : tuple of float

    Raises
    ------
    ValueError
        An unknown preset, a preset on values that are not HU, or a width that is not positive.

    Examples
    --------
    >>> ct = xr.DataArray(np.zeros((1, 2, 2)), dims=("z", "y", "x"),
    ...                   attrs={"modality": "CT", "units": "HU"})
    >>> choose_window(ct), choose_window(ct, "lung"), choose_window(ct, (50, 350))
    ((40.0, 400.0), (-600.0, 1500.0), (50.0, 350.0))
    """
    if window is None:
        if _is_hu(da):
            c, w = _first(da.attrs.get("window_center")), _first(da.attrs.get("window_width"))
            if c is not None and w is not None and w > 0:
                return c, w
            return CT_WINDOWS["soft tissue"]
        return percentile_window(da.values, percentiles)
    if isinstance(window, str):
        key = window.strip().lower().replace("_", " ")
        if key == "auto":
            return percentile_window(da.values, percentiles)
        if key not in CT_WINDOWS:
            raise ValueError(f"Unknown window {window!r}: use one of {sorted(CT_WINDOWS)}, "
                             "'auto' (percentiles) or a (center, width) pair.")
        if not _is_hu(da):
            raise ValueError(
                f"The {window!r} window is in Hounsfield units, but this volume's values are "
                f"not (units={da.attrs.get('units')!r}, modality={da.attrs.get('modality')!r}). "
                "Read it with rescale=True, or pass window=(center, width) or 'auto'.")
        return CT_WINDOWS[key]
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be None, a preset name or (center, width); got {window!r}."
                         ) from None
    if not width > 0:
        raise ValueError(f"A window width must be positive; got window={window!r}.")
    return center, width


# --------------------------------------------------------------------------- planes


@dataclass(frozen=True)
class PlaneLayout:
    """How one plane of a volume goes on the screen.

    Attributes
    ----------
    plane : str
        ``"axial"``, ``"coronal"`` or ``"sagittal"``.
    normal_dim : str
        The array dim the plane cuts (its ``index`` runs along it).
    rows_dim, cols_dim : str
        The array dims shown top to bottom and left to right.
    flip_rows, flip_cols : bool
        Whether those dims are shown in reverse index order.
    down, right : numpy.ndarray or None
        Unit LPS vectors pointing down and to the right on the screen (None without geometry).
    """

    plane: str
    normal_dim: str
    rows_dim: str
    cols_dim: str
    flip_rows: bool
    flip_cols: bool
    down: np.ndarray | None
    right: np.ndarray | None


def axis_directions(da: xr.DataArray) -> dict[str, np.ndarray] | None:
    """Unit LPS vector along which each of ``z``, ``y``, ``x`` grows with its index.

    From ``attrs["direction"]``; a dim whose coordinate decreases (the volume was reversed,
    e.g. ``vol.isel(y=slice(None, None, -1))``) gets the opposite vector. ``None`` when the
    volume has no direction (no geometry in its headers).
    """
    d = da.attrs.get("direction")
    if d is None:
        return None
    d = np.asarray(d, dtype=np.float64).reshape(3, 3)
    out = {}
    for i, dim in enumerate(_DIMS):
        v = d[i] / np.linalg.norm(d[i])
        c = np.asarray(da[dim].values, dtype=np.float64) if dim in da.coords else np.array([])
        if c.ndim == 1 and c.size >= 2 and c[-1] < c[0]:
            v = -v
        out[dim] = v
    return out


def native_plane(da: xr.DataArray) -> str:
    """The plane the slices were acquired in: the one whose normal is closest to ``z``'s.

    Without direction, ``"axial"`` (the stored image, as is).
    """
    dirs = axis_directions(da)
    if dirs is None:
        return "axial"
    axis = int(np.argmax(np.abs(dirs["z"])))
    return next(p for p, (a, _, _) in PLANES.items() if a == axis)


def plane_layout(da: xr.DataArray, plane: str | None = None) -> PlaneLayout:
    """Which array dims a plane shows, in which order, from the volume's LPS directions.

    The plane cuts the array dim whose direction is closest to the plane's normal (for an
    axial stack: axial cuts ``z``, coronal ``y``, sagittal ``x``). Of the other two, the one
    closest to the screen's vertical (anterior for axial, superior otherwise) runs down the
    screen, reversed if its index grows upward; the other runs across, reversed if its index
    grows towards the screen's left (patient right for axial and coronal, anterior for
    sagittal).

    Parameters
    ----------
    da : xarray.DataArray
        Dims ``("z", "y", "x")`` with ``attrs["direction"]``. Without a direction the stored
        layout is used (row 0 at the top, column 0 at the left) and the plane names only pick
        the dim: axial ``z``, coronal ``y``, sagittal ``x``.
    plane : str, optional
        ``"axial"``, ``"coronal"``, ``"sagittal"``; default :func:`native_plane`.

    Examples
    --------
    >>> vol = xr.DataArray(np.zeros((3, 4, 5)), dims=("z", "y", "x"),
    ...                    attrs={"direction": [1, 0, 0, 0, 0, -1, 0, 1, 0]})  # sagittal
    >>> lay = plane_layout(vol)
    >>> lay.plane, lay.normal_dim, lay.rows_dim, lay.flip_rows, lay.cols_dim, lay.flip_cols
    ('sagittal', 'z', 'y', False, 'x', False)
    """
    plane = native_plane(da) if plane is None else plane
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {list(PLANES)}; got {plane!r}.")
    dirs = axis_directions(da)
    if dirs is None:
        normal = {"axial": "z", "coronal": "y", "sagittal": "x"}[plane]
        rows, cols = [d for d in _DIMS if d != normal]
        return PlaneLayout(plane, normal, rows, cols, False, False, None, None)
    axis, up, right = PLANES[plane]
    up, right = np.asarray(up), np.asarray(right)
    normal = max(_DIMS, key=lambda d: abs(dirs[d][axis]))
    rest = [d for d in _DIMS if d != normal]
    rows = max(rest, key=lambda d: abs(dirs[d] @ up))
    cols = next(d for d in rest if d != rows)
    flip_rows = bool(dirs[rows] @ up > 0)        # index grows upward: show it reversed
    flip_cols = bool(dirs[cols] @ right < 0)     # index grows leftward: show it reversed
    down = -dirs[rows] if flip_rows else dirs[rows]
    rvec = -dirs[cols] if flip_cols else dirs[cols]
    return PlaneLayout(plane, normal, rows, cols, flip_rows, flip_cols, down, rvec)


def extract_plane(da: xr.DataArray, layout: PlaneLayout, index: int) -> xr.DataArray:
    """The 2D slice of ``layout`` at ``index``, as it goes on the screen.

    Dims ``(..., rows_dim, cols_dim)`` (leading dims such as ``segment`` kept), reversed
    where the layout says, so element ``[0, 0]`` is the screen's top-left pixel. Works on
    the image and on masks of its grid alike.

    Examples
    --------
    >>> vol = xr.DataArray(np.arange(8).reshape(2, 2, 2), dims=("z", "y", "x"),
    ...                    attrs={"direction": [0, 0, 1, 0, 1, 0, 1, 0, 0]})
    >>> extract_plane(vol, plane_layout(vol, "coronal"), 0).values   # y = 0; z up, x across
    array([[4, 5],
           [0, 1]])
    """
    n = da.sizes[layout.normal_dim]
    if not -n <= index < n:
        raise IndexError(f"index {index} is outside the {n} {layout.plane} slices "
                         f"(dim {layout.normal_dim!r}: 0 to {n - 1}).")
    s = da.isel({layout.normal_dim: index})
    lead = [d for d in s.dims if d not in (layout.rows_dim, layout.cols_dim)]
    s = s.transpose(*lead, layout.rows_dim, layout.cols_dim)
    flips = {}
    if layout.flip_rows:
        flips[layout.rows_dim] = slice(None, None, -1)
    if layout.flip_cols:
        flips[layout.cols_dim] = slice(None, None, -1)
    return s.isel(flips) if flips else s


def orientation_letters(vector, min_cosine: float = LETTER_MIN_COSINE) -> str:
    """Patient-direction letters of an LPS vector, strongest first (``"A"``, ``"LA"``...).

    Examples
    --------
    >>> orientation_letters([0, -1, 0]), orientation_letters([0.8, 0.6, 0.0])
    ('A', 'LP')
    """
    v = np.asarray(vector, dtype=np.float64)
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join(_LETTERS[i][0 if v[i] > 0 else 1] for i in order if abs(v[i]) >= min_cosine)


def edge_letters(layout: PlaneLayout) -> dict[str, str] | None:
    """Letters for the ``top``, ``bottom``, ``left`` and ``right`` image edges (None without
    geometry).

    Examples
    --------
    >>> vol = xr.DataArray(np.zeros((2, 2, 2)), dims=("z", "y", "x"),
    ...                    attrs={"direction": [0, 0, 1, 0, 1, 0, 1, 0, 0]})
    >>> edge_letters(plane_layout(vol, "axial"))
    {'top': 'A', 'bottom': 'P', 'left': 'R', 'right': 'L'}
    """
    if layout.down is None or layout.right is None:
        return None
    return {"top": orientation_letters(-layout.down), "bottom": orientation_letters(layout.down),
            "left": orientation_letters(-layout.right), "right": orientation_letters(layout.right)}


def _spacing(da: xr.DataArray, dim: str) -> float:
    c = np.asarray(da[dim].values, dtype=np.float64) if dim in da.coords else np.array([])
    if c.ndim == 1 and c.size >= 2:
        return float(np.median(np.abs(np.diff(c))))
    sp = da.attrs.get("spacing")
    if sp is not None:
        return float(sp[_DIMS.index(dim)])
    return 1.0


def plane_extent(da: xr.DataArray, layout: PlaneLayout) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` of the plane's pixel edges in mm, for ``imshow``.

    Values are the volume's own ``x``/``y``/``z`` coordinates of the displayed dims (a
    reversed dim gives a decreasing axis), so ``aspect="equal"`` shows the pixel spacing's
    true ratio. Dims without coordinates count pixels from 0 at the spacing of
    ``attrs["spacing"]`` (or 1).

    Examples
    --------
    >>> vol = xr.DataArray(np.zeros((2, 3, 4)), dims=("z", "y", "x"),
    ...                    coords={"z": [0.0, 2.5], "y": [0.0, 0.7, 1.4], "x": [0, .8, 1.6, 2.4]},
    ...                    attrs={"direction": [0, 0, 1, 0, 1, 0, 1, 0, 0]})
    >>> [round(v, 2) for v in plane_extent(vol, plane_layout(vol, "axial"))]
    [-0.4, 2.8, 1.75, -0.35]
    """
    def edges(dim, flip):
        h = _spacing(da, dim) / 2.0
        c = (np.asarray(da[dim].values, dtype=np.float64) if dim in da.coords
             else np.arange(da.sizes[dim], dtype=np.float64) * 2 * h)
        first, last = (c[-1], c[0]) if flip else (c[0], c[-1])
        step = np.sign(last - first) or 1.0
        return first - step * h, last + step * h

    left, right = edges(layout.cols_dim, layout.flip_cols)
    top, bottom = edges(layout.rows_dim, layout.flip_rows)
    return float(left), float(right), float(bottom), float(top)


def plot_title(da: xr.DataArray, layout: PlaneLayout | None = None, index: int | None = None,
               window: tuple[float, float] | None = None) -> str:
    """A readable title: series description, modality, plane and slice position; no UID.

    Examples
    --------
    >>> vol = xr.DataArray(np.zeros((3, 2, 2)), dims=("z", "y", "x"), name="Chest 1.0",
    ...                    coords={"z": [-5.0, -2.5, 0.0]},
    ...                    attrs={"modality": "CT", "direction": [0, 0, 1, 0, 1, 0, 1, 0, 0]})
    >>> plot_title(vol, plane_layout(vol, "axial"), 1, (40, 400))
    'Chest 1.0 · CT · axial z = -2.5 mm (2/3) · W400 L40'
    """
    parts = []
    name = "" if da.name is None else str(da.name)
    if name and name != "volume" and not _UID.match(name):
        parts.append(name)
    modality = str(da.attrs.get("modality", "") or "")
    if modality and not _UID.match(modality):
        parts.append(modality)
    if layout is not None and index is not None:
        parts.append(slice_label(da, layout, index))
    if window is not None:
        parts.append(f"W{window[1]:.4g} L{window[0]:.4g}")
    return " · ".join(parts)


def slice_label(da: xr.DataArray, layout: PlaneLayout, index: int) -> str:
    """``"axial z = -2.5 mm (2/3)"``: the plane, the slice's coordinate and its rank."""
    dim, n = layout.normal_dim, da.sizes[layout.normal_dim]
    k = index % n
    where = ""
    if dim in da.coords and da[dim].ndim == 1:
        units = da[dim].attrs.get("units", "mm")
        unit = f" {units}" if units not in ("1", "") else ""
        where = f" {dim} = {float(da[dim].values[k]):.1f}{unit}"
    return f"{layout.plane}{where}" + (f" ({k + 1}/{n})" if n > 1 else "")


# --------------------------------------------------------------------------- drawing


def require_matplotlib():
    """matplotlib with pyplot imported, or an ImportError naming the extra to install."""
    try:
        import matplotlib
        import matplotlib.pyplot
    except ImportError as exc:
        raise ImportError("Plotting needs matplotlib: pip install 'orthanc-pandas[plot]'."
                          ) from exc
    return matplotlib


def as_volume(da: xr.DataArray) -> xr.DataArray:
    """``da`` with dims ``("z", "y", "x")``: a 2D ``(y, x)`` slice gets a ``z`` of one."""
    if set(da.dims) == {"y", "x"}:
        da = da.expand_dims("z")  # a scalar z coord (from vol.isel(z=k)) becomes its value
    if set(da.dims) != set(_DIMS):
        extra = [d for d in da.dims if d not in _DIMS]
        hint = f" Pick one first, e.g. vol.isel({extra[0]}=0)." if extra else ""
        raise ValueError(f"plot() shows volumes with dims ('z', 'y', 'x') or one (y, x) slice; "
                         f"this one has {da.dims}.{hint}")
    return da.transpose(*_DIMS)


def mask_layers(mask: xr.DataArray, like: xr.DataArray) -> list[tuple[str, xr.DataArray]]:
    """``(label, boolean (z, y, x) DataArray)`` per structure of a mask on ``like``'s grid.

    A boolean ``(z, y, x)`` mask is one structure (named by ``mask.name``); an integer one
    is a label map (one structure per nonzero value); a 4D mask such as ``seg.orthanc.mask()``
    gives (``(segment, z, y, x)``, ``(roi, z, y, x)``) is one structure per entry of its
    first dim, named by that dim's coordinate.
    """
    if not isinstance(mask, xr.DataArray):
        arr = np.asarray(mask)
        dims = {2: ("y", "x"), 3: _DIMS, 4: ("label", *_DIMS)}.get(arr.ndim)
        if dims is None:
            raise ValueError(f"mask= needs 3 dims (z, y, x) or 4 (label, z, y, x); it has "
                             f"shape {arr.shape}.")
        mask = xr.DataArray(arr, dims=dims)
    lead = [d for d in mask.dims if d not in _DIMS]
    if len(lead) > 1:
        raise ValueError(f"mask= needs dims (z, y, x) or (label, z, y, x); it has {mask.dims}.")
    _check_grid(mask.isel({lead[0]: 0}, drop=True) if lead else mask, like, "mask=")
    if lead:
        dim = lead[0]
        names = (mask[dim].values if dim in mask.coords else range(1, mask.sizes[dim] + 1))
        return [(str(n), as_volume(mask.isel({dim: i}, drop=True)).astype(bool))
                for i, n in enumerate(names)]
    vol = as_volume(mask)
    if vol.dtype == bool:
        # seg.sel(segment="liver") keeps its label as a scalar coord
        named = [str(mask[c].item()) for c in _LABEL_COORDS if c in mask.coords and mask[c].ndim == 0]
        name = named[0] if named else str(mask.name) if mask.name is not None else "mask"
        return [(name, vol)]
    values = np.unique(vol.values[np.isfinite(vol.values)] if vol.dtype.kind == "f" else vol.values)
    return [(f"label {v:g}", vol == v) for v in values if v != 0]


#: How to get something onto the volume's grid, by what it is.
_ONTO_GRID = {"mask=": "build it on the volume's grid (seg_rows.orthanc.mask(like=vol))",
              "overlay=": "resample it first, e.g. pet.interp_like(vol) (same orientation "
                          "and frame of reference)"}


def on_slice(other, like: xr.DataArray):
    """A whole-volume mask or overlay cut to the one slice ``like`` is (by its ``z``).

    ``vol.isel(z=k).orthanc.plot(mask=seg)`` then shows slice ``k`` of ``seg``; anything
    else is returned as it is.
    """
    if not isinstance(other, xr.DataArray) or like.sizes.get("z", 0) != 1 or \
            "z" not in like.coords or other.sizes.get("z", 1) == 1 or "z" not in other.coords:
        return other
    try:
        return other.sel(z=like["z"].values, method="nearest", tolerance=1e-3)
    except KeyError:
        raise ValueError(f"The slice is at z = {float(like['z'].values[0]):g} mm; the mask or "
                         "overlay has no slice there.") from None


def _check_grid(other: xr.DataArray, like: xr.DataArray, what: str) -> xr.DataArray:
    other = as_volume(other)
    if dict(other.sizes) != dict(like.sizes):
        raise ValueError(f"{what} is not on the volume's grid: sizes {dict(other.sizes)} vs "
                         f"{dict(like.sizes)}; {_ONTO_GRID[what]}.")
    for dim in _DIMS:
        if dim in other.coords and dim in like.coords and \
                not np.allclose(other[dim].values, like[dim].values, atol=1e-3):
            raise ValueError(f"{what} has other {dim!r} coordinates than the volume (it lies "
                             f"elsewhere); {_ONTO_GRID[what]}.")
    return other


def _indices(da, view, plane, index) -> list[tuple[PlaneLayout, int]]:
    if view == "three":
        planes = list(PLANES)
        if da.sizes["z"] == 1:
            raise ValueError("view='three' needs a volume; this is a single slice.")
        idx = index if isinstance(index, dict) else {}
        unknown = set(idx) - set(planes)
        if unknown:
            raise ValueError(f"index= for view='three' is a dict plane -> index; "
                             f"unknown planes {sorted(unknown)}.")
        if index is not None and not isinstance(index, dict):
            raise ValueError("index= for view='three' is a dict such as {'axial': 10}.")
    elif view in ("single", None):
        if da.sizes["z"] == 1:
            native = native_plane(da)
            if plane is not None and plane != native:
                raise ValueError(f"A single slice shows only its own plane ({native!r}); plot "
                                 f"the volume to see a {plane} reformat.")
            plane = native
        planes = [plane]
        idx = {None: index}
    else:
        raise ValueError(f"view must be 'single' or 'three'; got {view!r}.")
    out = []
    for p in planes:
        lay = plane_layout(da, p)
        k = idx.get(p if view == "three" else None)
        out.append((lay, da.sizes[lay.normal_dim] // 2 if k is None else int(k)))
    return out


_LETTER_STYLE = {"color": "#ffcc00", "fontsize": 11, "fontweight": "bold"}


def _draw(ax, da, layout, index, window, layers, mask_style, overlay, overlay_window,
          overlay_cmap, overlay_alpha, letters):
    """Draw one plane into ``ax``."""
    matplotlib = require_matplotlib()
    extent = plane_extent(da, layout)
    img = extract_plane(da, layout, index)
    gray = apply_window(img.values, *window)
    ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, origin="upper", extent=extent,
              interpolation="nearest", aspect="equal")
    # imshow sets its limits from the extent; pin them so a reversed axis stays reversed
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    if overlay is not None:
        ov = apply_window(extract_plane(overlay, layout, index).values, *overlay_window)
        ax.imshow(np.ma.masked_where(~(ov > 0), ov), cmap=overlay_cmap, vmin=0.0, vmax=1.0,
                  alpha=overlay_alpha, origin="upper", extent=extent, interpolation="nearest",
                  aspect="equal")
    handles = []
    colours = matplotlib.colormaps["tab10"].colors
    for i, (name, layer) in enumerate(layers):
        colour = colours[i % len(colours)]
        m = extract_plane(layer, layout, index).values.astype(bool)
        if mask_style == "fill":
            rgba = np.zeros(m.shape + (4,))
            rgba[m] = (*colour, 0.4)
            ax.imshow(rgba, origin="upper", extent=extent, interpolation="nearest", aspect="equal")
            handles.append(matplotlib.patches.Patch(color=colour, alpha=0.6, label=name))
        else:
            if m.any() and not m.all():
                xs = np.linspace(extent[0], extent[1], 2 * m.shape[1] + 1)[1::2]
                ys = np.linspace(extent[3], extent[2], 2 * m.shape[0] + 1)[1::2]
                ax.contour(xs, ys, m.astype(float), levels=[0.5], colors=[colour], linewidths=1.5)
            handles.append(matplotlib.lines.Line2D([], [], color=colour, lw=1.5, label=name))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.6)
    ax.set_xlabel(_axis_label(da, layout.cols_dim))
    ax.set_ylabel(_axis_label(da, layout.rows_dim))
    edges = edge_letters(layout) if letters else None
    if edges:
        for where, (x, y, ha, va) in {"top": (0.5, 0.99, "center", "top"),
                                      "bottom": (0.5, 0.01, "center", "bottom"),
                                      "left": (0.01, 0.5, "left", "center"),
                                      "right": (0.99, 0.5, "right", "center")}.items():
            ax.text(x, y, edges[where], transform=ax.transAxes, ha=ha, va=va, **_LETTER_STYLE)


def _axis_label(da, dim) -> str:
    units = da[dim].attrs.get("units", "mm") if dim in da.coords else "pixel"
    return f"{dim} ({units})"


def plot_volume(da: xr.DataArray, *, plane: str | None = None, index=None, view: str = "single",
                window=None, percentiles: tuple[float, float] = PERCENTILES, mask=None,
                mask_style: str = "contour", overlay=None, overlay_window=None,
                overlay_cmap: str = "hot", overlay_alpha: float = 0.5, letters: bool = True,
                ax=None, figsize=None, interactive: bool = False):
    """Draw a volume radiologically: right way up, gray, windowed, in mm. See the module doc.

    Parameters are those of ``vol.orthanc.plot()`` (:class:`VolumeAccessor.plot`).

    Returns
    -------
    matplotlib.figure.Figure, or an ``ipywidgets.VBox`` with ``interactive=True``
    """
    if mask_style not in ("contour", "fill"):
        raise ValueError(f"mask_style must be 'contour' or 'fill'; got {mask_style!r}.")
    vol = as_volume(da)
    win = choose_window(vol, window, percentiles=percentiles)
    layers = mask_layers(on_slice(mask, vol), vol) if mask is not None else []
    ov = ov_win = None
    if overlay is not None:
        ov = _check_grid(on_slice(overlay, vol), vol, "overlay=")
        ov_win = choose_window(ov, overlay_window, percentiles=percentiles)
    views = _indices(vol, view, plane, index)
    if ax is not None and len(views) > 1:
        raise ValueError("ax= takes one plane; view='three' draws its own figure.")
    matplotlib = require_matplotlib()
    if interactive:
        return _interactive(vol, views, win, layers, mask_style, ov, ov_win, overlay_cmap,
                            overlay_alpha, letters, figsize)
    if ax is None:
        fig, axes = matplotlib.pyplot.subplots(
            1, len(views), figsize=figsize or (5.0 * len(views), 5.0), squeeze=False,
            layout="constrained")
        axes = list(axes[0])
    else:
        fig, axes = ax.figure, [ax]
    _render(fig, axes, vol, views, win, layers, mask_style, ov, ov_win, overlay_cmap,
            overlay_alpha, letters)
    return fig


def _render(fig, axes, vol, views, win, layers, mask_style, ov, ov_win, overlay_cmap,
            overlay_alpha, letters):
    for a, (layout, k) in zip(axes, views, strict=True):
        _draw(a, vol, layout, k, win, layers, mask_style, ov, ov_win, overlay_cmap,
              overlay_alpha, letters)
    if len(views) == 1:
        layout, k = views[0]
        axes[0].set_title(plot_title(vol, layout, k, win))
    else:
        for a, (layout, k) in zip(axes, views, strict=True):
            a.set_title(slice_label(vol, layout, k), fontsize=10)
        fig.suptitle(plot_title(vol, window=win))


def _interactive(vol, views, win, layers, mask_style, ov, ov_win, overlay_cmap, overlay_alpha,
                 letters, figsize):
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError as exc:
        raise ImportError("interactive=True needs ipywidgets: pip install "
                          "'orthanc-pandas[plot]' (in Jupyter).") from exc
    from matplotlib.figure import Figure

    # A Figure outside pyplot: the notebook shows it only through the output widget, once.
    fig = Figure(figsize=figsize or (5.0 * len(views), 5.0), layout="constrained")
    axes = list(fig.subplots(1, len(views), squeeze=False)[0])
    out = widgets.Output()
    sliders = [widgets.IntSlider(value=k % vol.sizes[lay.normal_dim], min=0,
                                 max=vol.sizes[lay.normal_dim] - 1, description=lay.plane,
                                 continuous_update=False) for lay, k in views]

    def redraw(_change=None):
        now = [(lay, s.value) for (lay, _), s in zip(views, sliders, strict=True)]
        for a in axes:
            a.clear()
        _render(fig, axes, vol, now, win, layers, mask_style, ov, ov_win, overlay_cmap,
                overlay_alpha, letters)
        with out:
            out.clear_output(wait=True)
            display(fig)

    for s in sliders:
        s.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([*sliders, out])
    box.figure = fig  # the figure the sliders redraw (for scripts and tests)
    return box

