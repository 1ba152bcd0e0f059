"""Bad input, as a matrix: input -> exception type -> the gist of the message.

Each row runs against real servers (a real Orthanc, and real sockets for "not Orthanc") and
checks both the exception type (including the builtin a user would catch) and that the
message says what is wrong and how to fix it. The README's bad-input table is this matrix.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas.errors import (
    DownloadFolderError,
    FrameFormatError,
    InvalidURLError,
    NotAnIndexError,
    NotOrthancError,
    OrthancConnectionError,
    OrthancNotFoundError,
    OrthancPandasError,
    OrthancTLSError,
    SelectionError,
    ServerMismatchError,
    UnknownTagError,
)
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing._servers import free_port
from orthanc_pandas.testing.synthetic import make_series, to_bytes


class _JSONNotOrthanc(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # a JSON web service that is not Orthanc
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _banner_server() -> tuple[socket.socket, int]:
    """A TCP service that is not HTTP at all (greets with an SSH banner and hangs up)."""
    sock = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


@dataclass
class World:
    a: LocalOrthanc  # two series, DICOM port open too
    b: LocalOrthanc  # empty
    df: pd.DataFrame  # read from a
    json_port: int
    banner_port: int
    dicom_port: int
    tmp: Path


@pytest.fixture(scope="module")
def world(orthanc_available, tmp_path_factory):
    dicom_port = free_port()
    with LocalOrthanc(name="bad-a", config={"DicomServerEnabled": True, "DicomPort": dicom_port}) as a, \
            LocalOrthanc(name="bad-b") as b:
        a.upload_bytes(to_bytes(d) for d in make_series(3, 8, 8, seed="bad1", patient_id="B1"))
        a.upload_bytes(to_bytes(d) for d in make_series(2, 8, 8, seed="bad2", patient_id="B2",
                                                        series_number=2))
        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JSONNotOrthanc)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        banner, banner_port = _banner_server()
        try:
            yield World(a, b, op.read_orthanc(a.url), web.server_address[1], banner_port,
                        dicom_port, tmp_path_factory.mktemp("bad"))
        finally:
            web.shutdown()
            banner.close()


def _frame_with(df, **orthanc_attrs):
    out = df.copy()
    out.attrs = json.loads(json.dumps(df.attrs))
    out.attrs["orthanc"].update(orthanc_attrs)
    return out


def _without_attrs(df):
    out = df.copy()
    out.attrs = {}
    return out


def _one_series(w):
    return w.df[w.df.PatientID == "B1"]


# (id, call(world), exception type, builtin it must also be, regex the message must match)
MATRIX = [
    ("unreachable URL (nothing listens)",
     lambda w: op.read_orthanc(f"http://127.0.0.1:{free_port()}", timeout=2),
     OrthancConnectionError, ConnectionError, r"Could not reach Orthanc.*Connection refused.*Check that the server is running"),
    ("unresolvable host name",
     lambda w: op.read_orthanc("http://no-such-host.invalid:8042", timeout=2),
     OrthancConnectionError, ConnectionError, r"Could not reach Orthanc.*no-such-host\.invalid"),
    ("a web service that is not Orthanc (JSON)",
     lambda w: op.read_orthanc(f"http://127.0.0.1:{w.json_port}"),
     NotOrthancError, ValueError, r"did not answer like Orthanc: is this the right port"),
    ("a port that does not speak HTTP",
     lambda w: op.read_orthanc(f"http://127.0.0.1:{w.banner_port}", timeout=2),
     OrthancConnectionError, ConnectionError, r"did not answer in HTTP.*not Orthanc's REST API"),
    ("Orthanc's DICOM port instead of its HTTP port",
     lambda w: op.read_orthanc(f"http://127.0.0.1:{w.dicom_port}", timeout=3),
     OrthancConnectionError, ConnectionError, r"DICOM port, 4242 by default, is not its HTTP port"),
    ("https:// to a plain-HTTP Orthanc",
     lambda w: op.read_orthanc(w.a.url.replace("http://", "https://")),
     OrthancTLSError, ConnectionError, r"does not speak TLS on this port\. Use an http:// URL"),
    ("malformed URL: no scheme",
     lambda w: op.read_orthanc("127.0.0.1:8042"),
     InvalidURLError, ValueError, r"needs a scheme, e\.g\. 'http://127\.0\.0\.1:8042'"),
    ("malformed URL: other scheme",
     lambda w: op.read_orthanc("ftp://127.0.0.1:8042"),
     InvalidURLError, ValueError, r"scheme 'ftp' is not http or https"),
    ("malformed URL: port not a number",
     lambda w: op.read_orthanc("http://127.0.0.1:80a2"),
     InvalidURLError, ValueError, r"Malformed Orthanc URL .*expected 'http\[s\]://host\[:port\]"),
    ("malformed URL: empty / None",
     lambda w: op.read_orthanc(None),
     InvalidURLError, ValueError, r"must be a non-empty string"),
    ("unknown tag in select (typo)",
     lambda w: w.df.orthanc.select(PatientNam="x"),
     UnknownTagError, KeyError, r"'PatientNam' is neither a column .* Did you mean 'PatientName'"),
    ("unknown tag in with_tags",
     lambda w: w.df.orthanc.with_tags("NoSuchTag"),
     UnknownTagError, KeyError, r"'NoSuchTag' is neither a column of this frame nor a DICOM tag"),
    ("impossible ISO date",
     lambda w: w.df.orthanc.select(StudyDate="2020-02-30"),
     SelectionError, ValueError, r"'2020-02-30' is not a date \(DICOM YYYYMMDD or ISO YYYY-MM-DD\)"),
    ("malformed date range (month 13)",
     lambda w: w.df.orthanc.select(StudyDate="20200101-20201301"),
     SelectionError, ValueError, r"'20201301' is not a date \(DICOM YYYYMMDD or ISO.*Write ranges as '20200101-20201231'"),
    ("malformed date (not a date)",
     lambda w: w.df.orthanc.select(StudyDate="yesterday"),
     SelectionError, ValueError, r"'yesterday' is not a date \(DICOM YYYYMMDD or ISO YYYY-MM-DD\)"),
    ("text where a number is needed",
     lambda w: w.df.orthanc.select(SeriesNumber="two"),
     SelectionError, ValueError, r"SeriesNumber: 'two' is not a number"),
    ("volume() on 0 series",
     lambda w: w.df.iloc[:0].orthanc.volume(),
     SelectionError, ValueError, r"exactly one series; these rows hold 0 series"),
    ("volume() on 2 series",
     lambda w: w.df.orthanc.volume(),
     SelectionError, ValueError, r"exactly one series; these rows hold 2 series.*volumes\(\)"),
    ("header() on 0 rows",
     lambda w: w.df.iloc[:0].orthanc.header(),
     SelectionError, ValueError, r"needs exactly one row, this frame has no rows"),
    ("header() on 2+ rows",
     lambda w: w.df.iloc[:2].orthanc.header(),
     SelectionError, ValueError, r"needs exactly one row, this frame has 2 rows.*use headers\(\)"),
    ("download folder is an existing file",
     lambda w: w.df.orthanc.download(w.tmp / "a_file"),
     DownloadFolderError, PermissionError, r"Cannot create the download folder .*a_file.*Pass a folder you can write to"),
    ("download folder cannot be created",
     lambda w: w.df.orthanc.download("/proc/no/such/folder"),
     DownloadFolderError, PermissionError, r"Cannot create the download folder"),
    ("frame that is not an index (reset_index)",
     lambda w: w.df.reset_index().orthanc,
     NotAnIndexError, AttributeError, r"restore it with df\.set_index\(\['patient', 'study', 'series', 'instance'\]\)"),
    ("plain DataFrame",
     lambda w: pd.DataFrame({"x": [1]}).orthanc.counts,
     NotAnIndexError, AttributeError, r"works on frames made by orthanc_pandas\.read_orthanc"),
    ("frame without provenance (attrs dropped)",
     lambda w: _without_attrs(w.df).orthanc.headers(),
     OrthancPandasError, Exception, r"does not say which Orthanc server it comes from.*Pass client="),
    ("frame written by a newer frame format",
     lambda w: _frame_with(w.df, format=2, library="orthanc-pandas 9.0").orthanc.headers(),
     FrameFormatError, ValueError, r"frame format 2 \(written by orthanc-pandas 9\.0\).*reads format 1\. Upgrade"),
    ("frame with a garbled format",
     lambda w: _frame_with(w.df, format="1").orthanc.counts,
     FrameFormatError, ValueError, r"frame format '1'"),
    ("frame from server A refreshed against server B",
     lambda w: w.df.orthanc.refresh(client=w.b.client()),
     ServerMismatchError, ValueError, r"read from http://127\.0\.0\.1:\d+; refreshing it against .* would mix two archives"),
    ("frame from server A: headers from server B (which lacks them)",
     lambda w: _one_series(w).orthanc.headers(client=w.b.client()),
     OrthancNotFoundError, LookupError, r"HTTP 404 Not Found: no such resource"),
    ("frame from server A: volume from server B (which lacks it)",
     lambda w: _one_series(w).orthanc.volume(client=w.b.client()),
     OrthancNotFoundError, LookupError, r"/instances/[0-9a-f-]+/file -> HTTP 404"),
    ("to_zip() of 0 rows",
     lambda w: w.df.iloc[:0].orthanc.to_zip(w.tmp / "x.zip"),
     OrthancPandasError, Exception, r"no rows: there is nothing to archive"),
    ("download(layout=...) unknown",
     lambda w: w.df.orthanc.download(w.tmp / "dl", layout="deep"),
     ValueError, ValueError, r"layout must be 'flat' or 'tree', got 'deep'"),
    ("delete(level=...) unknown",
     lambda w: w.df.orthanc.delete(level="frame"),
     ValueError, ValueError, r"level must be one of"),
]


@pytest.mark.parametrize("case, call, exc_type, builtin, message", MATRIX, ids=[m[0] for m in MATRIX])
def test_bad_input_matrix(world, case, call, exc_type, builtin, message):
    (world.tmp / "a_file").write_text("x")
    with pytest.raises(exc_type) as info:
        call(world)
    assert isinstance(info.value, builtin)
    assert info.type is exc_type, f"{case}: {info.type.__name__} is a subclass, not {exc_type.__name__}"
    text = str(info.value)
    assert re.search(message, text, flags=re.S), f"{case}: {text}"


def test_upload_of_non_dicom_and_truncated_files_is_reported_not_raised(world, tmp_path):
    """Uploads never raise on a bad file: each gets a row saying what is wrong with it."""
    blob = to_bytes(make_series(1, 8, 8, seed="bad-upload")[0])
    files = {
        "text.txt": b"hello, not DICOM\n",
        "empty.dcm": b"",
        "truncated_header.dcm": blob[:200],
        "truncated_pixels.dcm": blob[: len(blob) - 50],
        "garbage_with_marker.dcm": b"\0" * 128 + b"DICM" + os.urandom(300),
        "good.dcm": blob,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("inner.txt", "nope")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    report = op.upload(tmp_path, world.b.client(), errors="report").set_index("path")
    got = {Path(p).name: s for p, s in report.status.astype(str).items()}
    assert got == {
        "text.txt": "NotDicom", "empty.dcm": "NotDicom",
        "truncated_header.dcm": "Failure", "truncated_pixels.dcm": "Failure",
        "garbage_with_marker.dcm": "Failure", "good.dcm": "Success",
        "bad.zip!inner.txt": "NotDicom", "broken.zip": "Error",
    }
    msgs = {Path(p).name: m for p, m in report.message.items()}
    assert "not a DICOM file" in msgs["text.txt"]
    assert msgs["truncated_pixels.dcm"] and msgs["broken.zip"].startswith("BadZipFile")
    # and the server holds exactly the good file
    stored = world.b.client().list_ids("instances")
    assert stored == [report.loc[str(tmp_path / "good.dcm"), "instance"]]
    op.OrthancClient(world.b.url).delete(f"/instances/{stored[0]}")


def test_parquet_from_another_orthanc_version_still_works(world, tmp_path):
    """A frame saved when the server ran another Orthanc version (same archive, same URL):
    Orthanc ids are hashes of the UIDs, so every id still names the same instance."""
    path = tmp_path / "old.parquet"
    _frame_with(_one_series(world), version="1.9.7", api_version=12).to_parquet(path)
    back = pd.read_parquet(path)
    assert back.attrs["orthanc"]["version"] == "1.9.7"
    vol = back.orthanc.volume()
    fresh = _one_series(world).orthanc.volume()
    np.testing.assert_array_equal(vol.values, fresh.values)
    assert [d.SOPInstanceUID for d in back.orthanc.headers()] == list(back.SOPInstanceUID)


def test_parquet_from_a_newer_format_is_refused_after_reading_it_back(world, tmp_path):
    path = tmp_path / "new.parquet"
    _frame_with(world.df, format=2, library="orthanc-pandas 9.0").to_parquet(path)
    back = pd.read_parquet(path)  # plain pandas still reads the file
    assert len(back) == len(world.df)
    with pytest.raises(FrameFormatError, match="Upgrade orthanc-pandas"):
        back.orthanc.select(Modality="CT")


def test_frame_from_a_on_a_mirror_b_gives_the_same_files(world, tmp_path):
    """Server B holding the same files: ids are the same, so headers and downloads agree."""
    mirror = LocalOrthanc(name="bad-mirror").start()
    try:
        sel = _one_series(world)
        blobs = [world.a.client().get_bytes(f"/instances/{i}/file")
                 for i in sel.index.get_level_values("instance")]
        mirror.upload_bytes(blobs)
        from_b = sel.orthanc.download(tmp_path / "b", client=mirror.client())
        from_a = sel.orthanc.download(tmp_path / "a")
        for pa_, pb in zip(from_a, from_b, strict=True):
            assert Path(pa_).read_bytes() == Path(pb).read_bytes()
        with pytest.raises(ServerMismatchError):
            sel.orthanc.refresh(client=mirror.client())  # the change logs are not comparable
    finally:
        mirror.kill()
        mirror.stop()


def test_server_replaced_at_the_same_url_is_detected_by_refresh(orthanc_factory):
    first = orthanc_factory(name="replaced")
    first.upload_bytes(to_bytes(d) for d in make_series(6, 8, 8, seed="old-db"))
    df = op.read_orthanc(first.url)
    port = first.port
    first.kill()
    first.stop()  # its database is gone; a new, smaller one answers on the same URL
    second = orthanc_factory(name="replaced2", port=port)
    second.upload_bytes([to_bytes(make_series(1, 8, 8, seed="new-db")[0])])
    assert second.url == df.attrs["orthanc"]["url"]
    # without extended find (1.10) the instance list shows it; with it (1.13) the per-series
    # counts do, naming the series no change entry explains (ChangeLogGapError)
    with pytest.raises(ServerMismatchError, match=r"could not follow the changes of .* the refreshed "
                                                  r"frame would hold 0 instances, the server holds 1\. "
                                                  r"Its database was replaced or reset|does not explain "
                                                  r"what the server holds: 1 series that this frame "
                                                  r"never held .* another server answers at this URL"):
        df.orthanc.refresh()
