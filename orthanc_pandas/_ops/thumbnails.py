"""Series rows -> a grid of thumbnails: one middle slice per series, fetched in bulk.

``series.orthanc.thumbnails()`` (and ``df.orthanc.thumbnails()``) call
:func:`series_thumbnails`. Per series it needs one instance: the one holding the middle
slice by position along the slice normal (``orthanc_pandas._frame.levels.middle_instances``,
from the index columns of the series' instance rows, no request). Its pixels come by one of
two routes (:data:`SOURCES`), a few series at a time through ``fan_out``:

* ``"file"`` (default): ``GET /instances/{id}/file``, decoded here by pydicom (every transfer
  syntax pydicom reads), windowed by the rules of ``vol.orthanc.plot()`` (the CT's own
  window or soft tissue, presets, percentiles for MR/PET) on the exact stored values.
* ``"rendered"``: ``GET /instances/{id}/rendered``, an 8-bit PNG Orthanc decodes and windows
  (the file's window unless ``window=`` gives one), shrunk on the server to the panel's size
  when the frame knows the image is larger; what the server cannot decode is a failed panel.

Measured on the 20,000-instance benchmark archive (400 series) and on 512 x 512 CT slices:
see ``benchmarks/thumbnails.py`` and ``docs/volumes.md``, "Thumbnails".
"""

from __future__ import annotations

import io
import threading
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from orthanc_pandas._frame.display import series_labels, short_uids
from orthanc_pandas._frame.levels import level_frame, middle_instances
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._imaging.display import CT_WINDOWS, PERCENTILES, choose_window
from orthanc_pandas._imaging.thumbnails import (
    COLUMNS,
    PANEL_INCHES,
    Thumbnail,
    decoded_panel_image,
    draw_thumbnails,
    instance_slice,
    rendered_panel_image,
)
from orthanc_pandas._ops.levels import instances_of
from orthanc_pandas._util.bulk import check_bulk_args
from orthanc_pandas._util.fanout import fan_out, stopped_answering, worker_count
from orthanc_pandas.errors import (
    OrthancAuthError,
    OrthancConnectionError,
    SelectionError,
)

if TYPE_CHECKING:
    from tqdm.auto import tqdm

#: Where a thumbnail's pixels come from.
SOURCES = ("file", "rendered")

#: Panels drawn at most by default (8 rows of 6).
MAX_PANELS = 48

#: ``/rendered`` shrinks images larger than this (pixels of the longer side) on the server.
RENDER_PIXELS = 256

_IOP = [f"ImageOrientationPatient_{i}" for i in range(6)]
_PS = ["PixelSpacing_0", "PixelSpacing_1"]


def _row_floats(table: pd.DataFrame, k: int, cols: list[str]):
    if not all(c in table.columns for c in cols):
        return None
    v = table[cols].iloc[k].to_numpy(dtype=np.float64, na_value=np.nan)
    return v if np.isfinite(v).all() else None


def _row_int(table: pd.DataFrame, k: int, col: str) -> int | None:
    if col not in table.columns:
        return None
    v = table[col].iloc[k]
    return None if pd.isna(v) else int(v)


def _preset(window) -> str | None:
    """The :data:`CT_WINDOWS` key ``window`` names (``"Soft_Tissue"`` too), else None."""
    if not isinstance(window, str):
        return None
    key = window.strip().lower().replace("_", " ")
    return key if key in CT_WINDOWS else None


def _server_window(window, modality: str):
    """``(center, width)`` to ask ``/rendered`` for, or None for the server's own choice."""
    if window is None:
        return None
    if isinstance(window, str):  # a preset is for CT panels only; "auto" was refused
        return CT_WINDOWS[_preset(window)] if _preset(window) and modality == "CT" else None
    return tuple(float(v) for v in window)


