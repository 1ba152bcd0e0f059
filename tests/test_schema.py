"""index.py: Orthanc JSON -> typed frame, on plain JSON (no server)."""

from __future__ import annotations

import datetime as dt
import decimal
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orthanc_pandas._frame.schema import (
    LEVELS,
    InconsistentIndexError,
    LevelTable,
    build_frame,
    empty_frame,
    parse_ages,
    parse_dates,
    parse_numbers,
    parse_vectors,
    tag_dtypes,
    vector_columns,
)
from orthanc_pandas.errors import ParseWarning


def archive(instances: list[dict], series_tags=None, study_tags=None, patient_tags=None) -> dict:
    """Minimal four-level JSON: one patient, one study, one series holding ``instances``."""
    pat = {"ID": "p1", "MainDicomTags": patient_tags or {"PatientID": "P1", "PatientName": "Doe^J"}}
    stu = {"ID": "st1", "ParentPatient": "p1", "MainDicomTags": study_tags or {"StudyDate": "20200102"}}
    ser = {"ID": "se1", "ParentStudy": "st1", "Status": "Unknown",
           "MainDicomTags": series_tags or {"Modality": "CT", "SeriesNumber": "3"}}
    inst = [{"ID": f"i{k}", "ParentSeries": "se1", "FileSize": 100 + k, "IndexInSeries": k + 1,
             "MainDicomTags": tags} for k, tags in enumerate(instances)]
    return {"patient": [pat], "study": [stu], "series": [ser], "instance": inst}


def frame(json_levels: dict, **kw) -> pd.DataFrame:
    return build_frame({lvl: LevelTable.from_resources(lvl, json_levels[lvl]) for lvl in LEVELS}, **kw)


def test_one_row_per_instance_with_parent_values():
    df = frame(archive([{"InstanceNumber": "2", "SOPInstanceUID": "1.2"},
                        {"InstanceNumber": "1", "SOPInstanceUID": "1.1"}]))
    assert len(df) == 2
    assert df.index.names == ["patient", "study", "series", "instance"]
    assert list(df["InstanceNumber"]) == [1, 2]  # sorted by InstanceNumber within the series
    assert (df["Modality"] == "CT").all() and (df["PatientName"] == "Doe^J").all()
    assert df["StudyDate"].iloc[0] == pd.Timestamp("2020-01-02")
    assert list(df["orthanc_file_size"]) == [101, 100]


def test_vectors_split_into_float_columns_and_series_orientation_fills_instances():
    df = frame(archive(
        [{"ImagePositionPatient": "1\\2.5\\-3e1", "SOPInstanceUID": "1"},
         {"ImagePositionPatient": "4\\5\\6", "ImageOrientationPatient": "0\\1\\0\\0\\0\\-1", "SOPInstanceUID": "2"}],
        series_tags={"ImageOrientationPatient": "1\\0\\0\\0\\1\\0", "Modality": "MR"}))
    assert vector_columns("ImagePositionPatient", df.columns) == [f"ImagePositionPatient_{i}" for i in range(3)]
    first = df.loc[df["SOPInstanceUID"] == "1"].iloc[0]
    second = df.loc[df["SOPInstanceUID"] == "2"].iloc[0]
    assert [first[f"ImagePositionPatient_{i}"] for i in range(3)] == [1.0, 2.5, -30.0]
    assert [first[f"ImageOrientationPatient_{i}"] for i in range(6)] == [1, 0, 0, 0, 1, 0]
    assert [second[f"ImageOrientationPatient_{i}"] for i in range(6)] == [0, 1, 0, 0, 0, -1]
    assert "ImageOrientationPatient" not in df.columns


def test_unparsable_values_warn_with_column_and_count():
    with pytest.warns(ParseWarning, match=r"^2 values did not parse \(now missing\): InstanceNumber "
                      r"'x' and 1 more, not an integer\. typed=False keeps the stored text\.$") as caught:
        df = frame(archive([{"InstanceNumber": "x"}, {"InstanceNumber": "1.5"}, {"InstanceNumber": "7"}]))
    assert caught[0].filename == __file__  # the user's line, not the parser's
    assert caught[0].message.columns == {"InstanceNumber": 2}
    assert sorted(df["InstanceNumber"].dropna()) == [7]
    raw = frame(archive([{"InstanceNumber": "x"}, {"InstanceNumber": "1.5"}]), typed=False)
    assert sorted(raw["InstanceNumber"]) == ["1.5", "x"]


