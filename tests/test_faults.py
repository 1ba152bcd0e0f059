"""Faults against real Orthanc servers: killed, restarted, stalled, idle, written to meanwhile.

Every server here is a real Orthanc process. A crash is a real ``SIGKILL`` of that process,
timed by a progress object (called by the library between files), so it lands mid-operation
at a known point. The truth checked against is the server's own answers after a restart and
pydicom on the original bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

import orthanc_pandas as op
from orthanc_pandas.errors import OrthancConnectionError, OrthancTimeoutError
from orthanc_pandas.testing.synthetic import generate_archive, make_series, to_bytes

N_SLICES = 24


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class KillAfter:
    """A progress object that SIGKILLs the server after ``n`` updates (from any thread)."""

    def __init__(self, server, n: int):
        self.server, self.n, self.count = server, n, 0
        self.lock = threading.Lock()

    def update(self, k: int = 1) -> None:
        with self.lock:
            self.count += k
            if self.count == self.n:
                self.server.kill()


class Sent:
    """Every request this process sends (``requests.Session.send``), and which timed out."""

    def __init__(self, monkeypatch):
        import requests

        self.requests: list[tuple[str, str]] = []
        self.bodies: list[str] = []  # a digest of each request's body
        self.timed_out: list[str] = []
        self.lock = threading.Lock()
        original = requests.Session.send

        def send(session, request, **kw):
            with self.lock:
                self.requests.append((request.method, request.url))
                body = request.body if isinstance(request.body, bytes) else b""
                # a streamed upload body (a file or ZIP member) is told apart by its name
                name = getattr(request.body, "name", None) if not body else None
                self.bodies.append(str(name) if name else hashlib.sha256(body).hexdigest())
            try:
                return original(session, request, **kw)
            except requests.exceptions.Timeout:
                with self.lock:
                    self.timed_out.append(request.url)
                raise

        monkeypatch.setattr(requests.Session, "send", send)

    def posted(self, path: str) -> int:
        """How many different bodies were POSTed to ``path`` (retries of one body count once)."""
        return len({b for (m, u), b in zip(self.requests, self.bodies, strict=True)
                    if m == "POST" and u.split("?")[0].endswith(path)})


def finishes(call, limit: float = 300):
    """Run ``call`` and return what it raised (None if nothing). Fails only if it hangs: the
    limit is far above any run's time, so it makes no claim about speed."""
    box: list = []

    def run():
        try:
            call()
            box.append(None)
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        pytest.fail(f"hung: still running after {limit} s")
    return box[0]


@pytest.fixture
def factory(orthanc_factory):
    """``orthanc_factory`` whose servers are SIGKILLed at the end: their storage is thrown
    away anyway, and a graceful Orthanc shutdown takes ~2.5 s."""
    started = []

    def make(**kwargs):
        started.append(orthanc_factory(**kwargs))
        return started[-1]

    yield make
    for s in started:
        s.kill()


@pytest.fixture
def series_server(factory):
    """A server with one CT series; returns (server, {instance id: original bytes})."""
    server = factory(name="faults")
    blobs = [to_bytes(d) for d in make_series(N_SLICES, 64, 64, seed="faults", patient_id="F1")]
    answers = server.upload_bytes(blobs)
    server.client().close()
    return server, {a["ID"]: b for a, b in zip(answers, blobs, strict=True)}


def expected_volume(blobs) -> np.ndarray:
    """The volume computed from the original files with pydicom alone (sorted along z)."""
    dss = [pydicom.dcmread(io.BytesIO(b)) for b in blobs]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([d.pixel_array * float(d.get("RescaleSlope", 1)) + float(d.get("RescaleIntercept", 0))
                     for d in dss]).astype(np.float32)


# -- killed mid-operation, then restarted -------------------------------------------------------
def test_killed_during_download_names_what_is_on_disk_and_rerun_completes(series_server, tmp_path):
    server, originals = series_server
    client = op.OrthancClient(server.url)
    df = op.read_orthanc(client)
    with pytest.raises(OrthancConnectionError) as info:
        df.orthanc.download(tmp_path, progress=KillAfter(server, 5), max_workers=2, client=client)
    msg = str(info.value)
    done = int(msg.split("after ", 1)[1].split(" of ", 1)[0])
    assert f"after {done} of {N_SLICES} files were saved complete in {tmp_path}" in msg
    assert "no partial files" in msg and "Rerun download()" in msg
    assert 5 <= done < N_SLICES
    on_disk = sorted(tmp_path.iterdir())
    assert len(on_disk) == done  # exactly what the message says; no .part file left
    for p in on_disk:  # whatever has a final name is complete
        assert p.suffix == ".dcm" and sha(p.read_bytes()) == sha(originals[p.stem])
    mtimes = {p: p.stat().st_mtime_ns for p in on_disk}
    server.restart()  # restarted between calls: the same client (stale pooled sockets) works
    paths = df.orthanc.download(tmp_path, client=client)
    assert sorted(Path(p).stem for p in paths) == sorted(originals)
    for p in paths:
        assert sha(Path(p).read_bytes()) == sha(originals[Path(p).stem])
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # complete files skipped


