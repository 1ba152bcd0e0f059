"""Load: many threads through ONE client give the serial results; connections stay bounded.

The number of connections is counted from the operating system (this process's established
TCP connections to the server's port, sampled while the work runs), not from the library.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import psutil
import pydicom
import pytest

import orthanc_pandas as op
from orthanc_pandas._util.fanout import DEFAULT_WORKERS
from orthanc_pandas.testing.synthetic import make_series, to_bytes

N_SERIES = 8


@pytest.fixture(scope="module")
def load_server(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc

    with LocalOrthanc(name="load") as server:
        originals = {}
        for k in range(N_SERIES):
            blobs = [to_bytes(d) for d in make_series(10 + k, 48, 48, seed=f"load{k}",
                                                      patient_id=f"L{k}", series_number=k + 1)]
            for a, b in zip(server.upload_bytes(blobs), blobs, strict=True):
                originals[a["ID"]] = b
        server.client().close()  # only the clients under test talk to the server from here
        with op.OrthancClient(server.url) as reader:
            df = op.read_orthanc(reader)
        yield server, df, originals


class ConnectionCounter:
    """Samples this process's ESTABLISHED TCP connections to ``port``; keeps the peak."""

    def __init__(self, port: int):
        self.port, self.peak, self.samples = port, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> int:
        return sum(1 for c in psutil.Process().net_connections(kind="tcp")
                   if c.raddr and c.raddr.port == self.port and c.status == psutil.CONN_ESTABLISHED)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._count())
            self.samples += 1
            time.sleep(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def series_frames(df):
    return [df.xs(s, level="series", drop_level=False)
            for s in df.index.get_level_values("series").unique()]


def work(frame, client):
    return frame.orthanc.headers(client=client).tolist(), frame.orthanc.volume(client=client)


def test_eight_threads_one_client_equal_serial_and_originals(load_server):
    server, df, originals = load_server
    frames = series_frames(df)
    assert len(frames) == N_SERIES
    serial_client = op.OrthancClient(server.url)
    serial = [work(f, serial_client) for f in frames]
    serial_client.close()  # its idle connections must not be counted below

    client = op.OrthancClient(server.url)  # ONE client shared by all threads
    results: list = [None] * N_SERIES
    errors: list = []
    barrier = threading.Barrier(N_SERIES)

    def run(k):
        barrier.wait()  # all start at once
        try:
            results[k] = work(frames[k], client)
        except BaseException as exc:  # reported below
            errors.append(exc)

    with ConnectionCounter(server.port) as counter:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(N_SERIES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    client.close()
    assert not errors, errors
    assert counter.peak <= client.pool_size, counter.peak
    for k, frame in enumerate(frames):
        (h_par, v_par), (h_ser, v_ser) = results[k], serial[k]
        assert h_par == h_ser  # same datasets, element by element
        np.testing.assert_array_equal(v_par.values, v_ser.values)
        assert v_par.attrs["affine"] == v_ser.attrs["affine"]
        assert list(v_par.coords["instance"].values) == list(v_ser.coords["instance"].values)
        # and both are the original files, as pydicom reads them
        for iid, ds in zip(frame.index.get_level_values("instance"), h_par, strict=True):
            assert ds == pydicom.dcmread(io.BytesIO(originals[iid]), stop_before_pixels=True)
        assert v_par.attrs["orthanc_series"] == frame.index.get_level_values("series")[0]


@pytest.mark.parametrize("pool_size", [2, 3])
def test_pool_size_bounds_connections_under_load(load_server, pool_size):
    server, df, _ = load_server
    frames = series_frames(df)
    client = op.OrthancClient(server.url, pool_size=pool_size)
    with ConnectionCounter(server.port) as counter:
        for _ in range(2):  # long enough for many samples even in a busy test process
            threads = [threading.Thread(target=work, args=(f, client)) for f in frames]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
    client.close()
    assert counter.samples >= 3, counter.samples
    assert 1 <= counter.peak <= pool_size, counter.peak


def test_the_counter_sees_more_connections_when_the_pool_allows_them(load_server):
    """The measurement itself can fail: with a big pool the same load opens more than 3."""
    server, df, _ = load_server
    frames = series_frames(df)
    client = op.OrthancClient(server.url, pool_size=16)
    with ConnectionCounter(server.port) as counter:
        threads = [threading.Thread(target=work, args=(f, client)) for f in frames]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    client.close()
    assert counter.peak > 3, counter.peak


@pytest.mark.parametrize("max_workers, bound", [(1, 1), (2, 2), (None, DEFAULT_WORKERS)])
def test_worker_counts_bound_connections_of_one_call(load_server, max_workers, bound, tmp_path):
    server, df, _ = load_server
    client = op.OrthancClient(server.url, pool_size=16)
    frame = series_frames(df)[-1]  # the longest series
    with ConnectionCounter(server.port) as counter:
        for _ in range(3):
            frame.orthanc.volume(client=client, max_workers=max_workers)
            frame.orthanc.download(tmp_path, client=client, max_workers=max_workers)
    client.close()
    assert 1 <= counter.peak <= bound, counter.peak
