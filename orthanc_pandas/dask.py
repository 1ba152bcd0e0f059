"""The Orthanc index as a Dask DataFrame, and per-series work in parallel on Dask.

``pip install 'orthanc-pandas[dask]'``. Importing this module registers ``ddf.orthanc`` on
Dask DataFrames (``select``, ``info``, ``url``).

How the Dask index is built
---------------------------
:func:`read_orthanc` reads the three small parent levels (patients, studies, series, with
each series' instance ids) once, on the calling machine, checked against ``/changes`` and
``/statistics`` like :func:`orthanc_pandas.read_orthanc`. From them it knows every column, its
dtype and its categories (the ``meta``, so no partition is computed for the schema), and
cuts the archive into partitions of whole studies in the pandas frame's order. Each partition
then fetches ``GET /studies/{id}/instances`` for its studies (one request per study) and
joins them to its slice of the parent tables with :func:`orthanc_pandas._frame.schema.build_frame`,
the same code as the pandas reader; a second, fused step gives every partition the archive's
dtypes and categories, read once from one shared task.

Why studies and not pages of ``/instances?since=&limit=``: pages of Orthanc's unordered list
cannot be put in the frame's order, hold an unknown set of parents, and shift when the archive
changes. Partitions of whole studies give ``compute()`` the exact row order of the pandas
reader, never split a series (so ``map_partitions`` sees whole series), ship each partition
only its own parent rows, and let each partition check its instances against the snapshot.

Guarantees
----------
* ``ddf.compute()`` equals ``orthanc_pandas.read_orthanc(url)`` read at the same moment: same
  index, rows in the same order, same values, same columns and dtypes (``pd.testing.
  assert_frame_equal`` exact): a column's dtype depends on its tag only (see
  :mod:`orthanc_pandas._frame.schema`), so a tag that no instance has is the same all-missing column
  of its own dtype in both, and the meta needs no instance to know it.
* ``compute()`` gives the archive as it was when the graph was built (change sequence
  ``attrs["orthanc"]["last_change"]``) or raises :class:`~orthanc_pandas.errors.ServerChangedError`:
  each partition compares the instance ids it reads with the ones listed at build time; a
  study deleted or changed since makes the computation fail, naming it. Studies added after
  the build are not in the frame.
* Credentials are never in the task graph: the Orthanc client pickles as its URL and
  settings only, and a worker process rebuilds it with credentials from its own process
  (:func:`connect_workers`, ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD``, or ``~/.netrc``). The
  threaded scheduler uses the caller's client as it is.
* ``df.attrs["orthanc"]`` (provenance, JSON) is carried by every partition, by the computed
  frame and by ``ddf._meta``; :attr:`OrthancDaskAccessor.info` returns it.
"""

from __future__ import annotations

__all__ = ["read_orthanc", "read_mirror", "select", "map_series", "series_tasks", "connect_workers",
           "OrthancDaskAccessor", "DEFAULT_PARTITION_SIZE"]

import copy
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orthanc_pandas._frame.matching import merge_criteria
from orthanc_pandas._frame.schema import (
    INDEX_NAMES,
    LABELS_COLUMN,
    LABELS_SEPARATOR,
    LEVELS,
    MAIN_TAGS,
    PARENT_KEY,
    ROUTES,
    SORT_KEYS,
    STR_DTYPE,
    LevelTable,
    build_frame,
    compact_categorical,
    rank_values,
    tag_vr,
    vector_length,
)
from orthanc_pandas._http.client import OrthancClient, get_client
from orthanc_pandas._ops.labels import label_map
from orthanc_pandas._ops.mirror import (
    HEADER,
    current_version,
    mirror_metadata,
    read_frame,
    read_parts,
)
from orthanc_pandas._ops.read import provenance, read_consistent
from orthanc_pandas._ops.selection import frame_columns
from orthanc_pandas._ops.selection import select as _select
from orthanc_pandas._ops.series_map import connect_workers, map_series, series_tasks
from orthanc_pandas._ops.source import frame_client as _frame_client
from orthanc_pandas._util.warn import warn
from orthanc_pandas.errors import (
    MirrorError,
    OrthancNotFoundError,
    ParseWarning,
    SelectionError,
    ServerChangedError,
)

