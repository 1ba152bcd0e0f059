"""One series' rows -> one volume: download the files, decode, assemble.

``df.orthanc.volume()``, :class:`LazyVolumes` and ``map_series`` all call
:func:`series_volume`; the pure work is in ``orthanc_pandas._imaging``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._imaging.assemble import from_datasets
from orthanc_pandas._imaging.decode import decode_pixels, rescale_params
from orthanc_pandas._imaging.geometry import slice_headers
from orthanc_pandas._util.bulk import check_bulk_args
from orthanc_pandas._util.fanout import (
    DEFAULT_WORKERS,
    fan_out,
    stopped_answering,
    worker_count,
)
from orthanc_pandas.errors import (
    OrthancConnectionError,
    PixelDataError,
    SelectionError,
)

if TYPE_CHECKING:
    from tqdm.auto import tqdm


def fetch_datasets(client: OrthancClient, instance_ids: Sequence[str], *,
                   max_workers: int = DEFAULT_WORKERS, progress=None, desc: str = "Downloading",
                   decode: bool = False):
    """Download ``/instances/{id}/file`` for each id and parse it with pydicom.

    Downloads run on at most ``min(max_workers, client.pool_size)`` threads. Each file's bytes
    are dropped once parsed, so memory holds the datasets only (about the stored size).

    Parameters
    ----------
    client : OrthancClient
    instance_ids : sequence of str
        Orthanc instance ids.
    max_workers : int, default 4
    progress : bool or tqdm, optional
        Progress bar over files (default: shown when interactive, for 50+ files).
    decode : bool, default False
        Also decode the pixels in the download threads (overlapping decoding with the
        network) and drop the encoded pixel data from the datasets.

    Returns
    -------
    list of pydicom.Dataset, or (datasets, arrays) when ``decode=True``
        In the order of ``instance_ids``; ``arrays[i]`` as
        :func:`orthanc_pandas._imaging.decode.decode_pixels` gives it.

    Examples
    --------
    >>> from orthanc_pandas.testing import LocalOrthanc                      # doctest: +SKIP
    >>> with LocalOrthanc() as srv:                                          # doctest: +SKIP
    ...     ids = [a["ID"] for a in srv.upload_bytes(blobs)]
    ...     datasets = fetch_datasets(srv.client(), ids)
    """
    import pydicom

    ids = list(instance_ids)
    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(ids) or 1)

    def one(iid: str):
        with client.get_file(iid) as answer:
            blob = answer.read()
        try:
            # force=True as for headers: files without a preamble / File Meta decode too
            ds = pydicom.dcmread(io.BytesIO(blob), force=True)
        except Exception as exc:  # pydicom raises many types for a bad file
            raise PixelDataError(
                f"Orthanc instance {iid} is not a readable DICOM file ({type(exc).__name__}: {exc})."
            ) from exc
        # pydicom keeps the BytesIO (and so the whole file) as ds.buffer: let it go.
        if getattr(ds, "buffer", None) is not None:
            ds.buffer = None
        del blob
        arr = None
        if decode:
            arr = decode_pixels(ds)
            for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                if kw in ds:
                    del ds[kw]
            # pydicom converts an element's raw bytes on first access and keeps the result:
            # reading the geometry here does that work while other threads wait on the network.
            slice_headers(ds)
            rescale_params(ds, None)
        return ds, arr

    done = 0
    count_lock = threading.Lock()

    def counted(iid: str):
        nonlocal done
        pair = one(iid)
        with count_lock:
            done += 1
        return pair

    try:
        pairs = fan_out(counted, ids, workers, progress=progress, desc=desc, unit="file",
                        name="orthanc-pixels")
    except OrthancConnectionError as exc:
        raise stopped_answering(exc, desc, done, len(ids), "files were downloaded",
                                "nothing was returned (no partial result).") from None
    datasets = [p[0] for p in pairs]
    if not decode:
        return datasets
    arrays = [p[1] for p in pairs]
    del pairs
    return datasets, arrays


def series_volume(rows: pd.DataFrame, client: OrthancClient, *, rescale: bool = True,
                  allow_irregular: bool = False, dtype="float32", max_workers: int | None = None,
                  progress: bool | tqdm | None = None):
    """The pixels of ``rows`` (one series) as an :class:`xarray.DataArray` with geometry.

    The parameters, result and errors are those of
    :meth:`orthanc_pandas._accessors.frame.InstanceAccessor.volume`, which calls this with the
    frame's client.

    Examples
    --------
    >>> from orthanc_pandas._http.client import connect                         # doctest: +SKIP
    >>> vol = series_volume(df[df.SeriesInstanceUID == "1.2.3"],
    ...                     connect("http://127.0.0.1:8042"))             # doctest: +SKIP
    """

    series = rows.index.get_level_values("series").unique()
    if len(series) != 1:
        raise SelectionError(
            f"volume() needs the rows of exactly one series; these rows hold {len(series)} "
            "series. Pick one: a row of the series frame, df.orthanc.series().iloc[[k]]"
            ".orthanc.volume(df), or df.orthanc.select(SeriesInstanceUID=...); or use "
            "df.orthanc.volumes() for one volume per series."
        )
    ids = list(dict.fromkeys(rows.index.get_level_values("instance")))
    check_bulk_args(max_workers)
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
    vol.attrs["orthanc_url"] = client.url  # the server to write back to (never credentials)
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
