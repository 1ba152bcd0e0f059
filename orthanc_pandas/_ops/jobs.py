"""Orthanc jobs: polling ``/jobs/{id}``, and anonymize/modify of a frame's resources.

Orthanc runs long work (C-MOVE, C-GET, C-STORE, anonymization, modification) as
asynchronous jobs. :func:`job_status` turns the JSON of ``GET /jobs/{id}`` into one flat
status row (pure, testable on recorded JSON); :func:`run_jobs` submits many jobs with a bound
on how many run at once, polls them with a progress bar and a timeout, and returns one status
per item; :func:`modify_resources` is what ``df.orthanc.anonymize()`` / ``.modify()`` call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import pandas as pd

from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._util.bulk import check_bulk_args, workers_or
from orthanc_pandas._util.fanout import fan_out, worker_count
from orthanc_pandas._util.progress import progress_bar
from orthanc_pandas.errors import JobError, OrthancHTTPError, OrthancPandasError, SelectionError

_FINAL = {"Success", "Failure"}


_ROUTES = {"patient": "patients", "study": "studies", "series": "series", "instance": "instances"}


#: columns of the mapping frame, after ``level, resource, new_resource, job, status, reason``
MAPPING_COLUMNS = ("patient", "study", "series", "instance", "PatientID", "StudyInstanceUID",
                   "SeriesInstanceUID", "SOPInstanceUID", "new_patient", "new_study", "new_series",
                   "new_instance", "new_PatientID", "new_StudyInstanceUID", "new_SeriesInstanceUID",
                   "new_SOPInstanceUID")


def job_status(job: Mapping[str, Any]) -> dict[str, Any]:
    """One flat status row from the JSON of ``GET /jobs/{id}``. Pure.

    Returns ``job`` (id), ``type``, ``state`` (Pending, Running, Success, Failure, Paused,
    Retry), ``done`` (final state reached), ``ok``, ``progress`` (0-100), ``reason`` (Orthanc's
    error description and details, ``""`` on success) and ``content`` (the job's public
    content: e.g. the new resource's ``ID`` of an anonymization).

    Examples
    --------
    >>> job_status({"ID": "j1", "Type": "DicomMoveScu", "State": "Failure", "Progress": 0,
    ...             "ErrorCode": 9, "ErrorDescription": "Error in the network protocol",
    ...             "ErrorDetails": "DicomAssociation - connecting to AET \\"B\\": Failed"})["reason"]
    'Error in the network protocol: DicomAssociation - connecting to AET "B": Failed'
    >>> job_status({"ID": "j2", "State": "Success", "Progress": 100, "Content": {"ID": "x"}})["ok"]
    True
    """
    state = str(job.get("State", "Unknown"))
    reason = ""
    if state == "Failure":
        desc = job.get("ErrorDescription") or "failed"
        details = job.get("ErrorDetails") or ""
        reason = f"{desc}: {details}" if details else str(desc)
    content = job.get("Content") or {}
    failed = content.get("FailedInstancesCount") if isinstance(content, Mapping) else None
    if state == "Success" and failed:
        reason = f"{failed} instance(s) could not be processed"
    return {"job": job.get("ID"), "type": job.get("Type"), "state": state, "done": state in _FINAL,
            "ok": state == "Success" and not failed, "progress": float(job.get("Progress") or 0),
            "reason": reason, "content": dict(content) if isinstance(content, Mapping) else {}}


def run_jobs(client: OrthancClient, items: Iterable[Hashable], submit: Callable[[Hashable], str], *,
             max_workers: int = 2, timeout: float | None = None, progress=None, desc: str = "jobs",
             poll: float = 0.1) -> dict[Hashable, dict[str, Any]]:
    """Submit one Orthanc job per item, at most ``max_workers`` at once, and wait for them.

    ``submit(item)`` starts the job and returns its id. A submission that raises one of the
    library's errors (the server refused it) is a failed item, not an exception. When
    ``timeout`` seconds have passed, running jobs are cancelled and items not started are
    reported as such: every item gets a final status, none is left "running".

    Returns
    -------
    dict
        ``{item: job_status(...)}`` (see :func:`job_status`), in the order of ``items``.
    """
    todo = list(dict.fromkeys(items))
    results: dict[Hashable, dict[str, Any]] = {}
    running: dict[Hashable, str] = {}
    queue = list(todo)
    deadline = None if timeout is None else time.monotonic() + timeout
    with progress_bar(progress, total=len(todo), desc=desc, unit="job") as bar:
        while queue or running:
            while queue and len(running) < max(1, max_workers):
                item = queue.pop(0)
                try:
                    running[item] = submit(item)
                except OrthancPandasError as exc:
                    results[item] = {"job": None, "type": None, "state": "Failure", "done": True,
                                     "ok": False, "progress": 0.0, "reason": f"refused: {exc}",
                                     "content": {}}
                    bar.update(1)
            for item, job in list(running.items()):
                try:
                    status = job_status(client.get_json(f"/jobs/{job}"))
                except OrthancPandasError as exc:
                    status = {"job": job, "type": None, "state": "Failure", "done": True, "ok": False,
                              "progress": 0.0, "reason": f"job lost: {exc}", "content": {}}
                if status["done"]:
                    results[item] = status
                    del running[item]
                    bar.update(1)
            if deadline is not None and time.monotonic() > deadline and (running or queue):
                for item, job in running.items():
                    try:
                        client.post_json(f"/jobs/{job}/cancel", {})
                    except OrthancPandasError:
                        pass
                    results[item] = {"job": job, "type": None, "state": "Failure", "done": True,
                                     "ok": False, "progress": 0.0,
                                     "reason": f"timeout after {timeout} s (job cancelled)", "content": {}}
                for item in queue:
                    results[item] = {"job": None, "type": None, "state": "Failure", "done": True,
                                     "ok": False, "progress": 0.0,
                                     "reason": f"timeout after {timeout} s (not started)", "content": {}}
                bar.update(len(running) + len(queue))
                running.clear()
                queue.clear()
            if running:
                time.sleep(poll)
    return {item: results[item] for item in todo}


#: identifiers Orthanc changes only with ``Force`` (it fails the job otherwise)
FORCE_TAGS = frozenset({"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})


def beyond_rows(df: pd.DataFrame, client: OrthancClient, level: str) -> dict[str, int]:
    """Resource id at ``level`` -> how many of its instances on the server are not rows of ``df``.

    One ``/{level}/{id}/statistics`` request per resource (none at instance level); a resource
    the server no longer has counts 0.
    """
    if level == "instance":
        return {}
    have = df.index.to_frame(index=False).drop_duplicates("instance").groupby(
        level, sort=False, observed=True).size()
    out = {}
    for rid, n in have.items():
        try:
            total = int(client.get_json(f"/{_ROUTES[level]}/{rid}/statistics")["CountInstances"])
        except OrthancHTTPError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            total = int(n)
        out[str(rid)] = max(total - int(n), 0)
    return out


def exact_level(df: pd.DataFrame, client: OrthancClient, what: str) -> str:
    """The coarsest level whose resources the rows hold whole (patient, study, then series).

    Anonymizing or modifying at that level acts on exactly the rows, and keeps together what
    belongs together (a study's series stay one new study). Rows that hold part of a series
    are refused: Orthanc acts on whole series at the least.
    """
    for level in ("patient", "study", "series"):
        extra = beyond_rows(df, client, level)
        if not any(extra.values()):
            return level
    n = sum(v > 0 for v in extra.values())
    raise SelectionError(
        f"{what}() acts on exactly the rows, but the rows hold part of {n} series (their other "
        f"{sum(extra.values())} instances are not rows), and Orthanc {what}s whole series at "
        f"the least. Select whole series (e.g. df[df.index.get_level_values('series').isin(...)] "
        f"of a fresh read), or name the level to act on the whole series: level='series' (the "
        f"dry run's beyond_rows column says how many instances that adds).")


def _check_force(action: str, keep, replace, remove, force: bool) -> None:
    touched = set(replace or {}) | set(remove) | (set(keep) if action == "anonymize" else set())
    if touched & FORCE_TAGS and not force:
        raise SelectionError(
            f"{action}() would change {sorted(touched & FORCE_TAGS)}, DICOM identifiers Orthanc "
            f"changes only when forced (it would fail every job). Pass force=True if you mean it: "
            f"the new resources then break the link to the originals' identifiers.")


def _level_resources(df: pd.DataFrame, level: str) -> list[str]:
    ids = df.index.get_level_values(level)
    return [i for i in dict.fromkeys(ids) if isinstance(i, str) and i]


def _describe(client: OrthancClient, level: str, rid: str) -> list[dict]:
    """One row per instance of resource ``rid``: its four ids and four UIDs."""
    route = _ROUTES[level]
    if level == "instance":
        instances = [client.get_json(f"/instances/{rid}")]
    else:
        instances = client.get_json(f"/{route}/{rid}/instances", params={"expand": ""})
    series = ({s["ID"]: s for s in client.get_json(f"/{route}/{rid}/series", params={"expand": ""})}
              if level in ("patient", "study") else {})
    studies: dict[str, dict] = {}
    rows = []
    for inst in instances:
        sid = inst["ParentSeries"]
        if sid not in series:
            series[sid] = client.get_json(f"/series/{sid}")
        stid = series[sid]["ParentStudy"]
        if stid not in studies:
            studies[stid] = client.get_json(f"/studies/{stid}")
        st = studies[stid]
        rows.append({"patient": st["ParentPatient"], "study": stid, "series": sid, "instance": inst["ID"],
                     "PatientID": (st.get("PatientMainDicomTags") or {}).get("PatientID"),
                     "StudyInstanceUID": st["MainDicomTags"].get("StudyInstanceUID"),
                     "SeriesInstanceUID": series[sid]["MainDicomTags"].get("SeriesInstanceUID"),
                     "SOPInstanceUID": inst["MainDicomTags"].get("SOPInstanceUID")})
    return rows


def _remove_partial_copies(client: OrthancClient, route: str, meta: str, statuses: dict,
                           sources: dict[str, list[dict]], existing: set[str]) -> None:
    """Delete what a failed job wrote before failing, so a failure leaves no half copy.

    Orthanc writes the modified instances one by one; a job that fails on the n-th leaves the
    first n-1 as a new resource. It is found among the resources that appeared during the run
    by the ``AnonymizedFrom``/``ModifiedFrom`` metadata of its instances.
    """
    failed = {rid for rid, st in statuses.items() if not st["ok"] and rid in sources}
    if not failed or route == "instances":
        return
    made = {st["content"].get("ID") for st in statuses.values() if st["ok"]}
    appeared = set(client.get_json(f"/{route}")) - existing - made
    owner = {r["instance"]: rid for rid in failed for r in sources[rid]}
    for new in appeared:
        try:
            first = client.get_json(f"/{route}/{new}/instances")[0]["ID"]
            origin = client.get_bytes(f"/instances/{first}/metadata/{meta}").decode()
        except (OrthancPandasError, IndexError):
            continue
        rid = owner.get(origin)
        if rid is None:
            continue
        try:
            client.delete(f"/{route}/{new}")
            note = f"; its partial copy {new} was deleted"
        except OrthancPandasError as exc:
            note = f"; its partial copy {new} could not be deleted ({exc})"
        statuses[rid] = {**statuses[rid], "reason": statuses[rid]["reason"] + note}


def _first_rows(df: pd.DataFrame, level: str) -> dict[str, dict]:
    """Resource id at ``level`` -> its ids down to ``level`` and the UIDs the frame has for it."""
    depth = ("patient", "study", "series", "instance").index(level) + 1
    ids = ["patient", "study", "series", "instance"][:depth]
    uids = [u for u in MAPPING_COLUMNS[4:4 + depth] if u in df.columns]
    table = df.index.to_frame(index=False)[ids]
    for u in uids:
        table[u] = df[u].astype(object).to_numpy()
    table = table.drop_duplicates(subset=[level])
    return {str(row[level]): {k: (None if pd.isna(v) else str(v)) for k, v in row.items()}
            for row in table.to_dict("records") if isinstance(row[level], str) and row[level]}


def _report_shape(out: pd.DataFrame) -> pd.DataFrame:
    """The report's columns in order, all ``string``: a dry run and a real run look alike."""
    columns = ["level", "resource", "new_resource", "job", "status", "reason", "beyond_rows",
               *MAPPING_COLUMNS]
    return out.reindex(columns=columns).astype("string")


def modify_resources(df: pd.DataFrame, client: OrthancClient, action: str = "anonymize", *,
                     level: str | None = None, keep: Iterable[str] = (), replace: Mapping[str, str] | None = None,
                     remove: Iterable[str] = (), keep_source: bool = True, force: bool = False,
                     confirm: bool = False, done: pd.DataFrame | None = None,
                     max_workers: int | None = None, timeout: float | None = None, progress=None,
                     errors: str = "raise") -> pd.DataFrame:
    """Anonymize or modify the rows' resources at ``level`` as Orthanc jobs; the mapping frame.

    See :meth:`orthanc_pandas._accessors.frame.InstanceAccessor.anonymize` for the parameters
    (``max_workers=None``: 2 jobs at a time).

    Returns
    -------
    pandas.DataFrame
        One row per instance of each resource (one per resource on a dry run): ``level``,
        ``resource`` (source id at ``level``), ``new_resource``, ``job``, ``status``
        (``would anonymize``/``would modify`` on a dry run, ``done``, ``done before`` (in
        ``done=``, not redone), ``failed``), ``reason``, then the source ids and UIDs and
        their ``new_`` counterparts. The same columns, all ``string``, on a dry run and a
        real one (a dry run fills the ids down to ``level`` from the frame).
    """
    if action not in ("anonymize", "modify"):
        raise ValueError(f"action must be 'anonymize' or 'modify', got {action!r}.")
    if level is not None and level not in _ROUTES:
        raise ValueError(f"level must be one of {tuple(_ROUTES)} or None (exactly the rows), "
                         f"got {level!r}.")
    check_bulk_args(max_workers, errors)
    _check_force(action, keep, replace, remove, force)
    if level is None:
        level = exact_level(df, client, action)
    beyond = beyond_rows(df, client, level)
    resources = _level_resources(df, level)
    finished: dict[str, pd.DataFrame] = {}
    if done is not None and len(done):
        ok = done[(done["status"].isin(["done", "done before"])) & (done["level"] == level)]
        for rid, rows in ok.groupby("resource", sort=False):
            finished[str(rid)] = rows.assign(status="done before")
    body: dict[str, Any] = {"Asynchronous": True, "KeepSource": bool(keep_source), "Force": bool(force)}
    if replace:
        body["Replace"] = dict(replace)
    if keep:
        body["Keep"] = list(keep)
    if remove:
        body["Remove"] = list(remove)
    route = _ROUTES[level]
    todo = [r for r in resources if r not in finished]
    if not confirm:
        first = _first_rows(df, level)
        plan = pd.DataFrame([{"level": level, "resource": rid, "status": f"would {action}", "reason": "",
                              "beyond_rows": beyond.get(rid, 0), **first.get(rid, {})} for rid in todo])
        parts = [p for p in (plan, *finished.values()) if len(p)]
        out = _report_shape(pd.concat(parts, ignore_index=True) if parts else plan)
        out.attrs["dry_run"] = True
        return out

    sources: dict[str, list[dict]] = {}

    def submit(rid):
        sources[rid] = _describe(client, level, rid)  # before the job: the source may go
        return client.post_json(f"/{route}/{rid}/{action}", body)["ID"]

    existing = set(client.get_json(f"/{route}"))
    statuses = run_jobs(client, todo, submit, max_workers=workers_or(max_workers, 2), timeout=timeout,
                        progress=progress, desc=action)
    meta = "AnonymizedFrom" if action == "anonymize" else "ModifiedFrom"
    _remove_partial_copies(client, route, meta, statuses, sources, existing)
    frames = []
    for rid in resources:
        if rid in finished:
            frames.append(finished[rid])
            continue
        st = statuses[rid]
        new = st["content"].get("ID")
        head = {"level": level, "resource": rid, "new_resource": new, "job": st["job"],
                "beyond_rows": beyond.get(rid, 0)}
        if not st["ok"] or not new:
            frames.append(pd.DataFrame([{**head, "status": "failed", "reason": st["reason"] or "no result"}]))
            continue
        try:
            created = _describe(client, level, new)
            origin = fan_out(
                lambda r: client.get_bytes(f"/instances/{r['instance']}/metadata/{meta}").decode(),
                created, worker_count(None, pool_size=client.pool_size), name="orthanc-jobs")
        except OrthancPandasError as exc:
            frames.append(pd.DataFrame([{**head, "status": "failed", "reason": f"result unreadable: {exc}"}]))
            continue
        src = {r["instance"]: r for r in sources.get(rid, [])}
        rows = []
        for new_row, from_id in zip(created, origin, strict=True):
            old = src.get(from_id, {"instance": from_id})
            rows.append({**head, "status": "done", "reason": "",
                         **{k: old.get(k) for k in MAPPING_COLUMNS[:8]},
                         **{"new_" + k: v for k, v in new_row.items()}})
        frames.append(pd.DataFrame(rows))
    out = _report_shape(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())
    out.attrs["dry_run"] = False
    failed = out[out.status == "failed"]
    if len(failed) and errors == "raise":
        first = failed.iloc[0]
        raise JobError(f"{len(failed)} of {len(resources)} {level} {action} job(s) failed (first: "
                       f"{first['resource']}: {first['reason']}). The report is the error's .report; "
                       f"run again with done=error.report to do only the rest.", report=out)
    return out
