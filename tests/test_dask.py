"""orthanc_pandas.dask against real Orthanc servers: the Dask read, select, map_series."""

from __future__ import annotations

import os
import pickle
import sys
import warnings

import cloudpickle
import distributed
import numpy as np
import pandas as pd
import pytest

import orthanc_pandas as op
import orthanc_pandas.dask as opd
from orthanc_pandas.errors import ParseWarning, SelectionError, ServerChangedError
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import make_series, to_bytes

USER, PASSWORD = "alice", "pw-9f3c2d7e1b-never-in-a-graph"


def _compute(ddf, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)  # the corpus holds invalid values on purpose
        return ddf.compute(scheduler="sync", **kw)


def _assert_same_as_pandas(out: pd.DataFrame, df: pd.DataFrame) -> None:
    """Equal frames: same columns, dtypes (tags no instance has too), values and order."""
    assert list(out.columns) == list(df.columns)
    pd.testing.assert_frame_equal(out, df)
    # read_at, and last_change (Orthanc logs StableSeries etc. as time passes), may differ
    moving = ("read_at", "last_change")
    ours = {k: v for k, v in out.attrs["orthanc"].items() if k not in moving}
    theirs = {k: v for k, v in df.attrs["orthanc"].items() if k not in moving}
    assert ours == theirs


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, started once for the module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as lc, distributed.Client(lc) as dc:
        yield dc


@pytest.fixture(scope="module")
def volumes_server(orthanc_available):
    """Three small CT series (two patients) and one series whose geometry is broken."""
    with LocalOrthanc(name="dask-volumes") as server:
        blobs = []
        for k in range(3):
            blobs += [to_bytes(d) for d in make_series(
                n_slices=4 + k, rows=8, cols=8, patient_id=f"P{k % 2}", series_number=k + 1,
                seed=f"dask-{k}")]
        # a duplicate position: volume() raises DuplicateSliceError for this one
        blobs += [to_bytes(d) for d in make_series(
            n_slices=3, rows=8, cols=8, patient_id="P9", seed="dask-bad",
            positions=[(0, 0, 0), (0, 0, 0), (0, 0, 5)])]
        server.upload_bytes(blobs)
        yield server


# -- the read ---------------------------------------------------------------------------------
def test_dask_read_equals_pandas_read(corpus, corpus_frame):
    ddf = opd.read_orthanc(corpus.url)
    assert isinstance(ddf, opd.dd.DataFrame)
    # meta already has the pandas frame's columns: no partition is computed for the schema
    assert list(ddf.columns) == list(corpus_frame.columns)
    assert ddf.orthanc.info["last_change"] >= corpus_frame.attrs["orthanc"]["last_change"]
    _assert_same_as_pandas(_compute(ddf), corpus_frame)


def test_dask_equals_pandas_when_an_instance_tag_is_absent_everywhere(volumes_server):
    client = op.connect(volumes_server.url)
    listed = client.get_json("/instances", params="expand")
    absent = [kw for kw in ("ImageIndex", "ImageComments", "TemporalPositionIdentifier")
              if not any(i["MainDicomTags"].get(kw) for i in listed)]
    assert absent  # the server's own answer: no instance has these
    df = op.read_orthanc(volumes_server.url)
    assert all(df[kw].isna().all() for kw in absent)
    # each has its tag's dtype, as when instances have it, not a data-dependent one
    expected = {"ImageIndex": "Int32", "ImageComments": "string", "TemporalPositionIdentifier": "Int32"}
    assert {kw: str(df[kw].dtype) for kw in absent} == {kw: expected[kw] for kw in absent}
    _assert_same_as_pandas(_compute(opd.read_orthanc(volumes_server.url, partition_size=2)), df)


