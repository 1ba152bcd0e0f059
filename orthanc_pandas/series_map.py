"""``map_series`` on local threads: ``func(volume, rows)`` once per series, no Dask needed.

:func:`orthanc_pandas.dask.map_series` sends the same per-series call (:func:`one_series`) to a
Dask scheduler when one is active or given; without one, or without Dask installed, the
series run here on a few threads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from ._threads import worker_count
from .client import OrthancClient
from .index import STR_DTYPE
from .series_volume import frame_client, series_volume

__all__ = ["map_series_local", "one_series", "result_frame"]


def _as_record(value) -> dict:
    if isinstance(value, pd.Series):
        return value.to_dict()
    if isinstance(value, Mapping):
        return dict(value)
    return {"result": value}


def one_series(series_id: str, rows: pd.DataFrame, func: Callable, orthanc: OrthancClient,
               volume_kwargs: dict) -> tuple[str, dict, str | None]:
    """``(series id, func's result as a record, error or None)`` for one series."""
    try:
        vol = series_volume(rows, orthanc, **volume_kwargs)
        return series_id, _as_record(func(vol, rows)), None
    except Exception as exc:  # one failing series must not lose the others' results
        return series_id, {}, f"{type(exc).__name__}: {exc}"


def map_series_local(df: pd.DataFrame, func: Callable, *, client: OrthancClient | str | None = None,
                     meta=None, **volume_kwargs) -> pd.DataFrame:
    """:func:`orthanc_pandas.dask.map_series` on a few local threads, results in row order.

    Examples
    --------
    >>> res = map_series_local(df, lambda vol, rows: {"mean": float(vol.mean())})  # doctest: +SKIP
    """
    oc = frame_client(df, client)
    jobs = []
    for sid, rows in df.groupby(level="series", sort=False, observed=True):
        rows.attrs = copy.deepcopy(df.attrs)
        jobs.append((str(sid), rows))
    results: list = []
    if jobs:
        with ThreadPoolExecutor(worker_count(None, jobs=len(jobs)),
                                thread_name_prefix="orthanc-map-series") as pool:
            results = list(pool.map(lambda job: one_series(*job, func, oc, dict(volume_kwargs)),
                                    jobs))
    return result_frame(results, meta)


def result_frame(results: Sequence[tuple[str, dict, str | None]], meta) -> pd.DataFrame:
    """One row per series from :func:`one_series` results, with an ``error`` column."""
    index = pd.Index([r[0] for r in results], name="series", dtype=STR_DTYPE)
    records = [r[1] for r in results]
    out = pd.DataFrame.from_records(records, index=index) if records else pd.DataFrame(index=index)
    if meta is not None:
        dtypes: dict[str, Any] = dict(meta.dtypes) if isinstance(meta, pd.DataFrame) else dict(meta)
        for name, dtype in dtypes.items():
            out[name] = out[name].astype(dtype) if name in out.columns else pd.Series(
                pd.array([None] * len(out), dtype=dtype), index=out.index)
    out["error"] = pd.array([r[2] for r in results], dtype=pd.StringDtype("pyarrow"))
    return out
