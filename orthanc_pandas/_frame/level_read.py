"""Series, study and patient frames from the level lists alone (no instance row). Pure: no HTTP.

``read_orthanc(url, level="series")`` reads the series, study and patient lists, whose size
grows with the series, never with the instances, and this module turns them into the frame
``read_orthanc(url).orthanc.series()`` gives (``.studies()``, ``.patients()`` likewise):

* the rows are built by the instance read's own code (:func:`build_frame` on one stand-in
  row per series, then :func:`level_frame`), so index, row order, column order, dtypes and
  categories are those of the level frame of a full read;
* ``instance_count`` is the server's count per series (``NumberOfSeriesRelatedInstances``
  of extended ``/tools/find``, or the length of ``Instances`` in ``GET /series?expand``),
  summed per study and patient;
* the series aggregates that only the instance rows hold are typed, all-missing columns
  (:data:`MISSING`), and those the server keeps at series level are the series' stored value
  (:data:`FROM_SERIES`). See ``docs/series.md``, "Series-first reading".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from orthanc_pandas._frame.levels import group_codes, level_frame
from orthanc_pandas._frame.schema import LevelTable, build_frame, missing_values

#: Series aggregates a series-first frame cannot have at series cost: they are computed from
#: every instance's NumberOfFrames (``slice_count``) or ImagePositionPatient
#: (``slice_spacing``), which the server stores per instance only. Typed, all-missing columns.
MISSING: dict[str, tuple[str, ...]] = {
    "series": ("slice_count", "slice_spacing"),
    "study": (),
    "patient": (),
}

#: Series aggregates taken from what the server stores for the series: Orthanc keeps the
#: ImageOrientationPatient of the first instance it received as a series main tag (and
#: PixelSpacing, FrameOfReferenceUID where ``ExtraMainDicomTags`` adds them), where
#: ``.series()`` takes the first instance in the frame's order. They agree whenever the
#: instances of the series share the value; a series mixing orientations (a localizer in an
#: axial stack) may get another instance's value. ``orientation`` follows the cosines.
FROM_SERIES: tuple[str, ...] = (
    "orientation",
    *(f"ImageOrientationPatient_{i}" for i in range(6)),
    "PixelSpacing_0", "PixelSpacing_1", "FrameOfReferenceUID",
)

#: What extended ``/tools/find`` at series level is asked for: the series' tags and parent,
#: the metadata that holds ``ExpectedNumberOfInstances`` (``orthanc_series_expected_instances``)
#: and the instance count. Not ``Status``: Orthanc 1.13 then reads the ``IndexInSeries``
#: metadata of every instance of every series asked (measured on 1M instances, 20,000 series:
#: 1.7 s of each 2.1 s page of 5,000 series), whereas a series without
#: ``ExpectedNumberOfInstances`` is ``Unknown`` by definition. :func:`series_resource` says so,
#: and the status of the others is asked for them alone (:data:`STATUS_FIND_CONTENT`).
SERIES_FIND_CONTENT = ["MainDicomTags", "Parent", "Metadata"]
SERIES_COUNT_TAG = "NumberOfSeriesRelatedInstances"
STATUS_FIND_CONTENT = ["Metadata", "Status"]  # 1.13 says Unknown without Metadata


def series_resource(resource: Mapping) -> tuple[dict, int]:
    """One series of a list page as ``(row, instance count)``, whichever route gave it.

    ``GET /series?expand`` rows carry ``Instances`` (their ids: the count) and
    ``ExpectedNumberOfInstances``; extended ``/tools/find`` rows carry ``RequestedTags``
    (``NumberOfSeriesRelatedInstances``) and ``Metadata`` (``ExpectedNumberOfInstances`` as
    text). The row returned has the expanded-list form :class:`LevelTable` reads, without the
    instance ids.

    Examples
    --------
    >>> series_resource({"ID": "s", "ParentStudy": "t", "Instances": ["a", "b"],
    ...                  "ExpectedNumberOfInstances": None, "MainDicomTags": {}})[1]
    2
    >>> row, n = series_resource({"ID": "s", "ParentStudy": "t", "MainDicomTags": {},
    ...     "Metadata": {"ExpectedNumberOfInstances": "3"},
    ...     "RequestedTags": {"NumberOfSeriesRelatedInstances": "3"}})
    >>> row["ExpectedNumberOfInstances"], n
    (3, 3)
    """
    row = {k: v for k, v in resource.items() if k not in ("Instances", "RequestedTags", "Metadata")}
    if "Instances" in resource:
        return row, len(resource["Instances"])
    expected = (resource.get("Metadata") or {}).get("ExpectedNumberOfInstances")
    row["ExpectedNumberOfInstances"] = int(expected) if str(expected or "").isdigit() else None
    if "Status" not in row and row["ExpectedNumberOfInstances"] is None:
        row["Status"] = "Unknown"  # Orthanc's status of a series that expects no count
    return row, int((resource.get("RequestedTags") or {})[SERIES_COUNT_TAG])


def needs_status(row: Mapping) -> bool:
    """Whether a series row of :func:`series_resource` still lacks the server's ``Status``
    (it expects a number of instances, so only the server can say whether they are there).

    >>> needs_status(series_resource({"ID": "s", "ParentStudy": "t", "MainDicomTags": {},
    ...     "Metadata": {}, "RequestedTags": {"NumberOfSeriesRelatedInstances": "3"}})[0])
    False
    >>> needs_status(series_resource({"ID": "s", "ParentStudy": "t", "MainDicomTags": {},
    ...     "Metadata": {"ExpectedNumberOfInstances": "3"},
    ...     "RequestedTags": {"NumberOfSeriesRelatedInstances": "3"}})[0])
    True
    """
    return "Status" not in row


def _stand_ins(series_ids) -> LevelTable:
    """One instance row per series, holding no tag: :func:`build_frame` then gives one row per
    series with the parents' columns exactly as it gives them to the instances."""
    return LevelTable.from_resources(
        "instance", [{"ID": sid, "ParentSeries": sid, "MainDicomTags": {}} for sid in series_ids])