try:
    import dask
    import dask.dataframe as dd
    from dask.dataframe.extensions import register_dataframe_accessor
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "orthanc_pandas.dask needs Dask: pip install 'orthanc-pandas[dask]' "
        "(dask[dataframe] and distributed)."
    ) from _exc


log = logging.getLogger(__name__)


#: Target instances per partition (whole studies are never split, so some hold more).
DEFAULT_PARTITION_SIZE = 20_000


_STUDY_KEYS = SORT_KEYS[:3]  # PatientID, StudyDate, StudyInstanceUID: the study-level sort keys


# -- reading ---------------------------------------------------------------------------------
@dataclass
class _Part:
    """What one partition reads: its studies, their parent rows and the expected instances."""

    studies: list[str]
    parents: dict[str, dict[str, pa.Array]]
    count: int
    digest: str


def read_orthanc(url: str | OrthancClient, *, auth=None, partition_size: int = DEFAULT_PARTITION_SIZE,
                 typed: bool = True, page_size: int = 5000, max_attempts: int = 3,
                 **client_kwargs) -> dd.DataFrame:
    """The whole Orthanc index as a lazy Dask DataFrame, one row per instance.

    The parent levels are read now (three paged requests); the instances are read when the
    frame is computed, one ``GET /studies/{id}/instances`` per study, in partitions of whole
    studies. See the module docstring for the guarantees.

    Parameters
    ----------
    url : str or OrthancClient
        ``http[s]://host[:port][/prefix]`` or a client.
    auth : (str, str), optional
        Credentials for this process (default: URL, ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD``,
        ``~/.netrc``). They are never put in the task graph: worker processes find their own
        (see :func:`connect_workers`).
    partition_size : int, default 20000
        Target number of instances per partition. Studies are not split: a study larger than
        this is one partition.
    typed : bool, default True
        As in :func:`orthanc_pandas.read_orthanc`.
    page_size : int, default 5000
        Resources per request when reading the parent levels.
    max_attempts : int, default 3
        Reads of the parent levels tried while the archive keeps changing.
    **client_kwargs
        ``verify``, ``timeout``, ... for :class:`~orthanc_pandas._http.client.OrthancClient`.

    Returns
    -------
    dask.dataframe.DataFrame
        Partitions indexed by the ``(patient, study, series, instance)`` MultiIndex, with the
        columns and dtypes of the pandas reader and ``attrs["orthanc"]``. Dask knows no
        divisions for it (a MultiIndex has none): use ``map_partitions`` and column operations.

    Raises
    ------
    ServerChangedError
        Now, if the parent levels kept changing during ``max_attempts`` reads; at compute
        time, if a partition finds its studies changed since the graph was built.

    Examples
    --------
    >>> import orthanc_pandas.dask as opd
    >>> ddf = opd.read_orthanc("http://127.0.0.1:8042", partition_size=50_000)  # doctest: +SKIP
    >>> ddf.groupby("Modality", observed=True).size().compute()                 # doctest: +SKIP
    >>> ct = ddf.orthanc.select(Modality="CT")                                  # doctest: +SKIP
    >>> df = ct.compute()          # a pandas index frame: df.orthanc works       # doctest: +SKIP
    """
    if int(partition_size) < 1:
        raise ValueError(f"partition_size must be a positive number of instances, got {partition_size!r}.")
    client = get_client(url, auth=auth, **client_kwargs)
    system = client.system()

    def read(_stats):
        tables, members = _read_parents(client, page_size)
        counts = {lvl: tables[lvl].n for lvl in LEVELS[:3]}
        counts["instance"] = sum(len(m) for m in members.values())
        return (tables, members), counts

    def build(raw, last_change, counts):
        meta, parts = _plan(*raw, int(partition_size), typed)
        if typed:
            meta = _with_instance_label_categories(meta, raw[0], raw[1], label_map(client))
        meta.attrs["orthanc"] = provenance(client, system, last_change, counts)
        return _collection(client, meta, parts, typed)

    return read_consistent(client, read, build, max_attempts=max_attempts)


