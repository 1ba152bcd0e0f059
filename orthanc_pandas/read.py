"""``read_orthanc``: the whole server index as one DataFrame, consistent with one moment."""

from __future__ import annotations

import datetime as _dt
import logging

import pandas as pd

from . import __version__
from ._progress import progress_bar
from .client import OrthancClient, get_client
from .errors import FrameFormatError, OrthancConnectionError, ServerChangedError
from .index import (
    LEVELS,
    ROUTES,
    InconsistentIndexError,
    LevelTable,
    build_frame,
    release_memory,
    system_memory_pool,
)

__all__ = ["read_orthanc", "read_tables", "provenance", "check_format", "FORMAT_VERSION"]

log = logging.getLogger(__name__)

#: Version of the frame layout written into ``df.attrs["orthanc"]["format"]``.
FORMAT_VERSION = 1
#: /changes entries that do not alter what the index frame holds (stability, jobs, metadata)
NEUTRAL_CHANGES = frozenset({"StableSeries", "StableStudy", "StablePatient", "UpdatedMetadata",
                             "JobSubmitted", "JobSuccess", "JobFailure"})
_STAT_KEYS = {"patient": "CountPatients", "study": "CountStudies", "series": "CountSeries",
              "instance": "CountInstances"}


def read_orthanc(url: str | OrthancClient, *, auth=None, progress=None, typed: bool = True,
                 page_size: int = 5000, max_attempts: int = 3, **client_kwargs) -> pd.DataFrame:
    """Read the whole Orthanc index into one DataFrame, one row per instance.

    Four paged ``GET /{level}?expand`` requests per page of resources (never one request per
    resource, never ``/tools/find``, which production servers truncate) are joined client-side.
    The read is checked against ``/changes`` and ``/statistics`` before and after: if the
    archive changed meanwhile it is read again, and after ``max_attempts`` a
    :class:`~orthanc_pandas.errors.ServerChangedError` is raised. A silently partial frame is
    never returned.

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
        Convert tags to typed columns (see :mod:`orthanc_pandas.index`); ``False`` keeps the
        raw strings.
    page_size : int, default 5000
        Resources per request.
    max_attempts : int, default 3
        Reads tried while the archive keeps changing.
    **client_kwargs
        ``verify``, ``timeout``, ... passed to :class:`~orthanc_pandas.client.OrthancClient`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``(patient, study, series, instance)`` Orthanc ids, with provenance in
        ``df.attrs["orthanc"]``.

    Examples
    --------
    >>> import orthanc_pandas as op
    >>> df = op.read_orthanc("http://127.0.0.1:8042")                    # doctest: +SKIP
    >>> df.orthanc.counts                                                # doctest: +SKIP
    {'patients': 20, 'studies': 32, 'series': 39, 'instances': 119}
    >>> df.groupby("Modality", observed=True).size()                     # doctest: +SKIP
    """
    client = get_client(url, auth=auth, **client_kwargs)
    system = client.system()

    def read(stats0):
        total = sum(int(stats0[_STAT_KEYS[lvl]]) for lvl in LEVELS)
        bar = progress_bar(progress, total=total, desc="Reading Orthanc index", unit="res",
                           min_total=20_000)
        try:
            with system_memory_pool():
                tables = read_tables(client, page_size=page_size, bar=bar)
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
            df = build_frame(tables, typed=typed)
        df.attrs["orthanc"] = provenance(client, system, last_change, counts)
        return df

    return read_consistent(client, read, build, max_attempts=max_attempts)