def test_killed_during_volume_and_headers_then_restart(series_server):
    server, originals = series_server
    client = op.OrthancClient(server.url)
    df = op.read_orthanc(client)
    with pytest.raises(OrthancConnectionError,
                       match=rf"after \d+ of {N_SLICES} files were downloaded; nothing was returned"):
        df.orthanc.volume(progress=KillAfter(server, 4), client=client)
    server.restart()
    vol = df.orthanc.volume(client=client)  # the next call works, with the same client
    np.testing.assert_allclose(vol.values, expected_volume(originals.values()), rtol=0, atol=1e-3)

    with pytest.raises(OrthancConnectionError,
                       match=rf"headers: the server stopped answering after \d+ of {N_SLICES} headers"):
        df.orthanc.headers(progress=KillAfter(server, 3), client=client)
    server.restart()
    got = df.orthanc.headers(client=client)
    for (_, _, _, iid), ds in zip(df.index, got, strict=True):
        want = pydicom.dcmread(io.BytesIO(originals[iid]), stop_before_pixels=True)
        assert ds == want


def after_instance_pages(client: op.OrthancClient, then) -> None:
    """Call ``then(k)`` after the k-th page of instances that read_orthanc receives, on either
    route: ``GET /instances`` pages (1.10) or extended ``/tools/find`` pages (1.12.5+: of the
    first half's stream; the second half and the parent levels are read concurrently)."""
    pages, finds = client.iter_pages, client.iter_find

    def iter_pages(level, page_size=5000, **kw):
        for k, page in enumerate(pages(level, page_size=page_size, **kw)):
            yield page
            if level == "instances":
                then(k)

    def iter_find(level, content, **kw):
        for k, page in enumerate(finds(level, content, **kw)):
            yield page
            if "MainDicomTags" in content and not kw.get("start"):
                then(k)

    client.iter_pages, client.iter_find = iter_pages, iter_find


