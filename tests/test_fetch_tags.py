"""fetch_tags.py against real Orthanc: every route gives pydicom's values, extra main tags come
from the index, and only what the frame holds is fetched.

Runs on the machine's Orthanc (1.10: instances-tags) and, with ``ORTHANC_ROOT``, on 1.13
(requested-tags, extended find). Requests are recorded by a spy on our own client's
``request`` method: the server is real, nothing is faked.
"""

from __future__ import annotations

import warnings

import pandas as pd
import pydicom
import pytest

import orthanc_pandas as op
from orthanc_pandas._frame.tags import resolve_tag
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._ops.fetch_tags import fetch_tag_columns, from_files_only
from orthanc_pandas._ops.selection import select
from orthanc_pandas.errors import OrthancHTTPError, ParseWarning
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import generate_archive

#: numbers, vectors, text, a private tag, a sequence, binary, a study-level stored tag
#: (InstitutionName differs between files of one corpus study), a computed one, a long text
TAGS = ["SliceThickness", "PixelSpacing", "KVP", "ImageType", "WindowCenter", "RescaleIntercept",
        "AcquisitionDate", "InstitutionName", "ModalitiesInStudy", "ImageComments", "0019,1003",
        "0009,1001", "SourceImageSequence", "0043,1028", "Rows"]
EMT = ["SliceThickness", "PixelSpacing", "RescaleIntercept"]


def spy(client: OrthancClient) -> list[str]:
    """Record the path of every request ``client`` sends (they are still sent)."""
    paths: list[str] = []
    send = client.request

    def request(method, path, **kw):
        paths.append(path)
        return send(method, path, **kw)

    client.request = request
    return paths


def routes(client: OrthancClient) -> list[str]:
    caps = client.capabilities()
    return (["auto", "instances-tags", "instance"] + (["requested-tags"] if caps.requested_tags else [])
            + (["find"] if caps.extended_find else []))


def columns(df, client, names, route="auto") -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        return pd.DataFrame(fetch_tag_columns(df, client, [resolve_tag(n) for n in names], route=route))


def file_number(ds, keyword):
    if keyword not in ds or ds[keyword].value in (None, ""):
        return None
    value = ds[keyword].value
    return [float(v) for v in value] if isinstance(value, pydicom.multival.MultiValue) else float(value)


def test_every_route_gives_the_same_columns(corpus, corpus_frame):
    client = op.connect(corpus.url)
    got = {route: columns(corpus_frame, client, TAGS, route) for route in routes(client)}
    base = got.pop("instances-tags")
    assert base["InstitutionName"].notna().any() and base["ImageComments"].notna().any()
    assert base["SourceImageSequence"].notna().any() and base["0019,1003"].notna().any()
    for route, cols in got.items():
        pd.testing.assert_frame_equal(cols, base, obj=f"route {route!r}")


