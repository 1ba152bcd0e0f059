"""``read_orthanc``: the whole server index as one DataFrame, consistent with one moment.

On an archive that changes during the read, the read is caught up (:mod:`.live`) instead of
repeated.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time

import pandas as pd

from orthanc_pandas._frame.schema import (
    LEVELS,
    ROUTES,
    InconsistentIndexError,
    LevelTable,
    build_frame,
    joinable_tables,
    release_memory,
    system_memory_pool,
)
from orthanc_pandas._http.client import OrthancClient, get_client
from orthanc_pandas._ops.live import Pace, catch_up
from orthanc_pandas._ops.provenance import (  # noqa: F401 (check_format: imported from here too)
    FORMAT_VERSION,
    STAT_KEYS,
    check_format,
)
from orthanc_pandas._ops.read_levels import (  # noqa: F401 (FIND_INSTANCE_CONTENT: imported from here too)
    FIND_INSTANCE_CONTENT,
    LevelReader,
    find_instance_content,
)
from orthanc_pandas._util.fanout import fan_out
from orthanc_pandas._util.progress import progress_bar
from orthanc_pandas._version import __version__
from orthanc_pandas.errors import OrthancConnectionError, ServerChangedError

log = logging.getLogger(__name__)


def read_orthanc(url: str | OrthancClient, *, auth=None, progress=None, typed: bool = True,
                 page_size: int = 5000, max_rounds: int = 5, route: str = "auto",
                 level: str = "instance", **client_kwargs) -> pd.DataFrame:
    """Read the whole Orthanc index into one DataFrame, one row per instance (or per series,
    study or patient with ``level=``).

    Paged lists of the four levels (never one request per resource) are joined client-side:
    ``GET /{level}?expand``, or for the instances extended ``/tools/find`` where the server
    has it (Orthanc >= 1.12.5; paged, so ``LimitFindInstances`` does not truncate it). Both
    routes give the same frame.
    The read is checked against ``/changes`` and ``/statistics`` before and after. If the
    archive changed meanwhile (instances stored or deleted by others), the read is caught up
    instead of repeated: the instance ids listed at one moment say which rows the frame must
    hold, and the series that changed are read again (docs/live.md).
    The frame then holds exactly the instances the server held at that moment, and
    ``df.attrs["orthanc"]["last_change"]`` is that moment's change sequence, from which
    ``df.orthanc.refresh()`` continues. Only when the archive changes faster than it can be
    read (``max_rounds`` catch-up rounds without catching up) is a
    :class:`~orthanc_pandas.errors.ServerChangedError` raised, giving both rates. A silently
    partial frame is never returned.

    Parameters
    ----------
    url : str or OrthancClient
        ``http[s]://host[:port][/prefix]`` or a client.
    auth : (str, str), optional
        Credentials; default from the URL, ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD`` or
        ``~/.netrc``. Kept in memory for ``df.orthanc``; never written to ``df.attrs``.
    progress : bool or tqdm, optional
        Progress bar over the resources read. Default: shown in terminals and notebooks for
        large servers.
    typed : bool, default True
        Convert tags to typed columns (see :mod:`orthanc_pandas._frame.schema`); ``False`` keeps the
        raw strings.
    page_size : int, default 5000
        Resources per request.
    max_rounds : int, default 5
        Catch-up rounds while the archive keeps changing (one is usually enough); ``0`` raises
        :class:`~orthanc_pandas.errors.ServerChangedError` whenever it changed during the read.
    route : {"auto", "find", "lists"}, default "auto"
        How instances are listed: extended ``/tools/find`` (``"find"``, chosen by ``auto``
        where ``/system`` announces ``HasExtendedFind``) or ``GET /instances?expand``; with
        ``level=`` the same choice lists the series.
    level : {"instance", "series", "study", "patient"}, default "instance"
        ``"series"`` reads the series frame straight from the series, study and patient lists,
        without listing any instance (cost grows with the series): the frame
        ``read_orthanc(url).orthanc.series()`` gives, except ``slice_count`` and
        ``slice_spacing`` (all missing: only instances hold them) and the orientation columns
        (the series' stored value). ``"study"`` and ``"patient"`` likewise give
        ``.studies()`` and ``.patients()`` exactly. See ``docs/series.md``. A level read that
        the archive changed during is read again (it costs series, not instances), up to
        ``max_rounds + 1`` times.
    **client_kwargs
        ``verify``, ``timeout``, ... passed to :class:`~orthanc_pandas._http.client.OrthancClient`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``(patient, study, series, instance)`` Orthanc ids, with provenance in
        ``df.attrs["orthanc"]``; with ``level=``, the level frame (index ``(patient, study,
        series)``, ``(patient, study)`` or ``patient``) with ``.orthanc`` on it.

    Examples
    --------
    >>> import orthanc_pandas as op
    >>> df = op.read_orthanc("http://127.0.0.1:8042")                    # doctest: +SKIP
    >>> df.orthanc.counts                                                # doctest: +SKIP
    {'patients': 20, 'studies': 32, 'series': 39, 'instances': 119}
    >>> df.groupby("Modality", observed=True).size()                     # doctest: +SKIP
    >>> series = op.read_orthanc("http://127.0.0.1:8042", level="series")  # doctest: +SKIP
    """
    client = get_client(url, auth=auth, **client_kwargs)
    system = client.system()
    route = choose_route(client, route)
    if level != "instance":  # a level frame from the level lists (read_levels.py)
        reader = LevelReader(client, level, find=route == "find", typed=typed,
                             page_size=page_size, progress=progress)
        return read_consistent(client, reader.read, lambda raw, last_change, counts: reader.build(
            raw, provenance(client, system, last_change, counts)), max_attempts=max_rounds + 1)

    def read(stats0):
        total = sum(int(stats0[STAT_KEYS[lvl]]) for lvl in LEVELS)
        bar = progress_bar(progress, total=total, desc="Reading Orthanc index", unit="res",
                           min_total=20_000)
        try:
            with system_memory_pool():
                tables = read_tables(client, page_size=page_size, bar=bar, route=route,
                                     counts={lvl: int(stats0[STAT_KEYS[lvl]]) for lvl in LEVELS})
        except OrthancConnectionError as exc:
            done = getattr(exc, "_progress", "")
            raise type(exc)(
                f"read_orthanc: the server stopped answering {done}; no frame was returned "
                f"(nothing partial). Cause: {exc}"
            ) from None
        finally:
            bar.close()
        return tables, {lvl: tables[lvl].n for lvl in LEVELS}

    def build(tables, last_change, counts):
        with system_memory_pool():
            df = build_frame(tables, typed=typed, consume=True)
        df.attrs["orthanc"] = provenance(client, system, last_change, counts)
        return df

    return read_live(client, read, build, max_rounds=max_rounds)


def read_live(client: OrthancClient, read, build, *, max_rounds: int = 5):
    """Read once; if the archive changed meanwhile, catch the read up rather than repeat it.

    ``read`` and ``build`` are those of :func:`read_consistent`. On a quiet archive this is
    one read and its checks. Otherwise the pages are joined where they can be (a resource
    read twice kept once, children of parents the lists missed left out) and
    :func:`~orthanc_pandas._ops.live.catch_up` brings them to one moment of the server; the
    frame is built once, from the caught-up pages.

    Examples
    --------
    >>> df = read_live(client, read, build, max_rounds=5)               # doctest: +SKIP
    >>> df.attrs["orthanc"]["last_change"]  # the moment the frame shows  # doctest: +SKIP
    """
    started = time.monotonic()
    result, raw, counts, (seq0, seq1), (stats0, stats1), problem = _read_once(client, read, build)
    if not problem:
        return result
    seconds = time.monotonic() - started
    log.info("Orthanc changed during the %.3f s read (%s); catching up", seconds, problem)
    stored = sum(1 for c in content_changes(client, seq0, seq1) if c.get("ChangeType") == "NewInstance")
    deleted = max(0, int(stats0["CountInstances"]) + stored - int(stats1["CountInstances"]))
    pace = Pace(whole_read=counts["instance"], whole_seconds=seconds, arrived=stored + deleted,
                changing_seconds=seconds)
    seq = catch_up(client, joinable_tables(raw), seq0, pace=pace, max_rounds=max_rounds)
    return build(raw, seq, {lvl: raw[lvl].n for lvl in LEVELS})


def _read_once(client: OrthancClient, read, build):
    """One read between two looks at the change sequence and ``/statistics``.

    ``(result, raw, counts, (seq0, seq1), (stats0, stats1), problem)``: ``result`` is the
    built frame when the archive did not change meanwhile (``problem`` empty), else ``None``
    and ``problem`` says what changed.
    """
    seq0 = client.last_change()
    stats0 = client.statistics()
    raw, counts = read(stats0)
    seq1 = client.last_change()
    stats1 = client.statistics()
    problem = _consistency_problem(client, seq0, seq1, stats0, stats1, counts)
    result = None
    if not problem:
        try:
            result = build(raw, seq1, counts)
        except InconsistentIndexError as exc:  # an orphan: the server changed between two lists
            problem = str(exc)
    return result, raw, counts, (seq0, seq1), (stats0, stats1), problem


def read_consistent(client: OrthancClient, read, build, *, max_attempts: int = 3):
    """Read until the archive did not change meanwhile, then build the result.

    ``read(statistics) -> (raw, counts)`` reads the lists; the change sequence and
    ``/statistics`` taken around it must agree with ``counts``. ``build(raw, last_change,
    counts)`` makes the result; an :class:`~orthanc_pandas._frame.schema.InconsistentIndexError` from
    it (an orphan: the server changed between two lists) also means "read again". After
    ``max_attempts`` reads a :class:`~orthanc_pandas.errors.ServerChangedError` is raised.
    """
    last_problem = ""
    for attempt in range(max_attempts):
        result, *_, problem = _read_once(client, read, build)
        if not problem:
            return result
        last_problem = problem
        log.info("Orthanc changed during the read (%s); reading again (%d/%d)",
                 problem, attempt + 1, max_attempts)
    raise ServerChangedError(
        f"The archive at {client.url} kept changing during {max_attempts} reads ({last_problem}); "
        "no consistent index could be taken. Retry when uploads have settled, or raise max_attempts."
    )




#: resources decoded from a page's JSON at a time, each list turned into Arrow columns before
#: the next: a page of 5,000 instances decoded whole is 5.5 MB of Python objects (the read's
#: largest transient at 20,000 instances), while fewer resources per request would cost
#: requests (and Orthanc's offset paging grows with the archive)
DECODE_BATCH = 1000


ROUTE_CHOICES = ("auto", "find", "lists")


def choose_route(client: OrthancClient, route: str = "auto") -> str:
    """``"find"`` (instances from extended ``/tools/find``) or ``"lists"`` (four GET lists).

    ``auto`` takes extended find where the server has it (Orthanc >= 1.12.5 with an index
    that implements it: not PostgreSQL plugin 5.0): on 1.13 it lists instances about twice as
    fast as ``GET /instances?expand`` (``benchmarks/index.py``).
    """
    if route not in ROUTE_CHOICES:
        raise ValueError(f"route must be one of {ROUTE_CHOICES}, got {route!r}.")
    has_find = client.capabilities().extended_find
    if route == "find" and not has_find:
        raise ValueError(f"route='find' needs extended /tools/find (Orthanc >= 1.12.5 with an index "
                         f"that has it); {client.url} runs Orthanc {client.version} without it. "
                         "Use route='auto'.")
    if route == "auto":
        return "find" if has_find else "lists"
    return route


def read_tables(client: OrthancClient, *, page_size: int = 5000, bar=None, route: str = "lists",
                counts: dict[str, int] | None = None) -> dict[str, LevelTable]:
    """Page through the four levels; each page becomes Arrow columns as it arrives.

    ``route="lists"``: the four ``GET /{level}?expand`` lists, one after the other, instances
    first (a resource added meanwhile then shows up as an orphan or a moved change sequence,
    which the caller detects). ``route="find"``: three concurrent streams, which a 1.13 server
    answers on its own threads: the two halves of the instances from extended ``/tools/find``
    (each paged until its end, so ``LimitFindInstances`` never truncates them), and the parent
    levels' GET lists. The caller's change-sequence and count checks make either consistent.
    """
    levels = list(reversed(LEVELS))
    if route != "find":
        streams = list_streams(client)
        if streams < 2:
            return _read_levels(client, levels, page_size, bar)
        return _read_lists_concurrently(client, levels, page_size, bar, streams,
                                        (counts or {}).get("instance"))
    total = (counts or {}).get("instance")
    if total is None:
        total = client.count_resources("Instance")
    half = total // 2
    content = find_instance_content(client)
    first, second = LevelTable("instance"), LevelTable("instance")
    parents: dict[str, LevelTable] = {}
    streams = [
        lambda: _read_level(first, client.iter_find("Instance", content, page_size=page_size,
                                                    total=half, batch=DECODE_BATCH), bar, {}),
        lambda: _read_level(second, client.iter_find("Instance", content, page_size=page_size,
                                                     start=half, total=total, batch=DECODE_BATCH),
                            bar, {}),
        lambda: parents.update(_read_levels(client, levels[1:], page_size, bar)),
    ]
    # fan_out, not a bare pool: Ctrl-C or one stream's failure stops the others at their
    # next page instead of waiting for them to read the rest of the archive
    try:
        fan_out(lambda stream: stream(), streams, len(streams), name="orthanc-read")
    except OrthancConnectionError as exc:
        if getattr(exc, "_progress", "while reading instances").startswith("while reading instances"):
            exc._progress = f"while reading instances (after {first.n + second.n} of them)"
        raise
    first.extend(second)
    tables = {"instance": first, **parents}
    release_memory()
    return tables


#: concurrent streams over the instance list on a PostgreSQL index (GET lists route).
#: benchmarks/postgres_concurrency.py, 5,000 instances, pages of 1,000, 2 cores: with Debian's
#: plugin 4.0 (1.10.1) 2 streams 1.86x and 4 streams 2.67x faster than one after another;
#: with plugin 5.0 (1.13) 1.41x and 1.21x at IndexConnectionsCount 1, 2.48x and 2.40x at 4.
#: The index builds each expanded resource with queries of its own, which run side by side
#: there; SQLite serializes them behind one mutex, so its lists stay sequential.
POSTGRES_LIST_STREAMS = 3


def list_streams(client: OrthancClient) -> int:
    """How many concurrent streams page the instance list on this server (GET lists route):
    :data:`POSTGRES_LIST_STREAMS` where the index is a database plugin, 1 on SQLite."""
    return POSTGRES_LIST_STREAMS if client.system().get("DatabaseBackendPlugin") else 1


def _read_lists_concurrently(client: OrthancClient, levels, page_size: int, bar, streams: int,
                             total: int | None) -> dict[str, LevelTable]:
    """The GET lists with the instance list cut in ``streams`` contiguous offset ranges read
    at once, beside the parent lists. Ranges come from ``/statistics``: resources added
    meanwhile may be missed and deleted ones shift offsets, as with one stream; the caller's
    change-sequence and count checks catch both (and a live read catches up)."""
    if total is None:
        total = int(client.statistics()["CountInstances"])
    bounds = [total * i // streams for i in range(streams)] + [None]
    parts = [LevelTable("instance") for _ in range(streams)]
    parents: dict[str, LevelTable] = {}

    def instance_stream(k: int):
        return lambda: _read_level(parts[k], client.iter_pages(
            ROUTES["instance"], page_size=page_size, start=bounds[k], stop=bounds[k + 1],
            batch=DECODE_BATCH), bar, {})

    jobs = [instance_stream(k) for k in range(streams)]
    jobs.append(lambda: parents.update(_read_levels(client, levels[1:], page_size, bar)))
    fan_out(lambda job: job(), jobs, len(jobs), name="orthanc-read")
    first = parts[0]
    for more in parts[1:]:
        first.extend(more)
    release_memory()
    return {"instance": first, **parents}


def _read_levels(client: OrthancClient, levels, page_size: int, bar) -> dict[str, LevelTable]:
    tables: dict[str, LevelTable] = {}
    for level in levels:
        table = LevelTable(level)
        _read_level(table, client.iter_pages(ROUTES[level], page_size=page_size, batch=DECODE_BATCH),
                    bar, tables)
        tables[level] = table
        release_memory()  # the JSON of the level's pages is gone; keep only its Arrow columns
    return tables


def _read_level(table: LevelTable, pages, bar, done: dict[str, LevelTable]) -> None:
    try:
        for page in pages:
            table.add_page(page)
            if bar is not None:
                bar.update(len(page))
    except OrthancConnectionError as exc:
        read = ", ".join(f"{t.n} {ROUTES[lvl]}" for lvl, t in done.items())
        exc._progress = (f"while reading {ROUTES[table.level]} (after {table.n} of them"
                         + (f"; {read} read before" if read else "") + ")")
        raise


def content_changes(client: OrthancClient, since: int, until: int | None = None) -> list[dict]:
    """The ``/changes`` entries after ``since`` (up to ``until``) that can alter the index
    (see :mod:`orthanc_pandas._http.changes`: DICOMweb's cache writes, stability and metadata are not)."""
    return list(client.iter_changes(since, until, content_only=True))


def _consistency_problem(client, seq0, seq1, stats0, stats1, counts) -> str:
    if seq0 != seq1:
        moved = content_changes(client, seq0, seq1)
        if moved:
            kinds = sorted({c.get("ChangeType", "?") for c in moved})
            return f"{len(moved)} change(s) ({', '.join(kinds)}) between sequence {seq0} and {seq1}"
    for lvl in LEVELS:
        a, b = int(stats0[STAT_KEYS[lvl]]), int(stats1[STAT_KEYS[lvl]])
        if a != b or counts[lvl] != b:
            return f"{ROUTES[lvl]}: /statistics said {a} then {b}, the lists held {counts[lvl]}"
    return ""


def provenance(client: OrthancClient, system: dict, last_change: int, counts: dict) -> dict:
    """The JSON-only provenance stored in ``df.attrs["orthanc"]`` (no credentials)."""
    return {
        "url": client.url,
        "name": system.get("Name"),
        "version": system.get("Version"),
        "api_version": system.get("ApiVersion"),
        "database_backend": system.get("DatabaseBackendPlugin"),
        "read_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "last_change": int(last_change),
        "counts": {ROUTES[k]: int(v) for k, v in counts.items()},
        "format": FORMAT_VERSION,
        "library": f"orthanc-pandas {__version__}",
        "criteria": [],
    }
