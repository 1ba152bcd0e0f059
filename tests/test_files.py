"""download / to_zip / upload / delete against a real Orthanc."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas.errors import DownloadFolderError
from orthanc_pandas.testing.synthetic import make_series, to_bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def files_server(orthanc_available):
    """Two series of generated CT slices (one of 256x256, one of 512x512)."""
    from orthanc_pandas.testing import LocalOrthanc

    with LocalOrthanc(name="files") as server:
        blobs = [to_bytes(d) for d in make_series(6, 64, 64, seed="small", patient_id="S1")]
        blobs += [to_bytes(d) for d in make_series(30, 512, 512, seed="big", patient_id="S2")]
        answers = server.upload_bytes(blobs)
        by_id = {a["ID"]: b for a, b in zip(answers, blobs, strict=False)}
        yield server, by_id


def test_download_is_byte_identical_in_row_order(files_server, tmp_path):
    server, originals = files_server
    df = op.read_orthanc(server.url)
    rows = df.iloc[::-1]
    paths = rows.orthanc.download(tmp_path)
    assert isinstance(paths, pd.Series) and paths.index.equals(rows.index)
    for (_, _, _, iid), p in paths.items():
        assert Path(p).name == f"{iid}.dcm"
        assert sha(Path(p).read_bytes()) == sha(originals[iid])
    assert not list(tmp_path.glob(".*.part"))


def test_download_tree_layout_and_rerun_skips(files_server, tmp_path):
    server, originals = files_server
    df = op.read_orthanc(server.url)
    small = df[df.PatientID == "S1"]
    paths = small.orthanc.download(tmp_path, layout="tree")
    for (p, st, se, i), path in paths.items():
        assert Path(path) == tmp_path / p / st / se / f"{i}.dcm"
    mtimes = {p: os.stat(p).st_mtime_ns for p in paths}
    # a damaged file (wrong size) is fetched again, complete ones are skipped
    victim = paths.iloc[0]
    Path(victim).write_bytes(b"junk")
    time.sleep(0.01)
    again = small.orthanc.download(tmp_path, layout="tree", verify="md5")
    assert again.equals(paths)
    for p in paths:
        if p == victim:
            assert sha(Path(p).read_bytes()) == sha(originals[Path(p).stem])
        else:
            assert os.stat(p).st_mtime_ns == mtimes[p]


def test_download_needs_a_writable_folder(files_server, tmp_path):
    server, _ = files_server
    df = op.read_orthanc(server.url).iloc[:1]
    with pytest.raises(TypeError, match="folder"):
        df.orthanc.download()
    with pytest.raises(TypeError, match="folder"):
        df.orthanc.series().orthanc.download()
    with pytest.raises(TypeError, match="needs a folder"):
        df.orthanc.download(None)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(DownloadFolderError, match="Cannot create"):
        df.orthanc.download(a_file / "sub")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # as root permissions are not enforced
            with pytest.raises(DownloadFolderError, match="not writable"):
                df.orthanc.download(ro)
    finally:
        ro.chmod(0o700)


def test_killed_download_rerun_completes(files_server, tmp_path):
    server, originals = files_server
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import time, orthanc_pandas as op
        class Slow:  # a progress object that makes the run last long enough to be killed
            def update(self, n=1):
                time.sleep(0.05)
        df = op.read_orthanc({server.url!r})
        df.orthanc.download({str(out)!r}, progress=Slow(), max_workers=2)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.glob("*.dcm"))) < 8:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = list(out.glob("*.dcm"))
    assert 8 <= len(finished) < len(originals), "kill did not land mid-download"
    for p in finished:  # whatever has a final name is complete
        assert sha(p.read_bytes()) == sha(originals[p.stem])
    df = op.read_orthanc(server.url)
    paths = df.orthanc.download(out)
    assert sorted(Path(p).stem for p in paths) == sorted(originals)
    for p in paths:
        assert sha(Path(p).read_bytes()) == sha(originals[Path(p).stem])
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.dcm" for i in originals)


def test_to_zip_holds_the_series(files_server, tmp_path):
    server, originals = files_server
    df = op.read_orthanc(server.url)
    small = df[df.PatientID == "S1"].iloc[:2]  # part of a series: the whole series goes
    path = small.orthanc.to_zip(tmp_path / "a.zip")
    with zipfile.ZipFile(path) as zf:
        blobs = [zf.read(n) for n in zf.namelist() if not n.endswith("/")]
    want = {sha(originals[i]) for i in df[df.PatientID == "S1"].index.get_level_values("instance")}
    assert {sha(b) for b in blobs} == want
    assert not list(tmp_path.glob(".*.part"))


# -- upload ---------------------------------------------------------------------------------
def test_upload_mixed_folder_reports_every_path(empty_server, tmp_path):
    series = make_series(4, 32, 32, seed="up")
    blobs = [to_bytes(d) for d in series]
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for k, b in enumerate(blobs[:2]):
        (folder / f"good{k}.dcm").write_bytes(b)
    (folder / "dup_of_good0.dcm").write_bytes(blobs[0])
    (folder / "notes.txt").write_text("not DICOM at all\n" * 20)
    (folder / "truncated.dcm").write_bytes(blobs[2][:400])
    with zipfile.ZipFile(folder / "batch.zip", "w") as zf:
        zf.writestr("a/one.dcm", blobs[2])
        zf.writestr("a/two.dcm", blobs[3])
        zf.writestr("readme.md", "hello")
    (folder / "sub" / "deep.dcm").write_bytes(blobs[3])  # only seen with recursive=True
    with pytest.raises(op.BulkError, match=r"1 of 8 file\(s\) were not stored") as info:
        op.upload(folder, empty_server.url)
    report = op.upload(folder, empty_server.url, errors="report")
    pd.testing.assert_frame_equal(info.value.report[["path"]], report[["path"]])
    report = info.value.report
    got = dict(zip(report.path, report.status.astype(str), strict=False))
    expected = {
        str(folder / "good1.dcm"): "Success",
        str(folder / "notes.txt"): "NotDicom",
        str(folder / "truncated.dcm"): "Failure",
        f"{folder / 'batch.zip'}!a/one.dcm": "Success",
        f"{folder / 'batch.zip'}!a/two.dcm": "Success",
        f"{folder / 'batch.zip'}!readme.md": "NotDicom",
    }
    # good0 and its copy are sent in parallel: exactly one of them is stored first
    pair = sorted([got.pop(str(folder / "dup_of_good0.dcm")), got.pop(str(folder / "good0.dcm"))])
    assert pair == ["AlreadyStored", "Success"]
    assert got == expected
    stored = report[report.status.isin(["Success", "AlreadyStored"])]
    server_ids = set(empty_server.client().list_ids("instances"))
    assert server_ids == set(stored.instance)
    assert len(server_ids) == 4
    assert report.loc[report.status == "Failure", "message"].str.len().gt(0).all()

    deeper = op.upload(folder, empty_server.url, recursive=True, errors="report")
    assert set(deeper.path) == set(report.path) | {str(folder / "sub" / "deep.dcm")}
    assert deeper.set_index("path").loc[str(folder / "sub" / "deep.dcm"), "status"] == "AlreadyStored"


def test_upload_single_file_missing_file_and_bad_zip(empty_server, tmp_path):
    good = tmp_path / "x.dcm"
    good.write_bytes(to_bytes(make_series(1, 8, 8)[0]))
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"PK\x03\x04" + b"\0" * 50)
    text = tmp_path / "t.txt"
    text.write_text("hello")
    report = op.upload([good, tmp_path / "missing.dcm", bad_zip, text], empty_server.client(),
                       check_dicom=False, errors="report")
    assert list(report.path) == [str(good), str(tmp_path / "missing.dcm"), str(bad_zip), str(text)]
    assert list(report.status.astype(str)) == ["Success", "Error", "Error", "NotDicom"]
    single = op.upload(good, empty_server.url)
    assert list(single.status.astype(str)) == ["AlreadyStored"]


def _write_zip(path: Path, members) -> None:
    """A ZIP written by hand: ``members`` are ``(name, method, crc, size, chunks)``, ``chunks``
    the member's stored bytes (raw deflate for method 8) as an iterable, so nothing big is ever
    in memory; sizes and CRC are what the headers announce (a test may make them lie)."""
    central = []
    with open(path, "wb") as f:
        for name, method, crc, size, chunks in members:
            offset, raw = f.tell(), name.encode()
            f.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, 0, size,
                                len(raw), 0) + raw)
            start = f.tell()
            for chunk in chunks:
                f.write(chunk)
            packed = f.tell() - start
            f.seek(offset + 18)
            f.write(struct.pack("<L", packed))
            f.seek(0, 2)
            central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc,
                                       packed, size, len(raw), 0, 0, 0, 0, 0, offset) + raw)
        start = f.tell()
        f.write(b"".join(central))
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central),
                            f.tell() - start, start, 0))


def _deflated(name: str, data: bytes):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return name, 8, zlib.crc32(data), len(data), [c.compress(data) + c.flush()]


def _bomb(name: str, header: bytes, mib: int):
    """``header`` then ``mib`` MiB of zeros, deflated to ~1 kB a MiB: the 1 MiB block is
    compressed once and repeated (a full flush makes each copy stand alone)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(1 << 20)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return (name, 8, crc, len(header) + mib * (1 << 20),
            [head, *(block for _ in range(mib)), c.flush(zlib.Z_FINISH)])