def read_consistent(client: OrthancClient, read, build, *, max_attempts: int = 3):
    """Read until the archive did not change meanwhile, then build the result.

    ``read(statistics) -> (raw, counts)`` reads the lists; the change sequence and
    ``/statistics`` taken around it must agree with ``counts``. ``build(raw, last_change,
    counts)`` makes the result; an :class:`~orthanc_pandas.index.InconsistentIndexError` from
    it (an orphan: the server changed between two lists) also means "read again". After
    ``max_attempts`` reads a :class:`~orthanc_pandas.errors.ServerChangedError` is raised.
    """
    last_problem = ""
    for attempt in range(max_attempts):
        seq0 = client.last_change()
        stats0 = client.statistics()
        raw, counts = read(stats0)
        seq1 = client.last_change()
        stats1 = client.statistics()
        problem = _consistency_problem(client, seq0, seq1, stats0, stats1, counts)
        if not problem:
            try:
                return build(raw, seq1, counts)
            except InconsistentIndexError as exc:
                problem = str(exc)
        last_problem = problem
        log.info("Orthanc changed during the read (%s); reading again (%d/%d)",
                 problem, attempt + 1, max_attempts)
    raise ServerChangedError(
        f"The archive at {client.url} kept changing during {max_attempts} reads ({last_problem}); "
        "no consistent index could be taken. Retry when uploads have settled, or raise max_attempts."
    )


def read_tables(client: OrthancClient, *, page_size: int = 5000, bar=None) -> dict[str, LevelTable]:
    """Page through the four levels; each page becomes Arrow columns as it arrives."""
    tables = {}
    # Instances first: a resource added meanwhile then shows up as an orphan at a parent
    # level or as a moved change sequence, both of which the caller detects.
    for level in reversed(LEVELS):
        table = LevelTable(level)
        try:
            for page in client.iter_pages(ROUTES[level], page_size=page_size):
                table.add_page(page)
                if bar is not None:
                    bar.update(len(page))
        except OrthancConnectionError as exc:
            read = ", ".join(f"{t.n} {ROUTES[lvl]}" for lvl, t in tables.items())
            exc._progress = (f"while reading {ROUTES[level]} (after {table.n} of them"
                             + (f"; {read} read before" if read else "") + ")")
            raise
        tables[level] = table
        release_memory()  # the JSON of the level's pages is gone; keep only its Arrow columns
    return tables


def content_changes(client: OrthancClient, since: int, until: int | None = None) -> list[dict]:
    """The ``/changes`` entries after ``since`` (up to ``until``) that can alter the index."""
    out, seq = [], since
    while until is None or seq < until:
        page = client.changes(seq, limit=1000)
        for ch in page.get("Changes", []):
            if until is not None and ch["Seq"] > until:
                break
            if ch.get("ChangeType") not in NEUTRAL_CHANGES:
                out.append(ch)
        if page.get("Done", True) or page.get("Last", seq) == seq:
            break
        seq = int(page["Last"])
    return out


def _consistency_problem(client, seq0, seq1, stats0, stats1, counts) -> str:
    if seq0 != seq1:
        moved = content_changes(client, seq0, seq1)
        if moved:
            kinds = sorted({c.get("ChangeType", "?") for c in moved})
            return f"{len(moved)} change(s) ({', '.join(kinds)}) between sequence {seq0} and {seq1}"
    for lvl in LEVELS:
        a, b = int(stats0[_STAT_KEYS[lvl]]), int(stats1[_STAT_KEYS[lvl]])
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


def check_format(attrs) -> None:
    """Refuse a frame whose ``attrs["orthanc"]["format"]`` this version does not know.

    A frame (or parquet file) written by a newer orthanc-pandas may lay out its columns
    differently, so using it here could select or download the wrong rows without any error.
    Frames without provenance (attrs dropped, e.g. by ``pd.concat``) are not refused here.

    Examples
    --------
    >>> check_format({"orthanc": {"format": FORMAT_VERSION}})
    >>> check_format({"orthanc": {"format": 99, "library": "orthanc-pandas 9.0"}})
    Traceback (most recent call last):
    ...
    orthanc_pandas.errors.FrameFormatError: This frame has orthanc-pandas frame format 99 (written by orthanc-pandas 9.0); this orthanc-pandas ... reads format 1. ...
    """
    info = attrs.get("orthanc") if isinstance(attrs, dict) else None
    if not isinstance(info, dict) or "format" not in info:
        return
    fmt = info["format"]
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt == FORMAT_VERSION:
        return
    who = info.get("library") or "an unknown version"
    raise FrameFormatError(
        f"This frame has orthanc-pandas frame format {fmt!r} (written by {who}); this "
        f"orthanc-pandas {__version__} reads format {FORMAT_VERSION}. Upgrade orthanc-pandas, "
        "or read the server again with orthanc_pandas.read_orthanc(url)."
    )
