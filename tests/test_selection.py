"""select / with_tags / values / unique / tags / sort_by against a real Orthanc.

Truths used: Orthanc's own ``/tools/find`` (for matching) and pydicom's reading of the
original files (for fetched tag values).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pydicom
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orthanc_pandas as op
from orthanc_pandas._frame.matching import decode_criteria
from orthanc_pandas.errors import ParseWarning, UnknownTagError
from orthanc_pandas.testing.synthetic import make_series, to_bytes

# -- helpers --------------------------------------------------------------------------------


def file_value(ds, keyword):
    """The value pydicom reads for ``keyword`` (None when absent or empty)."""
    if ds is None or keyword not in ds:
        return None
    value = ds[keyword].value
    return None if value is None or value == "" else value


def file_text(ds, keyword, *, empty=None) -> str | None:
    """The file's value as DICOM text; absent -> None, empty -> ``empty``."""
    if ds is None or keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None:
        return empty
    if isinstance(value, pydicom.multival.MultiValue | list):
        return "\\".join(str(v) for v in value).strip() or empty
    return str(value).strip() or empty


def instance_set(frame: pd.DataFrame) -> set[str]:
    return set(frame.index.get_level_values("instance"))


def orthanc_find(client, query: dict, case_sensitive: bool) -> set[str]:
    body = {"Level": "Instance", "Expand": False, "Query": query, "CaseSensitive": case_sensitive}
    return set(client.post_json("/tools/find", body))


@pytest.fixture(scope="module")
def raw_frame(corpus):
    """The corpus index with Orthanc's own strings (typed=False): the values /tools/find sees."""
    return op.read_orthanc(corpus.url, typed=False)


class FileValues(dict):
    """instance id -> pydicom dataset of the original file (short repr for hypothesis)."""

    def __repr__(self) -> str:
        return f"<{len(self)} datasets>"


class Truth:
    """Everything the property test compares, with a short repr (hypothesis prints arguments)."""

    def __init__(self, client, frame, raw_frame, file_values):
        self.client, self.frame, self.raw_frame, self.file_values = client, frame, raw_frame, file_values

    def __repr__(self) -> str:
        return f"<truth: {len(self.frame)} instances>"


@pytest.fixture(scope="module")
def file_values(corpus):
    """Each instance's own values, read by pydicom from the file that created it."""
    out = FileValues()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for iid, path in corpus.stored.items():
            out[iid] = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return out


