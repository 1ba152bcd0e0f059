"""``refresh()`` on a level frame read level-first (``read_orthanc(url, level="series")``).

The instance refresh follows the change log and re-reads the series that changed; a
level-first frame is cheap to read again whole (its cost grows with the series), so it is:
read again at its level, then narrowed as the frame was (its recorded ``select`` criteria
replayed, or only its own rows kept).
"""

from __future__ import annotations

import pandas as pd

from orthanc_pandas._frame.contract import frame_level
from orthanc_pandas._frame.matching import decode_criteria
from orthanc_pandas._frame.schema import ROUTES
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._ops.read import check_format, read_orthanc
from orthanc_pandas._ops.selection import select
from orthanc_pandas._util.warn import warn
from orthanc_pandas.errors import NotAnIndexError, RefreshWarning, ServerMismatchError

_METHODS = {"series": "series", "study": "studies", "patient": "patients"}


def _replayable(entry: dict) -> bool:
    """Whether a recorded select() entry can be applied again (a function cannot)."""
    values = (entry.get("select") or {}).values()
    return "callable" not in entry and not any(isinstance(v, dict) and "callable" in v
                                               for v in values)


def refresh_level_frame(frame: pd.DataFrame, client: OrthancClient, *,
                        max_attempts: int = 3) -> pd.DataFrame:
    """The level frame ``frame`` as ``read_orthanc(url, level=...)`` (+ its selects) gives it now.

    Parameters
    ----------
    frame : pandas.DataFrame
        A frame of ``read_orthanc(url, level=...)``, possibly narrowed by
        ``frame.orthanc.select`` or by pandas.
    client : OrthancClient
    max_attempts : int, default 3
        As for ``read_orthanc``.

    Returns
    -------
    pandas.DataFrame
        A new level frame with new provenance.

    Warns
    -----
    RefreshWarning
        When ``frame`` was cut by plain pandas (fewer rows than the archive had and no
        recorded criteria) or its criteria hold a function: only its own resources are kept
        (deleted ones dropped), new ones cannot be seen.

    Raises
    ------
    NotAnIndexError
        For a level frame made from an instance frame (``df.orthanc.series()``): refresh
        that instance frame and make the level frame again.
    ServerMismatchError
        When ``client`` is another server than the frame's.

    Examples
    --------
    >>> series = op.read_orthanc(url, level="series")                    # doctest: +SKIP
    >>> series = series.orthanc.refresh()                                # doctest: +SKIP
    """
    level = frame_level(frame)
    check_format(frame.attrs)
    info = dict(frame.attrs.get("orthanc") or {})
    if info.get("read_level") != level:
        raise NotAnIndexError(
            f"refresh() on a {level} frame works on frames read level-first "
            f"(orthanc_pandas.read_orthanc(url, level={level!r})). This one was made from an "
            f"instance frame: refresh that frame and call .orthanc.{_METHODS[level]}() again "
            f"(df = df.orthanc.refresh(); frame = df.orthanc.{_METHODS[level]}()).")
    if info.get("url") and info["url"] != client.url:
        raise ServerMismatchError(
            f"This frame was read from {info['url']}; refreshing it against {client.url} would "
            "mix two archives. Read that server with orthanc_pandas.read_orthanc(url, "
            f"level={level!r}) instead.")
    typed = not isinstance(frame["StudyDate"].dtype, pd.StringDtype) \
        if "StudyDate" in frame.columns else True
    out = read_orthanc(client, level=level, typed=typed, max_attempts=max_attempts)
    criteria = list(info.get("criteria") or [])
    full = not criteria and len(frame) == (info.get("counts") or {}).get(ROUTES[level])
    if criteria and all(_replayable(e) for e in criteria):
        for entry in criteria:
            crit, case_sensitive = decode_criteria(entry)
            out = select(out, crit, lambda: client, case_sensitive=case_sensitive)
    elif not full:
        why = ("its selection criteria include a function, which cannot be replayed" if criteria
               else f"it has {len(frame)} rows, the archive had "
                    f"{(info.get('counts') or {}).get(ROUTES[level])} {ROUTES[level]}, and no "
                    "recorded select() criteria explain the difference (cut by plain pandas?)")
        warn(f"refresh() keeps only the {ROUTES[level]} this frame has: {why}. New ones that "
             "would match cannot be seen.", RefreshWarning)
        attrs = out.attrs
        out = out[out.index.isin(frame.index)]
        out.attrs = attrs
    out.attrs["orthanc"] = {**out.attrs["orthanc"], "criteria": criteria}
    return out
