"""Neutral /changes entries (stability, DICOMweb's series cache, metadata) never cause a
re-read, a ServerChangedError or a re-fetch; on 1.12+ the DICOMweb plugin writes them while a
viewer reads, which is what these tests provoke on a real server."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas._http.changes import content_only, is_content_change
from orthanc_pandas.testing.synthetic import make_series, to_bytes


class RequestLog:
    """Records the (method, path, params) of every request one client sends (a spy on our
    own client, not a stand-in for the server)."""

    def __init__(self, client: op.OrthancClient):
        self.calls: list[tuple[str, str, str]] = []
        original = client.request

        def request(method, path, **kw):
            self.calls.append((method, path, str(kw.get("params") or "")))
            return original(method, path, **kw)

        client.request = request

    def paths(self, prefix: str) -> list[str]:
        return [p for _m, p, _q in self.calls if p.startswith(prefix)]


def _viewer_loop(url: str, stop: threading.Event, done: list[int]) -> None:
    """Read every series' DICOMweb metadata again and again, as a viewer does."""
    client = op.OrthancClient(url)
    while not stop.is_set():
        for study in client.get_json("/studies", params={"expand": ""}):
            uid = study["MainDicomTags"]["StudyInstanceUID"]
            client.get_json(f"/dicom-web/studies/{uid}/metadata")
            done[0] += 1
    client.close()


def _stable(client) -> bool:
    kinds = {c["ChangeType"] for c in client.changes(0, limit=10_000)["Changes"]}
    return "StablePatient" in kinds


def test_reads_are_stable_while_dicomweb_writes_its_cache(orthanc_factory):
    server = orthanc_factory(dicomweb=True, config={"StableAge": 1})
    for k in range(3):
        server.upload_bytes([to_bytes(d) for d in make_series(6, 8, 8, seed=f"dw{k}",
                                                               patient_id=f"P{k}")])
    client = server.client()
    first = op.read_orthanc(client, max_rounds=0)  # at once, before the series are stable
    stop, done = threading.Event(), [0]
    viewer = threading.Thread(target=_viewer_loop, args=(server.url, stop, done))
    viewer.start()
    try:
        deadline = time.monotonic() + 60  # only a hang reaches it
        frames = []
        while time.monotonic() < deadline and (len(frames) < 5 or done[0] < 3):
            # one attempt only: any change taken for a content change would raise here
            frames.append(op.read_orthanc(client, max_rounds=0))
        # past StableAge the stability events (and on 1.12+ the cache writes) follow
        deadline = time.monotonic() + 60  # only a hang reaches it
        while time.monotonic() < deadline and not _stable(client):
            frames.append(op.read_orthanc(client, max_rounds=0))
            time.sleep(0.2)
        frames.append(op.read_orthanc(client, max_rounds=0))
    finally:
        stop.set()
        viewer.join()
    assert done[0] >= 3
    for df in frames:
        pd.testing.assert_frame_equal(df, first)
    entries = client.changes(0, limit=10_000)["Changes"]
    neutral = [c for c in entries if not is_content_change(c)]
    # stability events always; DICOMweb >= 1.15 (with Orthanc 1.12+) adds its cache writes
    assert {"StableSeries", "StableStudy", "StablePatient"} <= {c["ChangeType"] for c in neutral}
    # exactly where Orthanc is 1.12+ (labels): only its DICOMweb plugin (>= 1.15) caches
    assert any(c["ChangeType"] == "UpdatedAttachment" and c["ResourceType"] == "Series"
               for c in neutral) == client.capabilities().labels
    assert len(content_only(entries)) == len(entries) - len(neutral)


def test_refresh_after_neutral_changes_fetches_nothing(orthanc_factory):
    server = orthanc_factory(dicomweb=True, config={"StableAge": 1})
    server.upload_bytes([to_bytes(d) for d in make_series(5, 8, 8, seed="rf", patient_id="R")])
    client = op.OrthancClient(server.url)
    df = op.read_orthanc(client)
    stop, done = threading.Event(), [0]
    viewer = threading.Thread(target=_viewer_loop, args=(server.url, stop, done))
    viewer.start()
    deadline = time.monotonic() + 60  # only a hang reaches it
    while time.monotonic() < deadline and not _stable(client):
        time.sleep(0.2)
    time.sleep(0.5)  # the viewer's reads after stability write the cache again
    stop.set()
    viewer.join()
    assert client.last_change() > df.attrs["orthanc"]["last_change"]  # the log did move
    log = RequestLog(client)
    out = df.orthanc.refresh(client=client)
    pd.testing.assert_frame_equal(out, df)
    assert out.attrs["orthanc"]["last_change"] == client.last_change()
    # no series, study, patient or instance was fetched again: only the log, counts and ids
    assert not log.paths("/series/") and not log.paths("/studies/") and not log.paths("/instances/")


def _content_changes_read(orthanc_factory):
    """(entries kept by iter_changes(content_only=True), the /changes queries it sent)."""
    server = orthanc_factory(config={"StableAge": 1})
    server.upload_bytes([to_bytes(d) for d in make_series(4, 8, 8, seed="ty")])
    client = op.OrthancClient(server.url)
    deadline = time.monotonic() + 60  # only a hang reaches it
    while time.monotonic() < deadline and not _stable(client):  # stability events
        time.sleep(0.2)
    everything = list(client.iter_changes(0))
    log = RequestLog(client)
    kept = list(client.iter_changes(0, content_only=True))
    assert kept == content_only(everything)
    assert len(kept) < len(everything) and kept  # stability events existed and were dropped
    return client, [q for _m, p, q in log.calls if p == "/changes"]


@pytest.mark.orthanc_min("1.12.5")
def test_content_changes_filtered_by_type_on_the_server(orthanc_factory):
    client, asked = _content_changes_read(orthanc_factory)
    assert client.capabilities().extended_changes
    assert asked and all("type" in q for q in asked)  # the server filtered


@pytest.mark.orthanc_before("1.12.5")
def test_content_changes_filtered_here_without_extended_changes(orthanc_factory):
    client, asked = _content_changes_read(orthanc_factory)
    assert not client.capabilities().extended_changes
    assert asked and not any("type" in q for q in asked)  # 1.10 refuses nothing, filters nothing
