"""read_orthanc against a real Orthanc loaded with pydicom's test files."""

from __future__ import annotations

import json
import math
import re
import threading
import warnings

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import corpus_paths
from pydicom.multival import MultiValue
from pydicom.valuerep import DA

import orthanc_pandas as op
from orthanc_pandas._frame.schema import (
    LEVELS,
    MAIN_TAGS,
    NEWER_MAIN_TAGS,
    empty_frame,
    tag_level,
    tag_vr,
    vector_columns,
)
from orthanc_pandas._http.changes import is_content_change
from orthanc_pandas.errors import ParseWarning
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.synthetic import generate_archive

MAIN_TAGS_ALL = [kw for level in LEVELS for kw in MAIN_TAGS[level]]
STAT_KEYS = {"patients": "CountPatients", "studies": "CountStudies", "series": "CountSeries",
             "instances": "CountInstances"}


def test_counts_equal_server_statistics(corpus, corpus_frame):
    stats = corpus.server.client().statistics()
    assert len(corpus_frame) == stats["CountInstances"]
    for name, key in STAT_KEYS.items():
        assert corpus_frame.orthanc.counts[name] == stats[key], name
    # and the rows are exactly the server's instances
    ids = set(corpus.server.client().list_ids("instances"))
    assert set(corpus_frame.index.get_level_values("instance")) == ids


