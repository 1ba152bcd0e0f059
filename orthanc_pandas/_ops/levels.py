"""Level frames that need the server: the way back to instances, tags at a level, the geometry report."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pandas as pd

from orthanc_pandas._frame.contract import check_index_frame
from orthanc_pandas._frame.levels import (
    REPORT_TAGS,
    group_codes,
    level_values,
    raise_conflicts,
)
from orthanc_pandas._frame.schema import (
    TEXT_DTYPE,
    empty_frame,
    sort_order,
)
from orthanc_pandas._frame.tags import column_names
from orthanc_pandas._imaging.assemble import stack_layout
from orthanc_pandas._imaging.geometry import index_headers, series_verdict
from orthanc_pandas._ops.headers import headers as fetch_headers
from orthanc_pandas._ops.refresh import fetch_series
from orthanc_pandas._ops.selection import frame_columns, with_tags
from orthanc_pandas.errors import (
    GeometryError,
)


# -- the way back: instance rows of level rows ---------------------------------------------------
def instances_of(frame: pd.DataFrame, level: str, instances: pd.DataFrame | None = None,
                 client=None) -> pd.DataFrame:
    """The instance rows of the resources of the level frame ``frame``.

    From ``instances`` (an instance frame: its rows whose ``level`` id is in ``frame``), else
    from the server (``GET /series/{id}``, ``/series/{id}/instances`` and the parents, built
    as ``read_orthanc`` builds rows, in its order). The result carries ``frame``'s attrs
    without the level marker.
    """
    ids = pd.Index(frame.index.get_level_values(level)).unique()
    if instances is not None:

        check_index_frame(instances)
        return instances[instances.index.get_level_values(level).isin(ids)]

    if level == "series":
        series_ids = set(ids)
    else:
        studies = list(ids) if level == "study" else [
            st for p in ids for st in client.get_json(f"/patients/{p}").get("Studies", [])]
        series_ids = {se for st in studies for se in client.get_json(f"/studies/{st}").get("Series", [])}
    rows = fetch_series(client, series_ids, True) if series_ids else None
    if rows is None:
        rows = empty_frame()
    rows = rows.take(sort_order(rows))
    rows.attrs = copy.deepcopy(frame.attrs)
    for key in ("level", "read_level", "missing_columns"):  # instance rows, whatever their source
        rows.attrs.get("orthanc", {}).pop(key, None)
    return rows


def level_with_tags(frame: pd.DataFrame, level: str, rows: pd.DataFrame, tags, get_client, *,
                    sample: bool = False, **fetch) -> pd.DataFrame:
    """``frame`` (a level frame) with a column per tag: the value its instances share.

    ``rows`` are instance rows of the frame's resources (all of them, or with ``sample`` one
    per resource is kept); tags that are not columns of ``rows`` are fetched for them with
    :func:`orthanc_pandas._ops.selection.with_tags` (``fetch``: its keyword arguments). Tags that
    already are columns of ``frame`` are left as they are. Without ``sample``, a tag whose
    instances disagree within a resource raises :class:`InconsistentTagError`.
    """

    todo = [info for info in (frame_columns(frame, t)[2] for t in tags) if info is not None]
    todo = list({info.name: info for info in todo}.values())
    if not todo:
        return frame
    ids = rows.index.get_level_values(level)
    if sample:
        rows, ids = rows[~ids.duplicated()], ids[~ids.duplicated()]
    rows = with_tags(rows, todo, get_client, **fetch)
    names = [c for info in todo for c in column_names(info, rows.columns)]
    values, conflicts = level_values(rows[names], ids, frame.index.get_level_values(level))
    if conflicts:
        raise_conflicts(conflicts, level, len(frame), todo)
    out = frame.copy(deep=False)
    for c in names:
        out[c] = values[c].array
    out.attrs = copy.deepcopy(frame.attrs)
    return out


def geometry_report(df: pd.DataFrame, get_client: Callable | None = None, *,
                    fetch: bool = True, **tolerances) -> pd.DataFrame:
    """Per series of the instance frame ``df``: whether ``volume()`` would succeed, and why not.

    The checks are :func:`orthanc_pandas._imaging.geometry.slice_geometry`'s own, run on slice headers
    made from the index columns (ImagePositionPatient, ImageOrientationPatient,
    InstanceNumber, SOPInstanceUID) plus :data:`GEOMETRY_TAGS` (fetched with ``with_tags``
    when they are not columns and ``fetch`` is true). Multi-frame instances carry their frame
    positions in sequences the index lacks, and Siemens mosaics (ImageType MOSAIC) their slice
    count and direction in a private header: for them the header (no pixels) is downloaded
    and read as ``volume()`` reads it. ``tolerances`` are ``slice_geometry``'s keyword arguments.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``level_frame(df, "series")``; ``volume_ok`` (boolean) and
        ``volume_problem`` (string, missing when ok).
    """

    missing = [t for t in REPORT_TAGS
               if not ({t, f"{t}_0"} & set(df.columns))]
    if missing and fetch and len(df):

        df = with_tags(df, missing, get_client)
    # volume() reads each instance once, in row order (a frame may repeat rows after concat)
    df = df[~df.index.duplicated()]
    first, group, _ = group_codes(df, "series")
    frames = df["NumberOfFrames"].to_numpy(np.float64, na_value=np.nan) \
        if "NumberOfFrames" in df.columns else np.full(len(df), np.nan)
    # mosaics (ImageType MOSAIC) tile their slices in one image: their headers say where
    mosaic = df["ImageType"].astype(object).fillna("").str.upper().str.contains(r"\bMOSAIC\b").to_numpy(bool) \
        if "ImageType" in df.columns else np.zeros(len(df), bool)
    multi = np.bincount(group, weights=((frames > 1) | mosaic).astype(float),
                        minlength=len(first)) > 0
    members = np.split(np.argsort(group, kind="stable"), np.cumsum(np.bincount(group))[:-1]) \
        if len(df) else []
    single = np.flatnonzero(~multi[group])
    headers = dict(zip(single.tolist(), index_headers(df.iloc[single]), strict=True))
    problems: list[str | None] = []
    for g in range(len(first)):
        if multi[g]:

            rows = df.iloc[members[g]]
            datasets = fetch_headers(rows, get_client())
            try:
                slices = stack_layout(datasets, rows.index.get_level_values("instance").tolist())[0]
            except GeometryError as exc:
                problems.append(str(exc))
                continue
        else:
            slices = [headers[k] for k in members[g].tolist()]
        problems.append(series_verdict(slices, **tolerances))
    index = df.index[first].droplevel("instance")
    problem = pd.array(problems, dtype=TEXT_DTYPE)
    return pd.DataFrame({"volume_ok": pd.array([p is None for p in problems], dtype="boolean"),
                         "volume_problem": problem}, index=index)