def frame_from_levels(tables: Mapping[str, LevelTable], instance_counts: Mapping[str, int],
                      level: str, *, typed: bool = True) -> pd.DataFrame:
    """The ``level`` frame of an archive from its series, study and patient tables.

    Parameters
    ----------
    tables : mapping {"patient", "study", "series"} -> LevelTable
        The three lists, as ``read_orthanc`` reads them (series rows through
        :func:`series_resource`).
    instance_counts : mapping series id -> int
        Instances per series.
    level : {"series", "study", "patient"}
    typed : bool, default True
        As ``read_orthanc(typed=...)``.

    Returns
    -------
    pandas.DataFrame
        What ``level_frame(instance_frame, level)`` gives, except the columns of
        :data:`MISSING` (all missing) and :data:`FROM_SERIES` (the series' stored values);
        ``attrs`` empty (the caller sets the provenance).

    Examples
    --------
    >>> t = {"patient": LevelTable.from_resources("patient", [{"ID": "p", "MainDicomTags": {}}]),
    ...      "study": LevelTable.from_resources("study", [
    ...          {"ID": "st", "ParentPatient": "p", "MainDicomTags": {}}]),
    ...      "series": LevelTable.from_resources("series", [
    ...          {"ID": "a", "ParentStudy": "st", "MainDicomTags": {"Modality": "CT"}},
    ...          {"ID": "b", "ParentStudy": "st", "MainDicomTags": {"Modality": "MR"}}])}
    >>> s = frame_from_levels(t, {"a": 3, "b": 2}, "series")
    >>> s.instance_count.tolist(), s.slice_count.isna().all()
    ([3, 2], np.True_)
    >>> frame_from_levels(t, {"a": 3, "b": 2}, "study")[["series_count", "instance_count"]].values.tolist()
    [[2, 5]]
    """
    if level not in ("series", "study", "patient"):
        raise ValueError(f"level must be 'series', 'study' or 'patient', not {level!r}.")
    series = tables["series"].finish()
    ids = series["ID"].to_pylist()
    rows = build_frame({"patient": tables["patient"], "study": tables["study"],
                        "series": series, "instance": _stand_ins(ids)}, typed=typed)
    out = level_frame(rows, level)
    out.attrs = {}
    counts = np.array([int(instance_counts[s]) for s in rows.index.get_level_values("series")],
                      dtype=np.int64)
    _, group, _ = group_codes(rows, level)
    per_row = np.bincount(group, weights=counts, minlength=len(out)).astype(np.int64)
    out["instance_count"] = pd.array(per_row, dtype="Int64")
    for name in MISSING[level]:
        out[name] = missing_values(out[name].dtype, len(out))
    return out


def levels_read(level: str) -> dict[str, list[str]]:
    """The columns of a ``level`` frame read level-first that differ from ``.series()`` &c.

    >>> levels_read("series")["missing"]
    ['slice_count', 'slice_spacing']
    """
    return {"missing": list(MISSING[level]),
            "from_series": list(FROM_SERIES) if level == "series" else []}

