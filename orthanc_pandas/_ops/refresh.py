"""``df.orthanc.refresh()``: bring a frame up to date from the changes since it was read.

The cost grows with the changes, not with the archive:

1. ``GET /changes?since=<attrs last_change>`` names the resources created or re-stored since
   (a re-upload with ``OverwriteInstances`` logs a new ``NewInstance`` for the same id).
2. ``GET /instances`` (ids only) finds deletions, which Orthanc does not log.
3. Every *affected series* (one that gained, lost or re-stored an instance, or was created) is
   fetched again whole: ``/series/{id}``, ``/series/{id}/instances`` and its study and patient.
   Its rows are rebuilt with the same code as :func:`~orthanc_pandas.read_orthanc`
   (:class:`~orthanc_pandas._frame.schema.LevelTable` and :func:`~orthanc_pandas._frame.schema.build_frame`);
   rows of other series are kept as they are. A parent's tags only change when it is
   re-created, which in Orthanc means all its old instances were deleted first, so keeping the
   untouched series is exact.
4. Labels (Orthanc >= 1.12) are set and removed without any ``/changes`` entry, so
   ``orthanc_labels`` is derived anew for every row on each refresh: ``GET /tools/labels``,
   then per level one ``POST /tools/find`` for the resources carrying any of them (paged on
   servers with extended find; see :func:`~orthanc_pandas._ops.labels.label_map`). The cost grows
   with the labelled resources, not with the archive.
5. The recorded ``select`` criteria are replayed, so the result is what a fresh
   ``read_orthanc`` followed by the same selects gives. A selection keeps the categories of
   the whole archive (as ``df[mask]`` does), so for one the series, study and patient lists
   are read too (:func:`archive_categories`: cost grows with the series, not the instances).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import union_categoricals

from orthanc_pandas._frame import schema as _index
from orthanc_pandas._frame.level_read import (
    SERIES_COUNT_TAG,
    SERIES_FIND_CONTENT,
    frame_from_levels,
    series_resource,
)
from orthanc_pandas._frame.matching import decode_criteria
from orthanc_pandas._frame.merge import (
    all_missing,
    is_null_dtype,
    merge_sorted,
    na_like,
    removed_rows,
    sort_levels,
)
from orthanc_pandas._frame.schema import (
    LEVELS,
    ROUTES,
    STR_DTYPE,
    TEXT_DTYPE,
    LevelTable,
    build_frame,
    sort_frame,
)
from orthanc_pandas._http.changes import is_content_change
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._ops.labels import archive_label_sets, label_map, labels_from_map
from orthanc_pandas._ops.provenance import STAT_KEYS, check_format
from orthanc_pandas._ops.read_levels import (
    PARENT_FIND_CONTENT,
    LevelReader,
    fill_statuses,
    find_instance_content,
)
from orthanc_pandas._ops.selection import select
from orthanc_pandas._util.fanout import fan_out, worker_count
from orthanc_pandas._util.warn import warn
from orthanc_pandas.errors import (
    ChangeLogGapError,
    OrthancNotFoundError,
    OrthancPandasError,
    RefreshWarning,
    ServerChangedError,
    ServerMismatchError,
)


def changed_resources(changes: Iterable[dict]) -> dict[str, set[str]]:
    """Group ``/changes`` entries by resource type (pure).

    Neutral entries (stability, metadata, DICOMweb's series cache, jobs: see
    :mod:`orthanc_pandas._http.changes`) are ignored: they change nothing in the frame.

    Examples
    --------
    >>> changed_resources([{"ChangeType": "NewInstance", "ResourceType": "Instance", "ID": "a"},
    ...                    {"ChangeType": "StableSeries", "ResourceType": "Series", "ID": "s"}])
    {'patient': set(), 'study': set(), 'series': set(), 'instance': {'a'}}
    """
    out: dict[str, set[str]] = {lvl: set() for lvl in LEVELS}
    kinds = {"Patient": "patient", "Study": "study", "Series": "series", "Instance": "instance"}
    for c in changes:
        level = kinds.get(c.get("ResourceType"))
        if level is None or not is_content_change(c):
            continue
        out[level].add(c["ID"])
    return out


def _is_typed(df: pd.DataFrame) -> bool:
    if "StudyDate" in df.columns:
        return not isinstance(df["StudyDate"].dtype, pd.StringDtype)
    return True


def _get_or_none(client: OrthancClient, path: str):
    try:
        return client.get_json(path)
    except OrthancNotFoundError:
        return None  # deleted meanwhile


def _pmap(fn, items, workers: int = 4) -> list:
    return fan_out(fn, list(items), workers, name="orthanc-refresh")


class FrameRows:
    """Which series a frame's instances are in, asked by id without a Python object per row.

    A frame of 1,000,000 instances made ``{instance: series}`` in ~0.6 s on every refresh;
    here each question costs one Arrow hash of the ids asked and a scan of integer codes.

    Parameters
    ----------
    index : pandas.MultiIndex
        The frame's index (levels patient, study, series, instance).

    Examples
    --------
    >>> idx = pd.MultiIndex.from_arrays([["p", "p", "p"], ["t", "t", "t"], ["a", "a", "b"],
    ...                                  ["1", "2", "3"]], names=list(LEVELS))
    >>> rows = FrameRows(idx)
    >>> rows.series_of(["3", "9"]), rows.count_outside({"a"}), rows.per_series()
    ({'3': 'b'}, 1, {'a': 2, 'b': 1})
    """

    def __init__(self, index: pd.MultiIndex):
        self.index = index
        self._n = len(index)

    def _level(self, name: str) -> tuple[pd.Index, np.ndarray]:
        k = self.index.names.index(name)
        return self.index.levels[k], np.asarray(self.index.codes[k])

    @staticmethod
    def _positions(level: pd.Index, ids) -> np.ndarray:
        """Positions in ``level`` of the values in ``ids`` (those absent left out)."""
        ids = [str(i) for i in ids]
        if not ids or not len(level):
            return np.empty(0, dtype=np.int64)
        found = pc.is_in(pa.array(level.astype(STR_DTYPE).array), value_set=pa.array(ids, pa.string()))
        return np.flatnonzero(found.to_numpy(zero_copy_only=False))

    def series_of(self, instance_ids) -> dict[str, str]:
        """``{instance id: series id}`` for the ids the frame holds."""
        level, codes = self._level("instance")
        hit = self._positions(level, instance_ids)
        if not len(hit):
            return {}
        rows = np.flatnonzero(np.isin(codes, hit))
        series_level, series_codes = self._level("series")
        return dict(zip(level[codes[rows]].tolist(), series_level[series_codes[rows]].tolist(),
                        strict=True))

    def count_outside(self, series_ids) -> int:
        """Rows whose series is not one of ``series_ids``."""
        level, codes = self._level("series")
        return int(self._n - np.isin(codes, self._positions(level, series_ids)).sum())

    def per_series(self) -> dict[str, int]:
        """Instances per series id."""
        level, codes = self._level("series")
        counts = np.bincount(codes[codes >= 0], minlength=len(level))
        return {s: int(c) for s, c in zip(level.tolist(), counts.tolist(), strict=True) if c}

    def study_of_series(self, series_ids) -> dict[str, str]:
        """``{series id: study id}`` for the series the frame holds."""
        level, codes = self._level("series")
        hit = self._positions(level, series_ids)
        if not len(hit):
            return {}
        first = np.full(len(level), -1, dtype=np.int64)
        rows = np.flatnonzero(np.isin(codes, hit))
        first[codes[rows[::-1]]] = rows[::-1]  # a row of each series
        study_level, study_codes = self._level("study")
        return {level[c]: study_level[study_codes[first[c]]] for c in hit.tolist()}

    def instance_ids(self) -> set[str]:
        """Every instance id (one Python object per row: for the id-list comparison only)."""
        level, codes = self._level("instance")
        return set(level[np.unique(codes[codes >= 0])].tolist())


def _series_under(client: OrthancClient, level: str, rid: str) -> dict[str, str]:
    """The series under a study or patient now, as ``{series id: study id}`` (empty if it is
    gone). Extended find asks for ids and parents only (1.13 at 1M instances: 0.05 s, where
    ``GET /patients/{id}/series`` expands each series with its status: 0.95 s)."""
    if client.capabilities().extended_find:
        key = {"study": "ParentStudy", "patient": "ParentPatient"}[level]
        found = client.post_json("/tools/find", {"Level": "Series", "Query": {}, key: rid,
                                                 "ResponseContent": ["Parent"]})
        return {r["ID"]: r["ParentStudy"] for r in found}
    return {s["ID"]: s["ParentStudy"]
            for s in _get_or_none(client, f"/{ROUTES[level]}/{rid}/series") or []}


#: series per request from which the instances of the series to read again are asked in one
#: find by their UIDs rather than one find per series (1.13, 1M instances, SQLite index as
#: Orthanc leaves it: a find by ParentSeries 0.25-0.35 s, one by a list of 20 UIDs 0.8 s; with
#: ``ANALYZE`` statistics 0.004 s and 0.1 s)
_BY_UID_FROM = 3
#: values per list-matching find (UIDs, PatientIDs)
_UIDS_PER_FIND = 200


def _listable(value) -> bool:
    """Whether ``value`` can be one item of a list-matching find: not empty (universal
    matching), no wildcard and no backslash (the list separator).

    Examples
    --------
    >>> [_listable(v) for v in ["1.2.3", "", "PAT*", "A\\B", None]]
    [True, False, False, False, False]
    """
    return bool(value) and not set(str(value)) & set("*?\\")


#: the identifier of each parent level, asked with the series (``RequestedTags``) so that the
#: studies and patients are found by list matching
_PARENT_KEYS = {"study": "StudyInstanceUID", "patient": "PatientID"}


def _value_lists(values) -> list[str]:
    """``values`` (each :func:`_listable`) as list-matching queries (``a\\b\\c``), sorted and
    unique, :data:`_UIDS_PER_FIND` per query."""
    values = sorted({str(v) for v in values})
    return ["\\".join(values[k:k + _UIDS_PER_FIND]) for k in range(0, len(values), _UIDS_PER_FIND)]


def _find_by_values(client: OrthancClient, level: str, tag: str, values, content: list[str],
                    workers: int, **body) -> list[dict]:
    """The resources of ``level`` whose ``tag`` is one of ``values`` (each :func:`_listable`),
    by list matching (:func:`_value_lists`). Orthanc answers these through its identifier
    index: the cost grows with the values asked, not with the archive."""
    pages = _pmap(lambda query: client.post_json("/tools/find", {
        "Level": level, "Query": {tag: query}, "ResponseContent": content, **body}),
        _value_lists(values), workers)
    return [r for page in pages for r in page]


def _fetch_series_find(client: OrthancClient, series_ids: set[str], typed: bool,
                       study_of: dict[str, str]) -> pd.DataFrame | None:
    """:func:`fetch_series` on a server with extended find: a few finds whatever the number of
    series, each answered through an index of the server. Never the per-series GETs, whose
    series status 1.13 computes by reading the metadata of every instance of the archive
    (0.8 s per ``GET /series/{id}`` at 1M instances), nor ``GET /studies/{id}`` and
    ``GET /patients/{id}`` (0.09 s each there), nor an instance count asked per study
    (0.07 s per find there, whatever it names).

    The series rows are found by their study; their instance counts by one find by their
    UIDs; their instances by ``ParentSeries`` for one or two series, else by their UIDs
    (another patient's series may reuse a UID: rows are kept by ``ParentSeries``, and the
    page total counts that series too); their studies and patients by StudyInstanceUID and
    PatientID lists (ids the lists miss are asked one by one).
    """
    workers = worker_count(None, pool_size=client.pool_size)
    wanted = set(series_ids)
    missing = sorted(s for s in wanted if s not in study_of)
    found = _pmap(lambda s: (s, (_get_or_none(client, f"/series/{s}/study") or {}).get("ID")),
                  missing, workers)
    study_of = {**{s: st for s, st in study_of.items() if s in wanted},
                **{s: st for s, st in found if st}}
    labels = ["Labels"] if client.capabilities().labels else []
    pages = _pmap(lambda st: [r for page in client.iter_find(
        "Series", SERIES_FIND_CONTENT + labels, total=10 ** 12, ParentStudy=st,
        RequestedTags=list(_PARENT_KEYS.values())) for r in page],
        sorted(set(study_of.values())), workers)
    hits = [r for page in pages for r in page if r["ID"] in wanted]
    if not hits:
        return None
    uid_of = {r["ID"]: (r.get("MainDicomTags") or {}).get("SeriesInstanceUID", "") for r in hits}
    # every series with these UIDs, another study's that reuses one included: its count too
    same_uid = _find_by_values(client, "Series", "SeriesInstanceUID",
                               [u for u in uid_of.values() if _listable(u)], ["MainDicomTags"],
                               workers, RequestedTags=[SERIES_COUNT_TAG])
    count: dict[str, int] = {}
    per_uid: dict[str, int] = {}
    for r in same_uid:
        count[r["ID"]] = n = int(r["RequestedTags"][SERIES_COUNT_TAG])
        uid = (r.get("MainDicomTags") or {}).get("SeriesInstanceUID", "")
        per_uid[uid] = per_uid.get(uid, 0) + n
    series, parents = [], {}
    for r in hits:
        tags = r.get("RequestedTags") or {}
        parents[r["ID"]] = {level: tags.get(key, "") for level, key in _PARENT_KEYS.items()}
        tags = {**tags, SERIES_COUNT_TAG: count.get(r["ID"], 10 ** 12)}
        series.append(series_resource({**r, "RequestedTags": tags})[0])
    fill_statuses(client, series)
    content = find_instance_content(client)
    ids = [row["ID"] for row in series]
    one_by_one = [s for s in ids if len(ids) < _BY_UID_FROM or s not in count]
    lists = _pmap(lambda sid: [r for page in client.iter_find(
        "Instance", content, total=count.get(sid, 10 ** 12), ParentSeries=sid) for r in page],
        one_by_one, workers)
    by_uid = set(ids) - set(one_by_one)
    lists += _pmap(lambda query: [r for page in client.iter_find(
        "Instance", content, total=sum(per_uid.get(u, 0) for u in query.split("\\")),
        Query={"SeriesInstanceUID": query}) for r in page],
        _value_lists(uid_of[s] for s in by_uid), workers)
    return _with_parents(client, series, [i for lst in lists for i in lst], typed, workers,
                         parents=parents)


def _parents_by_find(client: OrthancClient, level: str, ids: set[str], keys, workers: int) -> list[dict]:
    """The resources ``ids`` of ``level`` (study or patient) as extended find gives them
    (:data:`PARENT_FIND_CONTENT`), found by the identifiers ``keys``; those the lists do not
    bring (an identifier that cannot be listed, a normalised value) by ``GET``."""
    tag = _PARENT_KEYS[level]
    listed = [k for k in keys if _listable(k)]
    got = [r for r in _find_by_values(client, level.capitalize(), tag, listed,
                                      PARENT_FIND_CONTENT[level], workers) if r["ID"] in ids]
    rest = sorted(ids - {r["ID"] for r in got})
    return got + [r for r in _pmap(lambda i: _get_or_none(client, f"/{ROUTES[level]}/{i}"),
                                   rest, workers) if r]


def _with_parents(client: OrthancClient, series: list[dict], instances: list[dict], typed: bool,
                  workers: int, parents: dict[str, dict] | None = None) -> pd.DataFrame:
    """The rows of ``series`` (expanded resources) and their ``instances``, with their studies
    and patients read now; series whose study is gone meanwhile, and instances of other
    series (a find by UID may name another study's), are left out. ``parents`` (series id ->
    ``{"study": StudyInstanceUID, "patient": PatientID}``, extended find only) finds the
    studies and patients by list matching instead of one GET each."""
    study_ids = {row["ParentStudy"] for row in series}
    if parents is not None:
        studies = _parents_by_find(client, "study", study_ids,
                                   {p["study"] for p in parents.values()}, workers)
        patients = _parents_by_find(client, "patient", {st["ParentPatient"] for st in studies},
                                    {p["patient"] for p in parents.values()}, workers)
    else:
        studies = [st for st in _pmap(lambda st: _get_or_none(client, f"/studies/{st}"),
                                      sorted(study_ids), workers) if st]
        patients = [p for p in _pmap(lambda p: _get_or_none(client, f"/patients/{p}"),
                                     sorted({st["ParentPatient"] for st in studies}), workers) if p]
    study_ids = {st["ID"] for st in studies}
    series = [row for row in series if row["ParentStudy"] in study_ids]
    keep = {row["ID"] for row in series}
    tables = {
        "patient": LevelTable.from_resources("patient", patients),
        "study": LevelTable.from_resources("study", studies),
        "series": LevelTable.from_resources("series", series),
        "instance": LevelTable.from_resources(
            "instance", [i for i in instances if i.get("ParentSeries") in keep]),
    }
    return build_frame(tables, typed=typed, sort=False)


def fetch_series(client: OrthancClient, series_ids: set[str], typed: bool,
                 study_of: dict[str, str] | None = None) -> pd.DataFrame | None:
    """The rows of whole series, built the way read_orthanc builds them.

    ``study_of`` (series id -> study id, for series the frame already holds) spares a
    request per series on servers with extended find.
    """
    if client.capabilities().extended_find:
        return _fetch_series_find(client, set(series_ids), typed, dict(study_of or {}))
    workers = worker_count(None, pool_size=client.pool_size)
    series = [s for s in _pmap(lambda s: _get_or_none(client, f"/series/{s}"), sorted(series_ids),
                               workers) if s]
    if not series:
        return None
    inst_lists = _pmap(lambda s: _get_or_none(client, f"/series/{s['ID']}/instances") or [],
                       series, workers)
    return _with_parents(client, series, [i for lst in inst_lists for i in lst], typed, workers)


def _as_categorical(arr, n: int) -> pd.Categorical:
    if arr is None or is_null_dtype(arr.dtype):
        return pd.Categorical.from_codes(np.full(n, -1, np.int8),
                                         categories=pd.Index([], dtype=STR_DTYPE))
    if isinstance(arr.dtype, pd.CategoricalDtype):
        return arr
    values = pd.Index(pd.array(arr, dtype=TEXT_DTYPE).dropna().unique().to_numpy(dtype=object),
                      dtype=STR_DTYPE)
    return pd.Categorical(np.asarray(arr.astype(object)), categories=values)


def _combine(parts: list[pd.DataFrame], typed: bool = True) -> pd.DataFrame:
    """Stack frames made at different times into what one build_frame call would give.

    Categorical columns get the categories a fresh read would give them (the values present,
    sorted); a column left with no value at all gets the all-missing form build_frame gives.
    """
    parts = [p for p in parts if p is not None]
    columns: list[str] = []
    for p in parts:
        columns.extend(c for c in p.columns if c not in columns)
    index = parts[0].index
    for p in parts[1:]:
        index = index.append(p.index)
    n = len(index)
    # column arrays without their MultiIndex: Series over a RangeIndex are cheap to take
    flat = []
    for p in parts:
        q = p.reset_index(drop=True)
        flat.append({c: q[c].array for c in q.columns})
    data = {}
    for c in columns:
        pieces = [f.get(c) for f in flat]
        real = [a for a in pieces if a is not None and not is_null_dtype(a.dtype)]
        if not real or all(bool(a.isna().all()) for a in real):
            data[c] = all_missing(n, real)
        elif any(isinstance(a.dtype, pd.CategoricalDtype) for a in real):
            cats = [_as_categorical(a, len(p)) for a, p in zip(pieces, parts, strict=True)]
            merged = union_categoricals(cats, sort_categories=True, ignore_order=True)
            data[c] = _index.canonical_categorical(merged.remove_unused_categories())
        else:
            filled = [a if a is not None and not is_null_dtype(a.dtype) else na_like(real[0], len(p))
                      for a, p in zip(pieces, parts, strict=True)]
            data[c] = type(filled[0])._concat_same_type(filled) if len(filled) > 1 else filled[0]
    return pd.DataFrame(data, index=index, columns=columns) if columns else pd.DataFrame(index=index)


def merge_rows(old: pd.DataFrame, new: pd.DataFrame | None, affected_series: Iterable[str],
               deleted: Iterable[str], *, typed: bool = True,
               keep_only_rows: bool = False) -> pd.DataFrame:
    """The refreshed frame from the old one and the rows read again (pure: frames in, frame out).

    Parameters
    ----------
    old : pandas.DataFrame
        The frame being refreshed.
    new : pandas.DataFrame or None
        The rows of ``affected_series`` as they are now (built like ``read_orthanc`` builds
        them), or None when none of them exists any more.
    affected_series : iterable of str
        Series ids whose rows are replaced by those of ``new``.
    deleted : iterable of str
        Instance ids no longer on the server.
    typed : bool, default True
        Whether the frames are typed (``read_orthanc(typed=...)``).
    keep_only_rows : bool, default False
        Keep only instances ``old`` has, in ``old``'s order (a frame cut by plain pandas);
        otherwise rows are in the order ``read_orthanc`` gives.

    Returns
    -------
    pandas.DataFrame
        What one ``build_frame`` of the rows would give: same columns, dtypes, categories.

    Notes
    -----
    The kept rows of a sorted ``old`` are already in order, so only the new rows are sorted
    and put in place (:func:`~orthanc_pandas._frame.merge.merge_sorted`): the cost grows with
    the changed rows, not with the archive. Whatever that cannot do exactly (a frame cut or
    reordered by pandas, ``keep_only_rows``, dtypes that differ) takes the general path,
    :func:`merge_rows_by_sort`, which stacks the rows and sorts them all.

    Examples
    --------
    >>> merge_rows(old, new, {"series-id"}, set())                    # doctest: +SKIP
    """
    if not keep_only_rows and isinstance(old.index, pd.MultiIndex) and \
            list(old.index.names) == list(LEVELS):
        remove = removed_rows(old.index, affected_series, deleted)
        out = merge_sorted(old, new, remove)
        if out is not None:
            return out
    return merge_rows_by_sort(old, new, affected_series, deleted, typed=typed,
                              keep_only_rows=keep_only_rows)


def merge_rows_by_sort(old: pd.DataFrame, new: pd.DataFrame | None, affected_series: Iterable[str],
                       deleted: Iterable[str], *, typed: bool = True,
                       keep_only_rows: bool = False) -> pd.DataFrame:
    """:func:`merge_rows` by stacking the kept and the new rows and sorting them all (any frame;
    the cost grows with the archive). Same parameters and result.

    Examples
    --------
    >>> merge_rows_by_sort(old, new, {"series-id"}, set())            # doctest: +SKIP
    """
    old_ids = old.index.get_level_values("instance")
    affected_rows = old.index.get_level_values("series").isin(list(affected_series))
    gone_rows = old_ids.isin(list(deleted))
    kept = old[~affected_rows & ~gone_rows]
    if new is not None and keep_only_rows:
        new = new[new.index.get_level_values("instance").isin(list(set(old_ids.tolist())))]
    parts = [kept]
    if new is not None and len(new):
        parts.append(new)
    out = _combine(parts, typed)
    out.index = sort_levels(out.index.remove_unused_levels())
    if keep_only_rows:
        position = pd.Series(np.arange(len(old)), index=old_ids.astype(str))
        position = position[~position.index.duplicated()]
        order = position.reindex(out.index.get_level_values("instance").astype(str)).to_numpy()
        out = out.iloc[np.argsort(order, kind="stable")]
    elif len(out):
        out = sort_frame(out)
    return out


def _relabel(out: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """``out`` with ``orthanc_labels`` derived from the server's labels now (:func:`label_map`)."""
    out[_index.LABELS_COLUMN] = labels_from_map(out.index, labels)
    return out


