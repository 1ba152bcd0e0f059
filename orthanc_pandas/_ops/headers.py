"""DICOM headers of the rows as pydicom datasets, exactly as stored, without pixel data.

Orthanc's JSON routes (``/tags``, ``/simplified-tags``) rebuild a header from a text form and
lose VRs, private tags and binary values. Here the stored file itself is read:
``GET /instances/{id}/file`` is streamed and reading stops as soon as the top-level pixel data
element has arrived (Orthanc 1.10 has no HTTP Range support, so the rest of the answer is
dropped by closing the connection). pydicom then parses that prefix with
``stop_before_pixels=True``, which gives the same dataset as
``pydicom.dcmread(original_file, stop_before_pixels=True)``.
"""

from __future__ import annotations

import io
import threading

import pandas as pd
import pydicom

from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._util.bulk import check_bulk_args
from orthanc_pandas._util.fanout import fan_out, map_in_order, stopped_answering, worker_count
from orthanc_pandas._util.progress import progress_bar
from orthanc_pandas.errors import OrthancConnectionError, OrthancHTTPError, SelectionError

_DEFLATED = b"1.2.840.10008.1.2.1.99"


# (7FE0,0010) Pixel Data, (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data,
# in little and big endian byte order
_PIXEL_TAGS_LE = [bytes.fromhex(h) for h in ("e07f1000", "e07f0800", "e07f0900")]


_PIXEL_TAGS_BE = [bytes.fromhex(h) for h in ("7fe00010", "7fe00008", "7fe00009")]


_PIXEL_TAGS = _PIXEL_TAGS_LE + _PIXEL_TAGS_BE


_FIRST_CHUNK = 64 << 10


def parse_header_prefix(buf: bytes, complete: bool) -> pydicom.Dataset | None:
    """Parse the first bytes of a DICOM file, or say that more bytes are needed.

    A truncated buffer can parse "successfully" when it ends on an element boundary, silently
    losing the elements after it. So a parse of an incomplete buffer is only accepted when it
    provably stopped at the top-level pixel data element: the read position is inside the
    buffer and the bytes there are a pixel data tag.

    Parameters
    ----------
    buf : bytes
        The first bytes of a Part 10 file (or all of it).
    complete : bool
        Whether ``buf`` is the whole file.

    Returns
    -------
    pydicom.Dataset or None
        The dataset without pixel data, or ``None`` when ``buf`` is not enough yet.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_series, to_bytes
    >>> data = to_bytes(make_series(1, 16, 16)[0])
    >>> parse_header_prefix(data[:200], complete=False) is None
    True
    >>> parse_header_prefix(data, complete=True).Modality
    'CT'
    """
    if complete:
        return pydicom.dcmread(io.BytesIO(buf), stop_before_pixels=True, force=True)
    if _DEFLATED in buf[:4096]:
        return None  # the dataset is one deflate stream: it needs the whole file
    if not any(t in buf for t in _PIXEL_TAGS):
        return None
    fp = io.BytesIO(buf)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    except Exception:  # a truncated element or sequence: wait for more bytes
        return None
    pos = fp.tell()
    if pos + 4 <= len(buf) and buf[pos:pos + 4] in (_PIXEL_TAGS_LE if ds.original_encoding[1]
                                                     else _PIXEL_TAGS_BE):
        return ds
    return None


def read_header(client: OrthancClient, instance_id: str) -> pydicom.Dataset:
    """The header of one stored instance, read from its file up to the pixel data.

    Parameters
    ----------
    client : OrthancClient
    instance_id : str
        Orthanc instance id.

    Returns
    -------
    pydicom.FileDataset
        Without pixel data; ``file_meta`` included.

    Examples
    --------
    >>> ds = read_header(client, "19a8e1b3-...")                      # doctest: +SKIP
    >>> ds.PatientName                                                 # doctest: +SKIP
    """
    with client.get_file(instance_id) as answer:
        # A small first read covers most headers; then bigger reads (a header with a large
        # private blob or an icon image can be long). Leaving the block drops the rest.
        buf = bytearray()
        size = _FIRST_CHUNK
        while True:
            chunk = answer.read(size)
            buf += chunk
            ds = parse_header_prefix(bytes(buf), complete=not chunk)
            if ds is not None:
                return ds
            size = min(size * 2, 4 << 20)


