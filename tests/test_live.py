"""read_orthanc on a live archive: instances stored and deleted by another client during the read.

The writer is a thread of this process talking to a real Orthanc; it stores one synthetic
instance per step and deletes one of the archive's instances (once a whole series) every few
steps, bounded in steps and time, and is stopped and joined at the end of every test. Nothing
here asserts on wall-clock time.
"""

from __future__ import annotations

import doctest
import logging
import re
import threading
import time

import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas._ops import live
from orthanc_pandas.testing.synthetic import generate_archive, make_series, to_bytes

READ_LOG = "orthanc_pandas._ops.read"


class Writer(threading.Thread):
    """Stores and deletes instances until stopped, ``max_steps`` or ``max_seconds``.

    ``log`` lists the completed operations in order (``("+", id)`` / ``("-", [ids])``): one
    writer doing one request at a time, so the server's states are exactly the prefixes of it.
    """

    def __init__(self, server, victims: list[str], series_victim: str, *, max_steps: int = 400,
                 max_seconds: float = 60.0, pause: float = 0.01):
        super().__init__(daemon=True)
        self.client = server.client()
        self.victims = list(victims)
        self.series_victim = series_victim
        self.max_steps, self.max_seconds, self.pause = max_steps, max_seconds, pause
        self.stop = threading.Event()
        self.log: list[tuple[str, object]] = []
        self.error: BaseException | None = None
        self._blobs = self._new_instances()

    @staticmethod
    def _new_instances():
        for k in range(1000):
            for ds in make_series(20, 4, 4, seed=f"live{k}", patient_id=f"LIVE{k % 3}",
                                  series_number=k + 1):
                yield to_bytes(ds)

    def steps(self) -> int:
        return len(self.log)

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        try:
            for step in range(self.max_steps):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                ans = self.client.post_json("/instances", data=next(self._blobs), idempotent=True)
                self.log.append(("+", ans["ID"]))
                if step == 40:  # once: a whole series, which shifts every later list offset by many
                    gone = [i["ID"] for i in self.client.get_json(f"/series/{self.series_victim}/instances")]
                    self.client.delete(f"/series/{self.series_victim}")
                    self.log.append(("-", gone))
                elif step % 4 == 3 and self.victims:
                    victim = self.victims.pop()
                    self.client.delete(f"/instances/{victim}")
                    self.log.append(("-", [victim]))
                time.sleep(self.pause)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def wait_for(self, steps: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.steps() < steps and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.005)

    def finish(self) -> None:
        self.stop.set()
        self.join(60)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error

    def states(self, initial: set[str]) -> list[frozenset[str]]:
        out, now = [frozenset(initial)], set(initial)
        for kind, what in self.log:
            if kind == "+":
                now.add(what)
            else:
                now.difference_update(what)
            out.append(frozenset(now))
        return out


@pytest.fixture
def live_archive(orthanc_factory):
    """A server with 1,200 instances (24 series); (server, initial instance ids, series ids)."""
    server = orthanc_factory(name="live")
    answers = server.upload_bytes(generate_archive(3, 2, 4, 50, rows=4, cols=4, seed="live-base"))
    ids = [a["ID"] for a in answers]
    series = sorted({a["ParentSeries"] for a in answers})
    return server, ids, series


def pause_after_first_page(client: op.OrthancClient, writer: Writer, steps: int) -> None:
    """Hold the read after its first page of instances until the writer has done ``steps``
    more steps: whatever the machine's speed, the archive changes during the read."""
    pages, finds = client.iter_pages, client.iter_find

    def wait():
        writer.wait_for(writer.steps() + steps)

    def iter_pages(level, page_size=5000, **kw):
        for k, page in enumerate(pages(level, page_size=page_size, **kw)):
            yield page
            if level == "instances" and k == 0:
                wait()

    def iter_find(level, content, **kw):
        for k, page in enumerate(finds(level, content, **kw)):
            yield page
            if k == 0 and not kw.get("start"):
                wait()

    client.iter_pages, client.iter_find = iter_pages, iter_find


def _route_param(route, server):
    if route == "lists" and not server.client().capabilities().extended_find:
        pytest.skip("this Orthanc has no extended find: 'auto' already is the lists route")