class CountingAdapter(requests.adapters.HTTPAdapter):
    """Counts the requests that really go out on the wire (not a mock: they are sent)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.paths: list[str] = []

    def send(self, request, *a, **kw):
        self.paths.append(request.path_url)
        return super().send(request, *a, **kw)


def assert_tags_fetched_in_bulk(paths: list[str], frame: pd.DataFrame) -> None:
    """Each series of ``frame`` is fetched by one whole-series request (instances-tags on 1.10,
    requested-tags on 1.11+) or, when the frame holds few of its rows, by one request per
    held instance; never one request per instance of a whole series, never twice."""
    series_ids = set(frame.index.get_level_values("series"))
    held = set(frame.index.get_level_values("instance"))
    whole: dict[str, int] = {}
    single: dict[str, int] = {}
    for p in paths:
        parts = p.split("?")[0].strip("/").split("/")
        if parts[0] == "series" and parts[-1] != "statistics":  # statistics: a size probe
            whole[parts[1]] = whole.get(parts[1], 0) + 1
        elif parts[0] == "instances":
            single[parts[1]] = single.get(parts[1], 0) + 1
    assert set(whole) <= series_ids and all(n == 1 for n in whole.values()), whole
    assert set(single) <= held and all(n == 1 for n in single.values()), single
    series_of = dict(zip(frame.index.get_level_values("instance"),
                         frame.index.get_level_values("series"), strict=True))
    assert not {series_of[i] for i in single} & set(whole)  # whole or one by one, not both
    assert len(whole) + len(single) >= 1


@pytest.fixture
def counted(corpus):
    client = op.connect(corpus.url)
    adapter = CountingAdapter(pool_maxsize=client.pool_size)
    client.session.mount("http://", adapter)
    yield adapter
    client.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=client.pool_size))


# -- the matching agrees with Orthanc's find ------------------------------------------------

TEXT_TAGS = ["PatientName", "PatientSex", "StudyDescription", "StudyID", "InstitutionName",
             "ReferringPhysicianName", "Modality", "Manufacturer", "StationName",
             "SeriesDescription", "BodyPartExamined", "ProtocolName", "AccessionNumber"]
IDENTIFIERS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
DATE_TAGS = ["StudyDate", "SeriesDate", "PatientBirthDate", "InstanceCreationDate"]
TIME_TAGS = ["StudyTime", "SeriesTime", "InstanceCreationTime"]
NUMBER_TAGS = ["SeriesNumber", "InstanceNumber", "AcquisitionNumber"]
#: Orthanc keeps identifier tags upper-cased in its lookup table: always case-insensitive
ORTHANC_NORMALIZED = {"PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                      "AccessionNumber"}


def _values(raw_frame, tag) -> list[str]:
    # query values as a user types them: without DICOM's trailing padding (difference 9)
    col = raw_frame[tag].dropna().astype(str).str.rstrip(" \x00")
    return sorted(v for v in col.unique() if v.strip())


def _case(draw, text: str) -> str:
    if not text.isascii():  # Orthanc (SQLite lower()) folds ASCII only: documented difference
        return text
    return draw(st.sampled_from([text, text.upper(), text.lower(), text.swapcase()]))


@st.composite
def queries(draw, raw_frame):
    """(Orthanc query, our criteria, case_sensitive, kinds of each criterion)."""
    case_sensitive = draw(st.booleans())
    tags = draw(st.lists(st.sampled_from(TEXT_TAGS + IDENTIFIERS + DATE_TAGS + TIME_TAGS + NUMBER_TAGS),
                         min_size=1, max_size=2, unique=True))
    q, ours, kinds = {}, {}, {}
    for tag in tags:
        values = _values(raw_frame, tag)
        if tag in DATE_TAGS:  # select refuses malformed dates in a query (documented)
            values = [v for v in values if re.fullmatch(r"\d{8}", v)]
        if not values:
            values = ["NOTHING"]
        v = draw(st.sampled_from(values))
        if tag in TEXT_TAGS:
            form = draw(st.sampled_from(["exact", "prefix", "suffix", "qmark", "list", "star"]))
            if tag in ORTHANC_NORMALIZED and case_sensitive:
                w = v
            else:
                w = _case(draw, v)
            if form == "prefix":
                w = w[: draw(st.integers(0, len(w)))] + "*"
            elif form == "suffix":
                w = "*" + w[draw(st.integers(0, len(w))):]
            elif form == "qmark":
                i = draw(st.integers(0, len(w) - 1))
                w = w[:i] + "?" + w[i + 1:]
            elif form == "star":
                w = "*"
            if form == "list":
                other = draw(st.sampled_from(values))
                q[tag] = w + "\\" + other
                ours[tag] = draw(st.sampled_from([q[tag], [w, other]]))
            else:
                q[tag] = ours[tag] = w
            kinds[tag] = form
        elif tag in IDENTIFIERS:
            w = v if case_sensitive else _case(draw, v)
            q[tag] = ours[tag] = w
            kinds[tag] = "exact"
        elif tag in DATE_TAGS or tag in TIME_TAGS:
            lo, hi = sorted([v, draw(st.sampled_from(values))])
            form = draw(st.sampled_from(["exact", "range", "low", "high", "list"]))
            q[tag] = {"exact": lo, "range": f"{lo}-{hi}", "low": f"{lo}-", "high": f"-{hi}",
                      "list": f"{lo}\\{hi}"}[form]
            ours[tag] = q[tag]
            if form == "range" and tag in DATE_TAGS and draw(st.booleans()):
                ours[tag] = (pd.Timestamp(lo).date(), pd.Timestamp(hi).date())
            kinds[tag] = form
        else:
            other = draw(st.sampled_from(values))
            form = draw(st.sampled_from(["exact", "list"]))
            q[tag] = v if form == "exact" else f"{v}\\{other}"
            ours[tag] = q[tag] if form == "exact" or draw(st.booleans()) else [v, other]
            kinds[tag] = form
    return q, ours, case_sensitive, kinds


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _canonical(x: float) -> str:
    return str(int(x)) if x.is_integer() else str(x)


def documented_differences(tag, kind, raw_frame, file_values, query=None) -> set[str]:
    """Instances on which select and /tools/find may disagree, each for a reason in docs/selection.md."""
    col = raw_frame[tag]
    ids = raw_frame.index.get_level_values("instance")
    out: set[str] = set()
    # 1. An open-low range "-B" on a date/time: Orthanc compares text, so empty values match.
    if kind == "high":
        out |= set(ids[col.isna() | (col.astype(str).str.strip() == "")])
    # 2. Numbers are compared as numbers ("1 " == "1" == "01"); Orthanc compares the text.
    if tag in NUMBER_TAGS:
        text = col.astype("string")
        canonical = pd.to_numeric(text, errors="coerce").astype("Float64").map(
            lambda x: None if pd.isna(x) else str(int(x)) if float(x).is_integer() else str(x))
        out |= set(ids[(text != canonical.astype("string")).fillna(True)])
        # ... and a query written so ("04") matches, in select, every instance of that number
        # ("4" too), where Orthanc's find matches only the same text
        asked = [] if query is None else str(query).split("\\")
        odd = {float(t) for t in asked if _is_float(t) and t.strip() != _canonical(float(t))}
        out |= set(ids[pd.to_numeric(text, errors="coerce").isin(odd)])
    # 3. Dates that are not valid DA (kept raw by Orthanc, missing in a typed frame).
    if tag in DATE_TAGS:
        parsed = pd.to_datetime(col, format="%Y%m%d", errors="coerce")
        out |= set(ids[col.notna() & parsed.isna()])
    # 4. The frame shows the values of the Orthanc resource (its first instance); Orthanc's
    #    find matches each instance's own copy. They differ when files disagree, e.g. every
    #    file without PatientID lands in one patient resource.
    for iid, value in zip(ids, col, strict=True):
        own_text = file_text(file_values.get(iid), tag, empty="")
        mine = None if pd.isna(value) else str(value).strip()
        if own_text != mine:
            out.add(iid)
    # 6. The typed frame drops DICOM's trailing padding (as pydicom does); Orthanc keeps it
    #    in a few files ("O " for PatientSex) and its find compares the padded text.
    #    Times too: a padded "165447.788280 " is past the bound "165447.788280" for Orthanc.
    if not (tag in DATE_TAGS or tag in NUMBER_TAGS):
        text = col.astype("string")
        out |= set(ids[(text != text.str.rstrip(" \x00")).fillna(False)])
    # 5. Orthanc indexes missing identifiers as "": "*" matches instances lacking them.
    if tag in ORTHANC_NORMALIZED:
        out |= set(ids[col.isna()])
    # 7. An empty value is missing in a typed frame (as an absent one); Orthanc's "*" (and any
    #    pattern matching "") matches it.
    out |= set(ids[(col.astype("string").str.rstrip(" \x00") == "").fillna(False)])
    return out


@pytest.fixture(scope="module")
def truth(corpus, corpus_frame, raw_frame, file_values):
    return Truth(corpus.server.client(), corpus_frame, raw_frame, file_values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_select_agrees_with_orthanc_find(truth, data):
    """Orthanc's /tools/find is the truth, up to the differences listed in docs/selection.md."""
    corpus_frame, raw_frame, file_values = truth.frame, truth.raw_frame, truth.file_values
    q, ours, cs, kinds = data.draw(queries(raw_frame), label="query")
    client = truth.client
    expected = orthanc_find(client, q, cs)
    got = instance_set(corpus_frame.orthanc.select(case_sensitive=cs, **ours))
    excused: set[str] = set()
    for tag, kind in kinds.items():
        excused |= documented_differences(tag, kind, raw_frame, file_values, q.get(tag))
    assert (got ^ expected) <= excused, (q, ours, cs, sorted(got - expected)[:3],
                                         sorted(expected - got)[:3])