def test_killed_during_read_orthanc_with_a_kept_client_then_restart(series_server):
    server, _ = series_server
    client = op.OrthancClient(server.url)
    after_instance_pages(client, lambda k: server.kill())
    with pytest.raises(OrthancConnectionError) as info:
        op.read_orthanc(client, page_size=5)
    msg = str(info.value)
    # the lists route dies after its first page of 5; the find route reads its two halves
    # (12 + 12) at once, so the other half may have added 0, 5, 10 or all 12 before the crash
    found = re.search(r"stopped answering while reading instances \(after (\d+) of them\); "
                      r"no frame was returned", msg)
    assert found and int(found.group(1)) - 5 in (0, 5, 10, N_SLICES // 2), msg
    del client.iter_pages, client.iter_find
    server.restart()
    df = op.read_orthanc(client)
    assert len(df) == N_SLICES == client.statistics()["CountInstances"]


def test_upload_to_a_server_dying_mid_batch_reports_what_was_stored(factory, tmp_path, monkeypatch):
    server = factory(name="upload-dies")
    blobs = [to_bytes(d) for d in make_series(30, 32, 32, seed="dies")]
    folder = tmp_path / "in"
    folder.mkdir()
    for k, b in enumerate(blobs):
        (folder / f"{k:03d}.dcm").write_bytes(b)
    client = op.OrthancClient(server.url)
    sent = Sent(monkeypatch)
    report = op.upload(folder, client, progress=KillAfter(server, 10), max_workers=2,
                       errors="report")
    posted = sent.posted("/instances")
    status = report.status.astype(str)
    assert len(report) == 30 and set(status) == {"Success", "Error"}
    assert (status == "Success").sum() >= 1 and (status == "Error").sum() >= 10
    errors = report[status == "Error"]
    assert errors.message.str.contains("Could not reach Orthanc|not sent: the server stopped").all()
    assert errors.message.str.contains("not sent").any()  # the rest is not tried file by file
    # files sent: those stored, and those in flight or picked up as the server died (at most
    # 2 per worker); the others were never tried, one by one or otherwise
    stored = (status == "Success").sum()
    assert stored <= posted <= stored + 2 * 2 < 30, (stored, posted)
    server.restart()
    stored = set(client.list_ids("instances"))
    # every file reported stored is on the server (a file whose answer was lost when the
    # server died may be stored too: the rerun reports it AlreadyStored)
    assert set(report.loc[status == "Success", "instance"]) <= stored
    again = op.upload(folder, client, errors="report")
    again_status = dict(zip(again.path, again.status.astype(str), strict=True))
    for path, st in zip(report.path, status, strict=True):
        if st == "Success":
            assert again_status[path] == "AlreadyStored"
        else:
            assert again_status[path] in ("Success", "AlreadyStored")
    assert set(client.list_ids("instances")) == set(again.instance) and len(set(again.instance)) == 30


def test_killed_during_confirmed_delete_says_how_far_it_got(factory):
    server = factory(name="delete-dies")
    for k in range(4):
        server.upload_bytes(to_bytes(d) for d in make_series(2, 8, 8, seed=f"d{k}", series_number=k + 1))
    client = op.OrthancClient(server.url)
    df = op.read_orthanc(client)
    deleted = []
    original = client.delete

    def delete_then_die(path):
        if len(deleted) == 2:
            server.kill()
        deleted.append(path)
        return original(path)

    client.delete = delete_then_die
    with pytest.raises(OrthancConnectionError,
                       match=r"delete: the server stopped answering after 2 of 4 series deletions"):
        df.orthanc.delete(level="series", confirm=True, client=client)
    del client.delete
    server.restart()
    left = set(client.list_ids("series"))
    assert left == set(df.index.get_level_values("series")) - {p.split("/")[-1] for p in deleted[:2]}
    report = df.orthanc.delete(level="series", confirm=True, client=client)
    assert sorted(report.drop_duplicates("resource").status) == ["AlreadyGone"] * 2 + ["Deleted"] * 2
    assert client.list_ids("instances") == []


def test_download_cut_mid_file_leaves_no_truncated_file(series_server, tmp_path):
    """The connection drops in the middle of a file's bytes (a proxy between us and Orthanc)."""
    from tls_relay import CuttingRelay

    server, originals = series_server
    df = op.read_orthanc(server.url)
    with CuttingRelay(server.port, cut_after=5000) as relay:
        client = op.OrthancClient(relay.url, retries=0)
        with pytest.raises(OrthancConnectionError, match="after 0 of 3 files were saved"):
            df.iloc[:3].orthanc.download(tmp_path, client=client, max_workers=1)
        assert relay.cuts >= 1
        with pytest.raises(OrthancConnectionError, match=r"of 3 files were downloaded"):
            df.iloc[:3].orthanc.volume(client=client, max_workers=1)
    assert list(tmp_path.iterdir()) == []  # nothing under a final name, no .part left


# -- stalled and idle servers ---------------------------------------------------------------
@pytest.mark.slow
def test_stalled_server_times_out_in_every_operation(series_server, tmp_path, monkeypatch):
    server, _ = series_server
    client = op.OrthancClient(server.url, timeout=(1, 1.5), retries=0)
    df = op.read_orthanc(client)
    os.kill(server.process.pid, signal.SIGSTOP)  # alive, answers nothing
    try:
        for call in (lambda: op.read_orthanc(op.OrthancClient(server.url, timeout=(1, 1.5))),
                     lambda: df.orthanc.download(tmp_path, client=client),
                     lambda: df.orthanc.volume(client=client),
                     lambda: df.iloc[:2].orthanc.headers(client=client)):
            sent = Sent(monkeypatch)
            raised = finishes(call)
            assert isinstance(raised, OrthancTimeoutError), raised
            assert re.search(r"timed out \(read timeout, timeout=\(1, 1\.5\)\)", str(raised))
            # a request that timed out is never sent again (that would only double the wait)
            assert sent.timed_out and len(set(sent.timed_out)) == len(sent.timed_out), sent.timed_out
            monkeypatch.undo()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert list(tmp_path.iterdir()) == []
    assert len(op.read_orthanc(client)) == N_SLICES  # and it recovers


@pytest.mark.slow
def test_pauses_longer_than_keepalive_between_every_call(series_server, tmp_path):
    """Orthanc 1.10 closes idle connections after 1 s: no call may fail on a stale socket."""
    server, originals = series_server
    client = op.OrthancClient(server.url, retries=0)  # no retry budget: reuse itself must be safe
    df = op.read_orthanc(client)
    extra = tmp_path / "extra.dcm"
    extra.write_bytes(to_bytes(make_series(1, 8, 8, seed="keepalive")[0]))
    calls = [
        lambda: op.read_orthanc(client),
        lambda: df.orthanc.headers(client=client),
        lambda: df.orthanc.download(tmp_path / "dl", client=client),
        lambda: df.orthanc.volume(client=client),
        lambda: df.orthanc.with_tags("SliceThickness", client=client),
        lambda: op.upload(extra, client),
        lambda: df.orthanc.delete(level="series", client=client),
        lambda: df.orthanc.refresh(client=client),
        lambda: df.orthanc.to_zip(tmp_path / "a.zip", client=client),
    ]
    results = []
    for call in calls:
        time.sleep(1.3)
        results.append(call())
    assert len(results[0]) == N_SLICES
    assert list(results[5].status.astype(str)) == ["Success"]
    assert len(results[7]) == N_SLICES + 1


# -- another process writes while we read --------------------------------------------------------
def test_writes_between_pages_are_detected_and_caught_up(series_server):
    server, originals = series_server
    writer = server.client()
    victim = sorted(originals)[0]
    newcomer = to_bytes(make_series(1, 8, 8, seed="newcomer", patient_id="F2")[0])
    client = op.OrthancClient(server.url)
    attempts = []

    def writes(k):
        if k == 0:
            attempts.append(1)
        if len(attempts) == 1 and k == 1:
            writer.post_json("/instances", data=newcomer, idempotent=True)
            writer.delete(f"/instances/{victim}")

    after_instance_pages(client, writes)
    df = op.read_orthanc(client, page_size=5)
    assert len(attempts) == 1  # the read saw the writes and was caught up, not repeated
    truth = set(writer.list_ids("instances"))
    assert set(df.index.get_level_values("instance")) == truth
    assert victim not in truth and len(truth) == N_SLICES
    pd.testing.assert_frame_equal(df, op.read_orthanc(server.url))


def test_writes_during_the_read_are_caught_up_not_read_again(series_server):
    server, _ = series_server
    writer = server.client()
    client = op.OrthancClient(server.url)
    pages = []
    blobs = iter(to_bytes(d) for d in make_series(10, 8, 8, seed="storm", patient_id="F3"))

    def writes(k):
        pages.append(k)
        writer.post_json("/instances", data=next(blobs), idempotent=True)

    after_instance_pages(client, writes)
    df = op.read_orthanc(client, page_size=10)
    # one read (its pages wrote), then a catch-up that pages nothing: no second read
    assert pages == sorted(set(pages)) and len(pages) >= 1
    fresh = op.read_orthanc(server.url)
    pd.testing.assert_frame_equal(df, fresh)
    # the frame's sequence is the last write's (later entries can only be stability events)
    seq, last = df.attrs["orthanc"]["last_change"], fresh.attrs["orthanc"]["last_change"]
    assert seq <= last and not list(client.iter_changes(seq, last, content_only=True))
    # with no catch-up allowed, the same writes are more than can be read
    with pytest.raises(op.ServerChangedError, match=r"changes faster than it can be read: about "
                       r"\d+ instances/s arrived or were deleted, and the whole index was read at"):
        op.read_orthanc(client, page_size=10, max_rounds=0)


WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import orthanc_pandas as op
    url, folder, log, stop = sys.argv[1:5]
    client = op.OrthancClient(url)
    files = sorted(Path(folder).glob("*.dcm"))
    initial = client.list_ids("instances")
    with open(log, "w") as out:
        for k, f in enumerate(files):
            if os.path.exists(stop):
                break
            ans = client.post_json("/instances", data=f.read_bytes(), idempotent=True)
            out.write(f"+{ans['ID']} {ans['ParentSeries']} {ans['ParentStudy']} {ans['ParentPatient']}\\n")
            out.flush()
            if k % 2 == 1:  # delete every other step: one of the original instances
                victim = initial.pop()
                client.delete(f"/instances/{victim}")
                out.write(f"-{victim}\\n")
                out.flush()
            time.sleep(0.002)
""")


@pytest.mark.slow
def test_other_process_uploads_and_deletes_while_reading(factory, tmp_path):
    """The frame equals the server at one moment between two of the writer's operations."""
    server = factory(name="writers")
    first = server.upload_bytes(generate_archive(2, 2, 2, 20, rows=4, cols=4, seed="base"))
    server.client().close()
    state = {a["ID"]: (a["ParentSeries"], a["ParentStudy"], a["ParentPatient"]) for a in first}
    folder = tmp_path / "incoming"
    folder.mkdir()
    for k, b in enumerate(generate_archive(1, 2, 2, 40, rows=4, cols=4, seed="more")):
        (folder / f"{k:04d}.dcm").write_bytes(b)
    log, stop = tmp_path / "log", tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, server.url, str(folder), str(log), str(stop)],
                            env=env)
    outcomes = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 200):
            time.sleep(0.01)
        for _ in range(4):
            try:
                outcomes.append(op.read_orthanc(server.url, page_size=7, max_rounds=4))
            except op.ServerChangedError as exc:
                assert "changes faster than it can be read" in str(exc)
                outcomes.append(None)
    finally:
        stop.touch()
        proc.wait(60)
    assert proc.returncode == 0
    # every state the writer left the server in, from its log
    states = [frozenset(state)]
    parents = dict(state)
    current = set(state)
    for line in log.read_text().splitlines():
        iid = line[1:].split()[0]
        if line[0] == "+":
            current.add(iid)
            parents[iid] = tuple(line.split()[1:])
        else:
            current.discard(iid)
        states.append(frozenset(current))
    assert len(states) > 10, "the writer did not run during the reads"
    frames = [df for df in outcomes if df is not None]
    for df in frames:
        ids = frozenset(df.index.get_level_values("instance"))
        assert ids in states, "the frame mixes two moments of the archive"
        for p, st, se, i in df.index:
            assert parents[i] == (se, st, p)
        assert df.attrs["orthanc"]["counts"]["instances"] == len(df)
    # and the final read equals the final state
    final = op.read_orthanc(server.url)
    assert frozenset(final.index.get_level_values("instance")) == states[-1]
    assert pd.Index(final.index.get_level_values("instance")).is_unique