def _with_instance_label_categories(meta: pd.DataFrame, tables, members, labels) -> pd.DataFrame:
    """Give ``orthanc_labels`` of the meta the categories that instance labels add.

    The meta is built from the parent levels, so it knows the parents' label sets only; an
    instance with labels of its own gets a union no parent has, which the partitions would
    otherwise turn into a missing value. Labelled instances are few: their unions are
    computed here from the server's label map (one find per level).
    """
    own = (labels or {}).get("instance") or {}
    if not own or LABELS_COLUMN not in meta.columns:
        return meta
    series_of = {i: se for se, ids in members.items() for i in ids if i in own}
    arrays = {lvl: tables[lvl].finish() for lvl in ("series", "study")}
    study_of = dict(zip(arrays["series"]["ID"].to_pylist(),
                        arrays["series"][PARENT_KEY["series"]].to_pylist(), strict=True))
    patient_of = dict(zip(arrays["study"]["ID"].to_pylist(),
                          arrays["study"][PARENT_KEY["study"]].to_pylist(), strict=True))
    unions = set()
    for iid, mine in own.items():
        se = series_of.get(iid)
        st = study_of.get(se)
        found = set(mine)
        for level, rid in (("series", se), ("study", st), ("patient", patient_of.get(st))):
            found.update((labels.get(level) or {}).get(rid) or ())
        unions.add(LABELS_SEPARATOR.join(sorted(found)))
    dtype = meta[LABELS_COLUMN].dtype
    known = list(dtype.categories) if isinstance(dtype, pd.CategoricalDtype) else []
    # "" is the placeholder category of a column without values (index.categorical)
    cats = pd.Index(sorted((set(known) | unions) - {""}), dtype=STR_DTYPE)
    out = meta.copy()
    out[LABELS_COLUMN] = pd.Categorical([], categories=cats)
    return out


def _read_parents(client: OrthancClient, page_size: int):
    tables = {}
    members: dict[str, list[str]] = {}
    for level in ("series", "study", "patient"):  # children first, as the pandas reader does
        table = LevelTable(level)
        for page in client.iter_pages(ROUTES[level], page_size=page_size):
            if level == "series":
                for r in page:
                    members[r["ID"]] = list(r.get("Instances") or ())
            table.add_page(page)
        tables[level] = table
    return tables, members


def _dummy_value(kw: str) -> str:
    """A valid value of a tag's VR: builds the meta with each instance column's own dtype."""
    vr = tag_vr(kw)
    width = vector_length(kw)
    if width:
        return "\\".join(["1"] * width)
    return {"DA": "20000101", "TM": "000000", "DT": "20000101000000", "UI": "1.2"}.get(
        vr, "1" if vr in ("IS", "DS", "US", "UL", "SS", "SL", "FL", "FD") else "x")


