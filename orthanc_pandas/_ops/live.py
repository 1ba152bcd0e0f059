"""Reading an archive that is being written: catch up on what changed during the read.

A whole-index read pages through lists that other clients keep adding to and deleting from,
so it may hold instances twice, miss some (offsets shift when resources are deleted), or hold
children of parents it did not list. Reading again does not help: a busy archive changes
during every read. Instead the read's pages are *caught up*, in rounds, the way ``refresh()``
follows changes (its :func:`~orthanc_pandas._ops.refresh.changed_resources`), before the
frame is built once:

1. ``GET /instances`` (ids only, one request, so one moment of the server) says which
   instances the frame must hold. The change sequence taken just before it, raised to the
   last ``NewInstance`` of an instance in that list, is the frame's sequence: every instance
   created up to it is in the list unless deleted, and none created after it is.
2. Rows of instances not in the list are dropped (deleted; Orthanc logs no deletion). Series
   that gained, lost or re-stored instances up to that sequence (``/changes``) are fetched
   again whole (``/series/{id}``, its instances, its study and patient), keeping only the
   instances in the list. Instances in the list that are still missing are looked up one by
   one: in a series the pages have, one was only skipped by the paging and its answer is its
   row; otherwise its series is fetched too.
3. If the rows now hold exactly the instances of the list, they are what the server held at
   that moment; otherwise (an instance deleted between the list and the fetch) another round.

A round costs the id list (~0.03 s per 20,000 instances) plus requests in proportion to the
changes; the frame is built once, as from a quiet read. The rounds end with the first one whose
rows match its list and that kept pace with the writers: the instances stored or deleted while
it ran did not outgrow those it caught up on (:func:`keeps_pace`). A writer faster than the
reader makes every round longer than the one before; after ``max_rounds`` such rounds
:class:`~orthanc_pandas.errors.ServerChangedError` gives both rates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from orthanc_pandas._frame.schema import LevelTable, joinable_tables
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._ops.refresh import changed_resources
from orthanc_pandas._util.fanout import map_in_order, worker_count
from orthanc_pandas.errors import OrthancNotFoundError, ServerChangedError

log = logging.getLogger(__name__)


@dataclass
class Pace:
    """How fast the archive changes and how fast it is read, for the decision and the error.

    ``arrived`` counts instances stored or deleted by others (from the change log and the
    counts: during the whole-index read, then after each round's cut) over
    ``changing_seconds``; ``read`` the instances the catch-up rounds read over
    ``read_seconds``.
    """

    whole_read: int
    whole_seconds: float
    arrived: int = 0
    changing_seconds: float = 0.0
    read: int = 0
    read_seconds: float = 0.0
    rounds: list[dict] = field(default_factory=list)

    def message(self, url: str, max_rounds: int) -> str:
        """The :class:`ServerChangedError` message: both rates, and what to do.

        Examples
        --------
        >>> Pace(20_000, 0.8, arrived=900, changing_seconds=3.0, read=500, read_seconds=2.5,
        ...      rounds=[{}] * 2).message("http://pacs:8042", 2)  # doctest: +NORMALIZE_WHITESPACE
        'The archive at http://pacs:8042 changes faster than it can be read: about 300
        instances/s arrived or were deleted, and the 2 catch-up round(s) read 200 instances/s
        (the whole index: 20,000 instances at 25,000/s). No frame was returned. Read when
        ingestion is lower, raise max_rounds (now 2), or read series first.'
        """
        arriving = self.arrived / max(self.changing_seconds, 1e-3)
        whole = self.whole_read / max(self.whole_seconds, 1e-3)
        if self.rounds:
            reading = (f"the {len(self.rounds)} catch-up round(s) read "
                       f"{self.read / max(self.read_seconds, 1e-3):,.0f} instances/s (the whole "
                       f"index: {self.whole_read:,} instances at {whole:,.0f}/s)")
        else:
            reading = (f"the whole index was read at {whole:,.0f} instances/s "
                       f"({self.whole_read:,} instances), with no catch-up round")
        return (f"The archive at {url} changes faster than it can be read: about {arriving:,.0f} "
                f"instances/s arrived or were deleted, and {reading}. No frame was returned. "
                f"Read when ingestion is lower, raise max_rounds (now {max_rounds}), or read "
                "series first.")


def cut_sequence(changes: list[dict], listed: set[str], before: int, after: int) -> int:
    """The change sequence of the moment an id list was taken (pure).

    ``before`` and ``after`` are ``/changes?last`` taken just before and just after the list.
    Every change up to ``before`` happened before the list; of those up to ``after``, a
    ``NewInstance`` whose instance is in the list happened before it too, one whose instance
    is not happened after it (or its instance is gone).

    Examples
    --------
    >>> ch = [{"Seq": 11, "ChangeType": "NewInstance", "ID": "a"},
    ...       {"Seq": 12, "ChangeType": "NewInstance", "ID": "b"}]
    >>> cut_sequence(ch, {"a"}, before=10, after=12)
    11
    """
    seq = int(before)
    for c in changes:
        s = int(c["Seq"])
        if seq < s <= after and c.get("ChangeType") == "NewInstance" and c.get("ID") in listed:
            seq = s
    return seq


def _get_or_none(client: OrthancClient, path: str):
    try:
        return client.get_json(path)
    except OrthancNotFoundError:
        return None  # deleted meanwhile


def _get_all(client: OrthancClient, paths: list[str]) -> list:
    workers = worker_count(None, pool_size=client.pool_size, jobs=len(paths))
    return map_in_order(lambda path: _get_or_none(client, path), paths, workers,
                        name="orthanc-catch-up")


def fetch_resources(client: OrthancClient, series: list[dict], listed: set[str]) -> dict[str, list]:
    """The resources of whole series as they are now, per level, as the lists give them
    (``series``: their ``GET /series/{id}`` answers); instances only those in ``listed``."""
    instances = _get_all(client, [f"/series/{s['ID']}/instances" for s in series])
    studies = [r for r in _get_all(client, [f"/studies/{i}" for i in
                                            sorted({s["ParentStudy"] for s in series})]) if r]
    patients = [r for r in _get_all(client, [f"/patients/{i}" for i in
                                             sorted({s["ParentPatient"] for s in studies})]) if r]
    return {"patient": patients, "study": studies, "series": series,
            "instance": [i for lst in instances for i in lst or () if i["ID"] in listed]}


def _replace(table: LevelTable, ids: set[str], by_column: str, resources: list[dict]) -> None:
    """Drop the rows whose ``by_column`` is in ``ids`` and add ``resources`` (fresh rows)."""
    if ids and table.n:
        table.keep(pc.invert(pc.is_in(table.column(by_column), value_set=pa.array(sorted(ids), pa.string()))))
    table.add_page(resources)


def catch_up_round(client: OrthancClient, tables: dict[str, LevelTable], since: int):
    """One round: ``tables`` made to hold exactly the instances of an id list taken now.

    Returns ``(its change sequence, whether they hold exactly the listed instances, facts of
    the round)``; ``tables`` are changed in place.
    """
    t0 = time.monotonic()
    before = client.last_change()
    listed = set(client.list_ids("instances"))  # one request: one moment of the server
    after = client.last_change()
    changes = list(client.iter_changes(since, content_only=True))
    seq = cut_sequence(changes, listed, before, after)
    changed = changed_resources(c for c in changes if int(c["Seq"]) <= seq)

    inst = tables["instance"]
    series_of = dict(zip(inst.column("ID").to_pylist(), inst.column("ParentSeries").to_pylist(),
                         strict=True))
    gone = set(series_of) - listed
    missing = listed - set(series_of)
    # series whose instances changed up to the cut: their status and instances are read again
    affected = set(changed["series"]) | {series_of[i] for i in gone}
    affected |= {series_of[i] for i in changed["instance"] if i in series_of}
    series = [r for r in _get_all(client, [f"/series/{s}" for s in sorted(affected)]) if r]
    # missing instances that those series do not hold: missed by the paging, or in a series
    # not known yet; each names its series
    covered = {i for r in series for i in r.get("Instances") or ()}
    looked_up = [r for r in _get_all(client, [f"/instances/{i}" for i in sorted(missing - covered)])
                 if r and r.get("ParentSeries")]
    # in a series the pages have and no change touched, an instance was only skipped by the
    # paging (a deletion or, on extended find, an insertion shifted the offsets): its row is
    # the answer itself. Other series are new to the pages: fetched whole.
    known = set(tables["series"].column("ID").to_pylist()) - affected
    skipped = [r for r in looked_up if r["ParentSeries"] in known]
    more = {r["ParentSeries"] for r in looked_up} - known - affected
    series += [r for r in _get_all(client, [f"/series/{s}" for s in sorted(more)]) if r]
    affected |= more
    fresh = fetch_resources(client, series, listed)
    _replace(inst, affected, "ParentSeries", fresh["instance"] + skipped)
    if gone:
        inst.keep(pc.invert(pc.is_in(inst.column("ID"), value_set=pa.array(sorted(gone), pa.string()))))
    _replace(tables["series"], affected, "ID", fresh["series"])
    for level in ("study", "patient"):
        _replace(tables[level], {r["ID"] for r in fresh[level]}, "ID", fresh[level])
    joinable_tables(tables)  # parents left without children
    ids = inst.column("ID").to_pylist()
    exact = len(ids) == len(listed) and set(ids) == listed
    facts = {"sequence": seq, "listed": len(listed), "gone": len(gone), "missing": len(missing),
             "series": len(affected), "fetched": len(fresh["instance"]) + len(looked_up),
             "seconds": time.monotonic() - t0}
    return seq, exact, facts


def backlog(client: OrthancClient, seq: int, listed: int) -> int:
    """Instances stored (change log) or deleted (counts) since the round's cut at ``seq``."""
    stored = sum(1 for c in client.iter_changes(seq, content_only=True)
                 if c.get("ChangeType") == "NewInstance")
    now = int(client.statistics()["CountInstances"])
    deleted = max(0, listed + stored - now)
    return stored + deleted


def keeps_pace(behind: int, absorbed: int, previous: int) -> bool:
    """Whether a round kept pace with the writers (pure).

    ``behind``: instances stored or deleted since the round's cut, by its end; ``absorbed``:
    those the round caught up on; ``previous``: those the read or round before left behind.
    A steady writer leaves rounds of about the same backlog, a writer faster than the reader
    growing ones; the slack (x1.25 + 2) is counting noise, which small numbers have.

    Examples
    --------
    >>> keeps_pace(30, absorbed=120, previous=120), keeps_pace(30, 25, 26), keeps_pace(90, 40, 45)
    (True, True, False)
    """
    return behind <= max(absorbed, previous) * 1.25 + 2


def catch_up(client: OrthancClient, tables: dict[str, LevelTable], since: int, *, pace: Pace,
             max_rounds: int) -> int:
    """Catch ``tables``, the pages of a read begun at change sequence ``since``, up with the server.

    Parameters
    ----------
    client : OrthancClient
    tables : dict of LevelTable
        The levels as the read paged them (:func:`~orthanc_pandas._frame.schema.joinable_tables`
        already applied); changed in place.
    since : int
        The change sequence taken before the read began.
    pace : Pace
        The whole-index read's size and time, and what changed during it; completed here.
    max_rounds : int
        Rounds before giving up.

    Returns
    -------
    int
        The change sequence of the moment whose instances ``tables`` now hold exactly (for
        ``df.attrs["orthanc"]["last_change"]`` of the frame built from them).

    Raises
    ------
    ServerChangedError
        After ``max_rounds`` rounds without catching up, with both rates in the message.

    Examples
    --------
    >>> seq = catch_up(client, tables, seq0, pace=pace, max_rounds=5)  # doctest: +SKIP
    """
    started = time.monotonic() - pace.whole_seconds
    previous = pace.arrived
    if max_rounds < 1:
        raise ServerChangedError(pace.message(client.url, max_rounds))
    for k in range(1, max_rounds + 1):
        seq, exact, facts = catch_up_round(client, tables, since)
        absorbed = facts["gone"] + facts["missing"]
        behind = backlog(client, seq, facts["listed"])
        pace.rounds.append(facts)
        pace.read += facts["fetched"]
        pace.read_seconds += facts["seconds"]
        pace.arrived += behind
        pace.changing_seconds = time.monotonic() - started
        log.info("catch-up round %d: sequence %d, %d instances listed, %d gone, %d missing, "
                 "%d series read again in %.3f s; exact: %s; %d changed since",
                 k, seq, facts["listed"], facts["gone"], facts["missing"], facts["series"],
                 facts["seconds"], exact, behind)
        if exact and keeps_pace(behind, absorbed, previous):
            return seq
        since, previous = seq, behind
    raise ServerChangedError(pace.message(client.url, max_rounds))
