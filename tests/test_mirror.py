"""op.mirror: a parquet file of the index, updated by what changed; equal to a fresh read.

Every check compares with the server's own answer now (``read_orthanc`` on it) or with the
bytes of the file on disk; run on 1.10 (instance id lists for deletions) and 1.13 (per-series
counts from extended find).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import pandas as pd
import pyarrow.parquet as pq
import pytest

import orthanc_pandas as op
from orthanc_pandas._ops.mirror import META_KEY, mirror_metadata, row_groups
from orthanc_pandas.errors import MirrorError, MirrorWarning
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import make_series, to_bytes


def _series(seed, n=4, **kw):
    return [to_bytes(d) for d in make_series(n, 8, 8, seed=seed, **kw)]


def _fresh(url, **kw) -> pd.DataFrame:
    return op.read_orthanc(url, progress=False, **kw)


def assert_same(got: pd.DataFrame, fresh: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, fresh)
    a = {k: v for k, v in got.attrs["orthanc"].items() if k != "read_at"}
    b = {k: v for k, v in fresh.attrs["orthanc"].items() if k != "read_at"}
    assert a == b


@pytest.fixture
def server(orthanc_factory):
    # no stability events during a test (they move last_change between two reads compared)
    s = orthanc_factory(config={"StableAge": 3600})
    s.upload_bytes(_series("a", patient_id="P1"))
    s.upload_bytes(_series("b", patient_id="P2", series_number=2))
    s.upload_bytes(_series("c", patient_id="P2", series_number=3))
    return s


def test_first_call_writes_owner_only_parquet_that_plain_readers_read(server, tmp_path):
    path = tmp_path / "pacs.parquet"
    old_umask = os.umask(0)  # even a permissive umask gives an owner-only file
    try:
        df = op.mirror(server.url, path, row_group_size=5)
    finally:
        os.umask(old_umask)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert_same(df, _fresh(server.url))
    back = pd.read_parquet(path)  # plain pandas: index, dtypes and attrs come back
    assert_same(back, df)
    assert back.orthanc.counts == df.orthanc.counts
    meta = mirror_metadata(path)
    assert meta["last_change"] == server.client().last_change() == df.attrs["orthanc"]["last_change"]
    assert meta["url"] == server.url and meta["level"] == "instance"
    assert meta["counts"]["instances"] == server.client().statistics()["CountInstances"] == len(df)
    groups = pq.ParquetFile(path).metadata
    sizes = [groups.row_group(i).num_rows for i in range(groups.num_row_groups)]
    assert sizes == [b - a for a, b in row_groups(df, 5)] and sum(sizes) == len(df) and len(sizes) > 1
    assert not list(tmp_path.glob(".pacs.parquet.*.tmp"))


def test_dask_and_duckdb_read_the_file_directly(server, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    path = tmp_path / "pacs.parquet"
    df = op.mirror(server.url, path, row_group_size=4)
    ddf = dd.read_parquet(path, split_row_groups=True)
    assert ddf.npartitions == pq.ParquetFile(path).num_row_groups > 1
    got = ddf.compute()
    assert sorted(got.index.get_level_values("instance")) == sorted(df.index.get_level_values("instance"))
    # row groups hold whole studies
    for i in range(pq.ParquetFile(path).num_row_groups):
        studies = set(pq.ParquetFile(path).read_row_group(i, columns=["study"]).column("study").to_pylist())
        assert not studies & set(df.index.get_level_values("study")[
            ~df.index.get_level_values("instance").isin(
                pq.ParquetFile(path).read_row_group(i, columns=["instance"]).column("instance").to_pylist())])
    duckdb = pytest.importorskip("duckdb")
    n, series = duckdb.sql(f"SELECT count(*), count(DISTINCT series) FROM '{path}'").fetchall()[0]
    assert (n, series) == (len(df), df.index.get_level_values("series").nunique())
    # min/max per row group where filters use them (a reader skips row groups by them): the
    # file's own bounds hold the frame's values of each row group
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(j).name for j in range(meta.num_columns)]
    for i in range(meta.num_row_groups):
        start = sum(meta.row_group(k).num_rows for k in range(i))
        part = df.iloc[start:start + meta.row_group(i).num_rows]
        stats = meta.row_group(i).column(names.index("PatientID")).statistics
        assert stats is not None and stats.has_min_max
        values = sorted(part.PatientID.astype(str))
        assert (stats.min, stats.max) == (values[0], values[-1])
        assert meta.row_group(i).column(names.index("SOPInstanceUID")).statistics is None


def test_dask_read_mirror_equals_the_frame_while_the_archive_changes(server, tmp_path):
    opd = pytest.importorskip("orthanc_pandas.dask")
    path = tmp_path / "pacs.parquet"
    df = op.mirror(server.url, path, row_group_size=4)
    ddf = opd.read_mirror(path)
    assert ddf.npartitions == pq.ParquetFile(path).num_row_groups > 1
    server.upload_bytes(_series("o", patient_id="P9"))     # the archive changes: no matter
    server.client().delete(f"/instances/{df.index[0][3]}")
    got = ddf.compute(scheduler="threads")
    assert_same(got, df)
    parts = [ddf.get_partition(i).compute(scheduler="threads") for i in range(ddf.npartitions)]
    assert all(p.index.names == df.index.names for p in parts)
    op.mirror(server.url, path)  # rewritten: the old graph refuses to mix two files
    with pytest.raises(MirrorError, match="read_mirror"):
        ddf.compute(scheduler="threads")
    assert_same(opd.read_mirror(path).compute(scheduler="threads"), _fresh(server.url))


def test_update_after_adds_deletions_labels_and_a_modified_study_equals_a_fresh_read(server, tmp_path):
    path = tmp_path / "pacs.parquet"
    first = op.mirror(server.url, path)
    client = server.client()
    server.upload_bytes(_series("d", patient_id="P3"))                          # a new patient
    server.upload_bytes(_series("b", n=6, patient_id="P2", series_number=2)[4:])  # 2 more in a series
    victim = first.index[0]
    client.delete(f"/instances/{victim[3]}")                                     # one instance
    gone = first[first.PatientID == "P2"].index.get_level_values("series")[-1]
    client.delete(f"/series/{gone}")                                             # a whole series
    study = first[first.PatientID == "P1"].index.get_level_values("study")[0]
    client.post_json(f"/studies/{study}/modify",                                  # a modified study
                     {"Replace": {"StudyDescription": "modified"}, "Force": True})
    ids = first.index.to_frame(index=False)
    target = ids[(ids.series != gone) & (ids.instance != victim[3])].instance.iloc[-1]
    if client.capabilities().labels:
        client.request("PUT", f"/instances/{target}/labels/checked")
    got = op.mirror(server.url, path)
    fresh = _fresh(server.url)
    assert_same(got, fresh)
    assert_same(pd.read_parquet(path), fresh)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert victim[3] not in set(got.index.get_level_values("instance"))
    assert (got.StudyDescription == "modified").any()
    if client.capabilities().labels:
        assert got.loc[got.index.get_level_values("instance") == target,
                       "orthanc_labels"].astype(str).tolist() == ["checked"]


def test_unchanged_archive_keeps_the_file(server, tmp_path):
    path = tmp_path / "pacs.parquet"
    op.mirror(server.url, path)
    before = path.stat()
    got = op.mirror(server.url, path)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert_same(got, _fresh(server.url))


def test_a_write_killed_midway_leaves_the_previous_mirror_readable(server, tmp_path):
    path = tmp_path / "pacs.parquet"
    first = op.mirror(server.url, path, row_group_size=2)
    server.upload_bytes(_series("e", patient_id="P4"))
    # a process killed (SIGKILL: no cleanup runs) after writing half of the new table
    child = textwrap.dedent(f"""
        import os, signal
        import pyarrow.parquet as pq
        import orthanc_pandas as op
        orig = pq.ParquetWriter.write_table
        def half(self, table, *a, **k):
            orig(self, table.slice(0, len(table) // 2), *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)
        pq.ParquetWriter.write_table = half
        op.mirror({server.url!r}, {str(path)!r}, row_group_size=2)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    leftovers = list(tmp_path.glob(".pacs.parquet.*.tmp"))
    assert leftovers and leftovers[0].stat().st_size > 0  # it did die mid-write
    assert_same(pd.read_parquet(path), first)  # the previous mirror, whole
    got = op.mirror(server.url, path)  # the next call updates it and removes the leftover
    assert_same(got, _fresh(server.url))
    assert not list(tmp_path.glob(".pacs.parquet.*.tmp"))


def test_cleared_change_log_is_detected_and_read_anew(server, tmp_path):
    path = tmp_path / "pacs.parquet"
    op.mirror(server.url, path)
    server.upload_bytes(_series("f", patient_id="P5"))  # logged, then the log is cleared
    server.client().delete("/changes")
    server.upload_bytes(_series("g", patient_id="P6"))  # logged after the clear
    with pytest.warns(MirrorWarning, match="read anew"):
        got = op.mirror(server.url, path)
    assert_same(got, _fresh(server.url))
    assert set(got.PatientID) >= {"P5", "P6"}


@pytest.mark.parametrize("more_changes", [True, False], ids=["log-ahead", "log-behind"])
def test_another_server_at_the_same_url_is_detected(orthanc_factory, tmp_path, more_changes):
    a = orthanc_factory(config={"StableAge": 3600})
    a.upload_bytes(_series("h", patient_id="A1"))
    a.upload_bytes(_series("h2", n=2, patient_id="A2"))
    path = tmp_path / "pacs.parquet"
    op.mirror(a.url, path)
    port = a.port
    a.stop()
    # ahead: its log has an entry (another resource) at the mirror's sequence;
    # behind: its change sequence is lower than the mirror's
    b = orthanc_factory(port=port, config={"StableAge": 3600})
    b.upload_bytes(_series("i", patient_id="B1"))
    if more_changes:
        b.upload_bytes(_series("j", n=3, patient_id="B2"))
    assert b.url == a.url
    with pytest.warns(MirrorWarning, match="read anew"):
        got = op.mirror(b.url, path)
    assert_same(got, _fresh(b.url))
    assert not {"A1", "A2"} & set(got.PatientID)


def test_deleting_the_newest_patient_reads_anew_and_says_why(server, tmp_path):
    """Orthanc deletes a resource's change entries with it: deleting the newest patient moves
    the change sequence back, which the log alone cannot tell from a restored backup. The
    mirror reads anew (exact), and its warning names the deletion as a cause."""
    path = tmp_path / "pacs.parquet"
    op.mirror(server.url, path)
    client = op.OrthancClient(server.url)
    before = client.last_change()
    server.upload_bytes(_series("n", n=3, patient_id="P9"))
    op.mirror(server.url, path)
    newest = next(p["ID"] for p in client.get_json("/patients?expand")
                  if p["MainDicomTags"]["PatientID"] == "P9")
    client.delete(f"/patients/{newest}")
    assert client.last_change() == before  # what makes it look like a restored backup
    with pytest.warns(MirrorWarning, match="newest resources were deleted"):
        got = op.mirror(server.url, path)
    assert_same(got, _fresh(server.url))
    assert "P9" not in set(got.PatientID)


def test_a_file_that_is_not_a_mirror_is_never_overwritten(server, tmp_path):
    plain = tmp_path / "export.parquet"
    _fresh(server.url).to_parquet(plain)
    text = tmp_path / "notes.parquet"
    text.write_text("not parquet")
    for path in (plain, text):
        before = path.read_bytes()
        with pytest.raises(MirrorError, match="another path"):
            op.mirror(server.url, path)
        assert path.read_bytes() == before


def test_mirror_of_another_url_or_level_is_refused(server, orthanc_factory, tmp_path):
    path = tmp_path / "pacs.parquet"
    op.mirror(server.url, path)
    other = orthanc_factory()
    with pytest.raises(MirrorError, match="not of"):
        op.mirror(other.url, path)
    with pytest.raises(MirrorError, match="level 'instance', not 'series'"):
        op.mirror(server.url, path, level="series")


def test_series_mirror_equals_a_series_first_read(server, tmp_path):
    path = tmp_path / "series.parquet"
    first = op.mirror(server.url, path, level="series")
    assert_same(first, _fresh(server.url, level="series"))
    server.upload_bytes(_series("l", patient_id="P7"))
    server.client().delete(f"/series/{first.index[0][2]}")
    got = op.mirror(server.url, path, level="series")
    assert_same(got, _fresh(server.url, level="series"))
    assert_same(pd.read_parquet(path), got)
    assert json.loads(pq.read_schema(path).metadata[META_KEY])["level"] == "series"


def test_mirror_metadata_holds_no_password(orthanc_factory, tmp_path):
    s = orthanc_factory(users={"alice": "s3cret-pw"})
    s.upload_bytes(_series("m", patient_id="S1"))
    path = tmp_path / "pacs.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("error", MirrorWarning)
        op.mirror(s.url, path, auth=("alice", "s3cret-pw"))
    assert b"s3cret-pw" not in path.read_bytes()


def test_bad_arguments_are_refused_before_any_request(tmp_path):
    with pytest.raises(ValueError, match="level must be one of"):
        op.mirror("http://127.0.0.1:9", tmp_path / "x.parquet", level="frames")
    with pytest.raises(ValueError, match="row_group_size"):
        op.mirror("http://127.0.0.1:9", tmp_path / "x.parquet", row_group_size=0)
    assert not (tmp_path / "x.parquet").exists()


def test_localorthanc_port_reuse_helper_is_real():
    # the 'another server' test relies on LocalOrthanc(port=...) binding the given port
    with LocalOrthanc() as a:
        port = a.port
    with LocalOrthanc(port=port) as b:
        assert b.port == port


def test_a_file_replaced_by_another_process_is_loaded_again(server, tmp_path):
    from orthanc_pandas._ops import mirror as mirror_module

    path = tmp_path / "pacs.parquet"
    op.mirror(server.url, path)
    assert mirror_module._cached(path) is not None  # this process keeps the frame it wrote
    server.upload_bytes(_series("n", patient_id="P8"))
    child = f"import orthanc_pandas as op; op.mirror({server.url!r}, {str(path)!r})"
    subprocess.run([sys.executable, "-c", child], check=True, timeout=120)
    assert mirror_module._cached(path) is None  # another file now: not the one in memory
    got = op.mirror(server.url, path)
    assert_same(got, _fresh(server.url))
    assert "P8" in set(got.PatientID)


def test_wait_false_returns_the_frame_and_writes_the_file_behind(server, tmp_path):
    from orthanc_pandas._ops import mirror as mirror_module

    path = tmp_path / "pacs.parquet"
    op.mirror(server.url, path)
    server.upload_bytes(_series("w", patient_id="P7"))
    got = op.mirror(server.url, path, wait=False)
    assert_same(got, _fresh(server.url))
    mirror_module._join_writer(path)  # what the next call (or the exit) does
    assert_same(pd.read_parquet(path), _fresh(server.url))
    assert (path.stat().st_mode & 0o777) == 0o600
    assert mirror_metadata(path)["last_change"] == got.attrs["orthanc"]["last_change"]
    # right after a background write, another update waits for it and goes on from it
    server.upload_bytes(_series("x", patient_id="P8"))
    op.mirror(server.url, path, wait=False)
    assert_same(op.mirror(server.url, path), _fresh(server.url))
    assert_same(pd.read_parquet(path), _fresh(server.url))


def test_a_failed_background_write_keeps_the_file_and_is_reported(server, tmp_path, monkeypatch):
    from orthanc_pandas._ops import mirror as mirror_module

    path = tmp_path / "pacs.parquet"
    op.mirror(server.url, path)
    before = path.stat()
    saved = pd.read_parquet(path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    server.upload_bytes(_series("w", patient_id="P7"))
    with monkeypatch.context() as m:
        m.setattr(mirror_module, "write_file", disk_full)
        op.mirror(server.url, path, wait=False)
        mirror_module._WRITERS[str(path.resolve())][0].join()
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert_same(pd.read_parquet(path), saved)  # the previous mirror, whole
    with pytest.warns(MirrorWarning, match="No space left on device"):
        got = op.mirror(server.url, path)  # reported, then updated from the previous file
    assert_same(got, _fresh(server.url))
    assert_same(pd.read_parquet(path), _fresh(server.url))