def test_documented_differences_are_few(corpus_frame, raw_frame, file_values):
    # the excuses above must stay exceptions, or the property test would prove nothing
    for tag in ["Modality", "PatientName", "StudyDate", "SeriesNumber"]:
        diff = documented_differences(tag, "exact", raw_frame, file_values)
        assert len(diff) < len(raw_frame) / 4, (tag, len(diff))


# -- select on the frame ---------------------------------------------------------------------

def test_select_keeps_attrs_and_records_criteria(corpus_frame):
    before = dict(corpus_frame.attrs["orthanc"])
    ct = corpus_frame.orthanc.select(Modality=["CT", "MR"], StudyDate=("20000101", None))
    assert 0 < len(ct) < len(corpus_frame)
    assert ct.attrs["orthanc"]["url"] == before["url"]
    assert ct.attrs["orthanc"]["criteria"][-1]["select"]["Modality"] == {"any": ["CT", "MR"]}
    assert corpus_frame.attrs["orthanc"]["criteria"] == before["criteria"] == []
    assert ct.attrs is not corpus_frame.attrs
    narrower = ct.orthanc.select(Modality="CT")
    assert instance_set(narrower) <= instance_set(ct)
    assert len(narrower.attrs["orthanc"]["criteria"]) == 2
    assert len(ct.attrs["orthanc"]["criteria"]) == 1
    # a recorded selection replays to the same rows
    replay = corpus_frame
    for entry in narrower.attrs["orthanc"]["criteria"]:
        criteria, cs = decode_criteria(entry)
        replay = replay.orthanc.select(**criteria, case_sensitive=cs)
    assert instance_set(replay) == instance_set(narrower)


