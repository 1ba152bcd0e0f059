"""``map_series`` on local threads: ``func(volume, rows)`` once per series, no Dask needed.

:func:`orthanc_pandas.dask.map_series` sends the same per-series call (:func:`one_series`) to a
Dask scheduler when one is active or given; without one, or without Dask installed, the
series run here on a few threads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from orthanc_pandas._frame.schema import STR_DTYPE
from orthanc_pandas._http.client import OrthancClient, connect
from orthanc_pandas._ops.source import frame_client
from orthanc_pandas._ops.volumes import series_volume
from orthanc_pandas._util.fanout import fan_out


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

    The series run one after the other; each one's files are downloaded (and decoded) on
    the threads of :func:`~orthanc_pandas._ops.volumes.series_volume` (``max_workers`` in
    ``volume_kwargs``, as for ``df.orthanc.volume()``). One level of threads, never series
    threads x download threads over the client's one connection pool (4 x 4 threads used to
    queue for 8 connections). Sequential series rather than sequential downloads because:

    * memory holds one volume at a time (plus ``func``'s result), not one per thread: a CT
      series is hundreds of MB once decoded;
    * a series of many slices (the costly case) gets every connection, and decoding overlaps
      the network inside it, as in ``df.orthanc.volume()``;
    * Ctrl-C stops within one series, after at most the files in flight (one per worker).

    ``func`` itself runs in the calling thread, between series; for CPU-bound ``func`` on
    many cores use a Dask scheduler (:func:`map_series`).

    Examples
    --------
    >>> res = map_series_local(df, lambda vol, rows: {"mean": float(vol.mean())})  # doctest: +SKIP
    """
    oc = frame_client(df, client)
    jobs = []
    for sid, rows in df.groupby(level="series", sort=False, observed=True):
        rows.attrs = copy.deepcopy(df.attrs)
        jobs.append((str(sid), rows))
    results = fan_out(lambda job: one_series(*job, func, oc, dict(volume_kwargs)), jobs, 1,
                      progress=None, desc="Series", unit="series", min_total=10)
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


def _dask(required: bool = True):
    """The ``dask`` module; ``None`` when it is not installed and not ``required``."""
    try:
        import dask  # optional dependency: the "dask" extra
    except ImportError as exc:
        if not required:
            return None
        raise ImportError("map_series on a Dask cluster needs Dask: "
                          "pip install 'orthanc-pandas[dask]'") from exc
    return dask


def _connect_here(url: str, auth, kwargs: dict) -> str:
    return connect(url, auth=tuple(auth) if isinstance(auth, list) else auth, **kwargs).url


def connect_workers(dask_client, url: str, *, auth=None, **client_kwargs) -> None:
    """Register an Orthanc client with credentials in every worker process of ``dask_client``.

    Uses ``distributed.Client.run``: the credentials go to the workers that exist now,
    directly, and are never part of a task graph (nor stored by the scheduler). Workers started
    later do not get them: give those ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD`` in their
    environment, or a ``~/.netrc``.

    Parameters
    ----------
    dask_client : distributed.Client
    url : str
        The server URL, as in ``df.attrs["orthanc"]["url"]``.
    auth : (str, str)
        Credentials; ``None`` lets each worker resolve its own (environment, ``~/.netrc``).
    **client_kwargs
        ``verify``, ``timeout``, ... for :class:`~orthanc_pandas._http.client.OrthancClient`.

    Examples
    --------
    >>> from distributed import Client                                   # doctest: +SKIP
    >>> dc = Client()                                                    # doctest: +SKIP
    >>> connect_workers(dc, "https://pacs.example.org", auth=("alice", getpass()))  # doctest: +SKIP
    >>> ddf = read_orthanc("https://pacs.example.org", auth=("alice", pw))  # doctest: +SKIP
    """
    dask_client.run(_connect_here, url, auth, dict(client_kwargs))


def series_tasks(df: pd.DataFrame, func: Callable, *, orthanc: OrthancClient | str | None = None,
                 **volume_kwargs) -> list:
    """The ``dask.delayed`` tasks of :func:`map_series`, one per series (for inspection).

    Each task holds the series' rows, ``func`` and the Orthanc client, which pickles as its
    URL and settings only: no credentials are in the graph.

    Examples
    --------
    >>> tasks = series_tasks(df, lambda vol, rows: float(vol.mean()))    # doctest: +SKIP
    >>> len(tasks) == df.orthanc.series_count                            # doctest: +SKIP
    True
    """
    dask = _dask()
    oc = frame_client(df, orthanc)
    tasks = []
    for sid, rows in df.groupby(level="series", sort=False, observed=True):
        rows.attrs = copy.deepcopy(df.attrs)
        tasks.append(dask.delayed(one_series, pure=False)(
            str(sid), rows, func, oc, dict(volume_kwargs),
            dask_key_name=f"orthanc-series-{sid}-{dask.base.tokenize(func, volume_kwargs)}"))
    return tasks


