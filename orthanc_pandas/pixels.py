"""Fetch stored DICOM files for client-side decoding (HTTP via the client only).

Why client-side: Orthanc's ``/series/{id}/numpy`` decodes with DCMTK only (JPEG 2000 series
fail), builds the whole array in server memory, and is ~3x slower than downloading the stored
files with ``Accept-Encoding: identity`` and decoding them here with pydicom and its plugins
(``pip install 'orthanc-pandas[pixels]'``). See ``benchmarks/volume.py``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence

from ._progress import progress_bar
from ._threads import DEFAULT_WORKERS, map_in_order, stopped_answering, worker_count
from .client import OrthancClient
from .errors import OrthancConnectionError, PixelDataError
from .volume import _rescale_params, decode_pixels, slice_headers

__all__ = ["fetch_datasets", "DEFAULT_WORKERS"]

#: Concurrent downloads; loopback and LAN servers saturate at 3-4 (the machine decodes too).


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
        :func:`orthanc_pandas.volume.decode_pixels` gives it.

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
    bar = progress_bar(progress, total=len(ids), desc=desc, unit="file", min_total=50)

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
            _rescale_params(ds, None)
        bar.update(1)
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
        pairs = map_in_order(counted, ids, workers, name="orthanc-pixels")
    except OrthancConnectionError as exc:
        raise stopped_answering(exc, desc, done, len(ids), "files were downloaded",
                                "nothing was returned (no partial result).") from None
    finally:
        bar.close()
    datasets = [p[0] for p in pairs]
    if not decode:
        return datasets
    arrays = [p[1] for p in pairs]
    del pairs
    return datasets, arrays
