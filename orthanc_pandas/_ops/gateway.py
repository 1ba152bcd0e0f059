"""Orthanc as a DICOM gateway: C-ECHO, C-FIND, C-MOVE/C-GET and C-STORE as frames and reports.

A research Orthanc reaches the clinical archive (PACS) over DICOM. :func:`query` asks a
registered modality (C-FIND through ``POST /modalities/{m}/query``) and returns the answers as
a frame typed exactly like :func:`~orthanc_pandas.read_orthanc`'s index, reduced to the query
level; :func:`retrieve` pulls the rows' studies/series/instances into Orthanc as asynchronous
jobs (C-MOVE, or C-GET where the server has it), one job per resource, and reports each;
:func:`send` stores rows to a modality or Orthanc peer; :func:`echo` checks a connection.

The index of an answer frame holds the Orthanc ids the resources have (and will have here
once retrieved): Orthanc ids are SHA-1 hashes of the DICOM identifiers, the same on every
server. Levels below the query level are missing (``<NA>``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from orthanc_pandas._frame.matching import (
    DA_RANGE,
    dicom_date,
    dicom_text,
    encode_criteria,
    is_datelike,
    is_number,
)
from orthanc_pandas._frame.schema import (
    INDEX_NAMES,
    LEVELS,
    MAIN_TAGS,
    LevelTable,
    build_frame,
    tag_level,
    tag_vr,
)
from orthanc_pandas._http.client import OrthancClient, get_client
from orthanc_pandas._ops.jobs import beyond_rows, run_jobs
from orthanc_pandas._ops.read import FORMAT_VERSION
from orthanc_pandas._util.bulk import check_bulk_args, workers_or
from orthanc_pandas._util.fanout import fan_out, worker_count
from orthanc_pandas.errors import (
    DicomNetworkError,
    JobError,
    OrthancHTTPError,
    OrthancPandasError,
    SelectionError,
    ServerCapabilityError,
    UnknownTagError,
)

QUERY_LEVELS = ("study", "series", "instance")


_DICOM_LEVEL = {"patient": "Patient", "study": "Study", "series": "Series", "instance": "Instance"}


_UID = {"patient": "PatientID", "study": "StudyInstanceUID", "series": "SeriesInstanceUID",
        "instance": "SOPInstanceUID"}


_ROUTES = {"patient": "patients", "study": "studies", "series": "series", "instance": "instances"}


_RANGE_VRS = {"DA", "TM", "DT"}


def orthanc_id(*identifiers: str) -> str:
    """The Orthanc id of a resource from its DICOM identifiers (as Orthanc computes it).

    ``orthanc_id(PatientID)`` is the patient's id, ``orthanc_id(PatientID, StudyInstanceUID)``
    the study's, and so on down to the instance.

    Examples
    --------
    >>> orthanc_id("PAT000000")
    'ec706b8a-7c2aa73d-efe91f1d-aed0bc58-08f50504'
    """
    digest = hashlib.sha1("|".join(identifiers).encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _criterion_text(keyword: str, value) -> str:
    """One C-FIND matching key from a ``select``-style criterion, or a SelectionError."""
    vr = tag_vr(keyword)

    if callable(value):
        raise SelectionError(f"{keyword}: a function cannot be sent to a remote archive (C-FIND "
                             "matches wildcards, ranges of dates/times and lists). Query more "
                             "broadly and filter the answer frame with df.orthanc.select().")
    if value is None:
        raise SelectionError(f"{keyword}=None: C-FIND cannot ask for a missing value; query without "
                             f"{keyword} and select the missing ones from the answers.")
    if isinstance(value, tuple) and len(value) == 2:
        if vr not in _RANGE_VRS:
            raise SelectionError(
                f"{keyword} ({vr or 'text'}): DICOM C-FIND has ranges only for dates and times "
                f"(DA, TM, DT), not {value!r}. Query without it and filter the answers with "
                f"df.orthanc.select({keyword}={value!r}).")
        if vr == "DA":  # every form select takes: DICOM or ISO text, date, datetime, Timestamp
            low, high = ("" if b is None else dicom_date(b, f"{keyword} range") for b in value)
        else:
            low, high = ("" if b is None else dicom_text(b, vr) for b in value)
        return f"{low}-{high}"
    if isinstance(value, str) and vr == "DA":
        # a remote archive answers nothing to a date it cannot parse: never send one
        match = DA_RANGE.match(value.strip())
        if match:
            low, high = match.group("low"), match.group("high")
            return "-".join("" if b is None else dicom_date(b, keyword) for b in (low, high))
        if "-" in value.strip() and not _ISO_DATE.match(value.strip()):
            raise SelectionError(f"{keyword}={value!r} is neither a date nor a date range "
                                 "(20200101 or 2020-01-01; 20200101-20201231, 20200101-, -20201231; "
                                 "or a (low, high) tuple of dates).")
        return dicom_date(value, keyword)
    if isinstance(value, str):
        return value
    if is_datelike(value) or isinstance(value, _dt.date):
        return dicom_text(value, vr)
    if is_number(value):
        if vr not in {"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"}:
            return str(value)
        return dicom_text(value, vr)
    raise SelectionError(f"{keyword}={value!r}: not a criterion C-FIND can send.")


def _expand_criteria(criteria: Mapping[str, Any]) -> list[dict[str, str]]:
    """Criteria -> one C-FIND query per combination of list values."""
    keys, choices = [], []
    for kw, value in criteria.items():
        values = list(value) if isinstance(value, list | set | frozenset | pd.Series | pd.Index) else [value]
        if not values:
            raise SelectionError(f"{kw}: an empty list matches nothing.")
        keys.append(kw)
        choices.append([_criterion_text(kw, v) for v in values])
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)] or [{}]


def _requested(level: str) -> list[str]:
    """The keys asked for: every main tag of the levels down to ``level``."""
    out = []
    for lvl in LEVELS[: LEVELS.index(level) + 1]:
        out += [t for t in MAIN_TAGS[lvl] if tag_level(t) == lvl]
    return out


def _answers_frame(answers: list[dict], level: str) -> pd.DataFrame:
    """C-FIND answers (simplified JSON) -> an index-typed frame, reduced to ``level``."""
    depth = LEVELS.index(level)
    tables = {lvl: LevelTable(lvl) for lvl in LEVELS}
    seen: dict[str, set] = {lvl: set() for lvl in LEVELS}
    pages: dict[str, list] = {lvl: [] for lvl in LEVELS}
    for a in answers:
        keys = [a.get(_UID[lvl]) or "" for lvl in LEVELS[: depth + 1]]
        ids = [orthanc_id(*keys[: i + 1]) for i in range(depth + 1)]
        for i, lvl in enumerate(LEVELS):
            if i <= depth:
                rid = ids[i]
                tags = {t: a[t] for t in MAIN_TAGS[lvl] if tag_level(t) == lvl and t in a}
            else:  # a placeholder child, so build_frame has one row per answer
                rid = ids[depth] + "/" + lvl
                tags = {}
            if rid in seen[lvl]:
                continue
            seen[lvl].add(rid)
            res: dict[str, Any] = {"ID": rid, "MainDicomTags": tags}
            if i:
                parent = ids[i - 1] if i - 1 <= depth else ids[depth] + "/" + LEVELS[i - 1]
                res[{"study": "ParentPatient", "series": "ParentStudy", "instance": "ParentSeries"}[lvl]] = parent
            pages[lvl].append(res)
    for lvl in LEVELS:
        tables[lvl].add_page(pages[lvl])
    frame = build_frame(tables)
    # a key no answer carries (not even empty) was not asked or not answered: the SCU drops
    # keys the level does not allow (e.g. Manufacturer for series), and a remote may ignore some
    carried = set().union(*(a.keys() for a in answers)) if answers else None
    keep = [c for c in frame.columns if not c.startswith("orthanc_")
            and LEVELS.index(tag_level(_keyword(c)) or "instance") <= depth
            and (carried is None or _keyword(c) in carried)]
    frame = frame[keep]
    arrays = [frame.index.get_level_values(lvl) if i <= depth
              else pd.array([pd.NA] * len(frame), dtype=frame.index.levels[i].dtype)
              for i, lvl in enumerate(LEVELS)]
    frame.index = pd.MultiIndex.from_arrays(arrays, names=INDEX_NAMES)
    return frame


def _keyword(column: str) -> str:
    base, _, suffix = column.rpartition("_")
    return base if suffix.isdigit() and base else column


def _tag_number(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise UnknownTagError(f"{keyword!r} is not a DICOM keyword.")
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def _keywords(answer: Mapping[str, Any]) -> dict[str, Any]:
    """``{"0010,0020": "P1"}`` -> ``{"PatientID": "P1"}`` (sequences and unknown tags dropped)."""
    out = {}
    for key, value in answer.items():
        try:
            kw = keyword_for_tag(int(key.replace(",", ""), 16))
        except ValueError:
            continue
        if kw and isinstance(value, str):
            out[kw] = value
    return out


def _client(url_or_client) -> OrthancClient:
    return url_or_client if isinstance(url_or_client, OrthancClient) else get_client(url_or_client)


def _network_error(exc: OrthancHTTPError, what: str, modality: str) -> OrthancPandasError:
    if exc.status < 500:  # the request itself was refused by this Orthanc
        return exc
    detail = exc.orthanc_message or str(exc)
    return DicomNetworkError(f"{what} to modality {modality!r} failed: {detail}. Check that the "
                             "remote is running, that its AE title, host and port in Orthanc's "
                             "DicomModalities are right, and that it accepts this Orthanc's AE title.")


def echo(url_or_client, modality: str, *, timeout: float | None = None) -> bool:
    """C-ECHO from the Orthanc at ``url_or_client`` to its registered ``modality``.

    Returns ``True`` when the remote answers; raises :class:`DicomNetworkError` (saying why)
    when it does not, and :class:`OrthancNotFoundError` for a modality Orthanc does not know.

    Examples
    --------
    >>> echo("http://127.0.0.1:8042", "PACS")                  # doctest: +SKIP
    True
    """
    client = _client(url_or_client)
    _check_modality(client, modality)
    body = {} if timeout is None else {"Timeout": int(timeout)}
    try:
        client.post_json(f"/modalities/{modality}/echo", body)
    except OrthancHTTPError as exc:
        err = _network_error(exc, "C-ECHO", modality)
        if err is exc:
            raise
        raise err from exc
    return True


def _check_modality(client: OrthancClient, modality: str) -> None:
    known = client.get_json("/modalities")
    if modality not in known:
        raise SelectionError(f"Orthanc at {client.url} has no modality {modality!r}; it knows "
                             f"{sorted(known)}. Register it in DicomModalities (or PUT /modalities/{modality}).")


def query(url_or_client, modality: str, level: str = "study", *, progress=None,
          max_workers: int | None = None, **criteria) -> pd.DataFrame:
    """C-FIND on a remote DICOM node through Orthanc; the answers as an index-typed frame.

    Parameters
    ----------
    url_or_client : str or OrthancClient
        The Orthanc that speaks DICOM to the remote (the gateway).
    modality : str
        The remote's name in the gateway's ``DicomModalities``.
    level : {"study", "series", "instance"}
        One row per study, series or instance of the remote that matches.
    progress : bool or tqdm, optional
        Progress bar over the queries.
    max_workers : int, optional
        Queries in flight at once when a criterion is a list (default 4).
    **criteria
        ``keyword=criterion`` in the forms of ``df.orthanc.select`` that C-FIND allows:
        ``"CT"``, wildcards ``"Doe*"``, ``"C?"``, dates/times and their ranges
        (``"20200101-"``, ``(date(2020, 1, 1), None)``), numbers as values. A list is many
        queries (one per value, run concurrently) answered as one frame, e.g.
        ``AccessionNumber=[...]``. A function, ``None`` or a numeric range raise
        :class:`SelectionError` (C-FIND cannot express them; filter the answers instead).

    Returns
    -------
    pandas.DataFrame
        One row per answer (duplicates across queries dropped), with the columns and dtypes of
        ``read_orthanc``'s frame for the main tags down to ``level``, the index of Orthanc
        ids (levels below ``level`` missing), and in ``attrs["orthanc"]`` the gateway's URL
        and ``"query"``: ``{"modality", "level", "ids" (Orthanc query ids), "criteria"}``.

    Raises
    ------
    DicomNetworkError
        The remote did not answer or refused the query.

    Examples
    --------
    >>> studies = query("http://127.0.0.1:8042", "PACS", AccessionNumber=["A1", "A2"])  # doctest: +SKIP
    >>> studies.orthanc.retrieve()                                                        # doctest: +SKIP
    """
    if level not in QUERY_LEVELS:
        raise ValueError(f"level must be one of {QUERY_LEVELS}, got {level!r}.")
    check_bulk_args(max_workers)
    max_workers = workers_or(max_workers, 4)
    client = _client(url_or_client)
    _check_modality(client, modality)
    queries = _expand_criteria(criteria)
    asked = _requested(level)

    def one(q: dict[str, str]) -> tuple[str, list[dict]]:
        # tag numbers, not names: DCMTK spells some keywords differently (retired tags)
        body = {"Level": _DICOM_LEVEL[level],
                "Query": {_tag_number(k): v for k, v in {**dict.fromkeys(asked, ""), **q}.items()}}
        try:
            found = client.post_json(f"/modalities/{modality}/query", body)
        except OrthancHTTPError as exc:
            err = _network_error(exc, "C-FIND", modality)
            if err is exc:
                raise
            raise err from exc
        answers = client.get_json(f"/queries/{found['ID']}/answers", params={"expand": "", "short": ""})
        return found["ID"], [_keywords(a) for a in answers]

    workers = worker_count(max_workers, pool_size=client.pool_size, jobs=len(queries))
    results = fan_out(one, queries, workers, progress=progress, desc="C-FIND", unit="query",
                      min_total=2, name="cfind")
    answers, ids, uids = [], [], set()
    for qid, found in results:
        ids.append(qid)
        for a in found:
            key = a.get(_UID[level])
            if key in uids:
                continue
            uids.add(key)
            answers.append(a)
    frame = _answers_frame(answers, level)
    system = client.system()

    frame.attrs["orthanc"] = {
        "url": client.url, "name": system.get("Name"), "version": system.get("Version"),
        "api_version": system.get("ApiVersion"), "format": FORMAT_VERSION,
        "read_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "criteria": [], "kind": "query",
        "query": {"modality": modality, "level": level, "ids": ids,
                  "unanswered": [t for t in asked if t not in {_keyword(c) for c in frame.columns}],
                  "criteria": encode_criteria(criteria)},
    }
    return frame


def _query_info(df: pd.DataFrame) -> dict:
    info = (df.attrs.get("orthanc") or {}).get("query")
    if not info:
        raise SelectionError("retrieve() works on the answers of orthanc_pandas.query() (their "
                             "attrs['orthanc']['query'] says which modality to ask); this frame has "
                             "none. To copy rows of this server elsewhere, use df.orthanc.send().")
    return info


def _has_cget(client: OrthancClient, modality: str) -> bool:
    """Whether this Orthanc offers C-GET (``POST /modalities/{m}/get``): the route answers 405
    to a GET where it exists, 404 where it does not."""
    try:
        client.request("GET", f"/modalities/{modality}/get")
    except OrthancHTTPError as exc:
        return exc.status == 405
    return True


def retrieve(df: pd.DataFrame, client: OrthancClient | None = None, *, target: str | None = None,
             method: str = "move", level: str | None = None, max_workers: int | None = None,
             timeout: float | None = 600, progress=None, errors: str = "raise") -> pd.DataFrame:
    """Retrieve the resources of query answers from the remote, one Orthanc job each.

    See :meth:`orthanc_pandas._accessors.frame.InstanceAccessor.retrieve`
    (``max_workers=None``: 2 jobs at a time).
    """
    check_bulk_args(max_workers, errors)
    info = _query_info(df)
    modality = info["modality"]
    level = level or info["level"]
    if level not in QUERY_LEVELS or LEVELS.index(level) > LEVELS.index(info["level"]):
        raise ValueError(f"level must be one of {QUERY_LEVELS} and not below the query level "
                         f"{info['level']!r}; got {level!r}.")
    if method not in ("move", "get"):
        raise ValueError(f"method must be 'move' or 'get', got {method!r}.")
    client = client or get_client(df.attrs["orthanc"]["url"])
    _check_modality(client, modality)
    if method == "get":
        if target is not None:
            raise SelectionError("C-GET stores into this Orthanc only; use method='move' for target=.")
        if not _has_cget(client, modality):
            raise ServerCapabilityError(
                f"Orthanc {client.version} at {client.url} has no C-GET (POST /modalities/{{m}}/get, "
                "Orthanc >= 1.11); use method='move' (C-MOVE).")
    local_aet = client.system().get("DicomAet")
    dest = target or local_aet
    keys = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"][: LEVELS.index(level) + 1]
    table = df.reset_index()[[level, *keys]].drop_duplicates(subset=[level])
    table = table[table[level].notna()]
    by_id = {row[level]: {k: (None if pd.isna(row[k]) else str(row[k])) for k in keys}
             for _, row in table.iterrows()}
    here = target is None or target == local_aet
    before = {rid: _count_here(client, level, rid) for rid in by_id} if here else {}

    def submit(rid):
        # the resource's own identifiers (study root: no PatientID below the patient level)
        ident = {k: v for k, v in by_id[rid].items() if v and k != "PatientID"}
        if method == "get":
            body = {"Level": _DICOM_LEVEL[level], "Resources": [ident], "Asynchronous": True}
            return _job_id(client.post_json(f"/modalities/{modality}/get", body), "C-GET")
        # C-MOVE of a fresh one-resource query's answers: a job on every Orthanc version
        # (``/modalities/{m}/move`` runs synchronously before 1.11, outside the job engine)
        found = client.post_json(f"/modalities/{modality}/query", {
            "Level": _DICOM_LEVEL[level], "Query": {_tag_number(k): v for k, v in ident.items()}})
        body = {"TargetAet": dest, "Synchronous": False, "Asynchronous": True}
        return _job_id(client.post_json(f"/queries/{found['ID']}/retrieve", body), "C-MOVE")

    statuses = run_jobs(client, list(by_id), submit, max_workers=workers_or(max_workers, 2), timeout=timeout,
                        progress=progress, desc=f"C-{method.upper()}")
    rows = []
    for rid, st in statuses.items():
        after = _count_here(client, level, rid) if here else None
        if not st["ok"]:
            status = "failed"
        elif here and not after:
            status, st = "failed", {**st, "reason": "the job succeeded but nothing arrived (the "
                                    f"remote may not know the AE title {dest!r} as a move destination)"}
        elif here and before.get(rid) and before[rid] == after:
            status = "already there"
        else:
            status = "retrieved"
        rows.append({"level": level, "resource": rid, **by_id[rid], "status": status,
                     "reason": st["reason"], "instances": after, "job": st["job"]})
    report = pd.DataFrame(rows, columns=["level", "resource", *keys, "status", "reason", "instances", "job"])
    report = report.astype({"instances": "Int64"})
    report.attrs["target"] = dest
    report.attrs["method"] = method
    failed = report[report.status == "failed"]
    if len(failed) and errors == "raise":
        raise JobError(f"{len(failed)} of {len(report)} {level} retrieve(s) from {modality!r} failed "
                       f"(first: {failed.iloc[0]['reason']}). The report is the error's .report.",
                       report=report)
    return report


def _job_id(answer, what: str) -> str:
    if not isinstance(answer, Mapping) or "ID" not in answer:
        raise ServerCapabilityError(f"Orthanc ran the {what} synchronously (answer {answer!r}); "
                                    "expected an asynchronous job.")
    return answer["ID"]


def _count_here(client: OrthancClient, level: str, rid: str) -> int:
    if level == "instance":
        try:
            client.get_json(f"/instances/{rid}")
            return 1
        except OrthancPandasError:
            return 0
    try:
        return len(client.get_json(f"/{_ROUTES[level]}/{rid}/instances"))
    except OrthancPandasError:
        return 0


def send(df: pd.DataFrame, client: OrthancClient, destination: str, *, level: str | None = None,
         max_workers: int | None = None, timeout: float | None = 600, progress=None,
         errors: str = "raise") -> pd.DataFrame:
    """C-STORE (to a modality) or HTTP store (to an Orthanc peer) of the rows' resources.

    See :meth:`orthanc_pandas._accessors.frame.InstanceAccessor.send`
    (``max_workers=None``: 2 jobs at a time).
    """
    check_bulk_args(max_workers, errors)
    if level is not None and level not in _ROUTES:
        raise ValueError(f"level must be one of {tuple(_ROUTES)} or None (exactly the rows), "
                         f"got {level!r}.")
    modalities = client.get_json("/modalities")
    peers = client.get_json("/peers")
    if destination in modalities:
        route = f"/modalities/{destination}/store"
    elif destination in peers:
        route = f"/peers/{destination}/store"
    else:
        raise SelectionError(f"{destination!r} is neither a modality ({sorted(modalities)}) nor a "
                             f"peer ({sorted(peers)}) of Orthanc at {client.url}.")
    if level is None:
        # exactly the rows: one job per series, holding that series' row instances
        batches: dict[str, list[str]] = {}
        for _, _, se, inst in dict.fromkeys(df.index):
            batches.setdefault(str(se), []).append(str(inst))
        beyond: dict[str, int] = {}
    else:
        batches = {str(i): [str(i)] for i in dict.fromkeys(df.index.get_level_values(level))
                   if isinstance(i, str) and i}
        beyond = beyond_rows(df, client, level)

    def submit(key):
        return _job_id(client.post_json(route, {"Resources": batches[key], "Asynchronous": True,
                                                "Synchronous": False}), "store")

    statuses = run_jobs(client, list(batches), submit, max_workers=workers_or(max_workers, 2),
                        timeout=timeout, progress=progress, desc="send")
    report = pd.DataFrame(
        [{"level": level or "instance", "resource": rid, "status": "sent" if st["ok"] else "failed",
          "reason": st["reason"], "job": st["job"], "beyond_rows": beyond.get(rid, 0)}
         for key, st in statuses.items() for rid in (batches[key] if level is None else [key])],
        columns=["level", "resource", "status", "reason", "job", "beyond_rows"])
    report["beyond_rows"] = report["beyond_rows"].astype("Int64")
    report.attrs["destination"] = destination
    failed = report[report.status == "failed"]
    if len(failed) and errors == "raise":
        raise JobError(f"{len(failed)} of {len(report)} send(s) to {destination!r} failed (first: "
                       f"{failed.iloc[0]['reason']}). The report is the error's .report.", report=report)
    return report
