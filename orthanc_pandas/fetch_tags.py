"""Any DICOM tag as a column: bulk fetching, one request per series.

``GET /series/{id}/instances-tags?short`` answers the tags of every instance of a series in one
request (Orthanc reads each file up to its pixel data). Values longer than 256 bytes come back
``null`` unless named in ``ignore-length``, so the requested tags are always named there. The
list must be written ``ggggeeee,ggggeeee`` with a literal comma: Orthanc splits the argument on
``,`` and does not decode ``%2C``, so the query string is built here rather than by requests.

Series are fetched by a small thread pool (never more threads than the client's connection
pool); only the series of the frame's rows are asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from ._progress import progress_bar
from .client import OrthancClient
from .errors import OrthancNotFoundError
from .tags import TagInfo, _info_for, _parse_number, typed_tag_columns

__all__ = ["fetch_series_tags", "fetch_tag_columns", "fetch_tag_names", "DEFAULT_WORKERS"]

DEFAULT_WORKERS = 4


def _workers(client: OrthancClient, max_workers: int | None, jobs: int) -> int:
    limit = max(1, int(getattr(client, "pool_size", DEFAULT_WORKERS)))
    return max(1, min(max_workers or DEFAULT_WORKERS, limit, max(jobs, 1)))


def _query(tags: Sequence[TagInfo]) -> str:
    names = ",".join(dict.fromkeys(t.compact for t in tags))
    return "short" + (f"&ignore-length={names}" if names else "")


def fetch_series_tags(client: OrthancClient, series_ids: Iterable[str], tags: Sequence[TagInfo], *,
                      max_workers: int | None = DEFAULT_WORKERS, progress=None) -> dict[str, dict]:
    """The raw values of ``tags`` for every instance of the given series.

    Parameters
    ----------
    client : OrthancClient
    series_ids : iterable of str
        Orthanc series ids; each is one ``GET /series/{id}/instances-tags`` request.
    tags : sequence of TagInfo
        What to keep from each answer (long values are asked for in full).
    max_workers : int, default 4
        Concurrent requests (capped by ``client.pool_size``).
    progress : bool or tqdm, optional
        Progress bar over the series (default: shown when interactive and long).

    Returns
    -------
    dict
        ``{instance id: {tag key "gggg,eeee": raw value}}``; a tag an instance lacks is not
        in its dict.

    Raises
    ------
    OrthancNotFoundError
        When a series of the frame no longer exists on the server.

    Examples
    --------
    >>> from orthanc_pandas.tags import resolve_tag
    >>> raw = fetch_series_tags(client, ["b0c4...-..."], [resolve_tag("SliceThickness")])  # doctest: +SKIP
    >>> next(iter(raw.values()))                                                          # doctest: +SKIP
    {'0018,0050': '2.5'}
    """
    series_ids = list(dict.fromkeys(series_ids))
    keys = [t.key for t in tags]
    query = _query(tags)

    def one(sid: str) -> dict[str, dict]:
        try:
            answer = client.get_json(f"/series/{sid}/instances-tags", params=query)
        except OrthancNotFoundError as exc:
            raise OrthancNotFoundError(
                f"Series {sid} of this frame is no longer on the server ({exc.url}); read the "
                "server again (read_orthanc) or refresh the frame before fetching tags.",
                status=exc.status, method=exc.method, url=exc.url,
                orthanc_message=exc.orthanc_message, orthanc_error=exc.orthanc_error) from None
        return {iid: {k: tags_[k] for k in keys if k in tags_} for iid, tags_ in answer.items()}

    out: dict[str, dict] = {}
    bar = progress_bar(progress, total=len(series_ids), desc="Fetching tags", unit="series",
                       min_total=200)
    try:
        workers = _workers(client, max_workers, len(series_ids))
        if workers == 1:
            for sid in series_ids:
                out.update(one(sid))
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for part in pool.map(one, series_ids):
                    out.update(part)
                    bar.update(1)
    finally:
        bar.close()
    return out


def fetch_tag_columns(df: pd.DataFrame, client: OrthancClient, tags: Sequence[TagInfo], *,
                      max_workers: int | None = DEFAULT_WORKERS, progress=None) -> dict[str, pd.Series]:
    """Typed columns for ``tags``, aligned to the rows of an index frame.

    Only the series of ``df``'s rows are fetched, one request each. An instance without a tag
    (or deleted meanwhile from a series that still exists) gets a missing value.

    Returns
    -------
    dict
        Column name -> Series indexed like ``df`` (a vector tag gives several columns).

    Examples
    --------
    >>> cols = fetch_tag_columns(df, df.orthanc.client(), [resolve_tag("SliceThickness")])  # doctest: +SKIP
    >>> cols["SliceThickness"].dtype                                                       # doctest: +SKIP
    Float64Dtype()
    """
    if not tags:
        return {}
    series = df.index.get_level_values("series")
    raw = fetch_series_tags(client, pd.unique(series.to_numpy(dtype=object)), tags,
                            max_workers=max_workers, progress=progress)
    instances = df.index.get_level_values("instance").to_numpy(dtype=object)
    out: dict[str, pd.Series] = {}
    empty: dict = {}
    for info in tags:
        values = [raw.get(iid, empty).get(info.key) for iid in instances]
        for name, col in typed_tag_columns(info, values).items():
            col.index = df.index
            out[name] = col
    return out


def fetch_tag_names(client: OrthancClient, instance_ids: Iterable[str], *,
                    max_workers: int | None = DEFAULT_WORKERS, progress=None) -> set[str]:
    """The names (keyword, or ``"gggg,eeee"`` for private tags) of the tags of some instances.

    One ``GET /instances/{id}/tags?short`` per instance: callers pass one instance per series.

    Examples
    --------
    >>> "SliceThickness" in fetch_tag_names(client, [instance_id])                     # doctest: +SKIP
    True
    """
    ids = list(dict.fromkeys(instance_ids))

    def one(iid: str) -> set[str]:
        keys = client.get_json(f"/instances/{iid}/tags", params="short")
        return {_info_for(n).name for n in map(_parse_number, keys) if n is not None}

    names: set[str] = set()
    bar = progress_bar(progress, total=len(ids), desc="Listing tags", unit="series", min_total=200)
    try:
        with ThreadPoolExecutor(max_workers=_workers(client, max_workers, len(ids))) as pool:
            for part in pool.map(one, ids):
                names |= part
                bar.update(1)
    finally:
        bar.close()
    return names
