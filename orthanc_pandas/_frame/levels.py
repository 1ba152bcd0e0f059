"""Instance frame -> one row per series, study or patient. Pure pandas/numpy, no HTTP.

The parts that need the server (the way back to instances, tags at a level, the geometry
report that fetches PixelSpacing, Rows, Columns... and the JSON headers of multi-frame and
mosaic instances) are in
``orthanc_pandas._ops.levels``; the geometry checks themselves in
``orthanc_pandas._imaging.geometry``. See ``docs/series.md``.

Level frames
------------
* index: ``(patient, study, series)`` for series, ``(patient, study)`` for studies, a plain
  ``Index`` named ``patient`` for patients; rows in the order of their first instance.
* columns: the main tags of the level and of its parents (the value of the level's first
  instance; they are constant within a resource), in the instance frame's dtypes, plus
  aggregates (:data:`AGGREGATES`).
* ``attrs``: a deep copy of the instance frame's, with ``attrs["orthanc"]["level"]`` set to
  the level. JSON only, so ``to_parquet`` / ``pd.read_parquet`` keep it.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pandas as pd

from orthanc_pandas._frame.contract import LEVEL_INDEX
from orthanc_pandas._frame.schema import (
    BOOKKEEPING,
    INDEX_NAMES,
    LEVELS,
    TEXT_DTYPE,
    canonical_categorical,
    tag_level,
)
from orthanc_pandas.errors import (
    InconsistentTagError,
    SelectionError,
)

#: Aggregate columns per level (besides the tags).
AGGREGATES: dict[str, tuple[str, ...]] = {
    "patient": ("study_count", "series_count", "instance_count"),
    "study": ("series_count", "instance_count", "modalities"),
    "series": ("instance_count", "slice_count", "slice_spacing", "orientation",
               "ImageOrientationPatient_0", "ImageOrientationPatient_1", "ImageOrientationPatient_2",
               "ImageOrientationPatient_3", "ImageOrientationPatient_4", "ImageOrientationPatient_5",
               "PixelSpacing_0", "PixelSpacing_1", "FrameOfReferenceUID"),
}


#: Tags ``geometry=True`` fetches when they are not columns (one request per series for all).
GEOMETRY_TAGS = ("PixelSpacing", "Rows", "Columns", "SamplesPerPixel", "FrameOfReferenceUID")
#: what the geometry report reads besides: ImageType says whether an image is a Siemens mosaic
REPORT_TAGS = (*GEOMETRY_TAGS, "ImageType")


_VECTOR = re.compile(r"^(.*)_(\d+)$")


_BOOK_LEVEL = {col: lvl for lvl, book in BOOKKEEPING.items() for col, _ in book.values()}


_IPP = [f"ImagePositionPatient_{i}" for i in range(3)]


_IOP = [f"ImageOrientationPatient_{i}" for i in range(6)]


_PS = ["PixelSpacing_0", "PixelSpacing_1"]


#: Steps below this (mm) along the normal are no step (as volume.py's _ABS_EPS).
_ABS_EPS = 1e-4


def _column_level(col: str, dtype) -> str | None:
    """The level a column belongs to; ``None`` for instance-level or unknown columns."""
    if col in _BOOK_LEVEL:
        return _BOOK_LEVEL[col]
    m = _VECTOR.match(col)
    level = tag_level(col) or (tag_level(m.group(1)) if m else None)
    if level is None and isinstance(dtype, pd.CategoricalDtype) and col != "orthanc_labels":
        # text the index types as category belongs to a parent level (a main tag of a newer
        # server): constant within a series, but of unknown level above it
        return "series?"
    return level


def _level_columns(df: pd.DataFrame, level: str) -> list[str]:
    keep = set(LEVELS[:LEVELS.index(level) + 1])
    if level == "series":
        keep.add("series?")
    return [c for c in df.columns if _column_level(c, df[c].dtype) in keep
            and c not in AGGREGATES.get(level, ())]


def group_codes(df: pd.DataFrame, level: str):
    """(first row of each resource in frame order, group of each row, rows per group)."""
    codes = np.asarray(df.index.codes[LEVELS.index(level)])
    _, first, inverse, counts = np.unique(codes, return_index=True, return_inverse=True,
                                          return_counts=True)
    order = np.argsort(first, kind="stable")  # groups in the order of their first row
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.ravel()], counts[order]


def _floats(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    if not all(c in df.columns for c in cols):
        return np.full((len(df), len(cols)), np.nan)
    return df[cols].to_numpy(dtype=np.float64, na_value=np.nan)


def _nunique_per(df: pd.DataFrame, group: np.ndarray, ngroups: int, level: str) -> np.ndarray:
    codes = np.asarray(df.index.codes[LEVELS.index(level)])
    pairs = np.unique(np.stack([group, codes]), axis=1)
    return np.bincount(pairs[0], minlength=ngroups)


def _series_aggregates(df: pd.DataFrame, first: np.ndarray, group: np.ndarray, n: int) -> dict:
    out: dict = {}
    frames = df["NumberOfFrames"].to_numpy(dtype=np.float64, na_value=np.nan) \
        if "NumberOfFrames" in df.columns else np.full(len(df), np.nan)
    frames = np.where(np.isfinite(frames) & (frames > 0), frames, 1.0)
    out["slice_count"] = pd.array(np.bincount(group, weights=frames, minlength=n).astype(np.int64),
                                  dtype="Int64")
    iop = _floats(df, _IOP)
    ipp = _floats(df, _IPP)
    normal = np.cross(iop[:, :3], iop[:, 3:])
    first_normal = normal[first]
    z = np.einsum("ij,ij->i", ipp, first_normal[group])
    order = np.lexsort((z, group))
    zs, gs = z[order], group[order]
    dz = np.diff(zs)
    ok = (gs[1:] == gs[:-1]) & np.isfinite(dz) & (dz > _ABS_EPS)
    spacing = pd.Series(dz[ok]).groupby(gs[1:][ok]).median().reindex(range(n))
    out["slice_spacing"] = pd.array(spacing.to_numpy(), dtype="Float64")
    axis = np.argmax(np.abs(np.nan_to_num(first_normal)), axis=1)
    labels = np.array(["sagittal", "coronal", "axial"], dtype=object)[axis]
    labels[~np.isfinite(first_normal).all(axis=1)] = None
    out["orientation"] = canonical_categorical(pd.Categorical(labels))
    for c in _IOP + _PS + ["FrameOfReferenceUID"]:
        if c in df.columns:  # the first instance's value, in the instance frame's dtype
            out[c] = df[c].array.take(first)
    return out


def middle_instances(df: pd.DataFrame) -> pd.DataFrame:
    """Per series of an instance frame: the instance holding its middle slice. No request.

    The middle is taken by position along the slice normal, not by InstanceNumber: a series
    numbered against its positions (or shuffled) still gives the slice in the middle of the
    body, the one ``vol.orthanc.plot()`` shows first. Within a series only the rows of its
    most common ImageOrientationPatient count (a localizer or a second stack in the series
    does not move the middle); they are sorted by ImagePositionPatient along their normal,
    ties and rows without a position by InstanceNumber, then by row order, and the one at rank
    ``count // 2`` is chosen (the upper middle of an even count, as ``volume()``'s middle
    index). A multi-frame instance gives its middle frame by frame index (``frame``).

    Parameters
    ----------
    df : pandas.DataFrame
        An instance frame (or a row subset).

    Returns
    -------
    pandas.DataFrame
        One row per series, in the order of ``level_frame(df, "series")`` (index ``(patient,
        study, series)``): ``instance`` (Orthanc id), ``row`` (its position in ``df``) and
        ``frame`` (0-based frame to show, 0 for single-frame instances).

    Examples
    --------
    >>> idx = pd.MultiIndex.from_tuples([("p", "st", "se", f"i{k}") for k in range(4)],
    ...                                 names=INDEX_NAMES)
    >>> axial = {f"ImageOrientationPatient_{k}": float(v) for k, v in enumerate((1, 0, 0, 0, 1, 0))}
    >>> df = pd.DataFrame({"InstanceNumber": [1, 2, 3, 4], "ImagePositionPatient_0": 0.0,
    ...                    "ImagePositionPatient_1": 0.0,
    ...                    "ImagePositionPatient_2": [30.0, 0.0, 20.0, 10.0], **axial}, index=idx)
    >>> middle_instances(df).instance.tolist()   # z = 0, 10, 20, 30: rank 2 is z = 20, not i1
    ['i2']
    """
    first, group, _ = group_codes(df, "series")
    n, m = len(first), len(df)
    index = df.index[first].droplevel("instance")
    if m == 0:
        return pd.DataFrame({"instance": pd.Series([], dtype=object), "row": np.empty(0, np.intp),
                             "frame": np.empty(0, np.int64)}, index=index)
    iop, ipp = _floats(df, _IOP), _floats(df, _IPP)
    has_iop = np.isfinite(iop).all(axis=1)
    # one code per (series, rounded orientation); rows without one share the code of "none"
    # (a groupby: np.unique(axis=0) on a million rows takes seconds)
    key = pd.DataFrame(np.where(has_iop[:, None], np.round(iop, 3), np.inf))
    key["group"] = group
    combo = key.groupby(list(key.columns), sort=False).ngroup().to_numpy()
    count = np.bincount(combo)
    _, first_of = np.unique(combo, return_index=True)
    # the most common orientation of each series (an orientation wins over none)
    score = count + has_iop[first_of] * (m + 1)
    series_of = group[first_of].astype(np.intp)
    by = np.lexsort((-score, series_of))  # by series, the best combo first
    firsts = by[np.r_[True, series_of[by][1:] != series_of[by][:-1]]]
    best = np.empty(n, np.intp)
    best[series_of[firsts]] = firsts
    keep = combo == best[group]
    normal = np.cross(iop[:, :3], iop[:, 3:])
    z = np.einsum("ij,ij->i", ipp, normal)
    number = df["InstanceNumber"].to_numpy(np.float64, na_value=np.nan) \
        if "InstanceNumber" in df.columns else np.full(m, np.nan)
    z = np.where(np.isfinite(z), z, np.inf)
    number = np.where(np.isfinite(number), number, np.inf)
    rows = np.flatnonzero(keep)
    order = rows[np.lexsort((rows, number[rows], z[rows], group[rows]))]
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    chosen = np.empty(n, np.intp)
    chosen[g[starts]] = order[starts + sizes // 2]
    frames = df["NumberOfFrames"].to_numpy(np.float64, na_value=np.nan)[chosen] \
        if "NumberOfFrames" in df.columns else np.full(n, np.nan)
    frame = np.where(np.isfinite(frames) & (frames > 1), np.nan_to_num(frames) // 2, 0)
    k = INDEX_NAMES.index("instance")  # the chosen rows' ids only, not a million of them
    ids = np.asarray(df.index.levels[k].take(np.asarray(df.index.codes[k])[chosen]), dtype=object)
    return pd.DataFrame({"instance": ids,
                         "row": chosen, "frame": frame.astype(np.int64)}, index=index)


def level_frame(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """One row per ``level`` resource of the instance frame ``df`` (no request to the server).

    Parameters
    ----------
    df : pandas.DataFrame
        An instance frame (``read_orthanc``) or a row subset of one.
    level : {"series", "study", "patient"}

    Returns
    -------
    pandas.DataFrame
        See the module documentation.

    Examples
    --------
    >>> import pandas as pd
    >>> idx = pd.MultiIndex.from_tuples([("p", "st", "se1", "i1"), ("p", "st", "se1", "i2"),
    ...                                  ("p", "st", "se2", "i3")], names=INDEX_NAMES)
    >>> df = pd.DataFrame({"Modality": pd.Categorical(["CT", "CT", "MR"]),
    ...                    "InstanceNumber": pd.array([1, 2, 1], dtype="Int64")}, index=idx)
    >>> s = level_frame(df, "series")
    >>> s.index.tolist(), s.instance_count.tolist(), "InstanceNumber" in s
    ([('p', 'st', 'se1'), ('p', 'st', 'se2')], [2, 1], False)
    >>> level_frame(df, "study").modalities.tolist()
    ['CT\\\\MR']
    """
    if level not in ("series", "study", "patient"):
        raise SelectionError(f"level must be 'series', 'study' or 'patient', not {level!r}.")
    first, group, counts = group_codes(df, level)
    n = len(first)
    names = LEVEL_INDEX[level]
    if len(names) == 1:
        index = pd.Index(df.index.get_level_values(names[0])[first], name=names[0])
    else:
        index = df.index[first].droplevel(INDEX_NAMES[len(names):])
    cols = _level_columns(df, level)
    out = df.iloc[first][cols].set_axis(index, axis=0) if n else df.iloc[:0][cols].set_axis(index)
    agg: dict = {}
    if level == "patient":
        agg["study_count"] = _nunique_per(df, group, n, "study")
    if level in ("patient", "study"):
        agg["series_count"] = _nunique_per(df, group, n, "series")
    agg["instance_count"] = counts
    if level == "study" and "Modality" in df.columns:
        mod = df["Modality"].astype(TEXT_DTYPE)
        pairs = pd.DataFrame({"g": group, "m": mod}).dropna().drop_duplicates()
        joined = pairs.sort_values("m").groupby("g")["m"].agg("\\".join).reindex(range(n))
        agg["modalities"] = canonical_categorical(pd.Categorical(joined.to_numpy(object)))
    if level == "series":
        agg.update(_series_aggregates(df, first, group, n))
    for name, values in agg.items():
        if isinstance(values, np.ndarray):  # the counts
            values = pd.array(values.astype(np.int64), dtype="Int64")
        out[name] = values
    out.attrs = copy.deepcopy(df.attrs)
    out.attrs.setdefault("orthanc", {})["level"] = level
    return out


# -- tags at the level of the frame -------------------------------------------------------------
def _hashable(values: pd.Series) -> pd.Series:
    """Values comparable by ``nunique``: sequences (lists of dicts) by their repr."""
    if values.dtype != object:
        return values
    return values.map(lambda v: repr(v) if isinstance(v, (list, dict)) else v)


def level_values(columns: pd.DataFrame, ids, order) -> tuple[pd.DataFrame, dict[str, list]]:
    """Per resource, the value its instances share, and the resources where they differ.

    Parameters
    ----------
    columns : pandas.DataFrame
        Instance values, one row per instance.
    ids : array-like
        The resource (series, study or patient id) of each row of ``columns``.
    order : array-like
        The resources wanted, in the order of the result's rows. A resource without rows
        gets missing values.

    Returns
    -------
    values : pandas.DataFrame
        One row per resource of ``order`` (default index): the value of its first row, in the
        column's own dtype.
    conflicts : dict
        Column -> resources whose rows hold more than one value (a missing value counts as
        one), for the columns that have any.

    Examples
    --------
    >>> cols = pd.DataFrame({"Kvp": pd.array([120, 120, 100, 80], dtype="Int64")})
    >>> values, conflicts = level_values(cols, ["a", "a", "b", "b"], ["b", "a", "c"])
    >>> values.Kvp.tolist(), conflicts
    ([100, 120, <NA>], {'Kvp': ['b']})
    """
    codes, uniques = pd.factorize(np.asarray(ids, dtype=object))
    _, first = np.unique(codes, return_index=True)
    where = pd.Index(uniques).get_indexer(pd.Index(order)) if len(uniques) else \
        np.full(len(order), -1)
    take = np.where(where >= 0, first[np.maximum(where, 0)] if len(first) else -1, -1)
    values = pd.DataFrame({c: columns[c].array.take(take, allow_fill=True) for c in columns})
    conflicts: dict[str, list] = {}
    for c in columns:
        distinct = _hashable(columns[c]).groupby(codes).nunique(dropna=False)
        bad = distinct.index[distinct.to_numpy() > 1]
        if len(bad):
            conflicts[c] = [uniques[k] for k in bad]
    return values, conflicts


def raise_conflicts(conflicts: dict[str, list], level: str, total: int, infos) -> None:
    by_tag: dict[str, set] = {}
    for col, ids in conflicts.items():
        name = next(i.name for i in infos if col == i.name or _VECTOR.sub(r"\1", col) == i.name)
        by_tag.setdefault(name, set()).update(ids)
    parts = [f"{name} in {len(ids)} of {total} rows (e.g. {sorted(ids)[0]})"
             for name, ids in by_tag.items()]
    tags = ", ".join(repr(n) for n in by_tag)
    raise InconsistentTagError(
        f"Not a {level}-level value: the instances of a {level} hold different values of "
        + "; ".join(parts) + f". Fetch it per instance: frame.orthanc.instances(df)"
        f".orthanc.with_tags({tags}), or take one instance's value per row with sample=True.")
