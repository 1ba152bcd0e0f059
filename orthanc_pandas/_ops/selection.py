"""Frame-level selection, sorting and tag columns behind ``df.orthanc.select`` & co.

The accessor methods are thin wrappers over these functions. Each takes the index frame and a
``get_client`` callable (called only when something must be fetched), so that frames whose
tags are all columns never need a server.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from orthanc_pandas._frame.matching import encode_criteria, mask
from orthanc_pandas._frame.schema import TEXT_DTYPE, tag_vr, vector_columns
from orthanc_pandas._frame.tags import TagInfo, column_names, resolve_tag
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._ops.fetch_tags import DEFAULT_WORKERS, fetch_tag_columns, fetch_tag_names
from orthanc_pandas._ops.labels import has_labels
from orthanc_pandas._util.bulk import check_bulk_args
from orthanc_pandas.errors import SelectionError

GetClient = Callable[[], OrthancClient]


def _copy_attrs(target: pd.DataFrame, source: pd.DataFrame) -> pd.DataFrame:
    # a NEW attrs dict: changing the result's provenance must never change the parent's
    target.attrs = copy.deepcopy(source.attrs)
    return target


def frame_columns(df: pd.DataFrame, name) -> tuple[list[str], str, TagInfo | None]:
    """``(columns holding name, VR, TagInfo to fetch when there are none)``."""
    if isinstance(name, str) and name in df.columns:
        return [name], _vr_of(name), None
    if isinstance(name, str):
        vec = vector_columns(name, df.columns)
        if vec:
            return vec, _vr_of(name), None
    info = resolve_tag(name)  # raises UnknownTagError for a name that is no tag
    cols = column_names(info, df.columns)
    if cols:
        return cols, info.vr, None
    return [], info.vr, info


def _vr_of(name: str) -> str:
    vr = tag_vr(name)
    if vr:
        return vr
    try:
        return resolve_tag(name).vr
    except KeyError:
        return ""  # a column of the user's own, or orthanc_* bookkeeping


def with_tags(df: pd.DataFrame, tags, get_client: GetClient, *, max_workers: int | None = DEFAULT_WORKERS,
              progress=None) -> pd.DataFrame:
    """``df`` with typed columns for ``tags`` that are not columns yet (see the accessor)."""
    check_bulk_args(max_workers)  # 0 is not "the default" here either
    missing: list[TagInfo] = []
    for t in tags:
        _cols, _vr, info = frame_columns(df, t)
        if info is not None and info.name not in {m.name for m in missing}:
            missing.append(info)
    if not missing:
        return df
    client = get_client() if len(df) else None
    new = fetch_tag_columns(df, client, missing, max_workers=max_workers, progress=progress)
    out = df.copy(deep=False)
    for name, col in new.items():
        out[name] = col.array  # positional: index frames may hold duplicate rows after concat
    return _copy_attrs(out, df)


def _column_data(df: pd.DataFrame, cols: list[str]):
    return df[cols[0]] if len(cols) == 1 else df[cols]


def select(df: pd.DataFrame, criteria: Mapping, get_client: GetClient, *,
           case_sensitive: bool = False, labels=None, labels_how: str = "all") -> pd.DataFrame:
    """The rows of ``df`` matching every criterion (and ``labels``); recorded in attrs.

    ``labels`` (a label or a list of them) keeps the rows carrying them on the instance or a
    parent, as :func:`~orthanc_pandas._ops.labels.has_labels` with ``how=labels_how`` says.
    """
    if isinstance(labels, str):
        labels = [labels]
    if labels is not None:
        labels = list(labels)
    if not criteria and labels is None:
        out = df.copy(deep=False)
        return _copy_attrs(out, df)
    plan = []
    to_fetch: list[TagInfo] = []
    for key, crit in criteria.items():
        cols, vr, info = frame_columns(df, key)
        if info is not None:
            to_fetch.append(info)
        plan.append((key, crit, vr, info))
    keep = (np.ones(len(df), dtype=bool) if labels is None
            else np.array(has_labels(df, *labels, how=labels_how), dtype=bool))  # before fetching
    work = with_tags(df, to_fetch, get_client) if to_fetch else df
    for key, crit, vr, info in plan:
        cols = column_names(info, work.columns) if info is not None else frame_columns(work, key)[0]
        keep &= mask(_column_data(work, cols), crit, vr, case_sensitive, name=str(key))
    out = work[keep]
    attrs = copy.deepcopy(df.attrs)
    meta = attrs.setdefault("orthanc", {})
    entry = encode_criteria(criteria, case_sensitive)
    if labels is not None:
        entry["labels"] = {"labels": labels, "how": labels_how}
    meta["criteria"] = [*list(meta.get("criteria") or []), entry]
    out.attrs = attrs
    return out


def tag_values(df: pd.DataFrame, tag, get_client: GetClient, **fetch) -> pd.Series:
    """One value per row of ``df`` for ``tag``; vector tags give tuples (see the accessor)."""
    cols, _vr, info = frame_columns(df, tag)
    name = info.name if info is not None else (tag if isinstance(tag, str) and tag in df.columns
                                               else resolve_tag(tag).name)
    if info is not None:
        df = with_tags(df, [info], get_client, **fetch)
        cols = column_names(info, df.columns)
    if len(cols) == 1:
        return df[cols[0]].rename(name)
    comps = df[cols].astype("Float64")
    arr = comps.to_numpy(dtype=float, na_value=np.nan)
    allna = np.isnan(arr).all(axis=1)
    values = [None if allna[i] else tuple(None if np.isnan(v) else float(v) for v in arr[i])
              for i in range(len(arr))]
    return pd.Series(values, index=df.index, dtype=object, name=name)


def unique_values(df: pd.DataFrame, tag, get_client: GetClient, **fetch) -> list:
    """Sorted distinct values of ``tag`` among the rows, without missing ones."""
    values = tag_values(df, tag, get_client, **fetch).dropna()
    if values.dtype == object and any(isinstance(v, list | dict) for v in values.iloc[:1]):
        raise SelectionError(f"{tag} holds sequences, which have no order; use tag_values({tag!r}).")
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(TEXT_DTYPE)
    distinct = pd.unique(values.to_numpy(dtype=object))
    return sorted(v.item() if isinstance(v, np.generic) else v for v in distinct)


def available_tags(df: pd.DataFrame, get_client: GetClient, **fetch) -> list[str]:
    """Tag names with a value among the main-tag columns, plus those of one instance per series."""
    names: set[str] = set()
    for col in df.columns:
        base = col.rsplit("_", 1)[0] if col.rsplit("_", 1)[-1].isdigit() else col
        if tag_vr(base) and df[col].notna().any():
            names.add(base)
    if len(df):
        firsts = (df.index.to_frame(index=False).drop_duplicates("series")["instance"]).tolist()
        names |= fetch_tag_names(get_client(), firsts, **fetch)
    return sorted(names, key=lambda n: (n[0].isdigit(), n))


def sort_by(df: pd.DataFrame, tag, get_client: GetClient, *, ascending: bool = True,
            **fetch) -> pd.DataFrame:
    """``df`` ordered by ``tag`` (stable, missing values last); fetched columns are kept."""
    cols, _vr, info = frame_columns(df, tag)
    work = with_tags(df, [info], get_client, **fetch) if info is not None else df
    if info is not None:
        cols = column_names(info, work.columns)
    keys = {}
    for i, c in enumerate(cols):
        col = work[c].reset_index(drop=True)
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(TEXT_DTYPE)  # the values' order, not the categories' order
        if col.dtype == object and col.map(lambda v: isinstance(v, list | dict)).any():
            raise SelectionError(f"{tag} holds sequences, which have no order; sort on a function "
                                 "of them instead: df.iloc[df.orthanc.tag_values(tag).map(len).argsort()].")
        keys[f"k{i}"] = col
    order = (pd.DataFrame(keys).sort_values(list(keys), ascending=ascending, kind="stable",
                                            na_position="last").index.to_numpy())
    return _copy_attrs(work.take(order), df)
