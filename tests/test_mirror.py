"""op.mirror: the index as parquet parts behind a link, updated by what changed; equal to a fresh read.

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
from orthanc_pandas._frame.schema import compact_categorical
from orthanc_pandas._ops.mirror import (
    HEADER,
    META_KEY,
    current_version,
    mirror_metadata,
    plan_parts,
    read_frame,
    row_groups,
)
from orthanc_pandas.errors import MirrorError, MirrorWarning
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import make_series, to_bytes


def _series(seed, n=4, **kw):
    return [to_bytes(d) for d in make_series(n, 8, 8, seed=seed, **kw)]


def _fresh(url, **kw) -> pd.DataFrame:
    return op.read_orthanc(url, progress=False, **kw)


def plain(path) -> pd.DataFrame:
    """``pd.read_parquet`` of the mirror, categories sorted: pyarrow unites the parts'
    categories in order of appearance, the only thing plain pandas gives otherwise."""
    df = pd.read_parquet(path)
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = compact_categorical(df[c].array)
    return df


def files_of(path) -> list:
    """The parquet files of the mirror's current version, header first."""
    version = current_version(path)
    return [version / HEADER] + [version / p["file"] for p in mirror_metadata(path)["parts"]]


def assert_private(path) -> None:
    """Folders 0700 and files 0600: the mirror holds patient data."""
    version = current_version(path)
    for folder in (version, version.parent):
        assert (folder.stat().st_mode & 0o777) == 0o700, folder
    for f in files_of(path):
        assert (f.stat().st_mode & 0o777) == 0o600, f


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
        df = op.mirror(server.url, path, part_size=5)
    finally:
        os.umask(old_umask)
    assert path.is_symlink() and path.is_dir()
    assert_private(path)
    assert_same(df, _fresh(server.url))
    back = plain(path)  # plain pandas: index, dtypes and attrs come back
    assert_same(back, df)
    assert_same(read_frame(path), df)  # the mirror's own loader: categories sorted too
    assert back.orthanc.counts == df.orthanc.counts
    meta = mirror_metadata(path)
    assert meta["last_change"] == server.client().last_change() == df.attrs["orthanc"]["last_change"]
    assert meta["url"] == server.url and meta["level"] == "instance"
    assert meta["counts"]["instances"] == server.client().statistics()["CountInstances"] == len(df)
    sizes = [pq.ParquetFile(f).metadata.num_rows for f in files_of(path)]
    assert sizes[0] == 0  # the header: schema and metadata only
    assert sizes[1:] == [b - a for a, b in row_groups(df, 5)] and sum(sizes) == len(df) and len(sizes) > 2
    assert all(pq.ParquetFile(f).metadata.num_row_groups == 1 for f in files_of(path)[1:])
    assert not list(tmp_path.glob(".pacs.parquet.*.tmp")) and not list(tmp_path.glob(".pacs.parquet.d/.tmp-*"))


