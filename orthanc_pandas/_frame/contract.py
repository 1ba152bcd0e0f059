"""The frame contract: what makes a DataFrame an Orthanc instance or level frame. Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from orthanc_pandas._frame.schema import (
    INDEX_NAMES,
    LEVELS,
)
from orthanc_pandas.errors import (
    NotAnIndexError,
    OrthancPandasError,
)

if TYPE_CHECKING:
    pass


def check_index_frame(df: pd.DataFrame) -> None:
    """Raise :class:`NotAnIndexError` unless ``df`` has the index of an Orthanc frame."""
    if isinstance(df.index, pd.MultiIndex) and list(df.index.names) == INDEX_NAMES:
        return
    names = list(df.index.names) if isinstance(df.index, pd.MultiIndex) else [df.index.name]
    raise NotAnIndexError(
        "df.orthanc works on frames made by orthanc_pandas.read_orthanc (index levels "
        f"{INDEX_NAMES}); this frame's index is {names}. If you called reset_index(), "
        "restore it with df.set_index(['patient', 'study', 'series', 'instance'])."
    )


def frame_level(df: pd.DataFrame) -> str:
    """``"instance"`` for an index frame, else the level of a series/study/patient frame.

    A level frame (``df.orthanc.series()`` ...) says its level in ``attrs["orthanc"]["level"]``
    and has that level's index (see ``docs/series.md``); anything else raises
    :class:`NotAnIndexError` as :func:`check_index_frame` does.
    """

    level = (df.attrs.get("orthanc") or {}).get("level") if isinstance(df.attrs, dict) else None
    if level in ("series", "study", "patient") and list(df.index.names) == LEVEL_INDEX[level] \
            and (level == "patient") != isinstance(df.index, pd.MultiIndex):
        return level
    check_index_frame(df)
    return "instance"


def frame_url(df: pd.DataFrame) -> str:
    """The URL of the server ``df``'s rows come from (``df.attrs["orthanc"]["url"]``)."""
    url = (df.attrs.get("orthanc") or {}).get("url")
    if not url:
        raise OrthancPandasError(
            "This frame does not say which Orthanc server it comes from (df.attrs['orthanc'] "
            "is missing, e.g. after pd.concat). Pass client=... or restore the attrs from the "
            "original frame: df.attrs = original.attrs."
        )
    return url


#: Level -> the index names of its frame.
LEVEL_INDEX: dict[str, list[str]] = {lvl: INDEX_NAMES[:k + 1] for k, lvl in enumerate(LEVELS)}
