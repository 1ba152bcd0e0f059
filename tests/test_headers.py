"""headers(): every stored pydicom test file comes back as pydicom reads the original."""

from __future__ import annotations

import contextlib
import warnings

import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset

from orthanc_pandas._ops.headers import parse_header_prefix
from orthanc_pandas.errors import SelectionError
from orthanc_pandas.testing.synthetic import make_series, to_bytes


def assert_same_dataset(got: Dataset, ref: Dataset, where: str = "") -> None:
    """Element by element: tag, VR, value (sequences recursively)."""
    assert list(got.keys()) == list(ref.keys()), where
    for tag in ref.keys():
        a, b = got[tag], ref[tag]
        assert a.VR == b.VR, f"{where} {tag} VR {a.VR} != {b.VR}"
        if b.VR == "SQ":
            assert len(a.value) == len(b.value), f"{where} {tag}"
            for k, (ia, ib) in enumerate(zip(a.value, b.value, strict=False)):
                assert_same_dataset(ia, ib, f"{where} {tag}[{k}]")
        else:
            assert a.value == b.value, f"{where} {tag} {a.value!r} != {b.value!r}"


def _reference(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def test_headers_equal_pydicom_for_every_stored_corpus_file(corpus, corpus_frame):
    frame = corpus_frame[corpus_frame.index.get_level_values("instance").isin(list(corpus.stored))]
    assert len(frame) == len(corpus.stored) > 50
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some corpus files are odd on purpose
        datasets = frame.orthanc.headers()
    assert isinstance(datasets, pd.Series) and datasets.index.equals(frame.index)
    checked = set()
    for (_p, _st, _se, iid), ds in datasets.items():
        ref = _reference(corpus.stored[iid])
        assert "PixelData" not in ds
        assert_same_dataset(ds, ref, corpus.stored[iid].name)
        assert_same_dataset(ds.file_meta, ref.file_meta, corpus.stored[iid].name + " meta")
        assert ds.original_character_set == ref.original_character_set
        checked.add(iid)
    assert checked == set(corpus.stored)


def test_header_one_row_and_error(corpus, corpus_frame):
    one = corpus_frame.iloc[[3]]
    iid = one.index[0][3]
    ds = one.orthanc.header()
    assert_same_dataset(ds, _reference(corpus.stored[iid]))
    with pytest.raises(SelectionError, match=r"exactly one row.*2 rows"):
        corpus_frame.iloc[:2].orthanc.header()
    with pytest.raises(SelectionError, match="no rows"):
        corpus_frame.iloc[:0].orthanc.header()


def test_headers_repeat_rows_in_order(corpus, corpus_frame):
    rows = corpus_frame.iloc[[5, 1, 5]]
    got = rows.orthanc.headers(max_workers=2)
    assert got.index.equals(rows.index) and got.name == "header"
    a, b, c = got
    assert a is c and a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SOPInstanceUID == _reference(corpus.stored[rows.index[0][3]]).SOPInstanceUID


def test_headers_are_indexed_like_the_rows_in_any_order(corpus, corpus_frame):
    """Shuffled rows: each label gets the header of the file the server stores for it."""
    rows = corpus_frame[corpus_frame.index.get_level_values("instance").isin(list(corpus.stored))]
    rows = rows.sample(frac=1, random_state=7).iloc[:25]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = rows.orthanc.headers(max_workers=3)
        assert got.index.equals(rows.index)
        client = corpus_frame.orthanc.client()
        for label, ds in got.items():
            stored = client.get_bytes(f"/instances/{label[3]}/file")
            truth = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored), stop_before_pixels=True,
                                    force=True)
            assert_same_dataset(ds, truth, label[3])
    # a frame aligned on the result: pandas joins on the index, not on positions
    joined = rows.assign(sop=got.map(lambda d: str(d.SOPInstanceUID)))
    assert joined.sop.tolist() == rows.SOPInstanceUID.astype(str).tolist()


def test_headers_of_a_level_frame_are_indexed_like_its_instance_rows(corpus_frame):
    series = corpus_frame.orthanc.series()
    pick = series.iloc[[0, 2]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = pick.orthanc.headers(corpus_frame)
    rows = pick.orthanc.instances(corpus_frame)
    assert got.index.equals(rows.index)
    assert [str(d.SOPInstanceUID) for d in got] == rows.SOPInstanceUID.astype(str).tolist()


def test_headers_errors_report_leaves_none_and_names_the_instance(empty_server):
    import orthanc_pandas as op

    empty_server.upload_bytes([to_bytes(d) for d in make_series(3, 8, 8, seed="hdr-gone")])
    df = op.read_orthanc(empty_server.url)
    gone = df.index[1][3]
    op.OrthancClient(empty_server.url).delete(f"/instances/{gone}")
    with pytest.raises(op.OrthancNotFoundError):
        df.orthanc.headers()
    got = df.orthanc.headers(errors="report")
    assert got.index.equals(df.index)
    assert got.iloc[1] is None and got.iloc[0] is not None and got.iloc[2] is not None
    assert list(got.attrs["errors"]) == [gone] and "404" in got.attrs["errors"][gone]
    with pytest.raises(ValueError, match="errors must be"):
        df.orthanc.headers(errors="ignore")
    with pytest.raises(ValueError, match="max_workers must be a positive integer"):
        df.orthanc.headers(max_workers=0)


def test_prefix_parse_never_accepts_a_truncated_header():
    """Cut a file at every element boundary: a prefix is accepted only if it reached pixels."""
    ds = make_series(1, 16, 16, extra={"ImageComments": "x" * 300})[0]
    data = to_bytes(ds)
    full = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    pixel_start = data.index(bytes.fromhex("e07f1000"))
    accepted = 0
    for cut in range(132, len(data), 7):
        got = parse_header_prefix(data[:cut], complete=False)
        if got is None:
            continue
        accepted += 1
        assert cut > pixel_start
        assert_same_dataset(got, full)
    assert accepted > 0  # the cut just after the pixel tag is accepted
    assert parse_header_prefix(data[:pixel_start], complete=False) is None


def test_deflated_needs_the_whole_file():
    path = pydicom.data.get_testdata_file("image_dfl.dcm")
    data = open(path, "rb").read()
    assert parse_header_prefix(data[: len(data) // 2], complete=False) is None
    assert parse_header_prefix(data, complete=True).SOPInstanceUID == _reference(path).SOPInstanceUID


def test_headers_stop_reading_at_the_pixel_data(empty_server):
    """A 512x512 slice: its header comes from the first read of the file; the rest is dropped."""
    import orthanc_pandas as op
    from orthanc_pandas._http.client import OrthancClient

    data = to_bytes(make_series(1, 512, 512, seed="early-close")[0])
    empty_server.upload_bytes([data])
    client = OrthancClient(empty_server.url)
    df = op.read_orthanc(client)
    answers = []
    get_file = client.get_file

    @contextlib.contextmanager
    def recorded(instance_id):
        with get_file(instance_id) as answer:
            yield answer
        answers.append(answer)

    client.get_file = recorded
    (ds,) = df.orthanc.headers(client=client)
    del client.get_file
    assert ds == pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
    (answer,) = answers
    assert int(answer.headers["Content-Length"]) == len(data) > 8 * answer.delivered
    assert answer.response.raw.closed  # the rest of the file was dropped with its connection
    assert client.get_bytes(f"/instances/{df.index[0][3]}/file") == data  # the pool still works