def test_dask_and_duckdb_read_the_file_directly(server, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    path = tmp_path / "pacs.parquet"
    df = op.mirror(server.url, path, part_size=4)
    parts = files_of(path)[1:]
    ddf = dd.read_parquet(path)
    got = ddf.compute()
    assert sorted(got.index.get_level_values("instance")) == sorted(df.index.get_level_values("instance"))
    # parts hold whole studies
    for f in parts:
        instances = pq.read_table(f, columns=["instance"]).column("instance").to_pylist()
        studies = set(pq.read_table(f, columns=["study"]).column("study").to_pylist())
        assert not studies & set(df.index.get_level_values("study")[
            ~df.index.get_level_values("instance").isin(instances)])
    duckdb = pytest.importorskip("duckdb")
    n, series = duckdb.sql(f"SELECT count(*), count(DISTINCT series) FROM '{path}/*.parquet'").fetchall()[0]
    assert (n, series) == (len(df), df.index.get_level_values("series").nunique())
    # min/max per part where filters use them (a reader skips parts by them): each file's own
    # bounds hold the frame's values of that part
    start = 0
    for f in parts:
        meta = pq.ParquetFile(f).metadata
        names = [meta.schema.column(j).name for j in range(meta.num_columns)]
        part = df.iloc[start:start + meta.num_rows]
        start += meta.num_rows
        stats = meta.row_group(0).column(names.index("PatientID")).statistics
        assert stats is not None and stats.has_min_max
        values = sorted(part.PatientID.astype(str))
        assert (stats.min, stats.max) == (values[0], values[-1])
        assert meta.row_group(0).column(names.index("SOPInstanceUID")).statistics is None
    assert start == len(df) > 0


def test_dask_read_mirror_equals_the_frame_while_the_archive_changes(server, tmp_path):
    opd = pytest.importorskip("orthanc_pandas.dask")
    path = tmp_path / "pacs.parquet"
    df = op.mirror(server.url, path, part_size=4)
    ddf = opd.read_mirror(path)
    assert ddf.npartitions == len(mirror_metadata(path)["parts"]) > 1
    server.upload_bytes(_series("o", patient_id="P9"))     # the archive changes: no matter
    server.client().delete(f"/instances/{df.index[0][3]}")
    got = ddf.compute(scheduler="threads")
    assert_same(got, df)
    parts = [ddf.get_partition(i).compute(scheduler="threads") for i in range(ddf.npartitions)]
    assert all(p.index.names == df.index.names for p in parts)
    op.mirror(server.url, path, part_size=4)  # one update: the graph's version is kept
    assert_same(ddf.compute(scheduler="threads"), df)
    server.upload_bytes(_series("o2", patient_id="P10"))
    op.mirror(server.url, path, part_size=4)  # two: it is gone, and the graph says so
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
    assert_same(plain(path), fresh)
    assert_same(read_frame(path), fresh)  # what the parts on disk hold, labels included
    assert_private(path)
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
    first = op.mirror(server.url, path, part_size=2)
    version = current_version(path)
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
        op.mirror({server.url!r}, {str(path)!r}, part_size=2)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    leftovers = list(tmp_path.glob(".pacs.parquet.d/.tmp-*"))
    assert leftovers and list(leftovers[0].glob("*.parquet"))  # it did die mid-write
    assert current_version(path) == version  # the link still names the previous version
    assert_same(plain(path), first)  # the previous mirror, whole
    assert_same(read_frame(path), first)
    got = op.mirror(server.url, path)  # the next call updates it and removes the leftover
    assert_same(got, _fresh(server.url))
    assert not list(tmp_path.glob(".pacs.parquet.d/.tmp-*"))


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
    assert_same(plain(path), got)
    assert json.loads(pq.read_schema(current_version(path) / HEADER).metadata[META_KEY])["level"] == "series"


def test_mirror_metadata_holds_no_password(orthanc_factory, tmp_path):
    s = orthanc_factory(users={"alice": "s3cret-pw"})
    s.upload_bytes(_series("m", patient_id="S1"))
    path = tmp_path / "pacs.parquet"
    with warnings.catch_warnings():
        warnings.simplefilter("error", MirrorWarning)
        op.mirror(s.url, path, auth=("alice", "s3cret-pw"))
    assert all(b"s3cret-pw" not in f.read_bytes() for f in files_of(path))


def test_bad_arguments_are_refused_before_any_request(tmp_path):
    with pytest.raises(ValueError, match="level must be one of"):
        op.mirror("http://127.0.0.1:9", tmp_path / "x.parquet", level="frames")
    with pytest.raises(ValueError, match="part_size"):
        op.mirror("http://127.0.0.1:9", tmp_path / "x.parquet", part_size=0)
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
    assert mirror_module._key(path) not in mirror_module._WRITERS  # found and joined
    assert_same(plain(path), _fresh(server.url))
    assert_private(path)
    assert mirror_metadata(path)["last_change"] == got.attrs["orthanc"]["last_change"]
    # right after a background write, another update waits for it and goes on from it
    server.upload_bytes(_series("x", patient_id="P8"))
    op.mirror(server.url, path, wait=False)
    assert_same(op.mirror(server.url, path), _fresh(server.url))
    assert_same(plain(path), _fresh(server.url))


def test_a_failed_background_write_keeps_the_file_and_is_reported(server, tmp_path, monkeypatch):
    from orthanc_pandas._ops import mirror as mirror_module

    path = tmp_path / "pacs.parquet"
    op.mirror(server.url, path)
    before = path.stat()
    saved = plain(path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    server.upload_bytes(_series("w", patient_id="P7"))
    with monkeypatch.context() as m:
        m.setattr(mirror_module, "write_parts", disk_full)
        op.mirror(server.url, path, wait=False)
        mirror_module._WRITERS[mirror_module._key(path)][0].join()
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert_same(plain(path), saved)  # the previous mirror, whole
    with pytest.warns(MirrorWarning, match="No space left on device"):
        got = op.mirror(server.url, path)  # reported, then updated from the previous file
    assert_same(got, _fresh(server.url))
    assert_same(plain(path), _fresh(server.url))


def _part_rows(path) -> dict[int, list[str]]:
    """inode of each part file of the mirror's current version -> its instance ids."""
    return {f.stat().st_ino: pq.read_table(f, columns=["instance"]).column("instance").to_pylist()
            for f in files_of(path)[1:]}


def test_an_update_writes_only_the_parts_whose_rows_changed(server, tmp_path):
    """Parts none of whose rows changed are the previous version's files (hard links: the same
    inode); the others are written; the parts on disk equal a fresh read."""
    client = server.client()
    for k in range(4):  # more studies, so that there are parts to keep and parts to write
        server.upload_bytes(_series(f"s{k}", n=3, patient_id=f"Q{k}"))
    path = tmp_path / "pacs.parquet"
    first = op.mirror(server.url, path, part_size=3)
    before = _part_rows(path)
    assert len(before) >= 6
    server.upload_bytes(_series("new", n=3, patient_id="Q9"))                  # a new patient
    gone = first[first.PatientID == "Q1"].index[0][3]
    client.delete(f"/instances/{gone}")                                         # a deletion
    labelled = first[first.PatientID == "Q3"].index[0][3]
    if client.capabilities().labels:
        client.request("PUT", f"/instances/{labelled}/labels/checked")          # a label
    got = op.mirror(server.url, path, part_size=3)
    fresh = _fresh(server.url)
    assert_same(got, fresh)
    assert_same(read_frame(path), fresh)
    after = _part_rows(path)
    kept = [ino for ino in after if ino in before]
    written = [ino for ino in after if ino not in before]
    assert kept and written
    changed = {gone} | set(fresh[fresh.PatientID == "Q9"].index.get_level_values("instance"))
    if client.capabilities().labels:
        changed.add(labelled)
    for ino in kept:  # a kept part holds the same rows, none of them changed
        assert after[ino] == before[ino]
        assert not set(after[ino]) & changed
    new_rows = {i for ino in written for i in after[ino]}
    assert (changed - {gone}) <= new_rows and gone not in new_rows
    # every part holds whole studies, and the parts hold the frame's rows in its order
    ids = [i for ino in after for i in after[ino]]
    assert ids == list(fresh.index.get_level_values("instance"))


def test_a_mirror_file_of_an_earlier_version_is_updated_and_rewritten_as_parts(server, tmp_path):
    """The one-file layout (mirror format 1): loaded, updated, then replaced by the link."""
    import pyarrow as pa

    from orthanc_pandas._ops.mirror import mirror_meta

    path = tmp_path / "pacs.parquet"
    df = _fresh(server.url)
    meta = {**mirror_meta(df, server.client(), "instance"), "mirror_format": 1}
    table = pa.Table.from_pandas(df, preserve_index=True)
    table = table.replace_schema_metadata({**table.schema.metadata, META_KEY: json.dumps(meta).encode(),
                                           b"PANDAS_ATTRS": json.dumps(df.attrs).encode()})
    pq.write_table(table, path)
    server.upload_bytes(_series("v", patient_id="P5"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MirrorWarning)  # not read anew: updated
        got = op.mirror(server.url, path)
    assert_same(got, _fresh(server.url))
    assert path.is_symlink() and mirror_metadata(path)["mirror_format"] == 2
    assert_same(read_frame(path), got)


@pytest.mark.parametrize("seed", range(30))
def test_plan_parts_keeps_whole_studies_and_only_unchanged_parts(seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 9))
    # an old frame: studies of 1-5 rows, cut into parts of whole studies
    old_study = np.repeat(np.arange(40), rng.integers(1, 6, 40))
    starts = np.flatnonzero(np.diff(old_study)) + 1
    bounds = [0]
    for s in starts.tolist():
        if s - bounds[-1] >= size:
            bounds.append(s)
    bounds = np.array(bounds + [len(old_study)])
    # changes: rows removed or changed, new rows in new or existing studies
    n_old = len(old_study)
    keep = rng.random(n_old) > 0.05
    same = keep & (rng.random(n_old) > 0.03)
    rows = [(float(st), 0, k) for k, st in enumerate(old_study) if keep[k]]
    for _ in range(int(rng.integers(0, 12))):
        st = int(rng.integers(0, 45))  # studies 40-44 are new
        rows.append((st + rng.random() * 0.5 if st >= 40 else float(st), 1, -1))
    rows.sort(key=lambda r: (int(r[0]), r[1]))
    study = np.array([int(r[0]) for r in rows])
    pos = np.full(n_old, -1)
    for at, r in enumerate(rows):
        if r[2] >= 0:
            pos[r[2]] = at
    plan = plan_parts(bounds, same, pos, study, size)
    # the parts cover the rows in order
    assert [a for a, _, _ in plan] == [0] + [b for _, b, _ in plan[:-1]] and plan[-1][1] == len(study)
    for a, b, p in plan:
        assert b > a
        assert (a == 0 or study[a - 1] != study[a]) and (b == len(study) or study[b - 1] != study[b])
        if p is not None:  # a kept part: the same rows as old part p, all unchanged
            olds = np.arange(bounds[p], bounds[p + 1])
            assert same[olds].all() and (pos[olds] == np.arange(a, b)).all()


def test_an_empty_archive_and_a_patient_mirror_read_back_equal(orthanc_factory, tmp_path):
    """No row (only the header part), then the first instances; a level frame with a
    one-level index goes through pandas' own reader."""
    s = orthanc_factory(config={"StableAge": 3600})
    path = tmp_path / "empty.parquet"
    empty = op.mirror(s.url, path)
    assert len(empty) == 0 and mirror_metadata(path)["parts"] == []
    assert_same(read_frame(path), _fresh(s.url))
    s.upload_bytes(_series("e", patient_id="E1"))
    got = op.mirror(s.url, path)
    assert_same(got, _fresh(s.url))
    assert_same(read_frame(path), got)
    patients = op.mirror(s.url, tmp_path / "patients.parquet", level="patient")
    assert_same(patients, _fresh(s.url, level="patient"))
    assert_same(read_frame(tmp_path / "patients.parquet"), patients)