def test_many_partitions_keep_the_pandas_order_and_whole_studies(corpus, corpus_frame):
    ddf = opd.read_orthanc(corpus.url, partition_size=10)
    assert ddf.npartitions > 5
    _assert_same_as_pandas(_compute(ddf), corpus_frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        studies = ddf.map_partitions(
            lambda p: pd.Series(p.index.get_level_values("study").unique()),
            meta=pd.Series([], dtype=object)).compute(scheduler="sync")
    assert studies.is_unique  # a study (so a series) is never split between partitions
    # every partition is a pandas index frame with the provenance
    part = _compute(ddf.partitions[2])
    assert part.orthanc.counts["instances"] == len(part) and part.attrs["orthanc"]["url"] == corpus.url


def test_threaded_scheduler_and_typed_false(corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        df = op.read_orthanc(corpus.url, typed=False)
        out = opd.read_orthanc(corpus.url, typed=False, partition_size=30).compute(scheduler="threads")
    _assert_same_as_pandas(out, df)


def test_empty_archive_and_partition_size_checked(empty_server):
    ddf = opd.read_orthanc(empty_server.url)
    out = ddf.compute(scheduler="sync")
    pd.testing.assert_frame_equal(out, op.read_orthanc(empty_server.url))
    with pytest.raises(ValueError, match="partition_size"):
        opd.read_orthanc(empty_server.url, partition_size=0)


def test_a_changed_study_fails_the_computation_naming_it(orthanc_factory):
    server = orthanc_factory()
    server.upload_bytes([to_bytes(d) for d in make_series(3, 8, 8, seed="chg-a", patient_id="A")])
    server.upload_bytes([to_bytes(d) for d in make_series(2, 8, 8, seed="chg-b", patient_id="B")])
    ddf = opd.read_orthanc(server.url, partition_size=1)
    # an instance added to study A after the graph was built
    extra = make_series(4, 8, 8, seed="chg-a", patient_id="A")[3]
    server.upload_bytes([to_bytes(extra)])
    with pytest.raises(ServerChangedError, match="changed after the Dask graph was built"):
        ddf.compute(scheduler="sync")
    ddf = opd.read_orthanc(server.url, partition_size=1)
    study = op.read_orthanc(server.url).query("PatientID == 'B'").index[0][1]
    server.client().delete(f"/studies/{study}")
    with pytest.raises(ServerChangedError, match=f"Study {study} was deleted"):
        ddf.compute(scheduler="sync")


# -- select -----------------------------------------------------------------------------------
@pytest.mark.parametrize("criteria", [
    {"Modality": "CT"},
    {"Modality": ["MR", "CT"], "PatientName": "*"},
    {"StudyDate": "20000101-"},
    {"InstanceNumber": (1, 3)},
    {"ImagePositionPatient": lambda c: c.iloc[:, 2].fillna(0) >= 0},
])
def test_select_on_dask_equals_select_on_pandas(corpus, corpus_frame, criteria):
    ddf = opd.read_orthanc(corpus.url, partition_size=25)
    lazy = ddf.orthanc.select(**criteria)
    assert list(lazy.columns) == list(corpus_frame.columns)
    expected = corpus_frame.orthanc.select(**criteria)
    _assert_same_as_pandas(_compute(lazy), expected)
    _assert_same_as_pandas(_compute(opd.select(ddf, **criteria)), expected)


def test_select_on_a_tag_that_is_not_a_column_is_refused(corpus):
    ddf = opd.read_orthanc(corpus.url)
    with pytest.raises(SelectionError, match="with_tags"):
        ddf.orthanc.select(SliceThickness=(0, 2))
    with pytest.raises(AttributeError, match="read_orthanc"):
        opd.dd.from_pandas(pd.DataFrame({"a": [1]}), npartitions=1).orthanc  # noqa: B018


# -- map_series -------------------------------------------------------------------------------
def _stats(vol, rows):
    return {"mean": float(vol.mean()), "slices": int(vol.sizes["z"]), "rows": len(rows),
            "sop0": str(vol.sop_instance_uid.values[0])}


def _loop(df, func, **kw):
    out = {}
    for sid in dict.fromkeys(df.index.get_level_values("series")):
        try:
            out[sid] = func(df.orthanc.volumes(**kw)[sid], df.xs(sid, level="series", drop_level=False))
        except Exception as exc:
            out[sid] = type(exc).__name__
    return out


def test_map_series_without_a_dask_scheduler_runs_on_a_local_thread_pool(volumes_server,
                                                                          monkeypatch):
    import threading

    import dask

    df = op.read_orthanc(volumes_server.url)
    expected = _loop(df, _stats)
    threads = set()

    def stats(vol, rows):
        threads.add(threading.current_thread().name)
        return _stats(vol, rows)

    def no_dask(*a, **k):
        raise AssertionError("dask.compute must not be called without a scheduler")

    monkeypatch.setattr(dask, "compute", no_dask)
    # no distributed client (this test runs before the module's cluster fixture starts) and
    # no configured scheduler
    with dask.config.set(scheduler=None):
        assert dask.base.get_scheduler() is None
        res = df.orthanc.map_series(stats)
    # called directly, series after series (each downloaded on a few threads), not via Dask
    assert threads == {threading.current_thread().name}
    assert list(res.index) == list(expected)
    bad = [sid for sid, v in expected.items() if isinstance(v, str)]
    assert len(bad) == 1 and res.loc[bad[0], "error"].startswith("DuplicateSliceError: ")
    assert res.drop(index=bad)[["mean", "slices", "rows", "sop0"]].to_dict("index") == {
        k: v for k, v in expected.items() if k not in bad}
    # an active Dask scheduler is still used
    calls = []
    monkeypatch.setattr(dask, "compute", lambda *t, **k: calls.append(len(t)) or tuple(
        x.compute(scheduler="sync") for x in t))
    with dask.config.set(scheduler="sync"):
        again = df.orthanc.map_series(_stats)
    assert calls == [len(expected)]
    pd.testing.assert_frame_equal(again, res)
    # without Dask installed at all (a base install): the same local threads, the same frame
    monkeypatch.setitem(sys.modules, "dask", None)  # import raises ImportError
    threads.clear()
    pd.testing.assert_frame_equal(df.orthanc.map_series(stats), res)
    # called directly, series after series (each downloaded on a few threads), not via Dask
    assert threads == {threading.current_thread().name}
    with pytest.raises(ImportError):
        df.orthanc.map_series(stats, dask_client=object())  # a cluster needs Dask


def test_map_series_on_a_cluster_equals_a_loop_and_keeps_failures_apart(volumes_server, cluster):
    df = op.read_orthanc(volumes_server.url)
    res = df.orthanc.map_series(_stats, dask_client=cluster)
    # client= is the Orthanc client, as in every other call; a Dask client there is refused
    with pytest.raises(TypeError, match="dask_client="):
        df.orthanc.map_series(_stats, client=cluster)
    pd.testing.assert_frame_equal(df.orthanc.map_series(_stats, dask_client=cluster,
                                                        client=volumes_server.url), res)
    expected = _loop(df, _stats)
    assert list(res.index) == list(expected) and res.index.name == "series"
    bad = [sid for sid, v in expected.items() if isinstance(v, str)]
    assert len(bad) == 1 and res.loc[bad[0], "error"].startswith("DuplicateSliceError: ")
    good = res.drop(index=bad)
    assert good["error"].isna().all()
    assert good[["mean", "slices", "rows", "sop0"]].to_dict("index") == {
        k: v for k, v in expected.items() if k not in bad}
    # the same on the default local scheduler (threads), with a scalar result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", op.errors.GeometryWarning)
        local = df.orthanc.map_series(lambda vol, rows: vol.sizes["z"], allow_irregular=True)
        sizes = _loop(df, lambda vol, rows: vol.sizes["z"], allow_irregular=True)
    assert local["result"].to_dict() == sizes and local["error"].isna().all()


def test_a_failing_func_reports_its_series_and_meta_types_the_result(volumes_server):
    df = op.read_orthanc(volumes_server.url).orthanc.select(PatientID="P0")
    first = df.index.get_level_values("series")[0]

    def picky(vol, rows):
        if rows.index.get_level_values("series")[0] == first:
            raise RuntimeError("no good")
        return pd.Series({"z": vol.sizes["z"]})

    res = df.orthanc.map_series(picky, meta={"z": "Int64"})
    assert res.loc[first, "error"] == "RuntimeError: no good" and pd.isna(res.loc[first, "z"])
    others = res.drop(index=first)
    assert others["error"].isna().all() and str(res["z"].dtype) == "Int64"
    assert (others["z"] > 0).all()


# -- credentials ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth_server(orthanc_available):
    with LocalOrthanc(users={USER: PASSWORD}, name="dask-auth") as server:
        server.upload_bytes([to_bytes(d) for d in make_series(4, 8, 8, seed="dask-auth")])
        yield server


def _graph_bytes(collection) -> bytes:
    graph = dict(collection.__dask_graph__())
    return pickle.dumps(graph) + cloudpickle.dumps(graph)


def test_password_never_in_the_graph_and_workers_still_authenticate(auth_server, cluster):
    url = auth_server.url
    op.connect(url, auth=(USER, PASSWORD))  # this process: the client is registered
    ddf = opd.read_orthanc(url, partition_size=2)
    df = op.read_orthanc(url)
    payload = _graph_bytes(ddf)
    assert PASSWORD.encode() not in payload and USER.encode() not in payload
    tasks = opd.series_tasks(df, _stats)
    payload = b"".join(_graph_bytes(t) for t in tasks)
    assert PASSWORD.encode() not in payload and len(tasks) == 1
    # worker processes have no credentials until they are sent outside the graph
    failed = cluster.compute(ddf)
    with pytest.raises(op.OrthancAuthError):
        failed.result()
    cluster.cancel(failed)
    res = df.orthanc.map_series(_stats, dask_client=cluster)
    assert res["error"].str.contains("OrthancAuthError").all()
    res = df.orthanc.map_series(_stats, dask_client=cluster, auth=(USER, PASSWORD))
    assert res["error"].isna().all() and res["slices"].tolist() == [4]
    # a new graph (the scheduler may still hold the failed keys of the first one)
    out = cluster.compute(opd.read_orthanc(url).orthanc.select(Modality="CT")).result()
    _assert_same_as_pandas(out, df.orthanc.select(Modality="CT"))


def test_workers_take_credentials_from_their_environment(auth_server, cluster):
    url = auth_server.url
    df = op.read_orthanc(url, auth=(USER, PASSWORD))

    def forget_and_set_env(env):
        from orthanc_pandas._http import client as c

        with c._registry_lock:
            c._registry.clear()
        os.environ.update(env)

    cluster.run(forget_and_set_env, {"ORTHANC_USERNAME": USER, "ORTHANC_PASSWORD": PASSWORD})
    try:
        res = df.orthanc.map_series(_stats, dask_client=cluster)
        assert res["error"].isna().all()
    finally:
        cluster.run(lambda: [os.environ.pop(k, None) for k in ("ORTHANC_USERNAME", "ORTHANC_PASSWORD")])
    np.testing.assert_equal(res["rows"].tolist(), [4])

