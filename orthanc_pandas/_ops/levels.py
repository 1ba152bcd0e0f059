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
from orthanc_pandas._imaging.geometry import index_headers, series_verdict, stack_spacing
from orthanc_pandas._imaging.json_header import (
    LONG_TAGS,
    csa_image_tag,
    dataset_from_json,
    geometry_part,
)
from orthanc_pandas._ops.refresh import fetch_series
from orthanc_pandas._ops.selection import frame_columns, with_tags
from orthanc_pandas._util.fanout import fan_out, stopped_answering, worker_count
from orthanc_pandas.errors import (
    GeometryError,
    OrthancConnectionError,
    OrthancNotFoundError,
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


def _key(tag: int) -> str:
    return f"{tag >> 16:04x}-{tag & 0xFFFF:04x}"


#: ``/instances/{id}/tags`` query: short JSON, the long values geometry reads in full
_TAGS_QUERY = "short&ignore-length=" + ",".join(_key(t) for t in LONG_TAGS)


#: (0019,100A) Siemens' NumberOfImagesInMosaic: null in the JSON when the file's VR is implicit
_MOSAIC_COUNT = 0x0019100A


def _is_mosaic(tags: dict) -> bool:
    return any(v.strip().upper() == "MOSAIC" for v in str(tags.get("0008,0008") or "").split("\\"))


def tag_headers(client, instance_ids: list[str], *, max_workers: int | None = None,
                progress=None) -> list:
    """Each instance's header as a pydicom dataset read from Orthanc's JSON, not from its file.

    One ``GET /instances/{id}/tags?short&ignore-length=...`` per instance (the long values
    geometry reads in full, :data:`~orthanc_pandas._imaging.json_header.LONG_TAGS`). For a Siemens
    mosaic also its CSA image header and (0019,100A), the binary values the JSON shows as
    ``null``, each as stored by ``GET /instances/{id}/content/gggg-eeee`` (a few kB; never the
    file). Functional-group items keep only the macros geometry reads
    (:func:`~orthanc_pandas._imaging.json_header.geometry_part`); see
    :func:`~orthanc_pandas._imaging.json_header.dataset_from_json`.

    Examples
    --------
    >>> ds = tag_headers(client, [instance_id])[0]                         # doctest: +SKIP
    >>> ds.NumberOfFrames                                                  # doctest: +SKIP
    """
    done = [0]

    def one(iid: str):
        tags = client.get_json(f"/instances/{iid}/tags", params=_TAGS_QUERY)
        binary: dict[int, bytes] = {}
        if _is_mosaic(tags):
            wanted = [t for t in (csa_image_tag(tags), _MOSAIC_COUNT) if t is not None]
            for tag in wanted:
                key = f"{tag >> 16:04x},{tag & 0xFFFF:04x}"
                if key in tags and tags[key] is None:
                    try:
                        binary[tag] = client.get_bytes(f"/instances/{iid}/content/{_key(tag)}")
                    except OrthancNotFoundError:  # null meant empty: as the file has it
                        pass
        done[0] += 1  # a count for the error message only (GIL-atomic enough for that)
        return dataset_from_json(geometry_part(tags), binary)

    ids = list(instance_ids)
    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(ids) or 1)
    try:
        return fan_out(one, ids, workers, progress=progress, desc="Reading tags", unit="instance",
                       min_total=50, name="orthanc-tags")
    except OrthancConnectionError as exc:
        raise stopped_answering(exc, "geometry report", done[0], len(ids), "headers were read",
                                "nothing was returned (no partial report).") from None


def geometry_report(df: pd.DataFrame, get_client: Callable | None = None, *,
                    fetch: bool = True, max_workers: int | None = None, progress=None,
                    **tolerances) -> pd.DataFrame:
    """Per series of the instance frame ``df``: whether ``volume()`` would succeed, and why not.

    The checks are :func:`orthanc_pandas._imaging.geometry.slice_geometry`'s own, run on slice headers
    made from the index columns (ImagePositionPatient, ImageOrientationPatient,
    InstanceNumber, SOPInstanceUID) plus :data:`GEOMETRY_TAGS` (fetched with ``with_tags``
    when they are not columns and ``fetch`` is true). Multi-frame instances (enhanced CT/MR,
    RT Dose) carry their frame positions in sequences or GridFrameOffsetVector, which the index
    lacks, and Siemens mosaics (ImageType MOSAIC) their slice count and direction in a private
    header: for their series each instance's header is read from Orthanc's JSON
    (:func:`tag_headers`: ``/tags`` and, for mosaics, the CSA header's ``/content``; never the
    file) and laid out by the code ``volume()`` runs on the file. ``tolerances`` are
    ``slice_geometry``'s keyword arguments.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``level_frame(df, "series")``; ``volume_ok`` (boolean) and
        ``volume_problem`` (string, missing when ok); ``slice_count`` (Int64) and
        ``slice_spacing`` (Float64) of the series whose headers were read (the slices
        ``volume()`` stacks: a mosaic's tiles, RT Dose frames; missing for the others, whose
        index columns already give them).
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
    instances = df.index.get_level_values("instance")
    read = np.flatnonzero(multi[group])
    datasets = dict(zip(read.tolist(), tag_headers(get_client(), instances[read].tolist(),
                                                   max_workers=max_workers, progress=progress),
                        strict=True)) if len(read) else {}
    problems: list[str | None] = []
    counts = np.full(len(first), -1, dtype=np.int64)
    spacings = np.full(len(first), np.nan)
    for g in range(len(first)):
        if multi[g]:
            rows = members[g].tolist()
            try:
                slices, _, nframes, frame_dim = stack_layout([datasets[k] for k in rows],
                                                             instances[rows].tolist())
            except GeometryError as exc:
                problems.append(str(exc))
                continue
            counts[g] = sum(nframes) if frame_dim else len(slices)
            spacings[g] = np.nan if frame_dim else (stack_spacing(slices) or np.nan)
        else:
            slices = [headers[k] for k in members[g].tolist()]
        problems.append(series_verdict(slices, **tolerances))
    index = df.index[first].droplevel("instance")
    problem = pd.array(problems, dtype=TEXT_DTYPE)
    return pd.DataFrame({"volume_ok": pd.array([p is None for p in problems], dtype="boolean"),
                         "volume_problem": problem,
                         "slice_count": pd.array([int(c) if c >= 0 else pd.NA for c in counts],
                                                 dtype="Int64"),
                         "slice_spacing": pd.array(spacings, dtype="Float64")}, index=index)
