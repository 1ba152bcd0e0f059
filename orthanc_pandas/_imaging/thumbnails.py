"""Thumbnails: one slice per series in a grid, the right way up and windowed. Pure (no HTTP).

``series.orthanc.thumbnails()`` fetches one instance per series
(``orthanc_pandas._ops.thumbnails``) and hands its pixels here, either decoded by pydicom
(:func:`instance_slice`, only the frame shown; :func:`decoded_panel_image`: the stored
values, windowed by the rules of ``vol.orthanc.plot()``) or as Orthanc rendered them
(:func:`rendered_panel_image`: 8-bit gray levels, windowed on the server). Both are put on
the screen by :func:`on_screen` with the display rules of
:mod:`orthanc_pandas._imaging.display` (radiological: for an axial slice anterior up and the
patient's right on the left, from ImageOrientationPatient, never by assuming the stored
layout), with the pixel spacing's true aspect ratio. :func:`draw_thumbnails` lays the panels
out in a grid, each titled with what identifies its series. matplotlib is needed only there.
"""

from __future__ import annotations

import functools
import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from orthanc_pandas._imaging.decode import (
    apply_lut,
    decode_frame,
    decode_pixels,
    rescale_params,
    window_values,
)
from orthanc_pandas._imaging.display import (
    CT_WINDOWS,
    PERCENTILES,
    apply_window,
    choose_window,
    plane_layout,
    require_matplotlib,
)
from orthanc_pandas._imaging.geometry import (
    functional_group,
    number_of_frames,
    slice_headers,
)

__all__ = ["Thumbnail", "instance_slice", "on_screen", "decoded_panel_image",
           "rendered_panel_image", "panel_window",
           "draw_thumbnails", "PANEL_INCHES", "COLUMNS"]

#: Side of one panel's image, in inches (at matplotlib's 100 dpi, 6 panels fill ~1320 px).
PANEL_INCHES = 2.2

#: Panels per row by default.
COLUMNS = 6

#: Inches of text above (two title lines) and below (the volume line) each image.
_TITLE_INCHES, _STATUS_INCHES = 0.42, 0.3

#: Characters of a title or status line (8 pt text in a 2.2 inch panel).
_LINE_CHARS = 34

_OK_COLOUR, _BAD_COLOUR, _INFO_COLOUR = "#1a7f37", "#cf222e", "#57606a"


@dataclass
class Thumbnail:
    """One panel of :func:`draw_thumbnails`: a slice ready to show, or why there is none.

    Attributes
    ----------
    key : str
        The series id (set as the panel's axes label: ``ax.get_label()``).
    title : str
        Lines that identify the series (patient, date, number, modality, description).
    status : str
        The line under the image: whether the series makes a volume, or its slice count.
    ok : bool or None
        ``volume_ok`` (colours the status line); None when unknown.
    image : numpy.ndarray or None
        Gray levels in ``[0, 1]`` ``(rows, cols)``, or RGB ``(rows, cols, 3)`` in ``[0, 1]``,
        element ``[0, 0]`` at the screen's top left.
    extent : (left, right, bottom, top) or None
        The image's edges in mm (its true aspect ratio), as ``imshow`` takes them.
    window : (center, width) or None
        The window the gray levels come from (None: colour, or windowed by the server).
    error : str or None
        Why there is no image (no pixel data, not decodable ...).
    """

    key: str
    title: str
    status: str = ""
    ok: bool | None = None
    image: np.ndarray | None = None
    extent: tuple[float, float, float, float] | None = None
    window: tuple[float, float] | None = None
    error: str | None = None


def _spacing(pixel_spacing) -> tuple[float, float]:
    """(row, column) spacing in mm; square pixels when missing, zero or not a number."""
    try:
        dr, dc = (float(v) for v in pixel_spacing)
    except (TypeError, ValueError):
        return 1.0, 1.0
    return (dr, dc) if np.isfinite([dr, dc]).all() and dr > 0 and dc > 0 else (1.0, 1.0)