def test_select_empty_result_is_a_valid_frame(corpus_frame):
    none = corpus_frame.orthanc.select(Modality="NO-SUCH-MODALITY")
    assert len(none) == 0 and list(none.columns) == list(corpus_frame.columns)
    assert none.orthanc.counts == {"patients": 0, "studies": 0, "series": 0, "instances": 0}
    assert len(none.orthanc.select(SliceThickness=(0, 2))) == 0  # no request needed, no error
    assert none.orthanc.unique_tag_values("Modality") == []


def test_select_unknown_name_suggests_keywords(corpus_frame):
    with pytest.raises(UnknownTagError, match="SliceThickness") as info:
        corpus_frame.orthanc.select(SliceThicknes=(0, 2))
    assert isinstance(info.value, KeyError)


def test_select_fetched_tag_end_to_end(corpus, corpus_frame, file_values, counted):
    assert "SliceThickness" not in corpus_frame.columns
    thin = corpus_frame.orthanc.select(SliceThickness=(0, 2))
    truth = {iid for iid, ds in file_values.items()
             if file_value(ds, "SliceThickness") is not None and 0 <= float(ds.SliceThickness) <= 2}
    assert instance_set(thin) == truth and truth
    assert_tags_fetched_in_bulk(counted.paths, corpus_frame)
    assert len(counted.paths) <= 2 * corpus_frame.orthanc.series_count  # + size probes


def test_with_tags_one_request_per_series_and_pydicom_values(corpus, corpus_frame, file_values, counted):
    sub = corpus_frame.orthanc.select(Modality=["CT", "MR"])
    assert sub.orthanc.series_count > 3
    counted.paths.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        out = sub.orthanc.with_tags("SliceThickness", "PixelSpacing", "Rows", "ImageType", "0018,0088")
    assert_tags_fetched_in_bulk(counted.paths, sub)
    assert len(out) == len(sub) and out.index.equals(sub.index)
    seen_missing = 0
    for iid, row in zip(out.index.get_level_values("instance"), out.itertuples(index=False), strict=True):
        ds = file_values[iid]
        r = row._asdict()
        for kw, col in [("SliceThickness", "SliceThickness"), ("Rows", "Rows"),
                        ("SpacingBetweenSlices", "SpacingBetweenSlices")]:
            value = file_value(ds, kw)
            if value is None:
                assert pd.isna(r[col]), (iid, kw)
                seen_missing += 1
            else:
                assert r[col] == pytest.approx(float(value)), (iid, kw)
        ps = file_value(ds, "PixelSpacing")
        if ps is None:
            assert pd.isna(r["PixelSpacing_0"])
        else:
            assert not pd.isna(r["PixelSpacing_1"]) and [r["PixelSpacing_0"], r["PixelSpacing_1"]] == pytest.approx([float(x) for x in ps]), (iid, ps, r["PixelSpacing_0"], r["PixelSpacing_1"], corpus.stored[iid].name)
        if file_text(ds, "ImageType") is None:
            assert pd.isna(r["ImageType"]) or not r["ImageType"].strip("\\ ")
        else:
            assert r["ImageType"] == file_text(ds, "ImageType")
    assert seen_missing > 0  # the selection holds instances lacking some of the tags
    assert out["SliceThickness"].dtype == "Float64" and out["Rows"].dtype == "Int32"
    # tags that are already columns cost nothing
    counted.paths.clear()
    again = out.orthanc.with_tags("SliceThickness", "Modality", "0018,0050")
    assert counted.paths == [] and again.shape == out.shape