def test_one_short_warning_for_a_frame_whatever_did_not_parse():
    # several columns at several levels: one warning, one line, each column with its count and
    # an example; the fourth column and beyond are named without one, so the line stays short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame(archive(
            [{"InstanceNumber": "x", "InstanceCreationDate": "2020-01-01",
              "ImagePositionPatient": "1\\2", "SOPInstanceUID": "1"},
             {"InstanceNumber": "2", "NumberOfFrames": "1A", "SOPInstanceUID": "2"}],
            patient_tags={"PatientBirthDate": "11111111111111111111111111111111"},
            series_tags={"SeriesNumber": "one"}))
    assert len(caught) == 1 and caught[0].category is ParseWarning
    message = str(caught[0].message)
    assert "\n" not in message and len(message) < 400, message
    assert caught[0].message.columns == {
        "PatientBirthDate": 1, "SeriesNumber": 1, "InstanceCreationDate": 1, "InstanceNumber": 1,
        "NumberOfFrames": 1, "ImagePositionPatient": 1}
    assert message.startswith("6 values did not parse (now missing): PatientBirthDate "
                              "'11111111111111111111111\u2026', not a date YYYYMMDD; SeriesNumber 'one', "
                              "not an integer; InstanceCreationDate '2020-01-01', not a date YYYYMMDD; "
                              "also "), message
    assert message.endswith(". typed=False keeps the stored text."), message


def test_empty_values_are_missing_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = frame(archive([{"InstanceNumber": ""}], study_tags={"StudyDate": ""}))
    assert df["InstanceNumber"].isna().all() and df["StudyDate"].isna().all()


def test_orphans_mean_the_server_changed():
    levels = archive([{"SOPInstanceUID": "1"}])
    levels["instance"][0]["ParentSeries"] = "gone"
    with pytest.raises(InconsistentIndexError):
        frame(levels)


def test_empty_frame_has_the_whole_schema():
    df = empty_frame()
    assert len(df) == 0
    assert {"PatientName", "StudyDate", "Modality", "SOPInstanceUID", "ImagePositionPatient_2"} <= set(df.columns)
    # no resource has any tag: every column has the dtype its tag's VR gives it anyway
    expected = {"PatientName": "category", "PatientBirthDate": "datetime64[us]",
                "StudyDate": "datetime64[us]", "SeriesNumber": "Int32", "Modality": "category",
                "SOPInstanceUID": "string", "InstanceNumber": "Int32",
                "ImagePositionPatient_2": "Float64", "ImageOrientationPatient_5": "Float64",
                "orthanc_file_size": "Int64", "orthanc_series_status": "category",
                "orthanc_series_expected_instances": "Int32", "orthanc_labels": "category"}
    assert {c: str(df[c].dtype) for c in expected} == expected
    assert "null[pyarrow]" not in set(map(str, df.dtypes))
    assert "ImagePositionPatient_3" not in df.columns  # VM 3: exactly three components


def test_dtypes_do_not_depend_on_the_values():
    """The same tag has the same dtype whether some resource has it, has it empty, or none has."""
    present = archive([{"SOPInstanceUID": "1", "InstanceNumber": "3", "ImageComments": "hi",
                        "ImagePositionPatient": "1\\2\\3"}],
                      series_tags={"SeriesDate": "20200101", "SeriesNumber": "2", "Modality": "CT"},
                      patient_tags={"PatientSex": "F"})
    absent = archive([{"SOPInstanceUID": "1"}], series_tags={}, patient_tags={})
    empty = archive([{"SOPInstanceUID": "1", "InstanceNumber": "", "ImageComments": "",
                      "ImagePositionPatient": ""}],
                    series_tags={"SeriesDate": "", "SeriesNumber": "", "Modality": ""},
                    patient_tags={"PatientSex": ""})
    frames = [frame(present), frame(absent), frame(empty)]
    dtypes = [f.dtypes.astype(str).to_dict() for f in frames]
    assert dtypes[0] == dtypes[1] == dtypes[2]
    assert dtypes[0]["SeriesDate"] == "datetime64[us]" and dtypes[0]["PatientSex"] == "category"
    # the missing frames concatenate with the present one without changing a non-text dtype
    both = pd.concat(frames)
    for col in ("SeriesDate", "SeriesNumber", "InstanceNumber", "ImagePositionPatient_0",
                "ImageComments", "orthanc_file_size"):
        assert both[col].dtype == frames[0][col].dtype, col