def _middle_header(headers) -> int:
    """Index into ``headers`` (one instance's frames) of its middle slice by position along
    the normal; by frame index when a frame has no position or orientation."""
    n = len(headers)
    pos = np.array([h.position if h.position is not None else (np.nan,) * 3 for h in headers],
                   dtype=np.float64)
    iop = headers[0].orientation
    if iop is None or not np.isfinite(pos).all():
        return n // 2
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    order = np.lexsort((np.arange(n), pos @ normal))
    return int(order[n // 2])


def _direction(orientation) -> tuple[float, ...] | None:
    """``attrs["direction"]`` (LPS unit vectors of z, y, x) of a slice with this IOP."""
    iop = np.asarray(orientation, dtype=np.float64) if orientation is not None else None
    if iop is None or iop.shape != (6,) or not np.isfinite(iop).all():
        return None
    normal = np.cross(iop[:3], iop[3:])
    if np.linalg.norm(normal) <= 0.5:
        return None
    return tuple(float(v) for v in (*(normal / np.linalg.norm(normal)), *iop[3:], *iop[:3]))


@functools.lru_cache(maxsize=256)
def _slice_layout(direction: tuple[float, ...] | None):
    """The display layout of one slice of this direction (cached: series share a few)."""
    attrs = {"direction": list(direction)} if direction is not None else {}
    return plane_layout(xr.DataArray(np.zeros((1, 2, 2)), dims=("z", "y", "x"), attrs=attrs))


def on_screen(image: np.ndarray, direction, spacing=(1.0, 1.0)):
    """``(array, extent)``: one stored slice ``(rows, cols[, c])`` as the screen shows it.

    The layout is ``vol.orthanc.plot()``'s (:func:`plane_layout` of a one-slice volume of this
    ``direction``): rows and columns swapped and reversed so that element ``[0, 0]`` is the
    screen's top left. Without a direction, or for a slice so oblique that its own plane is
    not the one it would be shown in, the stored layout. ``extent`` is
    ``(0, width, height, 0)`` in mm from ``spacing`` (row, column spacing).

    Examples
    --------
    >>> on_screen(np.array([[1, 2], [3, 4]]), (0, 0, 1, 0, -1, 0, -1, 0, 0))[0].tolist()
    [[4, 3], [2, 1]]
    """
    dr, dc = spacing
    if direction is not None:
        lay = _slice_layout(tuple(round(float(v), 6) for v in direction))
        if lay.normal_dim == "z":
            if lay.rows_dim == "x":
                image, (dr, dc) = image.swapaxes(0, 1), (dc, dr)
            if lay.flip_rows:
                image = image[::-1]
            if lay.flip_cols:
                image = image[:, ::-1]
    rows, cols = image.shape[:2]
    return image, (0.0, cols * float(dc), rows * float(dr), 0.0)


def instance_slice(ds, instance: str = "") -> xr.DataArray:
    """The slice of one instance a thumbnail shows, as a one-slice volume ``(z, y, x)``.

    A single-frame instance is its image; a multi-frame one (enhanced CT/MR, a cine clip, a
    mosaic) its middle frame by position along the normal (by frame index when the frames
    have no positions), the only frame decoded. Values are rescaled (the modality LUT of that
    frame, ``float32``; HU for CT) unless colour. The ``attrs`` are those ``plot()`` reads:
    ``direction`` from ImageOrientationPatient, ``spacing`` (z, y, x; from PixelSpacing, 1 mm
    without it), ``modality``, ``units``, the file's ``window_center``/``window_width``, and
    ``photometric_interpretation``, ``frame`` (-1 for a single frame) and ``instance``.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_multiframe
    >>> sl = instance_slice(make_multiframe(5, 4, 6, frame_order="descending"))
    >>> sl.dims, sl.shape, sl.attrs["frame"]    # the middle of 5 frames by position: frame 2
    (('z', 'y', 'x'), (1, 4, 6), 2)
    """
    headers = slice_headers(ds, instance)
    nframes = number_of_frames(ds)
    if len(headers) > 1:
        header = headers[_middle_header(headers)]
        frame = header.frame
    else:
        header, frame = headers[0], (nframes // 2 if nframes > 1 else None)
    raw = decode_frame(ds, frame) if frame is not None else decode_pixels(ds)
    colour = raw.ndim == 3
    if colour:
        values = np.asarray(raw)
    else:
        values = np.empty(raw.shape, dtype=np.float32)
        apply_lut(raw, ds, rescale_params(ds, frame), values)
    attrs: dict = {"photometric_interpretation":
                   str(ds.get("PhotometricInterpretation", "") or "").strip(),
                   "frame": -1 if frame is None else int(frame), "instance": instance,
                   "spacing": [1.0, *_spacing(header.pixel_spacing)]}
    modality = str(ds.get("Modality", "") or "")
    if modality:
        attrs["modality"] = modality
    if modality == "CT" and not colour:
        attrs["units"] = "HU"
    voi = functional_group(ds, ds.PerFrameFunctionalGroupsSequence[frame]
                           if frame is not None and "PerFrameFunctionalGroupsSequence" in ds
                           and frame < len(ds.PerFrameFunctionalGroupsSequence) else None,
                           "FrameVOILUTSequence")
    for key, kw in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        w = window_values(ds, kw) or (window_values(voi, kw) if voi is not None else None)
        if w is not None:
            attrs[key] = w
    direction = _direction(header.orientation)
    if direction is not None:
        attrs["direction"] = list(direction)
    dims = ("z", "y", "x") + (("c",) if colour else ())
    return xr.DataArray(values[None], dims=dims, attrs=attrs,
                        name=str(ds.get("SeriesDescription", "") or "") or "slice")


def panel_window(da: xr.DataArray, window=None, *, percentiles=PERCENTILES):
    """The window of one panel: ``choose_window``'s, with presets only where values are HU.

    A preset name (``"lung"`` ...) is for CT panels; the other panels of the grid keep their
    own default (the percentiles) instead of failing.

    Examples
    --------
    >>> mr = xr.DataArray(np.arange(100.0).reshape(1, 10, 10), dims=("z", "y", "x"),
    ...                   attrs={"modality": "MR"})
    >>> panel_window(mr, "lung") == panel_window(mr)   # the MR's percentiles, not an error
    True
    """
    if isinstance(window, str) and window.strip().lower().replace("_", " ") in CT_WINDOWS \
            and da.attrs.get("units") != "HU":
        window = None
    return choose_window(da, window, percentiles=percentiles)


def decoded_panel_image(sl: xr.DataArray, window=None, *, percentiles=PERCENTILES):
    """``(image, extent, window)`` of an :func:`instance_slice`, as the screen shows it.

    Gray values are windowed by :func:`panel_window` (a CT's own window or soft tissue, else
    the slice's percentiles) and MONOCHROME1 (low values white) is inverted, as a reader shows
    it; colour is shown as it is. Put on the screen by :func:`on_screen`.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_series
    >>> image, extent, window = decoded_panel_image(instance_slice(make_series(1, 4, 6)[0]))
    >>> image.shape, window
    ((4, 6), (40.0, 400.0))
    """
    spacing = tuple((sl.attrs.get("spacing") or (1.0, 1.0, 1.0))[1:])
    values = np.asarray(sl.values)[0]
    if "c" in sl.dims:
        rgb = values.astype(np.float64)
        top = 255.0 if rgb.max(initial=0) <= 255 else rgb.max()
        image, extent = on_screen(np.clip(rgb / max(top, 1e-12), 0.0, 1.0),
                                  sl.attrs.get("direction"), spacing)
        return image, extent, None
    win = panel_window(sl, window, percentiles=percentiles)
    gray = apply_window(values, *win)
    if sl.attrs.get("photometric_interpretation") == "MONOCHROME1":
        gray = 1.0 - gray
    image, extent = on_screen(gray, sl.attrs.get("direction"), spacing)
    return image, extent, win


def rendered_panel_image(data: bytes, orientation=None, pixel_spacing=None):
    """``(image, extent)`` of a PNG from Orthanc's ``/rendered``, put on the screen.

    Orthanc renders the stored layout (row 0 on top); the slice's ImageOrientationPatient
    says whether that is the screen's layout (the usual axial slice) or which way to flip and
    turn it (:func:`on_screen`). ``pixel_spacing`` (row, column spacing) gives the aspect ratio
    (square without it); a server that shrank the image keeps its aspect ratio, so only the
    ratio matters.

    Examples
    --------
    >>> from PIL import Image
    >>> buf = io.BytesIO()
    >>> Image.fromarray(np.array([[0, 255], [0, 0]], np.uint8)).save(buf, format="PNG")
    >>> image, _ = rendered_panel_image(buf.getvalue(), (-1, 0, 0, 0, -1, 0))
    >>> image.tolist()    # both axes reversed in the file: the bright pixel goes bottom left
    [[0.0, 0.0], [1.0, 0.0]]
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB" if im.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L")
        arr = np.asarray(im, dtype=np.float64) / 255.0
    return on_screen(arr, _direction(orientation), _spacing(pixel_spacing))


def _lines(text: str, n: int) -> str:
    """``text`` wrapped to ``n`` lines of a panel at most, the last cut with ``…``."""
    out = []
    for para in text.split("\n"):
        out += textwrap.wrap(para, _LINE_CHARS) or [""]
    if len(out) > n:
        out = out[:n]
        out[-1] = out[-1][:_LINE_CHARS - 1].rstrip() + "…"
    return "\n".join(out)


def _fit(extent, size: float) -> tuple[float, float]:
    """Width and height (inches) of an image of ``extent`` (mm) fitted in a ``size`` square."""
    if extent is None:
        return size, size
    w, h = abs(extent[1] - extent[0]), abs(extent[3] - extent[2])
    if not (np.isfinite([w, h]).all() and w > 0 and h > 0):
        return size, size
    scale = size / max(w, h)
    return w * scale, h * scale


def draw_thumbnails(panels: Sequence[Thumbnail], *, columns: int | None = None,
                    panel_size: float = PANEL_INCHES, note: str = "", title: str | None = None):
    """A matplotlib figure with one panel per :class:`Thumbnail`, in a grid.

    Each panel shows its image in gray (or colour) with its true aspect ratio on a black
    square, its ``title`` above and its ``status`` below (green when the series makes a
    volume, red when not); a panel without an image says why in its middle. ``note`` (what
    was left out) goes under the grid, ``title`` above it.

    The whole grid is one axes without ticks (inches from the top left as data coordinates):
    hundreds of panels draw in seconds, where one axes per panel takes minutes. Every artist
    of a panel carries the series id as its label (``artist.get_label()``) and its part as
    its gid: the image (``ax.images``) ``"image"``, the texts (``ax.texts``) ``"title"``,
    ``"status"`` and ``"error"``.

    Parameters
    ----------
    panels : sequence of Thumbnail
    columns : int, optional
        Panels per row (default :data:`COLUMNS`, fewer when there are fewer panels).
    panel_size : float
        Inches of each image's side.
    note, title : str
        Text under and above the grid.

    Returns
    -------
    matplotlib.figure.Figure
    """
    matplotlib = require_matplotlib()
    plt = matplotlib.pyplot
    n = len(panels)
    ncols = max(1, min(columns or COLUMNS, n or 1))
    nrows = max(1, -(-n // ncols))
    gap = 0.12
    cell_h = panel_size + _TITLE_INCHES + _STATUS_INCHES
    top_in = 0.45 if title else 0.05
    bottom_in = 0.35 if note else 0.05
    width = ncols * panel_size + (ncols + 1) * gap
    height = nrows * cell_h + top_in + bottom_in
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0.0, width)
    ax.set_ylim(height, 0.0)  # y grows downward: inches from the top
    ax.set_axis_off()
    boxes, greys = [], []
    for k, p in enumerate(panels):
        r, c = divmod(k, ncols)
        x0 = gap + c * (panel_size + gap)
        y0 = top_in + r * cell_h + _TITLE_INCHES  # the image box's top
        mid = x0 + panel_size / 2
        ax.text(mid, y0 - 0.04, _lines(p.title, 2), ha="center", va="bottom", fontsize=8,
                label=p.key, gid="title")
        if p.image is not None:
            boxes.append((x0, y0))
            w, h = _fit(p.extent, panel_size)
            left, top = x0 + (panel_size - w) / 2, y0 + (panel_size - h) / 2
            rgb = p.image.ndim == 3
            # the array is already as the screen shows it (row 0 on top): increasing extent
            ax.imshow(p.image, cmap=None if rgb else "gray", vmin=0.0, vmax=1.0,
                      origin="upper", extent=(left, left + w, top + h, top),
                      interpolation="antialiased", label=p.key, gid="image", zorder=2)
        else:
            greys.append((x0, y0))
            ax.text(mid, y0 + panel_size / 2, _lines(p.error or "no image", 5), ha="center",
                    va="center", fontsize=7, color=_INFO_COLOUR, label=p.key, gid="error")
        if p.status:
            colour = _INFO_COLOUR if p.ok is None else _OK_COLOUR if p.ok else _BAD_COLOUR
            ax.text(mid, y0 + panel_size + 0.03, _lines(p.status, 2), ha="center", va="top",
                    fontsize=7, color=colour, label=p.key, gid="status")
    collections = matplotlib.collections
    patches = matplotlib.patches
    for where, colour in ((boxes, "black"), (greys, "0.93")):
        if where:
            ax.add_collection(collections.PatchCollection(
                [patches.Rectangle(xy, panel_size, panel_size) for xy in where],
                facecolor=colour, edgecolor="none", zorder=1))
    if title:
        ax.text(width / 2, 0.1, title, ha="center", va="top", fontsize=11, gid="figure-title")
    if note:
        ax.text(width / 2, height - 0.08, note, ha="center", va="bottom", fontsize=9,
                color=_BAD_COLOUR, gid="note")
    # the limits again: adding images and collections may autoscale them
    ax.set_xlim(0.0, width)
    ax.set_ylim(height, 0.0)
    return fig
