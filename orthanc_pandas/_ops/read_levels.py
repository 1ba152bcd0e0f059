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
    STATUS_FIND_CONTENT,
    frame_from_levels,
    levels_read,
    needs_status,
    series_resource,
)
from orthanc_pandas._frame.schema import ROUTES, LevelTable, system_memory_pool
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._util.fanout import fan_out
from orthanc_pandas._util.progress import progress_bar
from orthanc_pandas.errors import OrthancConnectionError

#: ``/statistics`` keys of the three levels read
_STATS = {"patient": "CountPatients", "study": "CountStudies", "series": "CountSeries"}

FRAME_LEVELS = ("series", "study", "patient")

#: Streams over the series list (contiguous offset ranges, one page size or more apart)
SERIES_STREAMS = 2
#: What extended ``/tools/find`` is asked for at the parent levels: what the frame takes from
#: ``GET /{level}?expand`` (tags, parent, labels) without the child id lists (measured on 1M
#: instances, 1.13: 4,000 studies in 0.35 s against 0.55-0.72 s)
PARENT_FIND_CONTENT = {"study": ["MainDicomTags", "Parent", "Labels"],
                       "patient": ["MainDicomTags", "Labels"]}
#: Series UIDs per status request (:func:`fill_statuses`)
STATUS_CHUNK = 500


#: extended /tools/find per instance: tags, parent and the file's size (Attachments).
#: Measured on 1.13, 20,000 instances, 2 cores (benchmarks/index.py, docs/servers.md): the four
#: GET lists 0.97 s; tags+parent with Attachments as two concurrent streams over the two halves
#: of the instances, beside the parent lists, 0.49 s; tags and sizes as two separate streams
#: 0.59 s. Metadata (IndexInSeries) would cost ~0.4 s more, so that column is not in the frame.
FIND_INSTANCE_CONTENT = ["MainDicomTags", "Parent", "Attachments"]


def find_instance_content(client: OrthancClient) -> list[str]:
    """:data:`FIND_INSTANCE_CONTENT`, plus ``Labels`` where the server has labels (1.12+): the
    GET lists carry them there, so both routes fill ``orthanc_labels`` alike (no measurable
    cost: 4,000 instances on 1.13, median of 5 reads)."""
    return FIND_INSTANCE_CONTENT + (["Labels"] if client.capabilities().labels else [])


def fill_statuses(client: OrthancClient, rows: list[dict], *, page_size: int = 5000) -> None:
    """Fill ``Status`` of the series rows (:func:`series_resource`'s) that expect a number of
    instances, asking the server for those series alone: ``SeriesInstanceUID`` list matching,
    :data:`STATUS_CHUNK` at a time. Orthanc gives ``ExpectedNumberOfInstances`` only to series
    whose files say how many images to expect (ImagesInAcquisition with
    NumberOfTemporalPositions, NumberOfSlices with NumberOfTimeSlices, or
    CardiacNumberOfImages), so most archives ask few or none."""
    wanted = {row["ID"]: row for row in rows if needs_status(row)}
    uids = sorted({(row.get("MainDicomTags") or {}).get("SeriesInstanceUID", "")
                   for row in wanted.values()} - {""})
    for k in range(0, len(uids), STATUS_CHUNK):
        query = {"SeriesInstanceUID": "\\".join(uids[k:k + STATUS_CHUNK])}
        for page in client.iter_find("Series", STATUS_FIND_CONTENT, page_size=page_size,
                                     total=10 ** 12, Query=query):
            for hit in page:
                if hit["ID"] in wanted:
                    wanted[hit["ID"]]["Status"] = hit.get("Status")


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

    def _series_pages(self, start: int, stop: int | None):
        if self.find:
            return self.client.iter_find("Series", SERIES_FIND_CONTENT, page_size=self.page_size,
                                         start=start, total=stop, RequestedTags=[SERIES_COUNT_TAG])
        return self.client.iter_pages(ROUTES["series"], page_size=self.page_size, start=start,
                                      stop=stop)

    def _read_series(self, table: LevelTable, per_series: dict, start: int, stop: int | None, bar):
        for page in self._series_pages(start, stop):
            rows = [series_resource(r) for r in page]
            if self.find:
                fill_statuses(self.client, [row for row, _ in rows], page_size=self.page_size)
            table.add_page([row for row, _ in rows])
            per_series.update((row["ID"], n) for row, n in rows)
            bar.update(len(page))

    def _read_parents(self, tables: dict, bar):
        for where in ("study", "patient"):
            if self.find:  # what the GET list gives that the frame uses, without child ids
                pages = self.client.iter_find(where.capitalize(), PARENT_FIND_CONTENT[where],
                                              page_size=self.page_size)
            else:
                pages = self.client.iter_pages(ROUTES[where], page_size=self.page_size)
            for page in pages:
                tables[where].add_page(page)
                bar.update(len(page))

    def read(self, stats: dict):
        """The three lists: ``({level: LevelTable, "counts": {series id: instances}}, counts)``.

        The series list is read as :data:`SERIES_STREAMS` contiguous ranges at once, beside
        the study and patient lists (one more stream): the server's work on one overlaps the
        decoding of another (measured on 1M instances, 20,000 series, 1.13: 4.1 s one after
        the other). Ranges come from ``/statistics``; a series added or deleted meanwhile
        shifts them, as it shifts one stream's pages, and ``read_orthanc``'s checks of the
        change sequence and counts catch both.
        """
        total = sum(int(stats[k]) for k in _STATS.values())
        n_series = int(stats["CountSeries"])
        bar = progress_bar(self.progress, total=total, desc=f"Reading Orthanc {self.level} index",
                           unit="res", min_total=20_000)
        streams = max(1, min(SERIES_STREAMS, n_series // self.page_size + 1))
        bounds = [n_series * i // streams for i in range(streams)] + [None]
        parts = [LevelTable("series") for _ in range(streams)]
        counts_of = [{} for _ in range(streams)]
        tables = {"series": parts[0], "study": LevelTable("study"), "patient": LevelTable("patient")}

        def series_stream(k: int):
            return lambda: self._read_series(parts[k], counts_of[k], bounds[k], bounds[k + 1], bar)

        jobs = [series_stream(k) for k in range(streams)] + [lambda: self._read_parents(tables, bar)]
        try:
            with system_memory_pool():
                fan_out(lambda job: job(), jobs, len(jobs), name="orthanc-read")
        except OrthancConnectionError as exc:
            done = ", ".join(f"{t.n} {ROUTES[lvl]}" for lvl, t in tables.items() if t.n)
            raise type(exc)(
                f"read_orthanc(level={self.level!r}): the server stopped answering while reading "
                f"the level lists ({done or 'nothing'} read); no frame was returned (nothing "
                f"partial). Cause: {exc}") from None
        finally:
            bar.close()
        per_series: dict[str, int] = {}
        for more, counts in zip(parts, counts_of, strict=True):
            if more is not parts[0]:
                parts[0].extend(more)
            per_series.update(counts)
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