def _plan(tables: dict[str, LevelTable], members: dict[str, list[str]], partition_size: int,
          typed: bool) -> tuple[pd.DataFrame, list[_Part]]:
    """The meta frame and the partitions, from the parent levels alone."""
    arrays = {lvl: tables[lvl].finish() for lvl in LEVELS[:3]}
    series_ids = arrays["series"]["ID"].to_pylist()
    if not any(members.values()):
        # no instance at all: the pandas reader's frame exactly (instance columns null)
        empty = {**arrays, "instance": LevelTable("instance").finish()}
        meta = build_frame(empty, typed=typed)
        return meta.iloc[:0], [_Part([], {lvl: _take(arrays[lvl], []) for lvl in LEVELS[:3]}, 0, _digest([]))]
    # One stand-in instance per series with a valid value for every instance tag: build_frame
    # then gives every column its dtype (and the parents' categories), and sorts the series in
    # the order the pandas reader puts their instances.
    tags = {kw: _dummy_value(kw) for kw in MAIN_TAGS["instance"]}
    dummies = [{"ID": sid, "ParentSeries": sid, "MainDicomTags": tags, "FileSize": 1,
                "IndexInSeries": 1} for sid in series_ids]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)  # the partitions warn for their rows
        frame = build_frame({**arrays, "instance": LevelTable.from_resources("instance", dummies)},
                            typed=typed)
    meta = _empty_like(frame)
    # Rows of the pandas frame are sorted by PatientID, StudyDate, StudyInstanceUID first:
    # studies tied on those keys must share a partition, then cutting between the others
    # keeps the global order.
    ranks = np.column_stack([rank_values(frame[k]) for k in _STUDY_KEYS if k in frame.columns]
                            or [np.zeros(len(frame), np.int64)])
    new_unit = np.ones(len(frame), dtype=bool)
    new_unit[1:] = (ranks[1:] != ranks[:-1]).any(axis=1)
    study_of_row = frame.index.get_level_values("study").to_numpy()
    series_of_row = frame.index.get_level_values("series").to_numpy()
    units: list[tuple[list[str], int]] = []
    for i in range(len(frame)):
        if new_unit[i]:
            units.append(([], 0))
        studies, n = units[-1]
        if study_of_row[i] not in studies:
            studies.append(study_of_row[i])
        units[-1] = (studies, n + len(members.get(series_of_row[i], ())))
    study_series: dict[str, list[str]] = {}
    for st, se in zip(study_of_row, series_of_row, strict=True):
        study_series.setdefault(st, []).append(se)
    parts: list[_Part] = []
    cur: list[str] = []
    size = 0
    for studies, n in units:
        if n == 0:
            continue
        if cur and size + n > partition_size:
            parts.append(_make_part(cur, arrays, study_series, members))
            cur, size = [], 0
        cur.extend(studies)
        size += n
    if cur:
        parts.append(_make_part(cur, arrays, study_series, members))
    return meta, parts


def _empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    meta = frame.iloc[:0].copy()
    meta.index = pd.MultiIndex.from_arrays(
        [pd.Index([], dtype=lvl.dtype) for lvl in frame.index.levels], names=INDEX_NAMES)
    return meta


def _take(arrays: dict[str, pa.Array], idx) -> dict[str, pa.Array]:
    ix = pa.array(np.asarray(idx, dtype=np.int64))
    return {k: v.take(ix) for k, v in arrays.items()}


def _digest(ids) -> str:
    return hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()


def _make_part(studies: list[str], arrays, study_series, members) -> _Part:
    series = [se for st in studies for se in study_series[st]]
    series_pos = pd.Index(arrays["series"]["ID"].to_pylist()).get_indexer(series)
    study_pos = pd.Index(arrays["study"]["ID"].to_pylist()).get_indexer(studies)
    patients = list(dict.fromkeys(arrays["study"][PARENT_KEY["study"]].take(pa.array(study_pos)).to_pylist()))
    patient_pos = pd.Index(arrays["patient"]["ID"].to_pylist()).get_indexer(patients)
    parents = {"patient": _take(arrays["patient"], patient_pos),
               "study": _take(arrays["study"], study_pos),
               "series": _take(arrays["series"], series_pos)}
    ids = [i for se in series for i in members.get(se, ())]
    return _Part(list(studies), parents, len(ids), _digest(ids))