# -- a connection closed or stalled mid-header / mid-answer (a relay in front of a real Orthanc) --
@pytest.fixture(scope="module")
def relayed(orthanc_available):
    """One real Orthanc with a CT series and its frame, for relays that break its answers."""
    from orthanc_pandas.testing import LocalOrthanc

    with LocalOrthanc(name="relayed") as server:
        server.upload_bytes(to_bytes(d) for d in make_series(N_SLICES, 64, 64, seed="relayed"))
        yield server, op.read_orthanc(server.url)


def _read_file(client, df, tmp_path):
    with client.get_file(df.index[0][3]) as answer:
        return answer.read()


OPERATIONS = {  # each reads one answer of several kB (JSON ~12 kB, a file ~9 kB)
    "get_json": lambda client, df, tmp_path: client.get_json("/instances", params={"expand": ""}),
    "get_file": _read_file,
    "headers": lambda client, df, tmp_path: df.iloc[:1].orthanc.headers(client=client),
    "download": lambda client, df, tmp_path: df.iloc[:1].orthanc.download(tmp_path, client=client),
}
CUTS = {"mid-header": 40, "mid-answer": 2000}  # bytes of the server's answer let through


@pytest.mark.parametrize("fault, retries", [("closed", 0), ("closed", 2), ("stalled", 0), ("stalled", 2)])
@pytest.mark.parametrize("where", CUTS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_connection_closed_or_stalled_mid_answer_is_a_family_error_of_its_kind(
        relayed, tmp_path, operation, where, fault, retries):
    """Closed -> OrthancConnectionError (sent again while no byte reached the caller);
    stalled -> OrthancTimeoutError (never sent again: that would only double the wait)."""
    from tls_relay import CuttingRelay

    server, df = relayed
    with CuttingRelay(server.port, cut_after=CUTS[where], stall=fault == "stalled") as relay:
        client = op.OrthancClient(relay.url, timeout=(1, 0.5), retries=retries)
        raised = finishes(lambda: OPERATIONS[operation](client, df, tmp_path))
    if fault == "stalled":
        assert type(raised) is OrthancTimeoutError, raised
        assert "timed out (read timeout, timeout=(1, 0.5))" in str(raised)
        assert relay.connections == 1  # never sent again: that would only double the wait
    else:
        assert type(raised) is OrthancConnectionError, raised
        assert relay.connections == 1 + retries == relay.cuts
    assert str(relay.url) in str(raised)
    assert list(tmp_path.iterdir()) == []  # download: nothing under a final name, no .part left