@pytest.mark.parametrize("route", ["auto", "lists"])
def test_read_during_ingestion_and_deletions_is_one_moment_and_refreshes_exactly(
        live_archive, route, caplog):
    server, initial, series = live_archive
    _route_param(route, server)
    writer = Writer(server, victims=initial[::7], series_victim=series[5])
    client = op.OrthancClient(server.url)
    pause_after_first_page(client, writer, steps=25)
    frames = []
    writer.start()
    try:
        writer.wait_for(5)
        with caplog.at_level(logging.INFO, logger=READ_LOG):
            frames.append(op.read_orthanc(client, page_size=100, route=route))
            # and reads that are not held: the writer simply keeps going meanwhile
            for _ in range(2):
                frames.append(op.read_orthanc(server.url, page_size=100, route=route))
    finally:
        writer.finish()
    assert any("catching up" in r.getMessage() for r in caplog.records)
    assert writer.steps() > 25

    states = writer.states(set(initial))
    fresh = op.read_orthanc(server.url, route=route)
    seqs = {c["ID"]: c["Seq"] for c in client.changes(0, limit=100_000)["Changes"]
            if c["ChangeType"] == "NewInstance"}
    now = set(fresh.index.get_level_values("instance"))
    for df in frames:
        ids = frozenset(df.index.get_level_values("instance"))
        # exactly the instances the server held at one moment between two of the writer's steps
        assert ids in states
        assert df.index.is_unique
        info = df.attrs["orthanc"]
        assert info["counts"]["instances"] == len(df)
        assert info["counts"]["series"] == df.index.get_level_values("series").nunique()
        # ... and that moment is the recorded change sequence: every instance still on the
        # server was in the frame if and only if it was stored by then
        seq = info["last_change"]
        assert {i for i in now if seqs[i] <= seq} == ids & now
        # after ingestion stops, refresh() from that sequence is a fresh read exactly
        refreshed = df.orthanc.refresh()
        pd.testing.assert_frame_equal(refreshed, fresh)
        a, b = dict(refreshed.attrs["orthanc"]), dict(fresh.attrs["orthanc"])
        a.pop("read_at"), b.pop("read_at")
        # the sequences may differ by stability events logged after ingestion stopped
        first, last = sorted([a.pop("last_change"), b.pop("last_change")])
        assert a == b
        assert not list(client.iter_changes(first, last, content_only=True))


def test_deletions_only_during_the_read(live_archive):
    """Deleting shifts the offsets of the paged lists: instances would be skipped silently."""
    server, initial, series = live_archive
    client = op.OrthancClient(server.url)
    deleter = server.client()
    pages = client.iter_pages

    def iter_pages(level, page_size=5000, **kw):
        for k, page in enumerate(pages(level, page_size=page_size, **kw)):
            yield page
            if level == "instances" and k == 1:  # two series from the first pages' range
                deleter.delete(f"/series/{series[0]}")
                deleter.delete(f"/series/{series[1]}")

    client.iter_pages = iter_pages
    df = op.read_orthanc(client, page_size=100, route="lists")
    fresh = op.read_orthanc(server.url, route="lists")
    pd.testing.assert_frame_equal(df, fresh)
    assert len(df) == len(initial) - 100


def test_changes_faster_than_read_names_both_rates(live_archive):
    """With no catch-up round allowed, a change during the read is more than can be read."""
    server, _, _ = live_archive
    writer = server.client()
    client = op.OrthancClient(server.url)
    blobs = iter(to_bytes(d) for d in make_series(30, 4, 4, seed="fast", patient_id="FAST"))
    pages, finds = client.iter_pages, client.iter_find

    def write_some():
        for _ in range(10):
            writer.post_json("/instances", data=next(blobs), idempotent=True)

    def iter_pages(level, page_size=5000, **kw):
        for k, page in enumerate(pages(level, page_size=page_size, **kw)):
            yield page
            if level == "instances" and k == 0:
                write_some()

    def iter_find(level, content, **kw):
        for k, page in enumerate(finds(level, content, **kw)):
            yield page
            if k == 0 and not kw.get("start"):
                write_some()

    client.iter_pages, client.iter_find = iter_pages, iter_find
    with pytest.raises(op.ServerChangedError) as info:
        op.read_orthanc(client, page_size=100, max_rounds=0)
    msg = str(info.value)
    found = re.search(r"changes faster than it can be read: about ([\d,]+) instances/s arrived or "
                      r"were deleted, and the whole index was read at ([\d,]+) instances/s "
                      r"\(1,2\d\d instances\)", msg)
    assert found, msg
    assert int(found.group(1).replace(",", "")) > 0
    assert int(found.group(2).replace(",", "")) > 0
    assert "max_rounds (now 0)" in msg
    # the same change with the default budget is caught up
    df = op.read_orthanc(client, page_size=100)
    pd.testing.assert_frame_equal(df, op.read_orthanc(server.url))


def test_catch_up_rules_examples_run():
    """cut_sequence, keeps_pace and the error message are pure: their examples are the test."""
    result = doctest.testmod(live, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 4


def test_a_growing_backlog_does_not_keep_pace():
    # a steady writer leaves rounds of about the same backlog: kept pace, noise included
    assert live.keeps_pace(behind=7, absorbed=4, previous=4)
    # a writer faster than the reader: each round leaves more behind than the one before
    assert not live.keeps_pace(behind=300, absorbed=150, previous=160)