def _read_partition(part: _Part, client: OrthancClient, typed: bool, last_change: int) -> pd.DataFrame:
    """One partition: the instances of its studies joined to its parent rows (pure after I/O)."""
    resources: list[dict] = []
    for study in part.studies:
        try:
            resources.extend(client.get_json(f"/studies/{study}/instances"))
        except OrthancNotFoundError:
            raise ServerChangedError(
                f"Study {study} was deleted from {client.url} after the Dask graph was built (at "
                f"change {last_change}); build it again with orthanc_pandas.dask.read_orthanc."
            ) from None
    ids = [r["ID"] for r in resources]
    if len(ids) != part.count or _digest(ids) != part.digest:
        raise ServerChangedError(
            f"The instances of studies {', '.join(s[:8] for s in part.studies[:5])}"
            f"{'...' if len(part.studies) > 5 else ''} on {client.url} changed after the Dask graph "
            f"was built at change {last_change} ({part.count} then, {len(ids)} now); build it "
            "again with orthanc_pandas.dask.read_orthanc."
        )
    tables = {**part.parents, "instance": LevelTable.from_resources("instance", resources)}
    return build_frame(tables, typed=typed)


# -- a mirror --------------------------------------------------------------------------------
def read_mirror(path) -> dd.DataFrame:
    """The instance mirror of :func:`orthanc_pandas.mirror` as a Dask DataFrame.

    The way to use Dask on a live archive: ``op.mirror(url, path)`` brings the mirror level
    with the server (following the change log, at the cost of what changed), and this reads
    it, one partition per part. Parts never split a study, so each partition is a pandas
    index frame of whole series (MultiIndex, the archive's dtypes and categories, attrs), and
    ``compute()`` equals the frame ``op.mirror`` returned: the archive at the mirror's change
    sequence. Unlike :func:`read_orthanc`, nothing here asks the server anything, so
    instances stored or deleted meanwhile cannot make ``compute()`` fail. The graph reads the
    version of the mirror it was made on; ``op.mirror`` keeps the previous version when it
    writes a new one, so a graph made before one update still computes; one made before two
    refuses (``MirrorError``: read it again).

    Parameters
    ----------
    path : str or os.PathLike
        A mirror written by ``op.mirror(url, path)`` (``level="instance"``).

    Returns
    -------
    dask.dataframe.DataFrame

    Examples
    --------
    >>> import orthanc_pandas as op, orthanc_pandas.dask as opd
    >>> op.mirror("http://127.0.0.1:8042", "pacs.parquet")              # doctest: +SKIP
    >>> ddf = opd.read_mirror("pacs.parquet")                           # doctest: +SKIP
    >>> ddf.groupby("Modality", observed=True).size().compute()         # doctest: +SKIP
    """
    path = os.fspath(path)
    info = mirror_metadata(path)
    if info.get("level") != "instance":
        raise MirrorError(
            f"{path} is a {info.get('level')} mirror; read_mirror reads instance mirrors. A "
            "level frame is small: pd.read_parquet(path) reads it whole.")
    version = current_version(path)
    if version is None:  # a mirror file of an earlier orthanc-pandas
        raise MirrorError(
            f"{path} is a mirror file of an earlier orthanc-pandas (one file, not parts); "
            "op.mirror(url, path) rewrites it as parts, then read_mirror reads it.")
    version = os.path.realpath(version)
    # the meta: no row, the archive's categories (each part holds those of its own rows)
    categorical = [f.name for f in pq.read_schema(os.path.join(version, HEADER))
                   if pa.types.is_dictionary(f.type)]
    files = [os.path.join(version, p["file"]) for p in info.get("parts") or []]
    meta = read_frame(version).iloc[:0] if not files else _mirror_meta(version, files, categorical)
    parts = [(f, meta.index) for f in files] or [(os.path.join(version, HEADER), meta.index)]
    # the frame's own string dtypes, not Dask's string[pyarrow] (as read_orthanc does)
    with warnings.catch_warnings(), dask.config.set({"dataframe.convert-string": False}):
        warnings.simplefilter("ignore")  # dask cannot know divisions of a MultiIndex
        raw = dd.from_map(_mirror_part_of, parts, meta=meta, label="orthanc-mirror",
                          enforce_metadata=False)
        schema = dask.delayed(meta, pure=True, name=f"orthanc-mirror-schema-{dask.base.tokenize(meta)}")
        return raw.map_partitions(_conform, schema, meta=meta, align_dataframes=False)