def map_series(df: pd.DataFrame, func: Callable, *, dask_client=None,
               client: OrthancClient | str | None = None, meta=None,
               auth: tuple[str, str] | None = None, **volume_kwargs) -> pd.DataFrame:
    """Call ``func(volume, rows)`` once per series of ``df``, in parallel on Dask.

    ``volume`` is the series' :class:`xarray.DataArray` (as ``rows.orthanc.volume()`` gives
    it) and ``rows`` its rows of ``df``. Each call runs in a Dask task that downloads and
    decodes its own series, so only the results come back.

    Credentials: locally (threads) the caller's client is used as it is. On a
    ``distributed`` cluster the tasks carry the client as URL + settings only (never a
    password); each worker process rebuilds it with credentials from its own registry
    (``auth=`` here sends them there with ``Client.run``, outside any task graph, see
    :func:`connect_workers`), or from ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD`` or ``~/.netrc``
    in the worker's environment.

    Parameters
    ----------
    df : pandas.DataFrame
        An index frame (or a selection of one).
    func : callable(xarray.DataArray, pandas.DataFrame) -> dict, pandas.Series or scalar
        A dict or Series gives one column per key; anything else a column ``result``. On a
        cluster it must be picklable (a module-level function, or cloudpickle-able).
    dask_client : distributed.Client, optional
        Run there. Default: Dask's current scheduler when one is active (a
        ``distributed.Client`` set as default, or ``dask.config.set(scheduler=...)``), else the
        series run here one after the other, each downloaded on a few threads
        (:func:`map_series_local`), without building a Dask graph.
    client : OrthancClient or str, optional
        The Orthanc client or URL, as everywhere in orthanc-pandas; default the frame's server.
        (A ``distributed.Client`` given here, as earlier versions took it, is used as
        ``dask_client`` with a ``FutureWarning``.)
    meta : mapping column -> dtype, or pandas.DataFrame, optional
        Columns and dtypes of the result (columns missing from every result are added);
        default: inferred by pandas from the results.
    auth : (str, str), optional
        Credentials to register on the workers of ``dask_client`` first (via ``Client.run``).
    **volume_kwargs
        Passed to :meth:`~orthanc_pandas._accessors.frame.InstanceAccessor.volume` (``rescale``,
        ``allow_irregular``, ``dtype``, ``max_workers``).

    Returns
    -------
    pandas.DataFrame
        One row per series, in the order of ``df``, indexed by series id (``"series"``), with
        func's columns and an ``error`` column: missing when the series succeeded, else
        ``"ExceptionType: message"`` of what failed (downloading, geometry, or ``func``),
        the other columns then missing. A failing series never loses the others' results.

    Examples
    --------
    >>> def stats(vol, rows):
    ...     return {"mean_hu": float(vol.mean()), "slices": vol.sizes["z"]}
    >>> res = df.orthanc.map_series(stats)                               # doctest: +SKIP
    >>> res[res.error.isna()].mean_hu.describe()                         # doctest: +SKIP
    >>> from distributed import Client                                   # doctest: +SKIP
    >>> res = df.orthanc.map_series(stats, dask_client=Client("tcp://scheduler:8786"),
    ...                             auth=("alice", pw))                  # doctest: +SKIP
    """
    if client is not None and not isinstance(client, OrthancClient | str):
        raise TypeError(f"map_series(client=) is the Orthanc client or URL, as everywhere in "
                        f"orthanc-pandas, not a {type(client).__name__}; pass a Dask client as "
                        f"dask_client=.")
    dask = _dask(required=dask_client is not None)
    if dask is None or (dask_client is None and dask.base.get_scheduler() is None):
        return map_series_local(df, func, client=client, meta=meta, **volume_kwargs)
    tasks = series_tasks(df, func, orthanc=client, **volume_kwargs)
    if dask_client is not None and auth is not None:
        connect_workers(dask_client, frame_client(df, client).url, auth=auth)
    if not tasks:
        results = []
    elif dask_client is not None:
        results = dask_client.gather(dask_client.compute(tasks))
    else:
        results = list(dask.compute(*tasks))
    return result_frame(results, meta)