def test_with_tags_long_values_and_sequences(orthanc_factory):
    server = orthanc_factory()
    long_text = "long comment " * 60  # > 256 bytes: Orthanc sends null unless asked in full
    slices = make_series(3, 8, 8, seed="long", extra={"ImageComments": long_text,
                                                     "AdditionalPatientHistory": "x" * 300})
    del slices[2].ImageComments
    from pydicom.dataset import Dataset
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-A0100", "SRT", "Brain"
    slices[0].AnatomicRegionSequence = [item]
    slices[0].add_new(0x00191010, "LO", "private value")
    slices[0].add_new(0x00190010, "LO", "ACME")
    server.upload_bytes([to_bytes(d) for d in slices])
    df = op.read_orthanc(server.url)
    out = df.orthanc.with_tags("AdditionalPatientHistory", "AnatomicRegionSequence", "0019,1010")
    by_uid = dict(zip(out["SOPInstanceUID"], out.itertuples(index=False), strict=True))
    first = by_uid[slices[0].SOPInstanceUID]._asdict()
    assert first["AdditionalPatientHistory"] == "x" * 300
    assert first["AnatomicRegionSequence"] == [{"CodeValue": "T-A0100", "CodingSchemeDesignator": "SRT",
                                                "CodeMeaning": "Brain"}]
    assert out["0019,1010"].dropna().tolist() == ["private value"]
    assert pd.isna(by_uid[slices[1].SOPInstanceUID]._asdict()["AnatomicRegionSequence"])
    history = df.orthanc.tag_values("AdditionalPatientHistory")
    assert history.tolist() == ["x" * 300] * 3
    private = df.orthanc.select({"(0019,1010)": "PRIVATE*"})  # fetched, case-insensitive
    assert private["SOPInstanceUID"].tolist() == [slices[0].SOPInstanceUID]
    # the dict and the keywords combine; case_sensitive stays a keyword
    both = df.orthanc.select({"(0019,1010)": "private*"}, AdditionalPatientHistory="x*")
    assert both.index.equals(private.index)
    assert df.orthanc.select({"(0019,1010)": "PRIVATE*"}, case_sensitive=True).empty
    with pytest.raises(TypeError, match="case_sensitive=True"):
        df.orthanc.select(True, Modality="ct")


def test_tag_values_unique_tag_values_tags_sort_by(corpus_frame, file_values):
    mods = corpus_frame.orthanc.unique_tag_values("Modality")
    assert mods == sorted(set(corpus_frame["Modality"].dropna().astype(str)))
    ipp = corpus_frame.orthanc.tag_values("ImagePositionPatient")
    assert ipp.index.equals(corpus_frame.index)
    one = ipp.dropna().iloc[0]
    assert isinstance(one, tuple) and len(one) == 3
    thick = corpus_frame.orthanc.tag_values("SliceThickness")
    assert thick.index.equals(corpus_frame.index) and thick.notna().sum() > 5
    for gone in ("values", "unique"):  # pandas names with another meaning are not reused
        assert not hasattr(corpus_frame.orthanc, gone)
    names = corpus_frame.orthanc.tags()
    assert {"PatientName", "SliceThickness", "PixelSpacing", "Rows"} <= set(names)
    assert all(isinstance(n, str) for n in names)
    ordered = corpus_frame.orthanc.sort_by("SliceThickness")
    vals = ordered["SliceThickness"]
    present = vals.dropna().to_numpy(dtype=float)
    assert np.all(np.diff(present) >= 0)
    assert vals.isna().sum() == thick.isna().sum() and vals.iloc[len(present):].isna().all()
    desc = corpus_frame.orthanc.sort_by("StudyDate", ascending=False)["StudyDate"].dropna()
    assert desc.is_monotonic_decreasing
    assert sorted(instance_set(ordered)) == sorted(instance_set(corpus_frame))
