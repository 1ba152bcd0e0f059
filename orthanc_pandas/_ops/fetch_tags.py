"""Any DICOM tag as a column: fetch only what the frame holds, by the fastest route the server has.

Routes (chosen by what ``/system`` says the server can do, never by version number):

``instances-tags``
    ``GET /series/{id}/instances-tags?short&ignore-length=...``: every instance of a series, read
    from the files, in one request. Fast on Orthanc 1.10 (~10 ms for 50 instances) and the only
    bulk route there; on 1.12.7/1.13 it scans the whole index per call (0.3-0.6 s on 20,000
    instances), so it is used there only for tags the next route cannot answer.
``requested-tags``
    ``GET /series/{id}/instances?expand&short&requested-tags=a;b;c`` (1.11+): the same values,
    ~20 ms for 50 instances on 1.13. Tags the index stores at the instance level
    (``ExtraMainDicomTags``) come from the database without reading a file; the others are read
    from the files, long values in full, binary ones ``null`` as in ``instances-tags``.
``find``
    ``POST /tools/find`` with ``ParentSeries`` and ``RequestedTags`` (extended find, 1.12.5+):
    the same answer, but measured ~4x slower than ``requested-tags`` per series on 1.13 and
    truncated by ``LimitFindInstances``. Never chosen automatically; kept for comparison.
``instance``
    One request per instance (``GET /instances/{id}?short&requested-tags=...`` on 1.11+,
    ``/instances/{id}/tags?short&ignore-length=...`` before): for series of which the frame
    holds only a few rows, since a whole-series answer costs as much as ~4-10 single ones.

Two kinds of tags never go through requested-tags, because Orthanc answers them from elsewhere
than the instance's file: tags the index stores at the patient, study or series level (Orthanc
answers the parent's value, e.g. the ``InstitutionName`` of the study, not of each file) and tags
it computes (``ModalitiesInStudy``, ``NumberOfSeriesRelatedInstances``, ...); nor do instance
tags the index stores whose values can be longer than the 256 bytes Orthanc keeps in its index.
Those are read from the files. So every route gives the same values for the same files.

Binary values (VR OB, OW, UN..., e.g. Siemens' CSA header ``(0029,1010)`` or an overlay
``(6000,3000)``) come back ``null`` from every route above although the file has them. Each such
value is then fetched as it is stored, ``GET /instances/{id}/content/gggg-eeee`` (one request per
instance and tag), into an ``object`` column of ``bytes``: never a missing value for a value the
file has.

The list arguments must be written with literal ``,``/``;``: Orthanc splits them without
decoding ``%2C``/``%3B`` (1.10 and 1.12.7 refuse the encoded form), so query strings are built
here rather than by requests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pandas as pd

from orthanc_pandas._frame.tags import TagInfo, parse_number, tag_info, typed_tag_columns
from orthanc_pandas._frame.unparsed import one_warning
from orthanc_pandas._http.capabilities import Capabilities
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._util.fanout import DEFAULT_WORKERS, fan_out, worker_count
from orthanc_pandas.errors import OrthancNotFoundError

#: ``route=`` values; ``"auto"`` chooses by capability and by how much of each series is asked for
ROUTES = ("auto", "instances-tags", "requested-tags", "find", "instance")


#: Per series, fetch instance by instance when the frame holds at most this many of its rows...
FEW_ROWS = 2


#: ... or fewer than 1/ALL_RATIO of the series' instances (measured: a whole 50-instance series
#: costs ~10-15 single-instance requests on 1.10 and ~8 on 1.13), when it holds fewer than
MANY_ROWS = 32  # rows (above that a whole series is never slower, and its size is not asked)


ALL_RATIO = 4


#: Tags Orthanc computes for a query instead of reading them from a file (0008,0056
#: InstanceAvailability, 0008,0061 ModalitiesInStudy, 0008,0062 SOPClassesInStudy, 0020,120x
#: NumberOf*Related*)
_COMPUTED = frozenset({0x00080056, 0x00080061, 0x00080062, 0x00201200, 0x00201202, 0x00201204,
                       0x00201206, 0x00201208, 0x00201209})


#: VRs whose values may exceed the 256 bytes Orthanc keeps for a tag stored in its index
_LONG_VRS = frozenset({"LT", "ST", "UT", "UC", "UR", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"})


def _workers(client: OrthancClient, max_workers: int | None, jobs: int) -> int:
    # 0 or None: the default (with_tags documents max_workers=None as "the default")
    return worker_count(max_workers or None, pool_size=getattr(client, "pool_size", None),
                        jobs=max(jobs, 1))


def _query(tags: Sequence[TagInfo]) -> str:
    names = ",".join(dict.fromkeys(t.compact for t in tags))
    return "short" + (f"&ignore-length={names}" if names else "")


def _requested(tags: Sequence[TagInfo]) -> str:
    return "short&requested-tags=" + ";".join(dict.fromkeys(t.key for t in tags))


def from_files_only(info: TagInfo, caps: Capabilities) -> bool:
    """Whether ``info`` must be read from the files because requested-tags would not give each
    file's own value (see the module docstring).

    Examples
    --------
    >>> caps = Capabilities.from_system({"MainDicomTags": {"Study": "0008,0080",
    ...                                                    "Instance": "0018,0050;0020,4000"}})
    >>> from orthanc_pandas._frame.tags import resolve_tag
    >>> [from_files_only(resolve_tag(n), caps) for n in
    ...  ("SliceThickness", "InstitutionName", "ImageComments", "ModalitiesInStudy", "KVP")]
    [False, True, True, True, False]
    """
    if not caps.requested_tags or info.tag in _COMPUTED:
        return True
    stored = caps.main_tags
    instance = info.name in stored.get("instance", ())
    if not instance and any(info.name in stored.get(level, ()) for level in ("patient", "study", "series")):
        return True
    return instance and (info.vr in _LONG_VRS or "n" in info.vm)


def _not_found(exc: OrthancNotFoundError, what: str) -> OrthancNotFoundError:
    return OrthancNotFoundError(
        f"{what} of this frame is no longer on the server ({exc.url}); read the server again "
        "(read_orthanc) or refresh the frame before fetching tags.",
        status=exc.status, method=exc.method, url=exc.url,
        orthanc_message=exc.orthanc_message, orthanc_error=exc.orthanc_error)


def _pick(tags: dict, keys: Sequence[str]) -> dict:
    return {k: tags[k] for k in keys if k in tags}


# -- one request each: (client, resource id, tags) -> {instance id: {key: raw value}} ----------
def _series_instances_tags(client, sid, tags):
    answer = client.get_json(f"/series/{sid}/instances-tags", params=_query(tags))
    keys = [t.key for t in tags]
    return {iid: _pick(t, keys) for iid, t in answer.items()}


def _series_requested_tags(client, sid, tags):
    answer = client.get_json(f"/series/{sid}/instances", params="expand&" + _requested(tags))
    keys = [t.key for t in tags]
    return {a["ID"]: _pick(a.get("RequestedTags") or {}, keys) for a in answer}


def _series_find(client, sid, tags):
    keys = list(dict.fromkeys(t.key for t in tags))
    body = {"Level": "Instance", "Query": {}, "ParentSeries": sid, "Short": True,
            "ResponseContent": ["RequestedTags"], "RequestedTags": keys}
    out: dict[str, dict] = {}
    while True:  # LimitFindInstances may cut an answer short: page until an empty one
        part = client.post_json("/tools/find", {**body, "Since": len(out), "Limit": 100_000})
        if not part:
            return out
        for a in part:
            out[a["ID"]] = _pick(a.get("RequestedTags") or {}, keys)


def _instance_requested_tags(client, iid, tags):
    answer = client.get_json(f"/instances/{iid}", params=_requested(tags))
    return {iid: _pick(answer.get("RequestedTags") or {}, [t.key for t in tags])}


def _instance_tags(client, iid, tags):
    return {iid: _pick(client.get_json(f"/instances/{iid}/tags", params=_query(tags)),
                       [t.key for t in tags])}


_SERIES_ROUTES: dict[str, Callable] = {"instances-tags": _series_instances_tags,
                                       "requested-tags": _series_requested_tags,
                                       "find": _series_find}


def _run(client: OrthancClient, jobs: list[tuple[Callable, str, str, Sequence[TagInfo]]], *,
         max_workers: int | None, progress, desc: str = "Fetching tags") -> dict[str, dict]:
    """Run ``(fn, kind, id, tags)`` jobs on a few threads and merge their answers per instance."""
    def one(job):
        fn, kind, rid, tags = job
        try:
            return fn(client, rid, tags)
        except OrthancNotFoundError as exc:
            raise _not_found(exc, f"{kind.capitalize()} {rid}") from None

    out: dict[str, dict] = {}
    parts = fan_out(one, jobs, _workers(client, max_workers, len(jobs)), progress=progress,
                    desc=desc, unit="requests", min_total=200, name="orthanc-tags")
    for part in parts:  # in job order: a later route's values win, as before
        for iid, values in part.items():
            out.setdefault(iid, {}).update(values)
    return out


def _split(tags: Sequence[TagInfo], caps: Capabilities, route: str) -> tuple[list, list]:
    """(tags for the requested-tags family of routes, tags read from files)."""
    if route == "instances-tags" or not caps.requested_tags:
        return [], list(tags)
    files = [t for t in tags if from_files_only(t, caps)]
    return [t for t in tags if t not in files], files


def _check_route(route: str, caps: Capabilities) -> None:
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}.")
    if route == "requested-tags" and not caps.requested_tags:
        raise ValueError("route='requested-tags' needs Orthanc >= 1.11 (requested tags); this "
                         f"server ({caps.version}) has none: use route='auto'.")
    if route == "find" and not caps.extended_find:
        raise ValueError("route='find' needs extended /tools/find (Orthanc >= 1.12.5 with an index "
                         f"that supports it); this server ({caps.version}) has none: use route='auto'.")


def _series_jobs(series_ids, tags, caps, route):
    db, files = _split(tags, caps, route)
    fn = _SERIES_ROUTES["requested-tags" if route in ("auto", "instance") else route]
    jobs = [(fn, "series", sid, db) for sid in series_ids] if db else []
    jobs += [(_series_instances_tags, "series", sid, files) for sid in series_ids] if files else []
    return jobs


def _instance_jobs(instance_ids, tags, caps, route):
    db, files = _split(tags, caps, route)
    jobs = [(_instance_requested_tags, "instance", iid, db) for iid in instance_ids] if db else []
    jobs += [(_instance_tags, "instance", iid, files) for iid in instance_ids] if files else []
    return jobs


def fetch_series_tags(client: OrthancClient, series_ids: Iterable[str], tags: Sequence[TagInfo], *,
                      max_workers: int | None = DEFAULT_WORKERS, progress=None,
                      route: str = "auto") -> dict[str, dict]:
    """The raw values of ``tags`` for every instance of the given series.

    Parameters
    ----------
    client : OrthancClient
    series_ids : iterable of str
        Orthanc series ids; each costs one request (two when some tags must be read from the
        files on a server with requested tags, see the module docstring).
    tags : sequence of TagInfo
        What to keep from each answer (long values are asked for in full).
    max_workers : int, default 4
        Concurrent requests (capped by ``client.pool_size``).
    progress : bool or tqdm, optional
        Progress bar over the requests (default: shown when interactive and long).
    route : {"auto", "instances-tags", "requested-tags", "find", "instance"}
        How to ask (module docstring); ``"auto"``: requested-tags where the server has them,
        else instances-tags. ``"instance"`` here means ``"auto"`` (whole series are asked for).

    Returns
    -------
    dict
        ``{instance id: {tag key "gggg,eeee": raw value}}``; a tag an instance lacks is not
        in its dict.

    Raises
    ------
    OrthancNotFoundError
        When a series of the frame no longer exists on the server.

    Examples
    --------
    >>> from orthanc_pandas._frame.tags import resolve_tag
    >>> raw = fetch_series_tags(client, ["b0c4...-..."], [resolve_tag("SliceThickness")])  # doctest: +SKIP
    >>> next(iter(raw.values()))                                                          # doctest: +SKIP
    {'0018,0050': '2.5'}
    """
    series_ids = list(dict.fromkeys(series_ids))
    caps = client.capabilities()
    _check_route(route, caps)
    jobs = _series_jobs(series_ids, list(tags), caps, route)
    out = _run(client, jobs, max_workers=max_workers, progress=progress)
    return out


def fetch_tags_by_series(client: OrthancClient, series_ids: Iterable[str], tags: Sequence[TagInfo], *,
                         max_workers: int | None = DEFAULT_WORKERS, progress=None,
                         route: str = "auto") -> dict[str, dict[str, dict]]:
    """:func:`fetch_series_tags`, grouped by series: ``{series id: {instance id: {key: raw}}}``.

    The same requests (one per series, two where some tags must come from the files); for
    callers that aggregate per series and have no instance rows (a series frame read
    series-first).

    Examples
    --------
    >>> raw = fetch_tags_by_series(client, [sid], [resolve_tag("KVP")])      # doctest: +SKIP
    >>> raw[sid]                                                           # doctest: +SKIP
    {'0a1b...': {'0018,0060': '120'}, ...}
    """
    series_ids = list(dict.fromkeys(series_ids))
    caps = client.capabilities()
    _check_route(route, caps)
    jobs = _series_jobs(series_ids, list(tags), caps, route)

    def one(job):
        fn, kind, rid, job_tags = job
        try:
            return rid, fn(client, rid, job_tags)
        except OrthancNotFoundError as exc:
            raise _not_found(exc, f"{kind.capitalize()} {rid}") from None

    out: dict[str, dict[str, dict]] = {sid: {} for sid in series_ids}
    for sid, part in fan_out(one, jobs, _workers(client, max_workers, len(jobs)), progress=progress,
                             desc="Fetching tags", unit="requests", min_total=200,
                             name="orthanc-tags"):
        for iid, values in part.items():
            out[sid].setdefault(iid, {}).update(values)
    return out


def _series_sizes(client: OrthancClient, series_ids: list[str], max_workers) -> dict[str, int]:
    def one(sid):
        try:
            # 0.8 ms on 1.10, 2.5 ms on 1.13 (GET /series/{id} takes 11 ms there)
            return sid, int(client.get_json(f"/series/{sid}/statistics")["CountInstances"])
        except OrthancNotFoundError as exc:
            raise _not_found(exc, f"Series {sid}") from None

    if not series_ids:
        return {}
    return dict(fan_out(one, series_ids, _workers(client, max_workers, len(series_ids)),
                        name="orthanc-tags"))


def plan(rows_per_series: dict[str, int], series_size: Callable[[list[str]], dict[str, int]]
         ) -> tuple[list[str], list[str]]:
    """Which series to fetch whole and which instance by instance. Pure but for ``series_size``.

    A series is fetched instance by instance when the frame holds at most ``FEW_ROWS`` of its
    instances, or fewer than ``MANY_ROWS`` that are also under ``1/ALL_RATIO`` of the series
    (``series_size`` is asked only for those series).

    Examples
    --------
    >>> plan({"a": 1, "b": 50, "c": 10, "d": 10}, lambda ids: {"c": 120, "d": 12})
    (['b', 'd'], ['a', 'c'])
    """
    whole, single, ask = [], [], []
    for sid, n in rows_per_series.items():
        (single if n <= FEW_ROWS else whole if n >= MANY_ROWS else ask).append(sid)
    sizes = series_size(ask) if ask else {}
    for sid in ask:
        (single if rows_per_series[sid] * ALL_RATIO < sizes[sid] else whole).append(sid)
    order = {sid: i for i, sid in enumerate(rows_per_series)}
    return sorted(whole, key=order.get), sorted(single, key=order.get)


def fetch_tag_columns(df: pd.DataFrame, client: OrthancClient, tags: Sequence[TagInfo], *,
                      max_workers: int | None = DEFAULT_WORKERS, progress=None,
                      route: str = "auto") -> dict[str, pd.Series]:
    """Typed columns for ``tags``, aligned to the rows of an index frame.

    Only what the frame holds is fetched: a series of which the frame holds many instances in
    one request (see :func:`plan`), the instances of the others one by one. An instance without
    a tag (or deleted meanwhile from a series that still exists) gets a missing value.

    Parameters
    ----------
    route : {"auto", "instances-tags", "requested-tags", "find", "instance"}
        Force one route (module docstring) for every series, for tests and benchmarks: every
        route gives the same values. ``"auto"`` chooses per series.

    Returns
    -------
    dict
        Column name -> Series indexed like ``df`` (a vector tag gives several columns).

    Examples
    --------
    >>> cols = fetch_tag_columns(df, df.orthanc.client(), [resolve_tag("SliceThickness")])  # doctest: +SKIP
    >>> cols["SliceThickness"].dtype                                                       # doctest: +SKIP
    Float64Dtype()
    """
    if not tags:
        return {}
    tags = list(tags)
    instances = df.index.get_level_values("instance").to_numpy(dtype=object)
    if not len(instances):  # nothing to ask (and the caller may have no client)
        return _columns(df, tags, instances, {})
    caps = client.capabilities()
    _check_route(route, caps)
    series = df.index.get_level_values("series").to_numpy(dtype=object)
    held = pd.Series(series).groupby(pd.Series(instances)).first()  # unique instances -> series
    rows = held.value_counts(sort=False).to_dict()
    if route == "auto":
        whole, single = plan(rows, lambda ids: _series_sizes(client, ids, max_workers))
    elif route == "instance":
        whole, single = [], list(rows)
    else:
        whole, single = list(rows), []
    single_set = set(single)
    single_ids = [iid for iid, sid in held.items() if sid in single_set]
    jobs = _series_jobs(whole, tags, caps, route)
    jobs += _instance_jobs(single_ids, tags, caps, route)
    raw = _run(client, jobs, max_workers=max_workers, progress=progress)
    binary = {t.key for t in tags if t.vr in _BINARY_VRS}
    if binary:
        _fetch_binary(client, raw, binary, max_workers=max_workers, progress=progress)
    return _columns(df, tags, instances, raw)


#: VRs Orthanc's JSON sends as null ("" : a private tag the dictionary does not know)
_BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", ""})


def _fetch_binary(client: OrthancClient, raw: dict[str, dict], keys: set[str], *, max_workers,
                  progress) -> None:
    """Replace in ``raw`` the ``null`` of every tag an instance HAS by its bytes (see the module
    docstring): JSON routes send binary values as ``null``, the content route sends them."""
    # 1.11+ requested-tags also answers null for a tag the file lacks: ask binary tags only
    wanted = [(iid, key) for iid, values in raw.items() for key, v in values.items()
              if v is None and key in keys]
    if not wanted:
        return

    def one(job):
        iid, key = job
        try:
            return {iid: {key: client.get_bytes(f"/instances/{iid}/content/{key.replace(',', '-')}")}}
        except OrthancNotFoundError:
            return {iid: {key: None}}  # the null meant absent (the instance was just read)

    jobs = [(lambda _c, job, _t: one(job), "instance", job, ()) for job in wanted]
    raw.update({iid: {**raw[iid], **values}
                for iid, values in _run(client, jobs, max_workers=max_workers, progress=progress,
                                        desc="Fetching binary values").items()})


def _columns(df: pd.DataFrame, tags: Sequence[TagInfo], instances, raw: dict) -> dict[str, pd.Series]:
    out: dict[str, pd.Series] = {}
    empty: dict = {}
    with one_warning(hint="df.orthanc.headers() shows them as stored"):  # one for all the tags
        for info in tags:
            key = info.key  # a property: once per tag, not per instance (1.5 s for 23 tags x 20,000)
            values = [raw.get(iid, empty).get(key) for iid in instances]
            for name, col in typed_tag_columns(info, values).items():
                col.index = df.index
                out[name] = col
    return out


def fetch_tag_names(client: OrthancClient, instance_ids: Iterable[str], *,
                    max_workers: int | None = DEFAULT_WORKERS, progress=None) -> set[str]:
    """The names (keyword, or ``"gggg,eeee"`` for private tags) of the tags of some instances.

    One ``GET /instances/{id}/tags?short`` per instance: callers pass one instance per series.

    Examples
    --------
    >>> "SliceThickness" in fetch_tag_names(client, [instance_id])                     # doctest: +SKIP
    True
    """
    ids = list(dict.fromkeys(instance_ids))

    def one(iid: str) -> set[str]:
        keys = client.get_json(f"/instances/{iid}/tags", params="short")
        return {tag_info(n).name for n in map(parse_number, keys) if n is not None}

    names: set[str] = set()
    for part in fan_out(one, ids, _workers(client, max_workers, len(ids)), progress=progress,
                        desc="Listing tags", unit="series", min_total=200, name="orthanc-tags"):
        names |= part
    return names