def test_values_are_pydicoms(corpus, corpus_frame):
    client = op.connect(corpus.url)
    cols = columns(corpus_frame, client, ["SliceThickness", "PixelSpacing", "KVP", "InstitutionName",
                                          "ImageComments"])
    checked = 0
    for iid, row in zip(corpus_frame.index.get_level_values("instance"), cols.itertuples(index=False),
                        strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = corpus.dataset(iid, stop_before_pixels=True)
        for kw in ("SliceThickness", "KVP"):
            want = file_number(ds, kw)
            got = getattr(row, kw)
            assert (pd.isna(got) if want is None else got == pytest.approx(want)), (iid, kw)
        ps = file_number(ds, "PixelSpacing")
        if ps is not None and len(ps) == 2:
            assert [row.PixelSpacing_0, row.PixelSpacing_1] == pytest.approx(ps)
            checked += 1
        for kw in ("InstitutionName", "ImageComments"):  # each file's own value, in full
            want = str(ds[kw].value).strip() if kw in ds and ds[kw].value else None
            got = getattr(row, kw)
            got = None if pd.isna(got) or not got.strip() else got.strip()  # empty text is kept as ""
            assert got == want, (iid, kw)
    assert checked > 10


def test_binary_values_are_the_files_bytes(corpus, corpus_frame):
    """GE's private OB (0043,1028) in CT_small.dcm and others: Orthanc's JSON gives null for
    it, the column must hold the bytes pydicom reads, and None selects only files without it."""
    client = op.connect(corpus.url)
    tag = resolve_tag("0043,1028")
    got = pd.DataFrame(fetch_tag_columns(corpus_frame, client, [tag]))["0043,1028"]
    assert got.dtype == object
    have = 0
    for iid, value in zip(corpus_frame.index.get_level_values("instance"), got, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = corpus.dataset(iid, stop_before_pixels=True)
        if tag.tag in ds:
            want = ds[tag.tag].value or b""
            assert isinstance(value, bytes) and value == bytes(want), iid
            have += 1
        else:
            assert value is None, iid
    assert have >= 2
    missing = select(corpus_frame, {"0043,1028": None}, lambda: client)
    assert len(missing) == len(corpus_frame) - have
    assert missing["0043,1028"].isna().all()


@pytest.mark.orthanc_min("1.11")
def test_parent_level_and_computed_tags_are_read_from_files(corpus):
    caps = op.connect(corpus.url).capabilities()
    assert caps.requested_tags
    assert from_files_only(resolve_tag("InstitutionName"), caps)  # a study tag in the index
    assert from_files_only(resolve_tag("ModalitiesInStudy"), caps)  # computed by Orthanc
    assert not from_files_only(resolve_tag("SliceThickness"), caps)


@pytest.fixture
def emt_server(orthanc_factory) -> LocalOrthanc:
    # no storage cache: a file Orthanc reads must come from the disk (see the test below)
    server = orthanc_factory(extra_main_dicom_tags={"Instance": EMT}, config={"MaximumStorageCacheSize": 0})
    assert server.client().capabilities().requested_tags  # tests using it are orthanc_min("1.11")
    server.upload_bytes(generate_archive(1, 1, 2, 6, rows=4, cols=4, seed="emt"))
    return server


def expected(blobs_seed: str, shape=(1, 1, 2, 6)) -> dict[str, list]:
    import io
    out = {}
    for blob in generate_archive(*shape, rows=4, cols=4, seed=blobs_seed):
        ds = pydicom.dcmread(io.BytesIO(blob))
        out[ds.SOPInstanceUID] = [file_number(ds, kw) for kw in EMT]
    return out


def check_emt_values(df, cols, seed):
    want = expected(seed)
    for uid, row in zip(df["SOPInstanceUID"], cols.itertuples(index=False), strict=True):
        st, ps, ri = want[uid]
        assert row.SliceThickness == pytest.approx(st) and row.RescaleIntercept == pytest.approx(ri)
        assert [row.PixelSpacing_0, row.PixelSpacing_1] == pytest.approx(ps)


@pytest.mark.orthanc_min("1.11")
def test_extra_main_tags_come_from_the_index(emt_server):
    df = op.read_orthanc(emt_server.url, progress=False)
    assert {"SliceThickness", "RescaleIntercept"} <= set(df.columns)  # read_orthanc has them already
    client = op.connect(emt_server.url)
    for route in ("auto", "requested-tags", "instance"):
        paths = spy(client)
        cols = columns(df, client, EMT, route)
        check_emt_values(df, cols, "emt")
        assert paths and not any("/instances-tags" in p or p.endswith("/tags") for p in paths), route
        client = op.connect(emt_server.url)
    # and they equal the columns read_orthanc made from MainDicomTags
    pd.testing.assert_series_equal(cols["SliceThickness"], df["SliceThickness"], check_names=False)
    # the files are not read at all: with them gone the index still answers
    for path in emt_server.storage_dir.rglob("*"):
        if path.is_file() and len(path.name) == 36 and path.name.count("-") == 4:
            path.unlink()
    check_emt_values(df, columns(df, op.connect(emt_server.url), EMT), "emt")
    with pytest.raises(OrthancHTTPError):
        columns(df, op.connect(emt_server.url), ["KVP"])  # a tag not stored needs the files


@pytest.mark.orthanc_min("1.11")
def test_instances_stored_before_the_config_are_read_from_files(orthanc_factory, tmp_path):
    with LocalOrthanc(storage=tmp_path / "storage") as before:
        assert before.client().capabilities().requested_tags
        before.upload_bytes(generate_archive(1, 1, 2, 6, rows=4, cols=4, seed="emt"))
    server = orthanc_factory(storage=tmp_path / "storage", extra_main_dicom_tags={"Instance": EMT})
    df = op.read_orthanc(server.url, progress=False)
    assert "SliceThickness" not in df or df["SliceThickness"].isna().all()  # not in their index
    check_emt_values(df, columns(df, op.connect(server.url), EMT), "emt")


def test_only_what_the_frame_holds_is_fetched(empty_server):
    empty_server.upload_bytes(generate_archive(1, 1, 2, 60, rows=4, cols=4, seed="big"))
    df = op.read_orthanc(empty_server.url, progress=False)
    series = df.index.get_level_values("series")
    first = series[0]
    one_row = df[series == first].iloc[:1]
    client = op.connect(empty_server.url)
    full = columns(df, client, ["SliceThickness", "KVP"])
    paths = spy(client)
    cols = columns(one_row, client, ["SliceThickness", "KVP"])
    assert len(paths) == 1 and paths[0].startswith(f"/instances/{one_row.index[0][3]}"), paths
    assert cols.iloc[0].equals(full.iloc[0])
    # 10 of 60 rows: instance by instance (after asking the series' size)
    ten = df[series == first].iloc[::6]
    paths.clear()
    columns(ten, client, ["SliceThickness"])
    assert sum(p.startswith("/instances/") for p in paths) == 10 and not any("/series/" in p and "instances" in p
                                                                             for p in paths)
    # 40 of 60 and the whole frame: one request per series
    paths.clear()
    columns(df[series == first].iloc[:40], client, ["SliceThickness"])
    columns(df, client, ["SliceThickness"])
    assert not any(p.startswith("/instances/") for p in paths)
    assert sum("/series/" in p and "instances" in p for p in paths) == 3, paths