def _mirror_meta(version: str, files: list[str], categorical: list[str]) -> pd.DataFrame:
    """The empty frame of a mirror version with the categories of all its parts (read from
    the categorical columns alone, sorted as the mirror's loader sorts them)."""
    like = pd.read_parquet(files[0]).iloc[:0]  # the meta as pandas reads a part (its dtypes)
    if categorical:
        values = read_parts(version, columns=categorical).to_pandas()
        for c in categorical:
            if c in like.columns:
                like[c] = like[c].astype(pd.CategoricalDtype(
                    compact_categorical(values[c].array).categories))
    raw = (pq.read_schema(os.path.join(version, HEADER)).metadata or {}).get(b"PANDAS_ATTRS")
    like.attrs = json.loads(raw) if raw else {}
    return like


def _mirror_part_of(part) -> pd.DataFrame:
    return _mirror_part(*part)


def _mirror_part(file: str, like: pd.MultiIndex) -> pd.DataFrame:
    """One part of a mirror version as a pandas index frame (pandas metadata: index, dtypes;
    index level dtypes as ``like``'s; columns conformed later); refused when that version
    is gone (two updates since the graph was made)."""
    try:
        table = pq.read_table(file)
    except FileNotFoundError:
        raise MirrorError(
            f"{os.path.dirname(file)} is gone: op.mirror updated the mirror twice after this "
            "Dask frame was made; call orthanc_pandas.dask.read_mirror(path) again.") from None
    out = table.to_pandas()
    out.index = pd.MultiIndex.from_arrays(
        [out.index.get_level_values(k).astype(like.levels[k].dtype) for k in range(like.nlevels)],
        names=like.names)
    return out


