"""Orthanc labels (Orthanc >= 1.12): add and remove them for a frame's resources, select rows by them.

A label is a short tag (letters, digits, ``_`` and ``-``, at most 64 characters) that Orthanc
attaches to one patient, study, series or instance. Labels do not propagate: labelling a study
does not label its series. The index frame combines them per instance in the ``orthanc_labels``
column (see :mod:`orthanc_pandas._frame.schema`): the labels of the instance, its series, its study and
its patient, sorted and joined by ``","``.

:func:`has_labels` is pure (it reads only that column). :func:`add_labels` and
:func:`remove_labels` send one ``GET /{level}/{id}/labels`` per resource, then one ``PUT`` or
``DELETE /{level}/{id}/labels/{label}`` per label that must change. They do not change the frame:
labelling writes no ``/changes`` entry, and ``df.orthanc.refresh()`` reads labels anew every time
(:func:`label_map`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from orthanc_pandas._frame.schema import (
    LABELS_COLUMN,
    LABELS_SEPARATOR,
    LEVELS,
    ROUTES,
    labels_column,
)
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._util.bulk import check_bulk_args
from orthanc_pandas._util.fanout import map_in_order, worker_count
from orthanc_pandas._util.progress import progress_bar
from orthanc_pandas.errors import BulkError, OrthancHTTPError, SelectionError, ServerCapabilityError

#: what Orthanc accepts as a label (it answers HTTP 400 otherwise)
LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


#: the ``status`` values of the reports of :func:`add_labels` and :func:`remove_labels`
STATUSES = ("added", "already there", "removed", "not there", "failed")


HOW = ("all", "any", "none")


_FIND_LEVELS = {"patient": "Patient", "study": "Study", "series": "Series", "instance": "Instance"}


def check_labels(labels: Iterable) -> list[str]:
    """The labels, deduplicated in order; a :class:`~orthanc_pandas.errors.SelectionError` naming
    any that Orthanc would refuse (before anything is sent).

    Examples
    --------
    >>> check_labels(["reviewed", "to-do", "reviewed"])
    ['reviewed', 'to-do']
    >>> check_labels(["ok", "not ok"])
    Traceback (most recent call last):
    ...
    orthanc_pandas.errors.SelectionError: Invalid Orthanc label 'not ok': ...
    """
    out = list(dict.fromkeys(labels))
    if not out:
        raise SelectionError("Give at least one label, e.g. add_labels('reviewed').")
    for label in out:
        if not isinstance(label, str) or not LABEL_RE.match(label):
            raise SelectionError(
                f"Invalid Orthanc label {label!r}: a label is 1 to 64 letters, digits, '_' or '-' "
                "(no spaces, commas or other characters). Nothing was sent to the server.")
    return out


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise SelectionError(f"level must be one of {LEVELS}, got {level!r}.")
    return level


def require_labels(client: OrthancClient) -> None:
    """Raise :class:`~orthanc_pandas.errors.ServerCapabilityError` unless the server has labels."""
    if not client.capabilities().labels:
        raise ServerCapabilityError(
            f"Labels need Orthanc >= 1.12; {client.url} runs Orthanc {client.version}, which has "
            "none. Upgrade the server, or keep the marks in a column of your own frame.")


def _resources(df: pd.DataFrame, level: str) -> list[str]:
    """The distinct ids of ``level`` among the rows, in row order."""
    return list(dict.fromkeys(df.index.get_level_values(level).tolist()))


def add_labels(df: pd.DataFrame, client: OrthancClient, *labels: str, level: str = "instance",
               max_workers: int | None = None, progress=None, errors: str = "raise") -> pd.DataFrame:
    """Put ``labels`` on each distinct resource of ``level`` among the rows of ``df``.

    Parameters
    ----------
    df : pandas.DataFrame
        An Orthanc index frame (or a selection of one).
    client : OrthancClient
    *labels : str
        Letters, digits, ``_`` and ``-``, 1 to 64 characters; checked before anything is sent.
    level : {"patient", "study", "series", "instance"}, default "study"
        Which resources get the labels: those any row belongs to at that level. Labels do not
        propagate to children, but ``orthanc_labels`` shows them on every instance below.
    max_workers : int, optional
        Concurrent requests (default 4, capped by the client's connection pool).
    progress : bool or tqdm, optional
        Progress bar over the resources; by default shown when interactive from 50.
    errors : {"raise", "report"}, default "raise"
        A resource the server refuses gets ``"failed"`` rows; ``"raise"`` then raises
        :class:`~orthanc_pandas.errors.BulkError` once every resource was tried (its
        ``.report`` is the report below). A server that stops answering always raises.

    Returns
    -------
    pandas.DataFrame
        One row per resource and label: ``level``, ``resource`` (Orthanc id), ``label``,
        ``status`` (``"added"``, ``"already there"`` or ``"failed"``) and ``message`` (the
        server's answer when it failed, e.g. a resource deleted meanwhile).

    Raises
    ------
    SelectionError
        A malformed label or an unknown level (nothing is sent).
    BulkError
        With ``errors="raise"``, when a resource failed.
    ServerCapabilityError
        The server has no labels (Orthanc < 1.12).

    Examples
    --------
    >>> report = add_labels(df[df.Modality == "CT"], client, "reviewed")      # doctest: +SKIP
    >>> report.status.value_counts()                                          # doctest: +SKIP
    """
    return _apply(df, client, labels, level, "add", max_workers, progress, errors)


def remove_labels(df: pd.DataFrame, client: OrthancClient, *labels: str, level: str = "instance",
                  max_workers: int | None = None, progress=None,
                  errors: str = "raise") -> pd.DataFrame:
    """Take ``labels`` off each distinct resource of ``level`` among the rows of ``df``.

    The parameters, report and errors are those of :func:`add_labels`; the statuses are
    ``"removed"``, ``"not there"`` or ``"failed"``. A label on another level is not touched:
    removing a study's label leaves the same label on its series.

    Examples
    --------
    >>> remove_labels(df, client, "reviewed", level="study")                  # doctest: +SKIP
    """
    return _apply(df, client, labels, level, "remove", max_workers, progress, errors)


def _apply(df: pd.DataFrame, client: OrthancClient, labels: Sequence[str], level: str,
           action: str, max_workers: int | None, progress, errors: str) -> pd.DataFrame:
    check_bulk_args(max_workers, errors)
    labels = check_labels(labels)
    _check_level(level)
    require_labels(client)
    route = ROUTES[level]

    def one(rid: str) -> list[tuple]:
        rows = change(rid)
        bar.update(1)
        return rows

    def change(rid: str) -> list[tuple]:
        try:
            present = set(client.get_json(f"/{route}/{rid}/labels"))
        except OrthancHTTPError as exc:  # deleted meanwhile, refused...: report, go on
            return [(level, rid, label, "failed", str(exc)) for label in labels]
        rows = []
        for label in labels:
            if (label in present) == (action == "add"):
                rows.append((level, rid, label, "already there" if action == "add" else "not there", ""))
                continue
            try:
                client.request("PUT" if action == "add" else "DELETE", f"/{route}/{rid}/labels/{label}")
            except OrthancHTTPError as exc:
                rows.append((level, rid, label, "failed", str(exc)))
            else:
                rows.append((level, rid, label, "added" if action == "add" else "removed", ""))
        return rows

    workers = worker_count(max_workers, pool_size=client.pool_size)
    resources = _resources(df, level)
    # a lost connection is raised (map_in_order stops at once); an HTTP error is a "failed" row
    with progress_bar(progress, total=len(resources), desc=f"{action.capitalize()} labels",
                      unit=level, min_total=50) as bar:
        done = map_in_order(one, resources, workers, name="orthanc-labels")
    rows = [r for rs in done for r in rs]
    report = pd.DataFrame(rows, columns=["level", "resource", "label", "status", "message"])
    report["status"] = pd.Categorical(report["status"], categories=list(STATUSES))
    failed = report[report.status == "failed"]
    if len(failed) and errors == "raise":
        first = failed.iloc[0]
        raise BulkError(f"{len(failed)} of {len(report)} label change(s) failed (first: "
                        f"{first['resource']}: {first['message']}). The report is the error's "
                        ".report; pass errors='report' to get it without an error.", report=report)
    return report


def has_labels(df: pd.DataFrame, *labels: str, how: str = "all") -> pd.Series:
    """Which rows carry ``labels`` (on the instance or any parent), from ``orthanc_labels``. Pure.

    Parameters
    ----------
    df : pandas.DataFrame
        An index frame with an ``orthanc_labels`` column.
    *labels : str
    how : {"all", "any", "none"}, default "all"
        Rows with every label, with at least one, or with none of them.

    Returns
    -------
    pandas.Series of bool, aligned with ``df``.

    Examples
    --------
    >>> df = pd.DataFrame({"orthanc_labels": pd.Categorical(["a,b", "b", None])})
    >>> has_labels(df, "a", "b").tolist(), has_labels(df, "a", "b", how="any").tolist()
    ([True, False, False], [True, True, False])
    >>> has_labels(df, "a", how="none").tolist()
    [False, True, True]
    """
    wanted = set(check_labels(labels))
    if how not in HOW:
        raise SelectionError(f"how must be one of {HOW}, got {how!r}.")
    if LABELS_COLUMN not in df.columns:
        raise SelectionError(
            f"This frame has no {LABELS_COLUMN!r} column (it was read by an older orthanc-pandas "
            "or the column was dropped); read it again with orthanc_pandas.read_orthanc(url).")
    col = df[LABELS_COLUMN]

    def test(value) -> bool:
        have = set(value.split(LABELS_SEPARATOR)) if isinstance(value, str) and value else set()
        if how == "all":
            return wanted <= have
        hit = bool(wanted & have)
        return hit if how == "any" else not hit

    if isinstance(col.dtype, pd.CategoricalDtype):
        # one test per distinct label set, not per row
        per_category = np.array([test(c) for c in col.cat.categories] + [test(None)], dtype=bool)
        codes = col.cat.codes.to_numpy()
        values = per_category[np.where(codes < 0, len(per_category) - 1, codes)]
    else:
        values = np.array([test(v if isinstance(v, str) else None) for v in col.tolist()], dtype=bool)
    return pd.Series(values, index=df.index, name=None)


def labels_from_map(index: pd.MultiIndex, labels: dict[str, dict[str, list[str]]],
                    categories: Iterable[str] = ()):
    """The ``orthanc_labels`` column for the rows of ``index`` from a :func:`label_map`. Pure.

    ``categories`` are kept besides the values present (a selection keeps those of the whole
    archive, as ``select`` on a fresh read does).

    Examples
    --------
    >>> index = pd.MultiIndex.from_tuples([("p", "st", "se", "i1"), ("p", "st", "se", "i2")],
    ...                                   names=list(LEVELS))
    >>> list(labels_from_map(index, {"study": {"st": ["b"]}, "instance": {"i2": ["a"]}}))
    ['b', 'a,b']
    """
    arrays, per_instance = {}, {}
    for k, level in enumerate(LEVELS):
        per_instance[level] = np.asarray(index.codes[k], dtype=np.int64)
        found = labels.get(level) or {}
        if not found:  # no label at this level: no list of its ids (1M instances: 0.2 s)
            arrays[level] = None
            continue
        arrays[level] = pa.array([LABELS_SEPARATOR.join(sorted(found[i])) if found.get(i) else None
                                  for i in index.levels[k].tolist()], pa.string())
    return labels_column(arrays, per_instance, len(index), categories)


def label_map(client: OrthancClient, *, page_size: int = 5000,
              parents: dict[str, str] | None = None) -> dict[str, dict[str, list[str]]]:
    """Every labelled resource of the server: level -> id -> its labels (sorted).

    Costs requests in proportion to the labelled resources, not to the archive:
    ``GET /tools/labels``, then per level ``POST /tools/find`` with ``Labels`` (constraint
    ``Any``) and ``ResponseContent: ["Labels"]``, paged with ``Limit``/``Since`` on servers with
    extended find (1.12.5+). Older 1.12 servers get one find per label and level, each
    truncated by the server's ``LimitFindResults`` if that is set (it is 0, unlimited, by
    default). An empty dict when the server has no labels at all (or no label support).
    ``parents``, when given, receives the series of each labelled instance (id -> series id),
    from the same answers.
    """
    if not client.capabilities().labels:
        return {}
    in_use = sorted(client.get_json("/tools/labels"))
    out: dict[str, dict[str, list[str]]] = {lvl: {} for lvl in LEVELS}
    if not in_use:
        return out
    for level in LEVELS:
        found = out[level]
        with_parent = parents is not None and level == "instance"
        if client.capabilities().extended_find:
            content = ["Labels", "Parent"] if with_parent else ["Labels"]
            for page in client.iter_find(_FIND_LEVELS[level], content, page_size=page_size,
                                         Labels=in_use, LabelsConstraint="Any"):
                for r in page:
                    found[r["ID"]] = sorted(r.get("Labels") or ())
                    if with_parent:
                        parents[r["ID"]] = r.get("ParentSeries")
        else:
            for label in in_use:
                hits = client.post_json("/tools/find", {"Level": _FIND_LEVELS[level], "Query": {},
                                                        "Labels": [label], "Expand": with_parent})
                for hit in hits:
                    rid = hit["ID"] if with_parent else hit
                    found.setdefault(rid, []).append(label)
                    if with_parent:
                        parents[rid] = hit.get("ParentSeries")
    return out


def archive_label_sets(labels: dict[str, dict[str, list[str]]], hierarchy: pd.MultiIndex,
                       instance_counts: dict[str, int], instance_series: dict[str, str]) -> list[str]:
    """Every value ``orthanc_labels`` has somewhere in the archive: the categories a fresh
    read gives the column. Pure.

    Parameters
    ----------
    labels : dict
        :func:`label_map`.
    hierarchy : pandas.MultiIndex
        ``(patient, study, series)`` of every series of the archive.
    instance_counts : dict
        Series id -> its number of instances.
    instance_series : dict
        Labelled instance id -> its series (``label_map(parents=...)``).

    Examples
    --------
    >>> h = pd.MultiIndex.from_tuples([("p", "st", "s1"), ("p", "st", "s2")])
    >>> archive_label_sets({"study": {"st": ["b"]}, "instance": {"i": ["a"]}}, h,
    ...                    {"s1": 1, "s2": 2}, {"i": "s1"})
    ['a,b', 'b']
    """
    def of(level: str, rid) -> set[str]:
        return set((labels.get(level) or {}).get(rid) or ())

    in_series: dict[str, list[str]] = {}
    for iid, sid in instance_series.items():
        in_series.setdefault(sid, []).append(iid)
    found: set[str] = set()
    for patient, study, series in hierarchy:
        base = of("patient", patient) | of("study", study) | of("series", series)
        labelled = in_series.get(series, [])
        if base and int(instance_counts.get(series, 0)) > len(labelled):
            found.add(LABELS_SEPARATOR.join(sorted(base)))  # its instances without a label
        for iid in labelled:
            union = base | of("instance", iid)
            if union:
                found.add(LABELS_SEPARATOR.join(sorted(union)))
    return sorted(found)
