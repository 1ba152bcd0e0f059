"""Protocol columns (``series(protocol=True)``, ``with_protocol()``): fetch in bulk, aggregate.

The tags and the aggregation are in :mod:`orthanc_pandas._frame.protocol`. The values come
from the instances, one request per series:

* an instance frame's rows go through ``with_tags`` (``instances-tags`` on 1.10,
  ``requested-tags`` on 1.11+, instance by instance for series the frame holds a few rows of);
  a tag that already is a column of the rows (``ExtraMainDicomTags``) is not fetched;
* a series frame read series-first asks for every instance of each of its CT/MR/PT series
  (:func:`~orthanc_pandas._ops.fetch_tags.fetch_tags_by_series`); a tag that is a column of
  the series frame is taken from it.

Only the series whose modality has documented tags are asked (with ``protocol=True``); with a
list of tags, every series of the frame.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from orthanc_pandas._frame.protocol import (
    NESTED,
    PROTOCOL_TAGS,
    aggregate,
    default_tags,
    fetched_tags,
    modality_mask,
    nested_values,
    protocol_dtypes,
    protocol_schema,
)
from orthanc_pandas._frame.schema import TEXT_DTYPE
from orthanc_pandas._frame.tags import column_names, resolve_tag, typed_tag_columns
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._ops.fetch_tags import fetch_tags_by_series
from orthanc_pandas._ops.selection import with_tags
from orthanc_pandas._util.bulk import check_bulk_args
from orthanc_pandas.errors import SelectionError


def _plan(protocol) -> tuple[list[str], bool]:
    """(tag names, whether the documented per-modality sets apply)."""
    if protocol is True:
        return default_tags(), True
    if isinstance(protocol, str) or not isinstance(protocol, Sequence) or not protocol:
        raise SelectionError(f"protocol must be True or a list of tags (e.g. ['KVP', "
                             f"'ConvolutionKernel']), got {protocol!r}.")
    names = []
    for t in protocol:
        info = resolve_tag(t)   # UnknownTagError names the closest keywords
        if info.vr == "SQ":
            raise SelectionError(f"{info.name} is a sequence: protocol columns hold numbers and "
                                 "text. Ask for a tag inside it (e.g. 'Radiopharmaceutical').")
        names.append(info.name)
    return list(dict.fromkeys(names)), False


def _dtypes(names: list[str]) -> dict[str, dict[str, object]]:
    out = {}
    for name in names:
        if resolve_tag(name).is_private:  # no dictionary entry: text, as with_tags gives it
            out[name] = {name: TEXT_DTYPE}
        else:
            out[name] = protocol_dtypes(name)
    return out


def _modalities(df: pd.DataFrame) -> np.ndarray:
    if "Modality" not in df.columns:
        return np.full(len(df), None, dtype=object)
    return df["Modality"].astype(TEXT_DTYPE).to_numpy(dtype=object, na_value=None)


def _value_columns(name: str, dtypes: dict, source: Callable[[str], list | None], n: int) -> dict:
    """Typed value columns of ``name`` from ``source(tag name) -> raw values per row``."""
    info = resolve_tag(name)
    if name in NESTED:
        seq = source(NESTED[name])
        raw = nested_values(seq, name, info.key) if seq is not None else [None] * n
    else:
        raw = source(name)
        if raw is None:
            return {}
    return {c: col for c, col in typed_tag_columns(info, raw).items() if c in dtypes}


def _values(work: pd.DataFrame, names: list[str], dtypes: dict, documented: bool) -> pd.DataFrame:
    """One row per row of ``work`` (instance rows with the fetched columns): the value columns."""
    n = len(work)
    modality = _modalities(work)
    out: dict[str, object] = {}
    for name in names:
        info = resolve_tag(name)

        def source(tag: str, work=work):
            cols = column_names(resolve_tag(tag), work.columns)
            if not cols:
                return None
            if len(cols) == 1:
                return work[cols[0]].to_numpy(dtype=object, na_value=None).tolist()
            return None  # components are read below

        cols = column_names(info, work.columns) if name not in NESTED else []
        if len(cols) > 1 or (cols and work[cols[0]].dtype != object):
            found = {c: work[c] for c in cols}   # typed already (with_tags, index columns)
        else:
            found = _value_columns(name, dtypes[name], source, n)
        keep = modality_mask(modality, name) if documented else np.ones(n, dtype=bool)
        for c in dtypes[name]:
            if c in found:
                values = pd.Series(found[c]).reset_index(drop=True)
                out[c] = values.where(keep)
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _columns_for(names: list[str], dtypes: dict) -> dict[str, object]:
    return {c: d for name in names for c, d in dtypes[name].items()}


def series_protocol(rows: pd.DataFrame, order: Sequence, protocol, get_client, *,
                    max_workers: int | None = None, progress=None) -> pd.DataFrame:
    """Protocol columns for the series ``order`` from the instance rows ``rows`` (an instance frame).

    Returns a frame with a default index, one row per entry of ``order``, the columns of
    :func:`~orthanc_pandas._frame.protocol.protocol_schema`.
    """
    check_bulk_args(max_workers)
    names, documented = _plan(protocol)
    dtypes = _dtypes(names)
    value_dtypes = _columns_for(names, dtypes)
    if documented:
        rows = rows[np.isin(_modalities(rows), list(PROTOCOL_TAGS))]
    work = with_tags(rows, fetched_tags(names), get_client, max_workers=max_workers,
                     progress=progress) if len(rows) else rows
    values = _values(work, names, dtypes, documented)
    return aggregate(values, work.index.get_level_values("series"), order, value_dtypes)


def level_protocol(frame: pd.DataFrame, protocol, client_fn: Callable[[], OrthancClient], *,
                   max_workers: int | None = None, progress=None) -> pd.DataFrame:
    """Protocol columns for the rows of a series frame, fetched per series from the server.

    Tags that are columns of ``frame`` (stored by the server at series level) are taken from
    it; the others are read for every instance of the frame's series (one request each).
    """
    check_bulk_args(max_workers)
    names, documented = _plan(protocol)
    dtypes = _dtypes(names)
    value_dtypes = _columns_for(names, dtypes)
    sids = frame.index.get_level_values("series").to_numpy(dtype=object)
    modality = _modalities(frame)
    ask = sids[np.isin(modality, list(PROTOCOL_TAGS))] if documented else sids
    stored = [n for n in names if n not in NESTED and column_names(resolve_tag(n), frame.columns)]
    fetch = [resolve_tag(t) for t in fetched_tags([n for n in names if n not in stored])]
    raw = (fetch_tags_by_series(client_fn(), ask, fetch, max_workers=max_workers, progress=progress)
           if len(ask) and fetch else {sid: {} for sid in ask})
    # one row per instance (or per series, for a series whose instances were not fetched)
    where = {sid: k for k, sid in enumerate(sids)}
    row_series, row_values = [], []
    for sid in ask:
        for values in (raw.get(sid) or {"": {}}).values():
            row_series.append(sid)
            row_values.append(values)
    n = len(row_series)
    pos = np.array([where[s] for s in row_series], dtype=np.intp)
    work = frame.iloc[pos][["Modality"]] if "Modality" in frame.columns else pd.DataFrame(index=range(n))
    work = work.reset_index(drop=True)
    for info in fetch:
        work[info.name] = pd.Series([v.get(info.key) for v in row_values], dtype=object)
    for name in stored:
        for c in column_names(resolve_tag(name), frame.columns):
            work[c] = frame[c].iloc[pos].reset_index(drop=True)
    values = _values(work, names, dtypes, documented)
    return aggregate(values, row_series, sids, value_dtypes)


def add_protocol_columns(frame: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a series frame) with the columns of ``agg`` (aligned by position); a column
    ``frame`` already has (a main tag such as ``Modality``) is kept, not replaced."""
    new = agg[[c for c in agg.columns if c not in frame.columns]].set_axis(frame.index)
    out = pd.concat([frame, new], axis=1)
    out.attrs = copy.deepcopy(frame.attrs)
    return out


def protocol_columns_of(protocol) -> list[str]:
    """The names of the columns ``protocol`` adds (whatever the data).

    Examples
    --------
    >>> protocol_columns_of(["KVP"])
    ['KVP', 'KVP_min', 'KVP_max']
    """
    names, _ = _plan(protocol)
    return list(protocol_schema(_columns_for(names, _dtypes(names))))