def _posted(monkeypatch) -> list[int]:
    """The size of every body POSTed to /instances (bytes, or a streamed file's length)."""
    import requests

    sizes: list[int] = []
    send = requests.Session.send

    def spy(session, request, **kw):
        if request.method == "POST" and request.url.endswith("/instances"):
            sizes.append(len(request.body))
        return send(session, request, **kw)

    monkeypatch.setattr(requests.Session, "send", spy)
    return sizes


def test_a_zip_bomb_member_is_refused_on_its_row_and_the_rest_is_stored(empty_server, tmp_path,
                                                                        monkeypatch):
    """1 GiB of zeros behind a DICOM preamble, deflated to ~1 MB: refused from the sizes its
    ZIP announces, before a byte is inflated; the other members are stored (the server's own
    instance list says which)."""
    blobs = [to_bytes(d) for d in make_series(3, 16, 16, seed="bomb")]
    archive = tmp_path / "study.zip"
    _write_zip(archive, [_deflated("a.dcm", blobs[0]), _bomb("bomb.dcm", blobs[1][:132], 1024),
                         _deflated("b.dcm", blobs[1]), _deflated("c.dcm", blobs[2])])
    assert archive.stat().st_size < 2 << 20
    with zipfile.ZipFile(archive) as zf:  # a ZIP zipfile reads (testzip would inflate the GiB)
        assert [m.file_size for m in zf.infolist()][1] == (1 << 30) + 132
        assert zf.read("a.dcm") == blobs[0]
    posted = _posted(monkeypatch)
    with pytest.raises(op.BulkError, match="1 of 4 file") as info:
        op.upload(archive, empty_server.url)
    report = info.value.report.set_index("path")
    bomb = report.loc[f"{archive}!bomb.dcm"]
    assert bomb.status == "Error" and "ZIP bomb" in bomb.message and "max_ratio=200" in bomb.message
    assert "1,073,741,956 bytes" in bomb.message  # the announced size, read, never inflated
    assert pd.isna(bomb.instance)
    stored = report[report.status == "Success"]
    assert len(stored) == 3 and set(stored.instance) == set(empty_server.client().list_ids("instances"))
    assert sorted(posted) == sorted(map(len, blobs))  # the three files; the bomb was not sent
    # limits of one's own: max_member_size refuses any member above it, None lifts the ratio
    again = op.upload(archive, empty_server.url, max_member_size=2 << 20, max_ratio=None,
                      errors="report").set_index("path")
    assert again.loc[f"{archive}!bomb.dcm", "message"].startswith(
        "inflates to 1,073,741,956 bytes, over max_member_size=2,097,152")
    assert set(again.drop(f"{archive}!bomb.dcm").status.astype(str)) == {"AlreadyStored"}