def read_headers(client: OrthancClient, instance_ids, *, max_workers: int | None = None,
                 progress=None, desc: str = "Reading headers") -> list[pydicom.Dataset]:
    """The headers of ``instance_ids``, in that order (:func:`read_header` for each, a few at
    a time); the first error stops them all.

    Examples
    --------
    >>> datasets = read_headers(client, vol.instance.values)         # doctest: +SKIP
    """
    check_bulk_args(max_workers)
    ids = [str(i) for i in instance_ids]
    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(ids) or 1)
    done = 0
    lock = threading.Lock()

    def one(iid: str) -> pydicom.Dataset:
        nonlocal done
        ds = read_header(client, iid)
        with lock:
            done += 1
        return ds

    try:
        return fan_out(one, ids, workers, progress=progress, desc=desc, unit="file",
                       name="orthanc-headers")
    except OrthancConnectionError as exc:
        raise stopped_answering(exc, desc, done, len(ids), "headers were read",
                                "nothing was returned (no partial list).") from None


def _instance_ids(df: pd.DataFrame) -> list[str]:
    return [str(i) for i in df.index.get_level_values("instance")]


def headers(df: pd.DataFrame, client: OrthancClient, progress=None,
            max_workers: int | None = None, errors: str = "raise") -> pd.Series:
    """The DICOM header of every row, indexed like the rows, without pixel data.

    Lossless: each dataset equals ``pydicom.dcmread(stored_file, stop_before_pixels=True)``
    (every element with its VR, private tags, sequences, character sets, ``file_meta``).

    Parameters
    ----------
    df : pandas.DataFrame
        An Orthanc index frame (or a selection of one).
    client : OrthancClient
    progress : bool or tqdm, optional
        Progress bar; by default shown in terminals and notebooks from 50 rows.
    max_workers : int, optional
        Concurrent requests (default 4, never more than ``client.pool_size``).
    errors : {"raise", "report"}, default "raise"
        What an instance the server refuses (deleted meanwhile, ...) does: raise its error, or
        leave ``None`` on its rows and name it in ``result.attrs["errors"]`` (instance id ->
        message). A server that stops answering always raises.

    Returns
    -------
    pandas.Series
        pydicom datasets, with ``df``'s index (same order, same length), named ``header``; a
        row repeated in ``df`` gives the same dataset object twice.

    Examples
    --------
    >>> ct = df[df.Modality == "CT"]                                  # doctest: +SKIP
    >>> datasets = ct.orthanc.headers()                               # doctest: +SKIP
    >>> datasets.iloc[0].SliceThickness                               # doctest: +SKIP
    """
    check_bulk_args(max_workers, errors)
    ids = _instance_ids(df)
    unique = list(dict.fromkeys(ids))
    found: dict[str, pydicom.Dataset] = {}
    failed: dict[str, str] = {}
    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(unique) or 1)
    lock = threading.Lock()
    with progress_bar(progress, total=len(unique), desc="Reading headers", unit="file",
                      min_total=50) as bar:
        def one(iid: str) -> None:
            try:
                ds = read_header(client, iid)
            except OrthancHTTPError as exc:  # the server answered, about this instance only
                if errors == "raise":
                    raise
                with lock:
                    failed[iid] = str(exc)
            else:
                with lock:
                    found[iid] = ds
            bar.update(1)

        try:
            map_in_order(one, unique, workers, name="orthanc-headers")
        except OrthancConnectionError as exc:
            raise stopped_answering(exc, "headers", len(found), len(unique), "headers were read",
                                    "nothing was returned (no partial list).") from None
    out = pd.Series([found.get(i) for i in ids], index=df.index, name="header", dtype=object)
    if errors == "report":
        out.attrs["errors"] = failed
    return out


def header(df: pd.DataFrame, client: OrthancClient) -> pydicom.Dataset:
    """The header of the one row of ``df``.

    Raises
    ------
    SelectionError
        When ``df`` has zero rows or more than one.

    Examples
    --------
    >>> ds = df[df.SOPInstanceUID == uid].orthanc.header()             # doctest: +SKIP
    """
    n = len(df)
    if n != 1:
        ids = _instance_ids(df)
        what = ("no rows" if n == 0 else
                f"{n} rows ({len(set(ids))} distinct instances)")
        raise SelectionError(
            f"header() needs exactly one row, this frame has {what}. Narrow it first, e.g. "
            "df[df.SOPInstanceUID == uid].orthanc.header() or df.iloc[[0]].orthanc.header(), "
            "or use headers() for a Series of them."
        )
    return read_header(client, _instance_ids(df)[0])
