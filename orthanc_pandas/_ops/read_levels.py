"""``read_orthanc(url, level="series")``: a level frame read level-first, at series cost.

The series list (extended ``/tools/find`` at series level where the server has it, else
``GET /series?expand``) and the study and patient lists (``GET /{level}?expand``, as the
instance read lists them) are all it reads: no instance is listed, so the cost grows with the
series, not with the instances. :func:`orthanc_pandas._frame.level_read.frame_from_levels`
makes the frame; ``read_orthanc`` wraps the read in its change-sequence check
(:class:`LevelReader` gives it the ``read`` and ``build`` steps).
"""

from __future__ import annotations

import copy

import pandas as pd

from orthanc_pandas._frame.level_read import (
    SERIES_COUNT_TAG,
    SERIES_FIND_CONTENT,
    frame_from_levels,
    levels_read,
    series_resource,
)
from orthanc_pandas._frame.schema import ROUTES, LevelTable, system_memory_pool
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._util.progress import progress_bar
from orthanc_pandas.errors import OrthancConnectionError

#: ``/statistics`` keys of the three levels read
_STATS = {"patient": "CountPatients", "study": "CountStudies", "series": "CountSeries"}

FRAME_LEVELS = ("series", "study", "patient")


class LevelReader:
    """The two steps of a level-first read, for ``read_orthanc``'s consistency loop.

    ``read(statistics) -> (tables, counts)`` lists the three levels; ``counts["instance"]`` is
    the sum of the series' instance counts, so the loop's check against ``/statistics``
    covers the instances too. ``build(tables, provenance) -> frame``.

    Parameters
    ----------
    client : OrthancClient
    level : {"series", "study", "patient"}
    find : bool
        List the series with extended ``/tools/find`` (``RequestedTags``
        ``NumberOfSeriesRelatedInstances``) instead of ``GET /series?expand``.
    typed, page_size, progress
        As for ``read_orthanc``.

    Examples
    --------
    >>> reader = LevelReader(client, "series", find=False)               # doctest: +SKIP
    >>> tables, counts = reader.read(client.statistics())                # doctest: +SKIP
    >>> frame = reader.build(tables, {"url": client.url})                # doctest: +SKIP
    """

    def __init__(self, client: OrthancClient, level: str, *, find: bool, typed: bool = True,
                 page_size: int = 5000, progress=None):
        if level not in FRAME_LEVELS:
            raise ValueError(f"level must be one of 'instance', {', '.join(map(repr, FRAME_LEVELS))}; "
                             f"got {level!r}.")
        self.client, self.level, self.find = client, level, find
        self.typed, self.page_size, self.progress = typed, page_size, progress

    def _series_pages(self, total: int):
        if self.find:
            return self.client.iter_find("Series", SERIES_FIND_CONTENT, page_size=self.page_size,
                                         total=total, RequestedTags=[SERIES_COUNT_TAG])
        return self.client.iter_pages(ROUTES["series"], page_size=self.page_size)

    def read(self, stats: dict):
        """The three lists: ``({level: LevelTable, "counts": {series id: instances}}, counts)``."""
        total = sum(int(stats[k]) for k in _STATS.values())
        bar = progress_bar(self.progress, total=total, desc=f"Reading Orthanc {self.level} index",
                           unit="res", min_total=20_000)
        tables = {lvl: LevelTable(lvl) for lvl in _STATS}
        per_series: dict[str, int] = {}
        where = "series"
        try:
            with system_memory_pool():
                for page in self._series_pages(int(stats["CountSeries"])):
                    rows = [series_resource(r) for r in page]
                    tables["series"].add_page([row for row, _ in rows])
                    per_series.update((row["ID"], n) for row, n in rows)
                    bar.update(len(page))
                for where in ("study", "patient"):
                    for page in self.client.iter_pages(ROUTES[where], page_size=self.page_size):
                        tables[where].add_page(page)
                        bar.update(len(page))
        except OrthancConnectionError as exc:
            done = ", ".join(f"{t.n} {ROUTES[lvl]}" for lvl, t in tables.items() if t.n)
            raise type(exc)(
                f"read_orthanc(level={self.level!r}): the server stopped answering while reading "
                f"{ROUTES[where]} ({done or 'nothing'} read); no frame was returned (nothing "
                f"partial). Cause: {exc}") from None
        finally:
            bar.close()
        counts = {lvl: t.n for lvl, t in tables.items()}
        counts["instance"] = sum(per_series.values())
        return {**tables, "counts": per_series}, counts

    def build(self, raw: dict, provenance: dict) -> pd.DataFrame:
        """The level frame of the lists, with ``provenance`` (``read_orthanc``'s) in its attrs:
        ``level`` and ``read_level`` (this frame was read level-first) added."""
        with system_memory_pool():
            out = frame_from_levels({lvl: raw[lvl] for lvl in _STATS}, raw["counts"], self.level,
                                    typed=self.typed)
        info = copy.deepcopy(provenance)
        info.update(level=self.level, read_level=self.level,
                    missing_columns=levels_read(self.level)["missing"])
        out.attrs = {"orthanc": info}
        return out