def test_a_member_that_lies_about_its_size_is_reported_and_not_stored(empty_server, tmp_path):
    """zipfile never inflates a member beyond the size its header announces: a member announcing
    less fails its CRC at that size, and the body sent so far is dropped, not stored."""
    blobs = [to_bytes(d) for d in make_series(2, 64, 64, seed="liar")]
    name, method, crc, size, chunks = _deflated("liar.dcm", blobs[0])
    archive = tmp_path / "liar.zip"
    _write_zip(archive, [(name, method, crc, size // 2, chunks), _deflated("ok.dcm", blobs[1])])
    report = op.upload(archive, empty_server.url, errors="report").set_index("path")
    liar = report.loc[f"{archive}!liar.dcm"]
    assert liar.status == "Error" and "CRC" in liar.message, liar.message
    assert report.loc[f"{archive}!ok.dcm", "status"] == "Success"
    assert empty_server.client().list_ids("instances") == [report.loc[f"{archive}!ok.dcm", "instance"]]


def test_a_streamed_file_is_sent_whole_again_after_a_dropped_connection(empty_server, tmp_path):
    """Kept-alive connections dropped on reuse (Orthanc closes idle ones after 1 s): each file
    is sent again from its first byte, and the server stores exactly the files. The files are
    larger than one 1 MiB piece, so they are streamed (smaller ones go as bytes)."""
    from tls_relay import KeepAliveDropRelay

    blobs = [to_bytes(d) for d in make_series(4, 768, 1024, seed="again")]
    assert min(map(len, blobs)) > 1 << 20
    paths = []
    for k, b in enumerate(blobs):
        paths.append(tmp_path / f"{k}.dcm")
        paths[-1].write_bytes(b)
    with zipfile.ZipFile(tmp_path / "two.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(paths[2], "2.dcm")
        zf.write(paths[3], "3.dcm")
    with KeepAliveDropRelay(empty_server.port) as relay:
        client = op.OrthancClient(relay.url, retries=2)
        report = op.upload([paths[0], paths[1], tmp_path / "two.zip"], client, max_workers=1)
        assert relay.drops >= 3  # every upload after the first went out again on a new connection
    assert list(report.status.astype(str)) == ["Success"] * 4
    server = empty_server.client()
    for instance, blob in zip(report.instance, blobs, strict=True):
        assert server.get_bytes(f"/instances/{instance}/file") == blob


_RSS_CHILD = """
import json, resource, sys
import orthanc_pandas as op
from orthanc_pandas.testing.synthetic import make_series, to_bytes
url, archive, warm = sys.argv[1:]
op.upload(warm, url)  # the first upload loads what any upload loads (threads, pandas, requests)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
report = op.upload(archive, url)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before": before * 1024, "after": after * 1024, "stored": int((report.status == "Success").sum())}))
"""


def test_upload_memory_is_bounded_by_the_largest_file_not_the_archive(empty_server, tmp_path):
    """A 50 MiB ZIP of 100 files of 512 KiB: the uploading process's peak RSS grows by a few of
    its files at most, not by the archive (the whole ZIP used to be read first: +46 MiB)."""
    from orthanc_pandas.testing.synthetic import generate_archive

    archive = tmp_path / "big.zip"
    largest = 0
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for k, blob in enumerate(generate_archive(1, 1, 1, 100, rows=512, cols=512, seed="rss")):
            largest = max(largest, len(blob))
            with zf.open(f"{k:04d}.dcm", "w") as member:
                member.write(blob)
    warm = tmp_path / "warm.dcm"
    warm.write_bytes(to_bytes(make_series(1, 8, 8, seed="warm")[0]))
    size = archive.stat().st_size
    assert size > 95 * largest
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, empty_server.url, str(archive), str(warm)],
                         capture_output=True, text=True, check=True, timeout=600)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    grew = got["after"] - got["before"]
    assert got["stored"] == 100
    assert grew < 16 * largest < size / 5, (grew, largest, size)


# Orthanc's answers as it sends them (POST /instances on 1.10 and 1.13), classified without a server
_STORED = {"ID": "i1", "ParentPatient": "p1", "ParentSeries": "s1", "ParentStudy": "t1",
           "Path": "/instances/i1", "Status": "Success"}


def _http_error(status, message):
    from orthanc_pandas.errors import OrthancHTTPError

    return OrthancHTTPError(f"POST /instances -> HTTP {status}", status=status, method="POST",
                            url="http://127.0.0.1:8042/instances", orthanc_message=message)


@pytest.mark.parametrize("answer, error, looked_like_dicom, status, message", [
    (_STORED, None, True, "Success", ""),
    ({**_STORED, "Status": "AlreadyStored"}, None, True, "AlreadyStored", ""),
    ([{**_STORED, "Status": "AlreadyStored"}], None, True, "AlreadyStored", ""),  # a ZIP body
    ([_STORED, _STORED], None, True, "Failure", "2 answers"),
    ({"Status": "FilteredOut"}, None, True, "Failure", ""),  # a status this library does not know
    ({"Status": "Failure", "Message": "refused by a Lua script"}, None, True, "Failure",
     "refused by a Lua script"),
    (None, _http_error(400, "Bad file format"), False, "NotDicom", "Bad file format"),
    (None, _http_error(400, "Bad file format"), True, "Failure", "Bad file format"),
    (None, _http_error(500, "Internal error"), True, "Error", "Internal error"),
    (None, OSError("[Errno 2] No such file"), True, "Error", "OSError: [Errno 2] No such file"),
])
def test_classify_upload_on_plain_answers(answer, error, looked_like_dicom, status, message):
    from orthanc_pandas._ops.files import UPLOAD_STATUSES, classify_upload
    from orthanc_pandas.errors import OrthancConnectionError

    row = classify_upload(answer, error, looked_like_dicom=looked_like_dicom)
    assert row["status"] == status and status in UPLOAD_STATUSES
    assert row["message"] == message
    stored = status in ("Success", "AlreadyStored")
    assert (row["instance"], row["series"], row["study"], row["patient"]) == \
        (("i1", "s1", "t1", "p1") if stored else (None,) * 4)
    gone = classify_upload(error=OrthancConnectionError("Could not reach Orthanc"))
    assert (gone["status"], gone["message"]) == ("Error", "Could not reach Orthanc")


# -- delete ---------------------------------------------------------------------------------
@pytest.fixture
def delete_server(orthanc_factory):
    s = orthanc_factory()
    for k, pid in enumerate(["D1", "D1", "D2"]):
        s.upload_bytes([to_bytes(d) for d in make_series(3, 8, 8, seed=f"del{k}", patient_id=pid,
                                                          series_number=k + 1)])
    return s


def _counts(client):
    return {k: v for k, v in client.statistics().items() if k.startswith("Count")}


def test_delete_dry_run_changes_nothing_and_lists_all_instances(delete_server):
    client = delete_server.client()
    df = op.read_orthanc(delete_server.url)
    before = _counts(client)
    one_row = df[df.PatientID == "D1"].iloc[[0]]
    plan = one_row.orthanc.delete(level="patient")
    assert _counts(client) == before
    assert plan.attrs["dry_run"] is True
    assert (plan.status == "WouldDelete").all()
    d1 = df[df.PatientID == "D1"]
    assert set(plan.instance) == set(d1.index.get_level_values("instance"))
    assert plan.in_frame.sum() == 1 and len(plan) == 6
    assert set(plan.series) == set(d1.index.get_level_values("series"))
    with pytest.raises(ValueError, match="level must be"):
        df.orthanc.delete(level="frame")


def test_confirmed_series_delete_removes_exactly_that_series(delete_server):
    delete_server.client()
    df = op.read_orthanc(delete_server.url)
    target = df.index.get_level_values("series")[0]
    rows = df[df.index.get_level_values("series") == target].iloc[:1]
    report = rows.orthanc.delete(level="series", confirm=True)
    assert (report.status == "Deleted").all() and len(report) == 3
    after = op.read_orthanc(delete_server.url)
    assert set(after.index.get_level_values("instance")) == set(
        df[df.index.get_level_values("series") != target].index.get_level_values("instance"))
    # rows already gone are reported, not raised
    again = rows.orthanc.delete(level="series", confirm=True)
    assert list(again.status) == ["AlreadyGone"]
    inst = df[df.index.get_level_values("series") == target]
    gone = inst.orthanc.delete(level="instance", confirm=True)
    assert (gone.status == "AlreadyGone").all() and len(gone) == 3


def test_delete_instances(delete_server):
    df = op.read_orthanc(delete_server.url)
    rows = df.iloc[[0, 4]]
    report = rows.orthanc.delete(confirm=True)
    assert (report.status == "Deleted").all() and (report.reason == "").all()
    left = set(delete_server.client().list_ids("instances"))
    assert left == set(df.index.get_level_values("instance")) - set(rows.index.get_level_values("instance"))


def test_download_errors_report_leaves_none_for_a_refused_file(empty_server, tmp_path):
    blobs = [to_bytes(d) for d in make_series(3, 8, 8, seed="dl-gone")]
    empty_server.upload_bytes(blobs)
    df = op.read_orthanc(empty_server.url)
    gone = df.index[2][3]
    empty_server.client().delete(f"/instances/{gone}")
    with pytest.raises(op.OrthancNotFoundError):
        df.orthanc.download(tmp_path / "raise")
    paths = df.orthanc.download(tmp_path / "report", errors="report")
    assert paths.index.equals(df.index) and paths.name == "path"
    assert paths.isna().tolist() == [False, False, True]
    assert list(paths.attrs["errors"]) == [gone]
    for (_p, _st, _se, iid), path in paths.dropna().items():
        assert Path(path).read_bytes() == empty_server.client().get_bytes(f"/instances/{iid}/file")
    with pytest.raises(ValueError, match="max_workers must be a positive integer"):
        df.orthanc.download(tmp_path / "x", max_workers=0)
    with pytest.raises(ValueError, match="max_workers must be a positive integer"):
        df.orthanc.download(tmp_path / "x", max_workers=-2)


def test_upload_and_delete_check_the_bulk_arguments(empty_server, tmp_path):
    with pytest.raises(ValueError, match="errors must be 'raise' or 'report'"):
        op.upload(tmp_path, empty_server.url, errors="ignore")
    with pytest.raises(ValueError, match="max_workers must be a positive integer"):
        op.upload(tmp_path, empty_server.url, max_workers=0)
    empty_server.upload_bytes([to_bytes(make_series(1, 8, 8, seed="del-args")[0])])
    df = op.read_orthanc(empty_server.url)
    with pytest.raises(ValueError, match="max_workers must be a positive integer"):
        df.orthanc.delete(max_workers=0)
    with pytest.raises(TypeError):
        df.orthanc.delete("series")  # level is a keyword, as in every bulk call
