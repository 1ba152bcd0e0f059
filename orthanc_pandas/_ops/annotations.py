"""``df.orthanc.annotations()`` and ``with_annotation()``: the SEG/RTSTRUCT index of a frame.

Steps, each in bulk (threads only through ``fan_out``):

1. **Which instances.** On an instance frame, the rows whose ``Modality`` is SEG or RTSTRUCT.
   On a level frame, the instances of its SEG/RTSTRUCT series: from an instance frame passed as
   ``df`` (no request), else from the server (``GET /series/{id}`` per SEG/RTSTRUCT series row;
   for study and patient rows ``GET /studies/{id}/series`` / ``GET /patients/{id}/series``,
   skipping studies whose ``modalities`` column names neither).
2. **Their headers**, without pixel data (``_ops.headers``: each file is read up to its pixel
   data; an RTSTRUCT has none, so its file is read whole), parsed by
   :func:`orthanc_pandas._frame.annotations.annotation_records`.
3. **The source series.** A referenced SeriesInstanceUID (or SOPInstanceUID) is first looked
   up among the rows of the frame(s) at hand, then with ``POST /tools/lookup`` (one request
   per distinct UID not found; ``GET /instances/{id}`` for an instance's series). For each
   source series its study, patient and the FrameOfReferenceUID of one of its instances:
   from the frame where it has them, else ``GET /series/{id}``, ``GET /studies/{id}`` and
   ``GET /instances/{id}/content/0020-0052`` (a few bytes).

A source series that is not on the server keeps its UID and gets missing Orthanc ids.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from orthanc_pandas._frame.annotations import (
    ANNOTATION_COLUMNS,
    ANNOTATION_MODALITIES,
    annotation_frame,
    annotation_records,
)
from orthanc_pandas._frame.contract import LEVEL_INDEX
from orthanc_pandas._frame.matching import mask
from orthanc_pandas._frame.schema import INDEX_NAMES, TEXT_DTYPE
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._ops.headers import headers as fetch_headers
from orthanc_pandas._util.bulk import check_bulk_args
from orthanc_pandas._util.fanout import fan_out, worker_count
from orthanc_pandas.errors import OrthancNotFoundError, SelectionError


def _text_column(df: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in df.columns:
        return None
    return df[name].astype(TEXT_DTYPE).to_numpy(dtype=object, na_value=None)


def _is_annotation(modality: np.ndarray | None, n: int) -> np.ndarray:
    if modality is None:
        return np.ones(n, dtype=bool)  # no Modality column: every row is read and checked
    return np.isin(modality.astype(object), list(ANNOTATION_MODALITIES))


class _Known:
    """What the frames at hand say about series and instances, so as not to ask the server."""

    def __init__(self):
        self.series_by_uid: dict[str, str] = {}
        self.instance_by_uid: dict[str, str] = {}
        self.series_of_instance: dict[str, str] = {}
        self.parents: dict[str, tuple[str | None, str]] = {}  # series id -> (patient, study)
        self.instance_of_series: dict[str, str] = {}          # series id -> one instance id
        self.frame_of: dict[str, str | None] = {}             # series id -> FrameOfReferenceUID
        self.uid_of_series: dict[str, str] = {}
        self._instance_frames: list[pd.DataFrame] = []

    def add_frame(self, df: pd.DataFrame | None, level: str) -> None:
        if df is None or not len(df) or level in ("study", "patient"):
            return
        cols = [c for c in ("SeriesInstanceUID", "FrameOfReferenceUID") if c in df.columns]
        first = df[cols][~df.index.get_level_values("series").duplicated()]  # one row per series
        idx = first.index.to_frame(index=False)
        uids = _text_column(first, "SeriesInstanceUID")
        frames = _text_column(first, "FrameOfReferenceUID")
        for k, sid in enumerate(idx["series"].to_numpy(object)):
            if sid in self.parents:
                continue
            self.parents[sid] = (idx["patient"].iat[k], idx["study"].iat[k])
            if uids is not None and uids[k]:
                self.series_by_uid.setdefault(uids[k], sid)
                self.uid_of_series[sid] = uids[k]
            if frames is not None and frames[k]:
                self.frame_of[sid] = frames[k]
            if level == "instance":
                self.instance_of_series[sid] = idx["instance"].iat[k]
        if level == "instance" and "SOPInstanceUID" in df.columns:
            self._instance_frames.append(df)

    def find_instances(self, uids: set[str]) -> None:
        """Look ``uids`` (SOPInstanceUIDs) up among the instance rows at hand."""
        for df in self._instance_frames:
            hit = df[df["SOPInstanceUID"].astype(TEXT_DTYPE).isin(list(uids)).fillna(False).to_numpy(bool)]
            sops = _text_column(hit, "SOPInstanceUID")
            for sop, (_p, _st, sid, iid) in zip(sops, hit.index, strict=True):
                self.instance_by_uid.setdefault(sop, iid)
                self.series_of_instance.setdefault(iid, sid)


def _fan(client: OrthancClient, fn: Callable, items: Iterable, max_workers, desc: str) -> list:
    items = list(items)
    if not items:
        return []
    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(items))
    return fan_out(fn, items, workers, progress=None, desc=desc, unit="requests", min_total=200,
                   name="orthanc-annotations")


def _lookup(client: OrthancClient, uid: str, kind: str) -> str | None:
    answer = client.post_json("/tools/lookup", data=uid.encode(), idempotent=True) or []
    return next((a["ID"] for a in answer if a.get("Type") == kind), None)


def _get(client: OrthancClient, path: str) -> dict | None:
    try:
        return client.get_json(path)
    except OrthancNotFoundError:
        return None


def _frame_of_reference(client: OrthancClient, instance_id: str) -> str | None:
    try:
        raw = client.get_bytes(f"/instances/{instance_id}/content/0020-0052")
    except OrthancNotFoundError:
        return None
    return raw.decode("ascii", "replace").strip(" \x00") or None


def annotation_instances(frame: pd.DataFrame, level: str, client_fn: Callable[[], OrthancClient], *,
                         instances: pd.DataFrame | None = None,
                         max_workers: int | None = None) -> pd.DataFrame:
    """The instance rows (a frame with the instance index; columns as found) of the frame's
    SEG and RTSTRUCT instances, each once (step 1 of the module docstring)."""
    if level == "instance" or instances is not None:
        rows = frame if level == "instance" else instances[
            instances.index.get_level_values(level).isin(frame.index.get_level_values(level))]
        rows = rows[_is_annotation(_text_column(rows, "Modality"), len(rows))]
        return rows[~rows.index.get_level_values("instance").duplicated()]
    keep = _is_annotation(_text_column(frame, "Modality"), len(frame))
    if level == "study" and "modalities" in frame.columns:
        mods = frame["modalities"].astype(TEXT_DTYPE).fillna("").str.split("\\")
        keep &= mods.map(lambda m: bool(set(m) & set(ANNOTATION_MODALITIES))).to_numpy(bool)
    rows = frame[keep]
    tuples: list[tuple] = []
    if len(rows):
        client = client_fn()
        ids = rows.index.to_frame(index=False)
        if level == "series":
            def one(row):
                answer = _get(client, f"/series/{row[2]}") or {}
                return [(*row, iid) for iid in answer.get("Instances", [])]
            parts = _fan(client, one, ids[LEVEL_INDEX["series"]].itertuples(index=False, name=None),
                         max_workers, "Listing annotation series")
        else:
            route = "studies" if level == "study" else "patients"

            def one(key):
                found = []
                for s in _get(client, f"/{route}/{key[-1]}/series") or []:
                    if s.get("MainDicomTags", {}).get("Modality") in ANNOTATION_MODALITIES:
                        study = s.get("ParentStudy") or key[-1]
                        patient = key[0]
                        found += [(patient, study, s["ID"], iid) for iid in s.get("Instances", [])]
                return found
            keys = ids[LEVEL_INDEX[level]].itertuples(index=False, name=None)
            parts = _fan(client, one, keys, max_workers, "Listing annotation series")
        tuples = [t for part in parts for t in part]
    index = pd.MultiIndex.from_tuples(tuples, names=INDEX_NAMES) if tuples else \
        pd.MultiIndex.from_arrays([[]] * 4, names=INDEX_NAMES)
    out = pd.DataFrame(index=index)
    out.attrs = copy.deepcopy(frame.attrs)
    return out


def _resolve(records: list[dict], known: _Known, client_fn: Callable[[], OrthancClient],
             max_workers) -> None:
    """Fill the source columns of ``records`` in place (step 3 of the module docstring)."""
    series_uids = {r["source_series_uid"] for r in records if r.get("source_series_uid")}
    instance_uids = {r["source_instance_uid"] for r in records
                     if not r.get("source_series_uid") and r.get("source_instance_uid")}
    ask_series = sorted(u for u in series_uids if u not in known.series_by_uid)
    if instance_uids:
        known.find_instances(instance_uids)
    ask_instances = sorted(u for u in instance_uids if u not in known.instance_by_uid)
    client = client_fn() if (ask_series or ask_instances or records) else None
    for uid, sid in zip(ask_series, _fan(client, lambda u: _lookup(client, u, "Series"),
                                         ask_series, max_workers, "Looking up series"), strict=True):
        if sid:
            known.series_by_uid[uid] = sid
            known.uid_of_series[sid] = uid
    for uid, iid in zip(ask_instances, _fan(client, lambda u: _lookup(client, u, "Instance"),
                                            ask_instances, max_workers, "Looking up instances"),
                        strict=True):
        if iid:
            known.instance_by_uid[uid] = iid
    need_parent = sorted({iid for uid in instance_uids if (iid := known.instance_by_uid.get(uid))
                          and iid not in known.series_of_instance})
    for iid, answer in zip(need_parent, _fan(client, lambda i: _get(client, f"/instances/{i}"),
                                             need_parent, max_workers, "Reading instances"),
                           strict=True):
        if answer and answer.get("ParentSeries"):
            known.series_of_instance[iid] = answer["ParentSeries"]
    for r in records:
        sid = known.series_by_uid.get(r["source_series_uid"]) if r.get("source_series_uid") else \
            known.series_of_instance.get(known.instance_by_uid.get(r.get("source_instance_uid") or ""))
        r["source_series"] = sid
    wanted = sorted({r["source_series"] for r in records if r["source_series"]})
    ask = [s for s in wanted if s not in known.parents or s not in known.instance_of_series
           or s not in known.uid_of_series]
    for sid, answer in zip(ask, _fan(client, lambda s: _get(client, f"/series/{s}"), ask,
                                     max_workers, "Reading source series"), strict=True):
        if not answer:
            continue
        if answer.get("Instances"):
            known.instance_of_series.setdefault(sid, answer["Instances"][0])
        uid = (answer.get("MainDicomTags") or {}).get("SeriesInstanceUID")
        if uid:
            known.uid_of_series.setdefault(sid, uid.strip())
        if sid not in known.parents and answer.get("ParentStudy"):
            known.parents[sid] = (None, answer["ParentStudy"])
    studies = sorted({known.parents[s][1] for s in wanted
                      if s in known.parents and known.parents[s][0] is None})
    patient_of = dict(zip(studies, [(a or {}).get("ParentPatient") for a in _fan(
        client, lambda st: _get(client, f"/studies/{st}"), studies, max_workers, "Reading studies")],
        strict=True))
    for s in wanted:
        if s in known.parents and known.parents[s][0] is None:
            known.parents[s] = (patient_of.get(known.parents[s][1]), known.parents[s][1])
    ask_frame = [s for s in wanted if s not in known.frame_of and s in known.instance_of_series]
    for sid, frame in zip(ask_frame, _fan(client, lambda s: _frame_of_reference(
            client, known.instance_of_series[s]), ask_frame, max_workers, "Reading frames of reference"),
            strict=True):
        known.frame_of[sid] = frame
    for r in records:
        sid = r["source_series"]
        patient, study = known.parents.get(sid, (None, None)) if sid else (None, None)
        r["source_patient"], r["source_study"] = patient, study
        if sid and not r.get("source_series_uid"):
            r["source_series_uid"] = known.uid_of_series.get(sid)
        theirs = known.frame_of.get(sid) if sid else None
        r["source_frame_of_reference_uid"] = theirs
        ours = r.get("frame_of_reference_uid")
        r["frame_of_reference_matches"] = (ours == theirs) if (ours and theirs) else None


def _table_attrs(frame: pd.DataFrame) -> dict:
    info = copy.deepcopy((frame.attrs or {}).get("orthanc") or {})
    for key in ("level", "read_level", "missing_columns", "criteria"):
        info.pop(key, None)
    info["table"] = "annotations"
    return {"orthanc": info}


def annotations(frame: pd.DataFrame, level: str, client_fn: Callable[[], OrthancClient], *,
                instances: pd.DataFrame | None = None, progress=None,
                max_workers: int | None = None, errors: str = "raise") -> pd.DataFrame:
    """The annotation table of a frame: one row per segment of each SEG and ROI of each RTSTRUCT.

    Parameters
    ----------
    frame : pandas.DataFrame
        An instance frame, or a series, study or patient frame.
    level : {"instance", "series", "study", "patient"}
        ``frame``'s level.
    client_fn : callable
        Gives the client (called only when a request is needed).
    instances : pandas.DataFrame, optional
        For a level frame: the instance frame it was made from (no listing request, and
        source series found among its rows).
    progress, max_workers, errors
        As for ``headers()``: ``errors="report"`` leaves out an annotation the server refuses
        and names it in ``result.attrs["errors"]``.

    Returns
    -------
    pandas.DataFrame
        :data:`~orthanc_pandas._frame.annotations.ANNOTATION_COLUMNS`, a default index, in the
        order of the annotation rows and then of their segments/ROIs; ``attrs["orthanc"]``:
        the frame's provenance with ``table="annotations"``.
    """
    check_bulk_args(max_workers, errors)
    rows = annotation_instances(frame, level, client_fn, instances=instances, max_workers=max_workers)
    records: list[dict] = []
    failed: dict = {}
    if len(rows):
        datasets = fetch_headers(rows, client_fn(), progress=progress, max_workers=max_workers,
                                 errors=errors)
        failed = datasets.attrs.get("errors", {})
        for (patient, study, series, instance), ds in zip(rows.index, datasets, strict=True):
            if ds is None:
                continue
            for rec in annotation_records(ds):
                rec.update(annotation_patient=patient, annotation_study=study,
                           annotation_series=series, annotation_instance=instance)
                records.append(rec)
    known = _Known()
    known.add_frame(frame, level)
    if instances is not None:
        known.add_frame(instances, "instance")
    if records:
        _resolve(records, known, client_fn, max_workers)
    out = annotation_frame(records, _table_attrs(frame))
    if errors == "report":
        out.attrs["errors"] = dict(failed)
    return out


#: Which column of the annotation table says where the rows of each level are
_SOURCE_OF = {"instance": ("series", "source_series"), "series": ("series", "source_series"),
              "study": ("study", "source_study"), "patient": ("patient", "source_patient")}


def match_annotations(table: pd.DataFrame, criteria: Mapping, *,
                      case_sensitive: bool = False) -> pd.DataFrame:
    """The rows of an annotation table matching every criterion (``select``'s criterion forms).

    Examples
    --------
    >>> t = annotation_frame([{"label": "Liver"}, {"label": "spleen"}, {"label": "liver cyst"}])
    >>> match_annotations(t, {"label": "liver*"}).label.tolist()
    ['Liver', 'liver cyst']
    >>> match_annotations(t, {"label": ["spleen", "liver"]}).label.tolist()
    ['Liver', 'spleen']
    """
    missing = [k for k in criteria if k not in table.columns]
    if missing:
        raise SelectionError(
            f"{', '.join(map(repr, missing))} is not a column of the annotation table; its "
            f"columns are {', '.join(ANNOTATION_COLUMNS)} (e.g. label='liver*', "
            "type_code='10200004', Modality='RTSTRUCT').")
    keep = np.ones(len(table), dtype=bool)
    for key, crit in criteria.items():
        keep &= mask(table[key], crit, "", case_sensitive, name=str(key))
    return table[keep]


def with_annotation(frame: pd.DataFrame, level: str, table: pd.DataFrame, criteria: Mapping, *,
                    case_sensitive: bool = False) -> pd.DataFrame:
    """The rows of ``frame`` that are annotated by a matching row of ``table``.

    Instance and series rows: those of a matching annotation's source series. Study and
    patient rows: those holding such a source series. A boolean mask on ``frame``.
    """
    if not criteria:
        raise SelectionError("with_annotation() needs at least one criterion, e.g. "
                             "label='liver*' or type_code='10200004'.")
    missing = [c for c in ANNOTATION_COLUMNS if c not in table.columns]
    if missing:
        raise SelectionError(f"annotations= is not an annotation table (no {missing[0]!r} column); "
                             "pass the frame df.orthanc.annotations() returns.")
    matched = match_annotations(table, criteria, case_sensitive=case_sensitive)
    by, column = _SOURCE_OF[level]
    ids = pd.Index(matched[column].dropna().astype(object).unique())
    out = frame[frame.index.get_level_values(by).isin(ids)]
    out.attrs = copy.deepcopy(frame.attrs)
    return out