def test_empty_text_is_missing_like_absent_text():
    levels = archive([{"SOPInstanceUID": "1", "ImageComments": ""},
                      {"SOPInstanceUID": "2", "ImageComments": "x  "},
                      {"SOPInstanceUID": "3"}], patient_tags={"PatientSex": " "})
    df = frame(levels)
    assert df["ImageComments"].isna().tolist() == [True, False, True]
    # no value: the one placeholder category "" (plain pd.read_parquet drops an empty list)
    assert df["PatientSex"].isna().all() and list(df["PatientSex"].cat.categories) == [""]
    raw = frame(levels, typed=False)  # raw strings stay as Orthanc sent them
    assert raw["ImageComments"].fillna("<absent>").tolist() == ["", "x  ", "<absent>"]


def test_all_missing_columns_survive_plain_parquet(tmp_path):
    df = frame(archive([{"SOPInstanceUID": "1"}], series_tags={}, patient_tags={}))
    df.to_parquet(tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "m.parquet"), df)
    # zero rows: parquet keeps no category of a zero-row categorical (pyarrow writes no
    # dictionary), so only the categories are lost; every dtype else comes back exactly
    empty = empty_frame()
    empty.to_parquet(tmp_path / "e.parquet")
    back = pd.read_parquet(tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(back, empty, check_categorical=False)
    assert (back.dtypes.astype(str) == empty.dtypes.astype(str)).all()


def test_age_is_years():
    ages = ["063Y", "006M", "010W", "003D", ""]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = parse_ages(pd.Series(ages, dtype="string[pyarrow]"))
    assert out.dtype == "Float64"
    expected = [63, 0.5, 10 * 7 / 365.25, 3 / 365.25]
    assert np.allclose(out.iloc[:4].astype(float), expected) and pd.isna(out.iloc[4])
    with pytest.warns(ParseWarning, match="1 value"):
        assert pd.isna(parse_ages(pd.Series(["63"])).iloc[0])


def test_vector_with_too_many_components_is_missing():
    with pytest.warns(ParseWarning, match="1 value"):
        cols = parse_vectors(pd.Series(["1\\2\\3\\4", "1\\2\\3"]), "ImagePositionPatient", 3)
    assert list(cols) == ["ImagePositionPatient_0", "ImagePositionPatient_1", "ImagePositionPatient_2"]
    assert cols["ImagePositionPatient_0"].isna().tolist() == [True, False]


def test_unknown_extra_main_tags_are_kept():
    df = frame(archive([{"SOPInstanceUID": "1", "SliceThickness": "2.5"}]))
    assert df["SliceThickness"].iloc[0] == 2.5


def test_parse_helpers():
    s = pd.Series(["20200131", "2020013", None, "", "20201332"], dtype="string[pyarrow]")
    with pytest.warns(ParseWarning, match="2 value"):
        out = parse_dates(s)
    assert out.iloc[0] == pd.Timestamp("2020-01-31") and out.iloc[1:].isna().all()
    n = parse_numbers(pd.Series([" 12 ", "-3", "+4"], dtype="string[pyarrow]"), integer=True)
    assert list(n) == [12, -3, 4] and n.dtype == "Int64"
    n = parse_numbers(pd.Series(["2147483647", "-2147483648"]), integer=pd.Int32Dtype())
    assert list(n) == [2**31 - 1, -2**31] and n.dtype == "Int32"


def test_integers_beyond_their_dtype_are_missing_not_wrapped():
    """IS fits Int32 by the standard; a value beyond it is no valid IS (a cast would wrap it)."""
    with pytest.warns(ParseWarning, match="2 value.*InstanceNumber .2147483648.*not an integer"):
        n = parse_numbers(pd.Series(["2147483648", "-2147483649", "7"]), "InstanceNumber",
                          integer=pd.Int32Dtype())
    assert n.isna().tolist() == [True, True, False] and n.dtype == "Int32"
    assert tag_dtypes("Rows", "instance") == {"Rows": pd.Int32Dtype()}  # US: 0..65535
    assert tag_dtypes("NumberOfWaveformSamples", "series") == {"NumberOfWaveformSamples": pd.Int64Dtype()}  # UL


# -- fuzzing: no crash, no silently lost value -------------------------------------------
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
maybe = st.one_of(st.none(), text, st.sampled_from(["", " ", "20200101", "1\\2\\3", "1e400", "nan", "¥"]))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({}, optional={
    "InstanceNumber": maybe, "InstanceCreationDate": maybe, "ImagePositionPatient": maybe,
    "SOPInstanceUID": maybe, "ImageComments": maybe}), min_size=1, max_size=8),
    st.fixed_dictionaries({}, optional={"PatientName": maybe, "PatientBirthDate": maybe}))