def _conform(part: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Give a partition the archive's columns, dtypes, categories and attrs (those of meta)."""
    extra = [c for c in part.columns if c not in meta.columns]
    if extra:
        warn(
            f"Columns {extra} appear in some instances but not in the Dask frame's schema (taken "
            "from the parent levels when the graph was built) and were dropped; read with "
            "orthanc_pandas.read_orthanc to keep them.", ParseWarning)
    n = len(part)
    cols = {}
    for name, want in meta.dtypes.items():
        if name not in part.columns:
            cols[name] = meta[name].array.take(np.full(n, -1), allow_fill=True)
            continue
        col = part[name]
        if col.dtype == want and not isinstance(want, pd.CategoricalDtype):
            cols[name] = col.array
        elif isinstance(want, pd.CategoricalDtype):
            if isinstance(col.dtype, pd.CategoricalDtype):
                cols[name] = col.cat.set_categories(want.categories).array
            else:
                cols[name] = pd.Categorical(col.astype(object).where(col.notna(), None), dtype=want)
        elif col.isna().all():
            cols[name] = meta[name].array.take(np.full(n, -1), allow_fill=True)
        else:
            cols[name] = col.astype(want).array
    index = part.index.remove_unused_levels() if isinstance(part.index, pd.MultiIndex) else part.index
    out = pd.DataFrame(cols, index=index, copy=False) if cols else pd.DataFrame(index=index)
    out.attrs = copy.deepcopy(meta.attrs)
    return out


def _collection(client: OrthancClient, meta: pd.DataFrame, parts: list[_Part], typed: bool) -> dd.DataFrame:
    last = meta.attrs["orthanc"]["last_change"]
    # Dask would turn the index levels into string[pyarrow] (NA-valued); the pandas reader's
    # levels are pandas' default str dtype, which is what parquet gives back too.
    with dask.config.set({"dataframe.convert-string": False}):
        raw = dd.from_map(_read_partition, parts, args=(client, typed, last), meta=meta,
                          label="orthanc-index", enforce_metadata=False)
    # The meta, with the archive's categories, is one shared task: every partition depends on
    # it instead of carrying a copy (a from_map argument would be copied into every task).
    schema = dask.delayed(meta, pure=True, name=f"orthanc-schema-{dask.base.tokenize(meta)}")
    return raw.map_partitions(_conform, schema, meta=meta, align_dataframes=False)


# -- credentials on workers ------------------------------------------------------------------
# -- selection on Dask frames ----------------------------------------------------------------
def _select_partition(part: pd.DataFrame, criteria: dict, case_sensitive: bool) -> pd.DataFrame:
    return _select(part, criteria, lambda: _frame_client(part), case_sensitive=case_sensitive)


def select(ddf: dd.DataFrame, criteria: Mapping | None = None, /, *, case_sensitive: bool = False,
           **criteria_kwargs) -> dd.DataFrame:
    """The rows matching every criterion, lazily, partition by partition.

    The criteria are those of :meth:`orthanc_pandas._accessors.frame.InstanceAccessor.select` on
    columns of the frame (main tags and ``orthanc_*`` columns); a tag that is not a column
    would need a request per series in every partition and is refused: add it first with
    ``ddf.map_partitions(lambda p: p.orthanc.with_tags(...))``. The result records the
    criteria in ``attrs["orthanc"]["criteria"]`` like the pandas method.

    Examples
    --------
    >>> ct = select(ddf, Modality="CT", StudyDate="20200101-20201231")   # doctest: +SKIP
    >>> ct = ddf.orthanc.select(Modality="CT")                           # the same  # doctest: +SKIP
    >>> ct.compute().equals(df.orthanc.select(Modality="CT"))            # doctest: +SKIP
    True
    """

    criteria = merge_criteria(criteria, criteria_kwargs)
    meta = ddf._meta
    for key in criteria:
        if frame_columns(meta, key)[2] is not None:
            raise SelectionError(
                f"{key!r} is not a column of this Dask frame; select() on Dask matches columns "
                "only. Add it first: ddf.map_partitions(lambda p: p.orthanc.with_tags("
                f"{key!r}), meta=...), or select on the pandas frame."
            )
    new_meta = _select_partition(meta, criteria, case_sensitive)
    return ddf.map_partitions(_select_partition, criteria, case_sensitive, meta=new_meta,
                              align_dataframes=False)


@register_dataframe_accessor("orthanc")
class OrthancDaskAccessor:
    """``ddf.orthanc`` on Dask index frames made by :func:`read_orthanc` (lazy, thin).

    Examples
    --------
    >>> ddf = orthanc_pandas.dask.read_orthanc(url)                       # doctest: +SKIP
    >>> ddf.orthanc.info["last_change"]                                  # doctest: +SKIP
    >>> ddf.orthanc.select(Modality="MR").compute()                      # doctest: +SKIP
    """

    def __init__(self, ddf):
        meta = ddf._meta
        if not (isinstance(meta.index, pd.MultiIndex) and list(meta.index.names) == INDEX_NAMES):
            raise AttributeError(
                "ddf.orthanc works on Dask frames made by orthanc_pandas.dask.read_orthanc "
                f"(partitions indexed by {INDEX_NAMES})."
            )
        self._ddf = ddf

    @property
    def info(self) -> dict:
        """The provenance ``attrs["orthanc"]`` every partition carries (URL, version, ...)."""
        return copy.deepcopy(dict(self._ddf._meta.attrs.get("orthanc") or {}))

    @property
    def url(self) -> str:
        """The URL of the server the rows come from."""
        return str(self.info["url"])

    def select(self, criteria: Mapping | None = None, /, *, case_sensitive: bool = False,
               **criteria_kwargs) -> dd.DataFrame:
        """Lazy :func:`select`: the matching rows, partition by partition.

        Examples
        --------
        >>> ddf.orthanc.select(Modality=["CT", "MR"]).compute()           # doctest: +SKIP
        >>> ddf.orthanc.select({"0008,0060": "MR"}).compute()             # doctest: +SKIP
        """
        return select(self._ddf, criteria, case_sensitive=case_sensitive, **criteria_kwargs)


# -- one task per series -----------------------------------------------------------------------