def _check_args(window, source: str, max_panels) -> None:
    """Refuse what no panel could use, before anything is fetched."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}; got {source!r}.")
    if isinstance(max_panels, bool) or not isinstance(max_panels, int) or max_panels < 1:
        raise ValueError(f"max_panels must be a positive integer; got {max_panels!r}.")
    if window is None or _preset(window):
        return
    if isinstance(window, str):
        if window.strip().lower() != "auto":
            raise ValueError(f"Unknown window {window!r}: use one of {sorted(CT_WINDOWS)}, "
                             "'auto' (percentiles) or a (center, width) pair.")
        if source == "rendered":
            raise ValueError("window='auto' (percentiles of the pixels) needs the stored values: "
                             "use source='file', or pass window=(center, width).")
        return
    import xarray as xr

    # a pair: the checks (and the message) of vol.orthanc.plot()'s window=
    choose_window(xr.DataArray(np.zeros((1, 1, 1)), dims=("z", "y", "x")), window)


def _failure(exc: BaseException) -> str:
    text = short_uids(str(exc).strip()) or type(exc).__name__
    return text.split(". ")[0].rstrip(".") + "."


def series_thumbnails(series: pd.DataFrame, rows: pd.DataFrame, client: OrthancClient, *,
                      max_panels: int = MAX_PANELS, source: str = "file", window=None,
                      percentiles: tuple[float, float] = PERCENTILES, columns: int | None = None,
                      panel_size: float = PANEL_INCHES, title: str | None = None, save=None,
                      max_workers: int | None = None, progress: bool | tqdm | None = None,
                      total: int | None = None):
    """A figure with the middle slice of each series row of ``series``, in a grid.

    Parameters are those of :meth:`orthanc_pandas._accessors.frame.LevelAccessor.thumbnails`;
    ``series`` is a series frame, ``rows`` instance rows holding its series (others are
    ignored), ``total`` the number of series the caller was asked for when ``series`` holds
    only the first of them (default ``len(series)``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_args(window, source, max_panels)
    check_bulk_args(max_workers)
    n = len(series) if total is None else max(total, len(series))
    if n == 0:
        raise SelectionError("thumbnails() needs at least one series row; this frame has none.")
    shown = series.iloc[:max_panels]
    ids = shown.index.get_level_values("series")
    keep = rows.index.get_level_values("series").isin(ids)
    mine = rows[keep]
    mine = mine[~mine.index.duplicated()]
    middle = middle_instances(mine)
    where = pd.Index(middle.index.get_level_values("series")).get_indexer(ids)
    labels = series_labels(shown)
    modality = shown["Modality"].astype(object).fillna("").astype(str).tolist() \
        if "Modality" in shown.columns else [""] * len(shown)

    def one(k: int) -> Thumbnail:
        title_k, status, ok = labels[k]
        panel = Thumbnail(key=str(ids[k]), title=title_k, status=status, ok=ok)
        if where[k] < 0:
            panel.error = "No instance rows for this series (deleted, or not in df)."
            return panel
        r = int(middle["row"].iloc[where[k]])
        iid, frame = str(middle["instance"].iloc[where[k]]), int(middle["frame"].iloc[where[k]])
        try:
            if source == "file":
                _decoded(client, iid, panel, window, percentiles)
            else:  # what the index knows of the slice: its orientation, spacing and size
                spacing = _row_floats(mine, r, _PS)
                size = [_row_int(mine, r, c) or _row_int(shown, k, c) for c in ("Rows", "Columns")]
                _rendered(client, iid, frame, panel, _server_window(window, modality[k]),
                          _row_floats(mine, r, _IOP),
                          spacing if spacing is not None else _row_floats(shown, k, _PS),
                          [v for v in size if v])
        except (OrthancConnectionError, OrthancAuthError):
            raise  # the server is gone or refuses us: every other panel would fail too
        except Exception as exc:  # one unreadable series must not hide the others
            panel.image = None
            panel.error = _failure(exc)
        return panel

    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(shown))
    done = 0
    count_lock = threading.Lock()

    def counted(k: int) -> Thumbnail:
        nonlocal done
        out = one(k)
        with count_lock:
            done += 1
        return out

    try:
        panels = fan_out(counted, range(len(shown)), workers, progress=progress,
                         desc="Thumbnails", unit="series", name="orthanc-thumbs")
    except OrthancConnectionError as exc:
        raise stopped_answering(exc, "thumbnails", done, len(shown), "series were fetched",
                                "no figure was drawn.") from None
    note = ""
    if n > len(shown):
        note = (f"{len(shown)} of {n} series shown (the first {len(shown)} rows); "
                f"{n - len(shown)} left out: pass max_panels={n}, or select fewer rows.")
    fig = draw_thumbnails(panels, columns=columns or COLUMNS, panel_size=panel_size, note=note,
                          title=title)
    if save is not None:
        fig.savefig(save, dpi=100, facecolor="white")
    return fig