def archive_categories(client: OrthancClient, typed: bool, labels: dict | None,
                       instance_series: dict[str, str]) -> dict[str, list[str]]:
    """The categories a fresh read gives each categorical column: its values anywhere in the
    archive (a selection keeps them, as ``df[mask]`` keeps a column's categories).

    From the series, study and patient lists (what ``read_orthanc(url, level="series")``
    reads: the cost grows with the series, not the instances) and, for ``orthanc_labels``,
    the labelled resources (:func:`label_map` with the labelled instances' series).
    """
    reader = LevelReader(client, "series", find=client.capabilities().extended_find,
                         typed=typed, progress=False)
    raw, _ = reader.read(client.statistics())
    series = frame_from_levels({lvl: raw[lvl] for lvl in ("patient", "study", "series")},
                               raw["counts"], "series", typed=typed)
    out = {c: list(series[c].cat.categories) for c in series.columns
           if isinstance(series[c].dtype, pd.CategoricalDtype)}
    out[_index.LABELS_COLUMN] = archive_label_sets(labels or {}, series.index, raw["counts"],
                                                   instance_series)
    return out


def _with_categories(out: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """``out``'s categorical columns with ``categories`` (besides the values they hold)."""
    changed = {c: _index.canonical_categorical(out[c].array, cats) for c, cats in categories.items()
               if c in out.columns and isinstance(out[c].dtype, pd.CategoricalDtype)}
    return out.assign(**changed) if changed else out


def _has_callable(entry: dict) -> bool:
    """Whether a recorded select() entry holds a function (which cannot be replayed)."""
    if "callable" in entry:
        return True
    return any(isinstance(v, dict) and "callable" in v for v in (entry.get("select") or {}).values())


def _new_attrs(info: dict, seq: int, stats: dict, criteria: list) -> dict:
    attrs = dict(info)
    attrs.update(
        last_change=int(seq),
        read_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        counts={ROUTES[level]: int(stats[STAT_KEYS[level]]) for level in LEVELS},
        criteria=list(criteria),
    )
    return attrs


def refresh(df: pd.DataFrame, client: OrthancClient, *, max_attempts: int = 3) -> pd.DataFrame:
    """The frame as a fresh :func:`~orthanc_pandas.read_orthanc` (+ the same selects) gives it.

    Parameters
    ----------
    df : pandas.DataFrame
        A frame from ``read_orthanc``, possibly narrowed by ``df.orthanc.select`` or by pandas.
    client : OrthancClient
    max_attempts : int, default 3
        Tries while the archive keeps changing during the refresh.

    Returns
    -------
    pandas.DataFrame
        A new frame with new provenance (``last_change``, ``read_at``, ``counts``).

    Warns
    -----
    RefreshWarning
        When ``df`` was cut by plain pandas operations (fewer rows than the archive had and no
        recorded criteria) or its criteria cannot be replayed (a callable): only the rows it
        has are refreshed (new values, deleted rows dropped); new instances cannot be seen.

    Raises
    ------
    OrthancPandasError
        When ``df.attrs`` does not record the change sequence it was read at.
    ServerMismatchError
        When ``client`` is not the server the frame was read from (another URL), or a full
        frame cannot be brought level with the server by its change log (database replaced
        or reset under the same URL): following changes would silently mix two archives.
    FrameFormatError
        When the frame was written by an orthanc-pandas with another frame format.

    Examples
    --------
    >>> df = op.read_orthanc(url)                                       # doctest: +SKIP
    >>> # ... uploads and deletions happen ...
    >>> df = df.orthanc.refresh()                                       # doctest: +SKIP
    """
    return refresh_changes(df, client, max_attempts=max_attempts)[0]


def refresh_changes(df: pd.DataFrame, client: OrthancClient, *, max_attempts: int = 3
                    ) -> tuple[pd.DataFrame, set[str], set[str]]:
    """:func:`refresh`, and what it replaced: ``(frame, series whose rows were read again,
    instances deleted)``. The rows of ``df`` outside those series and instances are in the
    frame in the same order, with the same values apart from ``orthanc_labels`` (what lets
    the mirror rewrite only the parts of its file that changed)."""
    info, criteria, full, keep_only_rows = _plan(df, client)
    typed = _is_typed(df)
    seq0, stats, affected, deleted, new = _changed_rows(
        client, int(info["last_change"]), FrameRows(df.index), typed=typed,
        keep_only_rows=keep_only_rows, max_attempts=max_attempts, full=full)
    # labelling writes no change entry: read every label now (cost ~ the labelled resources)
    keep_categories = bool(criteria) and not keep_only_rows
    instance_series: dict[str, str] = {}
    labels = (label_map(client, parents=instance_series if keep_categories else None)
              if client.capabilities().labels else None)
    if typed:  # a frame saved before IS/US became Int32: the dtypes of a fresh read
        df = _index.narrow_integers(df)
    if not affected and not deleted:  # nothing changed for these rows: same frame, new attrs
        out = df.copy(deep=False)  # copy-on-write keeps the two apart
    else:
        out = merge_rows(df, new, affected, deleted, typed=typed, keep_only_rows=keep_only_rows)
    if full and len(out) != int(stats["CountInstances"]):
        # a full frame must hold what the server holds; if not, the change log could not be
        # followed (a database replaced or reset under the same URL) and rows would be lost
        raise ServerMismatchError(
            f"refresh() could not follow the changes of {client.url} since sequence "
            f"{info['last_change']}: the refreshed frame would hold {len(out)} instances, the "
            f"server holds {stats['CountInstances']}. Its database was replaced or reset since "
            "this frame was read (or it is another server). Read it again with "
            "orthanc_pandas.read_orthanc(url).")
    if labels is not None:
        out = _relabel(out.copy(deep=False), labels)
    out.attrs = {k: v for k, v in df.attrs.items() if k != "orthanc"}
    out.attrs["orthanc"] = _new_attrs(info, seq0, stats, [])
    if criteria and not keep_only_rows and (affected or deleted):
        # replay the selection on the merged rows (unchanged rows were selected last time)
        for entry in criteria:
            crit, case_sensitive = decode_criteria(entry)
            by_labels = entry.get("labels") or {}
            out = select(out, crit, lambda: client, case_sensitive=case_sensitive,
                         labels=by_labels.get("labels"), labels_how=by_labels.get("how", "all"))
    if keep_categories:
        # a selection has the categories of the whole archive, as select() on a fresh read
        # gives them: values gone from the archive drop out, new label sets come in
        out = _with_categories(out, archive_categories(client, typed, labels, instance_series))
    out.attrs["orthanc"] = {**out.attrs.get("orthanc", {}), "criteria": criteria}
    return out, set(affected), set(deleted)


def _plan(df: pd.DataFrame, client: OrthancClient) -> tuple[dict, list, bool, bool]:
    """Check that ``df`` can be refreshed from ``client``; ``(provenance, criteria, whether it
    is a full frame, whether only its own rows can be refreshed)`` (the latter warns)."""
    info = dict(df.attrs.get("orthanc") or {})
    if info.get("last_change") is None:
        raise OrthancPandasError(
            "refresh() needs the change sequence the frame was read at (df.attrs['orthanc']"
            "['last_change']), and this frame has none (attrs lost, e.g. after pd.concat). "
            "Read it again with orthanc_pandas.read_orthanc(url).")
    check_format(df.attrs)
    if info.get("url") and info["url"] != client.url:
        # the change sequence and the deletions are only meaningful on the server read from
        raise ServerMismatchError(
            f"This frame was read from {info['url']}; refreshing it against {client.url} would "
            "mix two archives. Read that server with orthanc_pandas.read_orthanc(url) instead (if "
            "it is the same server under another address, set df.attrs['orthanc']['url'] first).")
    criteria = list(info.get("criteria") or [])
    counts = info.get("counts") or {}
    replayable = not any(_has_callable(e) for e in criteria)
    full = not criteria and len(df) == counts.get("instances") and _ids_unique(df.index)
    keep_only_rows = not full and not (criteria and replayable)
    if keep_only_rows:
        why = ("its selection criteria include a callable, which cannot be replayed"
               if criteria else
               f"it has {len(df)} rows, the archive had {counts.get('instances')}, and no "
               "recorded select() criteria explain the difference (cut by plain pandas?)")
        warn(
            f"refresh() updates only the rows this frame has: {why}. New instances that would "
            "match cannot be seen. Use df.orthanc.select(...) on a full read to make a frame "
            "that refresh() can keep complete.", RefreshWarning)
    return info, criteria, full, keep_only_rows


def _ids_unique(index: pd.Index) -> bool:
    """Whether no instance id occurs twice (codes counted: ``is_unique`` hashes 1M ids, 0.5 s)."""
    if not isinstance(index, pd.MultiIndex):
        return bool(index.get_level_values("instance").is_unique)
    codes = np.asarray(index.codes[index.names.index("instance")])
    if len(codes) == 0:
        return True
    return bool((codes >= 0).all() and np.bincount(codes).max() <= 1)


def _counts(stats: dict) -> tuple:
    return tuple(int(stats[STAT_KEYS[level]]) for level in LEVELS)


#: series per page of the count pass: Orthanc pages by offset, so each page of counts costs
#: the pages before it again (1.13, 20,000 series at 1M instances: 1.7 s in pages of 5,000,
#: 0.63 s in one); an ID and a number are ~70 bytes of JSON per series
COUNT_PAGE = 50_000


def series_instance_counts(client: OrthancClient, *, page_size: int = COUNT_PAGE) -> dict[str, int]:
    """Every series id of the server with its number of instances, from extended
    ``/tools/find`` at series level (``RequestedTags`` ``NumberOfSeriesRelatedInstances``):
    one paged pass over the series, no instance listed (cost grows with the series)."""
    out: dict[str, int] = {}
    for page in client.iter_find("Series", [], page_size=page_size, RequestedTags=[SERIES_COUNT_TAG]):
        out.update((r["ID"], int((r.get("RequestedTags") or {})[SERIES_COUNT_TAG])) for r in page)
    return out


def _unseen_series(client: OrthancClient, frame: FrameRows, affected: set[str]) -> tuple[set, set]:
    """Deletions found by counts (a full frame on a server with extended find).

    ``(series whose instance count differs from the frame's, series of the server that the
    frame never held and no change named)``. Orthanc logs no deletion, so they are found by
    comparing the per-series instance counts of the server with the frame's; the series that
    differ are read again whole, which makes them exact whatever happened to them.
    """
    server = series_instance_counts(client)
    mine = frame.per_series()
    differ = {s for s in set(server) | set(mine)
              if s not in affected and server.get(s, 0) != mine.get(s, 0)}
    unseen = {s for s in server if s not in mine and s not in affected}
    return differ - unseen, unseen


def _changed_rows(client: OrthancClient, since: int, frame: FrameRows, *, typed: bool,
                  keep_only_rows: bool, max_attempts: int, full: bool = False):
    """What changed since ``since`` for the frame whose rows ``frame`` knows: ``(sequence,
    statistics, affected series, deleted instances, fresh rows of the affected series or
    None)``, taken while the change sequence stood still.

    Deletions (which Orthanc does not log) are found by counts when ``full`` (the frame holds
    the whole archive) and the server has extended find: if ``/statistics`` agrees with the
    frame after the logged changes, nothing was deleted and no instance id is listed; else the
    per-series counts say which series to read again. Otherwise (a cut frame, or a server
    without extended find) the instance id list (``GET /instances``) is compared.
    """
    by_counts = full and client.capabilities().extended_find
    for _attempt in range(max_attempts):
        seq0 = client.last_change()  # (it may go back: deleting drops a resource's entries)
        changed = changed_resources(client.iter_changes(since, content_only=True))
        stats = client.statistics()
        affected = set(changed["series"])
        known = frame.series_of(changed["instance"])  # the changed instances the frame holds
        affected |= set(known.values())
        # study / patient entries: the series under them now
        under: dict[str, str] = {}  # series -> study, for series the frame may not hold
        for level in ("study", "patient"):
            for rid in changed[level]:
                under.update(_series_under(client, level, rid))
        affected |= set(under)
        if by_counts:
            server_ids = None
            deleted = set()
        else:
            server_ids = set(client.list_ids("instances"))
            deleted = frame.instance_ids() - server_ids
            affected |= set(frame.series_of(deleted).values())
        study_of = {**under, **frame.study_of_series(affected)}
        new = fetch_series(client, affected, typed, study_of) if affected else None
        if not keep_only_rows:
            # new instances in series not yet known (changes may name only the instance)
            covered = set(new.index.get_level_values("instance").tolist()) if new is not None else set()
            unknown = [i for i in changed["instance"]
                       if i not in known and (server_ids is None or i in server_ids)
                       and i not in covered]
            more = {r["ParentSeries"] for r in _pmap(
                lambda i: _get_or_none(client, f"/instances/{i}") or {"ParentSeries": None},
                unknown) if r.get("ParentSeries")} - affected
            if more:
                extra = fetch_series(client, more, typed, study_of)
                new = extra if new is None else _combine([new, extra], typed)
                affected |= more
        if by_counts:
            kept = frame.count_outside(affected)
            have = kept + (len(new) if new is not None else 0)
            if have != int(stats["CountInstances"]):
                differ, unseen = _unseen_series(client, frame, affected)
                if unseen:
                    raise ChangeLogGapError(
                        f"The change log of {client.url} since sequence {since} does not explain "
                        f"what the server holds: {len(unseen)} series that this frame never held "
                        "are there and no change entry names them (the log was cleared, the "
                        "database restored or replaced, or another server answers at this URL). "
                        "Read it again with orthanc_pandas.read_orthanc(url).")
                if differ:
                    again = fetch_series(client, differ, typed, frame.study_of_series(differ))
                    parts = [p for p in (new, again) if p is not None]
                    new = _combine(parts, typed) if len(parts) > 1 else (parts[0] if parts else None)
                    affected |= differ
        if client.last_change() == seq0 and _counts(client.statistics()) == _counts(stats):
            return seq0, stats, affected, deleted, new
    raise ServerChangedError(
        f"The archive at {client.url} kept changing during {max_attempts} refresh attempts; "
        "retry when uploads have settled.")