def test_fuzz_no_crash_no_silent_loss(instances, patient_tags):
    levels = archive(instances, patient_tags=patient_tags or {"PatientID": "x"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = frame(levels)
    raw = frame(levels, typed=False)
    assert len(df) == len(instances) and set(df.index) == set(raw.index)
    raw = raw.reindex(df.index)  # typed and raw frames may sort differently (NA sorts last)
    warned = {col for w in caught if issubclass(w.category, ParseWarning) for col in w.message.columns}
    for col in ("InstanceNumber", "InstanceCreationDate", "PatientBirthDate"):
        lost = raw[col].notna() & (raw[col].str.strip().str.rstrip("\x00") != "") & df[col].isna()
        assert not lost.any() or col in warned, col
    ipp = vector_columns("ImagePositionPatient", df.columns)
    lost = raw["ImagePositionPatient"].notna() & (raw["ImagePositionPatient"].str.strip() != "") \
        & df[ipp].isna().any(axis=1)
    assert not lost.any() or "ImagePositionPatient" in warned
    # text is kept (only DICOM padding removed)
    for col in ("SOPInstanceUID", "ImageComments", "PatientName"):
        both = raw[col].notna()
        assert (df[col][both].astype(str) == raw[col][both].str.rstrip(" \x00")).all()


def test_sort_order_is_a_stable_lexicographic_sort_with_na_last(corpus_frame):
    """The fast lexsort gives exactly pandas' sort over the documented keys, NA last."""
    from orthanc_pandas._frame.schema import INDEX_NAMES, SORT_KEYS, sort_order

    shuffled = corpus_frame.sample(frac=1, random_state=7)
    keys = pd.DataFrame({k: (shuffled[k].astype("string") if isinstance(shuffled[k].dtype, pd.CategoricalDtype)
                             else shuffled[k]).array for k in SORT_KEYS}, index=pd.RangeIndex(len(shuffled)))
    for i, name in enumerate(INDEX_NAMES):
        keys[f"id{i}"] = shuffled.index.get_level_values(name).to_numpy(dtype=object)
    expected = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index.to_numpy()
    assert np.array_equal(sort_order(shuffled), expected)
    assert shuffled.take(sort_order(shuffled)).index.equals(corpus_frame.index)


# -- fuzzing every level: odd characters, character sets, malformed numbers and dates ------
ODD = st.sampled_from([
    "", " ", "\x00", "Müller^Jürgen", "山田^太郎=ヤマダ^タロウ=やまだ^たろう", "Ελληνικά", "עברית",
    "😀", "a\\b", "\\", "=", "^^^^", "  padded  ", "tab\there", "new\nline", "%s%d{}", "<b>x</b>",
    "1e400", "-0", "+7", " 12 ", "0x10", "1,5", "١٢", "nan", "inf", "12.", ".5", "1 2",
    "20200230", "20201301", "2020-01-01", "00000000", "99991231", "19000101", "2020", "202001011",
])
VALUE = st.one_of(st.none(), ODD, st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                                          max_size=10))
TEXT_TAGS = {"patient": ["PatientName", "PatientID"], "study": ["StudyDescription"],
             "series": ["SeriesDescription", "Modality"], "instance": ["SOPInstanceUID", "ImageComments"]}
INT_TAGS = {"study": [], "series": ["SeriesNumber"], "instance": ["InstanceNumber", "AcquisitionNumber"]}
DATE_TAGS = {"patient": ["PatientBirthDate"], "study": ["StudyDate"], "series": ["SeriesDate"],
             "instance": ["InstanceCreationDate"]}


def _tags(level):
    keys = TEXT_TAGS.get(level, []) + INT_TAGS.get(level, []) + DATE_TAGS.get(level, [])
    return st.fixed_dictionaries({}, optional={k: VALUE for k in keys}).map(
        lambda d: {k: v for k, v in d.items() if v is not None})


@st.composite
def archives(draw):
    """Several patients/studies/series/instances, each level with fuzzed main tags."""
    levels = {lvl: [] for lvl in LEVELS}
    for p in range(draw(st.integers(1, 2))):
        levels["patient"].append({"ID": f"p{p}", "MainDicomTags": draw(_tags("patient"))})
        for s in range(draw(st.integers(1, 2))):
            sid = f"p{p}s{s}"
            levels["study"].append({"ID": sid, "ParentPatient": f"p{p}",
                                    "MainDicomTags": draw(_tags("study"))})
            for r in range(draw(st.integers(1, 2))):
                rid = f"{sid}r{r}"
                levels["series"].append({"ID": rid, "ParentStudy": sid, "Status": "Unknown",
                                         "MainDicomTags": draw(_tags("series"))})
                for i in range(draw(st.integers(1, 3))):
                    levels["instance"].append({"ID": f"{rid}i{i}", "ParentSeries": rid, "FileSize": 1,
                                               "MainDicomTags": draw(_tags("instance"))})
    return levels


def _python_int(text: str):
    """The integer a text denotes, by Python's Decimal (exact), or None."""
    try:
        d = decimal.Decimal(text.strip(" \x00"))
    except decimal.InvalidOperation:
        return None
    return int(d) if d.is_finite() and d == d.to_integral_value() else None


def _python_date(text: str):
    t = text.strip(" \x00")
    try:
        return pd.Timestamp(dt.datetime.strptime(t, "%Y%m%d")) if re.fullmatch(r"[0-9]{8}", t) else None
    except ValueError:
        return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(archives())
def test_fuzz_every_level_against_python_parsing(levels):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = frame(levels)
    raw = frame(levels, typed=False).reindex(df.index)
    assert len(df) == len(levels["instance"]) and df.index.is_unique
    assert {w.category for w in caught} <= {ParseWarning}
    assert len(caught) <= 1  # one warning for the frame, whatever did not parse
    warned = {col for w in caught for col in w.message.columns}
    # every row carries the tags of its own parents (the JSON is the truth)
    by_id = {lvl: {r["ID"]: r["MainDicomTags"] for r in levels[lvl]} for lvl in LEVELS}
    for pos, ids in enumerate(df.index):
        for lvl, rid in zip(LEVELS, ids, strict=True):
            for kw, value in by_id[lvl][rid].items():
                got, text = df[kw].iloc[pos], raw[kw].iloc[pos]
                if kw in TEXT_TAGS.get(lvl, []):
                    # text is kept, only DICOM padding (trailing spaces / NULs) removed;
                    # nothing left is missing, as an absent tag is
                    if value.rstrip(" \x00") == "":
                        assert pd.isna(got), (kw, value, got)
                    else:
                        assert not pd.isna(got) and str(got) == value.rstrip(" \x00"), (kw, value, got)
                    continue
                assert text == value  # raw frames keep the server's strings exactly
                want = _python_int(value) if kw in INT_TAGS.get(lvl, []) else _python_date(value)
                if pd.isna(got):  # missing: only for empty values, or said in a warning
                    blank = value.replace("\x00", " ").strip() == ""  # whitespace only
                    assert blank or kw in warned, (kw, value)
                else:  # a parsed value is exactly what Python makes of the text
                    assert got == want, (kw, value, got, want)