def _decoded(client: OrthancClient, iid: str, panel: Thumbnail, window, percentiles) -> None:
    """The stored file of ``iid``, its shown frame decoded by pydicom and windowed here."""
    import pydicom

    with client.get_file(iid) as answer:
        blob = answer.read()
    ds = pydicom.dcmread(io.BytesIO(blob), force=True)
    del blob
    panel.image, panel.extent, panel.window = decoded_panel_image(
        instance_slice(ds, iid), window, percentiles=percentiles)


def _rendered(client: OrthancClient, iid: str, frame: int, panel: Thumbnail, window,
              orientation, spacing, size: list[int]) -> None:
    """Orthanc's 8-bit rendering of ``iid`` (its ``frame``), put on the screen here."""
    params = {}
    if window is not None:
        params["window-center"], params["window-width"] = f"{window[0]:g}", f"{window[1]:g}"
    if size and max(size) > RENDER_PIXELS:  # only ever shrink: upscaling costs and blurs
        params["width"] = params["height"] = str(RENDER_PIXELS)
    path = f"/instances/{iid}/frames/{frame}/rendered" if frame else f"/instances/{iid}/rendered"
    data = client.get_bytes(path, params=params or None, headers={"Accept": "image/png"})
    panel.image, panel.extent = rendered_panel_image(data, orientation, spacing)
    panel.window = window


def level_thumbnails(frame: pd.DataFrame, level: str, instances: pd.DataFrame | None,
                     get_client, *, max_panels: int = MAX_PANELS, **options):
    """:func:`series_thumbnails` for a series, study or patient frame.

    A series frame gives one panel per row (the instance rows of the first ``max_panels``
    rows only are taken from ``instances``, or read from the server); a study or patient
    frame one panel per series of its rows.
    """
    _check_args(options.get("window"), options.get("source", "file"), max_panels)
    client = get_client()
    if level == "series":
        rows = instances_of(frame.iloc[:max_panels], "series", instances,
                            client=None if instances is not None else client)
        series = frame
    else:
        rows = instances_of(frame, level, instances,
                            client=None if instances is not None else client)
        series = level_frame(rows, "series")
    return series_thumbnails(series, rows, client, max_panels=max_panels, **options)


def instance_thumbnails(df: pd.DataFrame, get_client, make_series, *,
                        max_panels: int = MAX_PANELS, **options):
    """:func:`series_thumbnails` for the series of an instance frame.

    ``make_series(rows)`` makes the series frame of instance rows (``rows.orthanc.series``,
    with the geometry report when asked): it is called on the rows of the first
    ``max_panels`` series only, so the report costs the series shown, not the archive.
    """
    _check_args(options.get("window"), options.get("source", "file"), max_panels)
    ids = pd.unique(np.asarray(df.index.get_level_values("series")))  # in row order
    rows = df[df.index.get_level_values("series").isin(ids[:max_panels])]
    return series_thumbnails(make_series(rows), rows, get_client(), max_panels=max_panels,
                             total=len(ids), **options)
