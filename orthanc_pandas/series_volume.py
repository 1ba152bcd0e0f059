"""One series' rows -> one volume: download, decode, assemble (below the accessor).

``df.orthanc.volume()``, :class:`LazyVolumes` and
:func:`orthanc_pandas.dask.map_series` all call :func:`series_volume`, so the data flows one
way (accessor -> this module -> pixels/volume) and nothing below the accessor calls it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from ._threads import worker_count
from .client import OrthancClient, get_client
from .errors import NotAnIndexError, OrthancPandasError, SelectionError
from .index import INDEX_NAMES

if TYPE_CHECKING:
    from tqdm.auto import tqdm

__all__ = ["series_volume", "LazyVolumes", "frame_url", "frame_client", "frame_level"]


def check_index_frame(df: pd.DataFrame) -> None:
    """Raise :class:`NotAnIndexError` unless ``df`` has the index of an Orthanc frame."""
    if isinstance(df.index, pd.MultiIndex) and list(df.index.names) == INDEX_NAMES:
        return
    names = list(df.index.names) if isinstance(df.index, pd.MultiIndex) else [df.index.name]
    raise NotAnIndexError(
        "df.orthanc works on frames made by orthanc_pandas.read_orthanc (index levels "
        f"{INDEX_NAMES}); this frame's index is {names}. If you called reset_index(), "
        "restore it with df.set_index(['patient', 'study', 'series', 'instance'])."
    )


def frame_level(df: pd.DataFrame) -> str:
    """``"instance"`` for an index frame, else the level of a series/study/patient frame.

    A level frame (``df.orthanc.series()`` ...) says its level in ``attrs["orthanc"]["level"]``
    and has that level's index (see ``docs/series.md``); anything else raises
    :class:`NotAnIndexError` as :func:`check_index_frame` does.
    """
    from .series_frame import LEVEL_INDEX

    level = (df.attrs.get("orthanc") or {}).get("level") if isinstance(df.attrs, dict) else None
    if level in ("series", "study", "patient") and list(df.index.names) == LEVEL_INDEX[level] \
            and (level == "patient") != isinstance(df.index, pd.MultiIndex):
        return level
    check_index_frame(df)
    return "instance"


def frame_url(df: pd.DataFrame) -> str:
    """The URL of the server ``df``'s rows come from (``df.attrs["orthanc"]["url"]``)."""
    url = (df.attrs.get("orthanc") or {}).get("url")
    if not url:
        raise OrthancPandasError(
            "This frame does not say which Orthanc server it comes from (df.attrs['orthanc'] "
            "is missing, e.g. after pd.concat). Pass client=... or restore the attrs from the "
            "original frame: df.attrs = original.attrs."
        )
    return url


def frame_client(df: pd.DataFrame, client: OrthancClient | str | None = None) -> OrthancClient:
    """``client`` as a client, else the one for ``df``'s server (see ``df.orthanc.client``)."""
    frame_level(df)
    return get_client(client if client is not None else frame_url(df))


def series_volume(rows: pd.DataFrame, client: OrthancClient, *, rescale: bool = True,
                  allow_irregular: bool = False, dtype="float32", max_workers: int | None = None,
                  progress: bool | tqdm | None = None):
    """The pixels of ``rows`` (one series) as an :class:`xarray.DataArray` with geometry.

    The parameters, result and errors are those of
    :meth:`orthanc_pandas.accessor.OrthancAccessor.volume`, which calls this with the
    frame's client.

    Examples
    --------
    >>> from orthanc_pandas.client import connect                         # doctest: +SKIP
    >>> vol = series_volume(df[df.SeriesInstanceUID == "1.2.3"],
    ...                     connect("http://127.0.0.1:8042"))             # doctest: +SKIP
    """
    from .pixels import fetch_datasets
    from .volume import from_datasets

    series = rows.index.get_level_values("series").unique()
    if len(series) != 1:
        raise SelectionError(
            f"volume() needs the rows of exactly one series; these rows hold {len(series)} "
            "series. Pick one: a row of the series frame, df.orthanc.series().iloc[[k]]"
            ".orthanc.volume(df), or df.orthanc.select(SeriesInstanceUID=...); or use "
            "df.orthanc.volumes() for one volume per series."
        )
    ids = list(dict.fromkeys(rows.index.get_level_values("instance")))
    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(ids))
    # Decoding happens in the download threads (overlapping the network); the encoded
    # bytes are dropped file by file, so memory holds the stored pixels + the volume.
    datasets, arrays = fetch_datasets(client, ids, max_workers=workers, progress=progress,
                                      desc=f"Series {series[0][:8]}", decode=True)
    # Filling is a memory-bound copy/rescale per slice: one thread is fastest (measured:
    # 4 threads cost 3x the CPU on 2 cores for no gain in wall time).
    vol = from_datasets(datasets, instances=ids, rescale=rescale,
                        allow_irregular=allow_irregular, dtype=dtype, arrays=arrays,
                        max_workers=1, release=True, progress=False)
    vol.attrs["orthanc_series"] = str(series[0])
    return vol


class LazyVolumes(Mapping):
    """``series id -> DataArray`` for the series of an index frame; fetched on access.

    Made by ``df.orthanc.volumes()``. Volumes are not cached: ``vols[k]`` downloads again.

    Examples
    --------
    >>> vols = df.orthanc.volumes()                          # doctest: +SKIP
    >>> vols                                                 # doctest: +SKIP
    <LazyVolumes: 3 series (2 x 120, 1 x 1 instances), fetched on access>
    """

    def __init__(self, df: pd.DataFrame, options: dict, *, client: OrthancClient):
        self._df = df
        self._options = dict(options)
        self._client = client
        self._series = list(dict.fromkeys(df.index.get_level_values("series")))

    def __getitem__(self, series_id: str):
        if series_id not in self._series:
            raise KeyError(series_id)
        rows = self._df.xs(series_id, level="series", drop_level=False)
        return series_volume(rows, self._client, **self._options)

    def __iter__(self):
        return iter(self._series)

    def __len__(self) -> int:
        return len(self._series)

    def __repr__(self) -> str:
        sizes = self._df.groupby(level="series", sort=False).size()
        counts = sizes.value_counts().sort_index(ascending=False)
        desc = ", ".join(f"{c} x {n}" for n, c in counts.items())
        return f"<LazyVolumes: {len(self)} series ({desc} instances), fetched on access>"