def test_index_levels_match_server_parents(corpus, corpus_frame):
    client = corpus.server.client()
    sample = corpus_frame.index[:: max(1, len(corpus_frame) // 15)]
    for patient, study, series, instance in sample:
        info = client.get_json(f"/instances/{instance}")
        assert info["ParentSeries"] == series
        assert client.get_json(f"/series/{series}")["ParentStudy"] == study
        assert client.get_json(f"/studies/{study}")["ParentPatient"] == patient


def _expected(value, kw: str):
    """What the frame should hold for a pydicom value, computed independently of index.py."""
    vr = tag_vr(kw)
    if isinstance(value, MultiValue):
        items = list(value)
    else:
        items = [value]
    text = "\\".join("" if v is None else str(v) for v in items)
    if vr == "DA":  # pydicom's own date parser is the truth
        try:
            d = DA(text.strip()) if text.strip() else None
        except (ValueError, TypeError):
            d = None
        return pd.Timestamp(d) if d is not None else pd.NaT
    if vr in ("IS", "DS", "US", "UL", "SS", "SL"):
        try:
            nums = [float(str(v).strip()) for v in text.split("\\")] if text.strip() else []
        except ValueError:
            nums = None
        return nums
    return text


def _first_creator(corpus, frame, level: str) -> dict[str, str]:
    """For each resource of a level, the instance whose file created it (first stored)."""
    rank = {iid: i for i, iid in enumerate(corpus.order)}
    ids = frame.index.to_frame(index=False)
    ids["rank"] = ids["instance"].map(rank)
    first = ids.sort_values("rank").drop_duplicates(level)
    return dict(zip(first[level], first["instance"], strict=True))


def test_every_main_tag_equals_pydicom(corpus, corpus_frame):
    df = corpus_frame
    newer = corpus.server.client().version_tuple >= (1, 11)
    creators = {lvl: _first_creator(corpus, df, lvl) for lvl in LEVELS}
    checked = mismatches = 0
    problems = []
    cache = {}
    for row_index, row in zip(df.index, df.itertuples(index=False), strict=True):
        rowd = row._asdict()
        for level in LEVELS:
            resource = row_index[LEVELS.index(level)]
            source = creators[level][resource]
            if source not in cache:
                cache[source] = corpus.dataset(source, stop_before_pixels=True)
            ds = cache[source]
            for kw in MAIN_TAGS[level]:
                if tag_level(kw) != level or kw not in ds:
                    continue
                if kw in NEWER_MAIN_TAGS and not newer:
                    continue  # 1.10 does not index them: always missing (test_frames_equal_...)
                if tag_vr(kw) == "SQ":
                    continue  # JSON text, checked in test_frames_equal_across_orthanc_versions
                if len(str(ds[kw].value).encode()) > 256:
                    # Orthanc 1.10 leaves values over 256 bytes out of its index (documented
                    # limitation; with_tags() fetches them)
                    continue
                exp = _expected(ds[kw].value, kw)
                cols = vector_columns(kw, df.columns)
                if cols:
                    got = [rowd[c] for c in cols]
                    if exp is None:  # unparsable in the file -> all missing
                        ok = all(pd.isna(g) for g in got)
                    else:
                        exp_full = exp + [None] * (len(cols) - len(exp))
                        ok = all((pd.isna(g) and e is None) or (e is not None and not pd.isna(g)
                                 and math.isclose(g, e, rel_tol=0, abs_tol=0)) for g, e in zip(got, exp_full, strict=True))
                else:
                    got = rowd[kw]
                    vr = tag_vr(kw)
                    if vr == "DA":
                        ok = (pd.isna(got) and pd.isna(exp)) or got == exp
                    elif vr in ("IS", "DS", "US", "UL", "SS", "SL"):
                        if not exp:  # empty or unparsable
                            ok = pd.isna(got)
                        else:
                            ok = not pd.isna(got) and float(got) == exp[0]
                    elif exp == "":  # empty text is missing, as absent text is
                        ok = pd.isna(got)
                    else:
                        ok = (not pd.isna(got)) and str(got) == exp
                checked += 1
                if not ok:
                    mismatches += 1
                    problems.append((corpus.stored[source].name, kw, got, exp))
    assert checked > 1000
    assert not problems, "\n".join(map(repr, problems))


def test_documented_dtypes(corpus_frame):
    df = corpus_frame
    assert list(df.index.names) == ["patient", "study", "series", "instance"]
    assert df["StudyDate"].dtype == np.dtype("datetime64[us]")
    assert df["PatientBirthDate"].dtype == np.dtype("datetime64[us]")
    assert df["InstanceNumber"].dtype == "Int32"  # IS: -2**31..2**31-1 by the standard
    assert df["SeriesNumber"].dtype == "Int32"
    assert df["ImagePositionPatient_2"].dtype == "Float64"
    assert df["ImageOrientationPatient_5"].dtype == "Float64"
    assert isinstance(df["Modality"].dtype, pd.CategoricalDtype)
    assert isinstance(df["PatientName"].dtype, pd.CategoricalDtype)
    assert df["SOPInstanceUID"].dtype == pd.StringDtype("pyarrow")
    assert df["orthanc_file_size"].dtype == "Int64"


def test_file_sizes_match_originals(corpus, corpus_frame):
    sizes = corpus_frame["orthanc_file_size"].droplevel([0, 1, 2])
    for iid, path in list(corpus.stored.items())[:40]:
        assert sizes[iid] == path.stat().st_size


def test_parse_failures_warn_and_typed_false_keeps_raw(corpus):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        typed = op.read_orthanc(corpus.url)
    raw = op.read_orthanc(corpus.url, typed=False)
    parse = [w for w in caught if issubclass(w.category, ParseWarning)]
    # pydicom's corpus holds a few deliberately invalid values (e.g. NumberOfFrames '1A')
    bad_frames = raw["NumberOfFrames"].dropna()
    bad_frames = bad_frames[~bad_frames.str.strip().str.fullmatch(r"[+-]?\d*")]
    assert len(bad_frames) > 0
    # one warning for the read, at this line: one line naming the column, the count, an example
    assert len(parse) == 1 and parse[0].filename == __file__
    message = str(parse[0].message)
    assert "\n" not in message and parse[0].message.columns["NumberOfFrames"] == len(bad_frames)
    assert any(f"NumberOfFrames {v.strip()!r}" in message for v in bad_frames), message
    assert typed.loc[bad_frames.index, "NumberOfFrames"].isna().all()
    assert raw["StudyDate"].dtype == pd.StringDtype("pyarrow")
    assert set(raw.index) == set(typed.index)  # rows may sort differently (NA last)


def test_attrs_are_json_provenance(corpus, corpus_frame):
    import json

    info = corpus_frame.attrs["orthanc"]
    assert json.loads(json.dumps(info)) == info
    assert info["url"] == corpus.url
    assert info["version"] == corpus.server.client().version
    client = corpus.server.client()
    # later entries (if any) are neutral: stability events, DICOMweb's series cache (1.12+)
    assert info["last_change"] <= client.last_change()
    later = client.changes(info["last_change"], limit=10_000)["Changes"]
    assert [c for c in later if is_content_change(c)] == []
    assert info["counts"]["instances"] == len(corpus_frame)


def test_parquet_round_trip_plain_read(corpus_frame, tmp_path):
    path = tmp_path / "index.parquet"
    corpus_frame.to_parquet(path)
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, corpus_frame)
    assert back.attrs == corpus_frame.attrs
    assert back.orthanc.counts == corpus_frame.orthanc.counts


def test_empty_server_gives_empty_typed_frame(empty_server, tmp_path):
    df = op.read_orthanc(empty_server.url)
    assert len(df) == 0
    # no resource has any tag: each column has its tag's dtype all the same
    assert df["StudyDate"].dtype == "datetime64[us]" and df["SeriesNumber"].dtype == "Int32"
    assert df["Modality"].dtype == "category" and df["SOPInstanceUID"].dtype == "string"
    pd.testing.assert_frame_equal(df, empty_frame())
    df.to_parquet(tmp_path / "e.parquet")
    # zero rows: parquet drops a categorical's categories (nothing else)
    back = pd.read_parquet(tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(back, df, check_categorical=False)
    assert (back.dtypes.astype(str) == df.dtypes.astype(str)).all()


def test_paging_gives_same_frame(corpus, corpus_frame):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        paged = op.read_orthanc(corpus.url, page_size=7)
    pd.testing.assert_frame_equal(paged, corpus_frame)


def test_concurrent_upload_gives_consistent_frame(empty_server):
    """Another writer stores instances while we page: the read catches up to one moment."""
    blobs = list(generate_archive(2, 1, 2, 60, rows=4, cols=4, seed="concurrent"))
    empty_server.upload_bytes(blobs[:120])
    stop = threading.Event()

    def writer():
        for b in blobs[120:]:
            if stop.is_set():
                return
            empty_server.upload_bytes([b])

    t = threading.Thread(target=writer)
    t.start()
    try:
        df = op.read_orthanc(empty_server.url, page_size=10)
    finally:
        stop.set()
        t.join()
    # consistent: every row's hierarchy is right, and counts match the server at that moment
    assert df.attrs["orthanc"]["counts"]["instances"] == len(df)
    assert df.orthanc.instance_count == len(df)
    assert df.index.get_level_values("series").nunique() == df.attrs["orthanc"]["counts"]["series"]
    pd.testing.assert_frame_equal(df.orthanc.refresh(), op.read_orthanc(empty_server.url))


def test_server_killed_during_read_raises_naming_what_was_read(orthanc_factory):
    """Kill Orthanc while read_orthanc pages: a clear error, never a partial frame."""
    server = orthanc_factory()
    server.upload_bytes(generate_archive(4, 1, 2, 100, rows=4, cols=4, seed="killed"))
    pages = []
    client = op.OrthancClient(server.url, retries=1)
    original = client.iter_pages

    def iter_pages_then_kill(level, page_size=5000, **kw):
        for page in original(level, page_size=page_size, **kw):
            if level == "instances":  # (on 1.13 the parent lists are read concurrently)
                pages.append(level)
                if len(pages) == 3:
                    server.kill()  # a real crash between two page requests
            yield page

    client.iter_pages = iter_pages_then_kill
    original_find = client.iter_find

    def iter_find_then_kill(level, content, **kw):  # the instance route of Orthanc >= 1.12.5
        for page in original_find(level, content, **kw):
            if "MainDicomTags" in content and not kw.get("start"):  # the first half's stream
                pages.append(level)
                if len(pages) == 3:
                    server.kill()
            yield page

    client.iter_find = iter_find_then_kill
    with pytest.raises(op.OrthancConnectionError) as info:
        op.read_orthanc(client, page_size=100)
    msg = str(info.value)
    # the lists route reads instances page by page; the find route reads two halves at once,
    # so the other half may have added its pages before the crash reached it
    found = re.search(r"stopped answering while reading instances \(after (\d+) of them", msg)
    assert found and 300 <= int(found.group(1)) < 800 and int(found.group(1)) % 100 == 0, msg
    assert "no frame was returned" in msg
    server.restart()  # restarted between calls: the next call works
    assert len(op.read_orthanc(server.url)) == 800


@pytest.mark.orthanc_before("1.12.5")
def test_no_find_route_before_extended_find(corpus):
    with pytest.raises(ValueError, match="needs extended /tools/find"):
        op.read_orthanc(corpus.url, route="find")


@pytest.mark.orthanc_min("1.12.5")
def test_find_route_gives_the_frame_of_the_lists_route(corpus, corpus_frame):
    """On 1.12.5+ the instances come from extended /tools/find: the same frame, exactly."""
    assert corpus.server.client().capabilities().extended_find
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        lists = op.read_orthanc(corpus.url, route="lists")
        found = op.read_orthanc(corpus.url, route="find", page_size=13)
    pd.testing.assert_frame_equal(found, lists)
    pd.testing.assert_frame_equal(corpus_frame, found)  # auto chose find
    assert found["orthanc_file_size"].notna().all()


def test_low_find_limits_never_truncate_the_index(orthanc_factory):
    """Production servers set LimitFindInstances/LimitFindResults; paging goes past them."""
    server = orthanc_factory(config={"LimitFindInstances": 100, "LimitFindResults": 10})
    server.upload_bytes(generate_archive(3, 2, 3, 40, rows=4, cols=4, seed="limits"))
    client = server.client()
    df = op.read_orthanc(server.url, page_size=5000)
    assert len(df) == client.statistics()["CountInstances"] == 720
    assert df.index.is_unique
    assert set(df.index.get_level_values("instance")) == set(client.list_ids("instances"))


@pytest.mark.orthanc_min("1.12.5")
def test_low_find_limits_really_limit_each_find_call(orthanc_factory):
    """The find route pages past LimitFindInstances: the server answers 100 rows per call,
    however many are asked for, and the frame equals the lists route's."""
    server = orthanc_factory(config={"LimitFindInstances": 100, "LimitFindResults": 10})
    server.upload_bytes(generate_archive(1, 1, 3, 50, rows=4, cols=4, seed="limits"))
    client = server.client()
    page = client.post_json("/tools/find", {"Level": "Instance", "Query": {}, "Limit": 5000,
                                            "Since": 0, "ResponseContent": ["Parent"]})
    assert len(page) == 100
    df = op.read_orthanc(server.url, route="find", page_size=5000)
    assert len(df) == 150
    pd.testing.assert_frame_equal(df, op.read_orthanc(server.url, route="lists"))


#: What the frame of the generated archive may cost per instance: ``df.memory_usage(deep=True)``
#: over its rows, index included (373 at 20,000 instances on 1.10 and 1.13, benchmarks/scale.py).
#: docs/scale.md lists where the bytes go, and why 300 is out of reach with one schema.
FRAME_BYTES_PER_INSTANCE = 380


def test_frame_memory_per_instance(orthanc_factory):
    """A few thousand generated instances, as benchmarks/scale.py's archive but smaller: the
    frame stays within its budget (a dtype widened by mistake shows here first)."""
    server = orthanc_factory()
    server.upload_bytes(generate_archive(6, 2, 5, 50, rows=4, cols=4, seed="memory"))
    df = op.read_orthanc(server.url)
    assert len(df) == 3000
    per_instance = df.memory_usage(deep=True).sum() / len(df)
    assert per_instance <= FRAME_BYTES_PER_INSTANCE, df.memory_usage(deep=True).div(len(df)).round(1)
    assert df["SeriesNumber"].dtype == "Int32" and df["ImageIndex"].dtype == "Int32"
    assert df["orthanc_file_size"].dtype == "Int64"  # a file can pass 2 GiB


def test_frames_equal_across_orthanc_versions(two_versions):
    """The same files on 1.10.1 and 1.13 give the same columns, dtypes and values; the main tags
    1.10 does not index (NEWER_MAIN_TAGS) are missing there, and on 1.13 they hold what pydicom
    reads in the files (sequences as JSON text)."""
    blobs = list(generate_archive(2, 2, 2, 6, rows=4, cols=4, seed="versions"))
    frames, files = {}, {}
    for name, kwargs in two_versions.items():
        with LocalOrthanc(name=f"version-{name}", **kwargs) as server:
            server.upload_bytes(blobs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ParseWarning)
                frames[name] = op.read_orthanc(server.url)
                answers = server.upload(corpus_paths()[:40])
                frames[name + "+corpus"] = op.read_orthanc(server.url)
            files.update({a["ID"]: p for p, a in answers.items() if a.get("Status") == "Success"})
            assert server.client().version.startswith("1.10" if name == "system" else "1.1")
    for key in ("", "+corpus"):
        old, new = frames["system" + key], frames["current" + key]
        assert list(old.columns) == list(new.columns)
        newer = list(NEWER_MAIN_TAGS)
        assert old[newer].isna().all().all()
        pd.testing.assert_frame_equal(new.drop(columns=newer), old.drop(columns=newer))
        # same dtypes; a categorical's categories are its values, so only its kind is compared
        assert [str(d) for d in new.dtypes] == [str(d) for d in old.dtypes]
    # and so the same memory: the schema, not the server, sets what a frame costs (up to the
    # Arrow buffers of a few categories, built from pages of other sizes: bytes, not per row)
    old, new = (frames[k].memory_usage(deep=True) for k in ("system", "current"))
    assert (old - new).abs().max() <= 8 and old.index.equals(new.index)
    new = frames["current+corpus"]
    checked = 0
    for iid, path in files.items():
        rows = new[new.index.get_level_values("instance") == iid]
        if rows.empty:
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        seq = ds.get("RequestAttributesSequence")
        got = rows["RequestAttributesSequence"].iloc[0]
        if seq:
            items = json.loads(got)
            assert len(items) == len(seq)
            for item, ref in zip(items, seq, strict=True):
                for kw, value in item.items():
                    if kw in ref and isinstance(value, str) and value:
                        assert value == str(ref.data_element(kw).value).strip()
            checked += 1
        value = str(ds.get("PerformedProcedureStepStartDate", "") or "").strip()
        got_date = rows["PerformedProcedureStepStartDate"].iloc[0]
        if value:
            assert got_date == pd.Timestamp(value)
            checked += 1
        elif pd.notna(got_date):
            # a parent's value: the series' first instance that had one
            assert rows.index.get_level_values("series")[0] in set(new.index.get_level_values("series"))
    assert checked, "no corpus file carries the newer main tags: the check checked nothing"
