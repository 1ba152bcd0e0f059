"""matching.py: DICOM criteria -> masks on every column kind, and their JSON record (pure)."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orthanc_pandas._frame.matching import (
    decode_criteria,
    decode_criterion,
    encode_criteria,
    encode_criterion,
    mask,
    wildcard_regex,
)
from orthanc_pandas.errors import SelectionError

NAMES = ["DOE^JOHN", "Doe^Jane", "Roe^Richard", None, "", "d?e*"]


def text_columns(values):
    """The same values as every text dtype a frame can hold."""
    return [pd.Series(values, dtype="string[pyarrow]"), pd.Series(values, dtype="category"),
            pd.Series(values, dtype=object)]


@pytest.mark.parametrize("col", text_columns(NAMES), ids=["string", "category", "object"])
def test_text_forms(col):
    assert mask(col, "doe^john", "PN").tolist() == [True, False, False, False, False, False]
    assert mask(col, "doe^john", "PN", case_sensitive=True).tolist() == [False] * 6
    assert mask(col, "Doe*", "PN").tolist() == [True, True, False, False, False, False]
    assert mask(col, "Doe*", "PN", case_sensitive=True).tolist() == [False, True, False, False, False, False]
    assert mask(col, "?oe^*", "PN").tolist() == [True, True, True, False, False, False]
    assert mask(col, "*", "PN").tolist() == [True, True, True, False, True, True]  # present values
    assert mask(col, "", "PN").all()  # universal matching
    assert mask(col, ["Roe^Richard", "doe^jane"], "PN").tolist() == [False, True, True, False, False, False]
    assert mask(col, "Roe^Richard\\doe^jane", "PN").tolist() == mask(col, ["Roe^Richard", "doe^jane"], "PN").tolist()
    assert mask(col, None, "PN").tolist() == [False, False, False, True, False, False]
    assert mask(col, lambda c: c.str.len() > 8, "PN").tolist() == [False, False, True, False, False, False]


def test_regex_characters_are_literal():
    col = pd.Series(["a.b", "axb", "(x)", "a+"], dtype="string")
    assert mask(col, "a.b").tolist() == [True, False, False, False]
    assert mask(col, "(*)").tolist() == [False, False, True, False]
    assert mask(col, "a+").tolist() == [False, False, False, True]


@given(st.text(alphabet="ab*?.^\\[", max_size=6), st.text(alphabet="ab.^[", max_size=6))
def test_wildcards_agree_with_fnmatch_semantics(pattern, value):
    pattern = pattern.replace("\\", "")
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    expected = re.fullmatch(rx, value, flags=re.S) is not None
    got = mask(pd.Series([value], dtype="string"), pattern or "x", "LO", case_sensitive=True)[0]
    if pattern:
        assert got == expected
    assert re.fullmatch(wildcard_regex(pattern), value) is not None or not expected


DATES = pd.Series(pd.to_datetime(["2019-06-01", "2020-01-01", "2020-12-31", None, "2021-03-04"]))


def test_dates():
    assert mask(DATES, "20200101-20201231", "DA").tolist() == [False, True, True, False, False]
    assert mask(DATES, "20200101-", "DA").tolist() == [False, True, True, False, True]
    assert mask(DATES, "-20200101", "DA").tolist() == [True, True, False, False, False]
    assert mask(DATES, "20201231", "DA").tolist() == [False, False, True, False, False]
    assert mask(DATES, dt.date(2020, 12, 31), "DA").tolist() == [False, False, True, False, False]
    assert mask(DATES, dt.datetime(2020, 12, 31, 15, 0), "DA").tolist() == [False, False, True, False, False]
    assert mask(DATES, (dt.date(2020, 1, 1), None), "DA").tolist() == [False, True, True, False, True]
    assert mask(DATES, (None, "20200101"), "DA").tolist() == [True, True, False, False, False]
    assert mask(DATES, [dt.date(2019, 6, 1), "20210304"], "DA").tolist() == [True, False, False, False, True]
    assert mask(DATES, "2020*", "DA").tolist() == [False, True, True, False, False]
    with pytest.raises(SelectionError, match="YYYYMMDD"):
        mask(DATES, "2020-13-45", "DA")


def test_iso_days_as_dates_bounds_and_range_ends():
    # the truth: pandas' own comparison of the column with the same days
    def between(lo, hi):
        ok = DATES.notna()
        if lo:
            ok &= DATES >= pd.Timestamp(lo)
        if hi:
            ok &= DATES <= pd.Timestamp(hi)
        return ok.fillna(False).tolist()

    assert mask(DATES, ("2020-01-01", "2020-12-31"), "DA").tolist() == between("2020-01-01", "2020-12-31")
    assert mask(DATES, ("2020-01-01", None), "DA").tolist() == between("2020-01-01", None)
    assert mask(DATES, "2020-01-01-2020-12-31", "DA").tolist() == between("2020-01-01", "2020-12-31")
    assert mask(DATES, "2020-01-01-", "DA").tolist() == between("2020-01-01", None)
    assert mask(DATES, "-2020-01-01", "DA").tolist() == between(None, "2020-01-01")
    assert mask(DATES, "2020-01-01-20201231", "DA").tolist() == between("2020-01-01", "2020-12-31")
    assert mask(DATES, "2020-12-31", "DA").tolist() == (DATES == pd.Timestamp("2020-12-31")).fillna(False).tolist()
    assert mask(DATES, "2020-12-31").tolist() == mask(DATES, "20201231").tolist()  # by dtype alone
    with pytest.raises(SelectionError, match="YYYY-MM-DD"):
        mask(DATES, ("2020-02-30", None), "DA")


def test_ages_in_years():
    from orthanc_pandas._frame.schema import parse_ages

    ages = parse_ages(pd.Series(["063Y", "070Y", "006M", "059Y", None]))
    assert mask(ages, (60, 70), "AS").tolist() == [True, True, False, False, False]
    assert mask(ages, ("060Y", "070Y"), "AS").tolist() == [True, True, False, False, False]
    assert mask(ages, "006M", "AS").tolist() == [False, False, True, False, False]
    assert mask(ages, 0.5, "AS").tolist() == [False, False, True, False, False]
    assert mask(ages, None, "AS").tolist() == [False, False, False, False, True]


def test_times_and_datetimes_compare_as_dicom_text():
    tm = pd.Series(["080000", "120000.5", "235959", None], dtype="category")
    assert mask(tm, "-120000", "TM").tolist() == [True, False, False, False]
    assert mask(tm, "100000-", "TM").tolist() == [False, True, True, False]
    assert mask(tm, (dt.time(8), dt.time(12, 0, 0, 500000)), "TM").tolist() == [True, True, False, False]
    dtc = pd.Series(["20200101120000", "20210101", None], dtype="string")
    assert mask(dtc, (dt.datetime(2020, 1, 1), None), "DT").tolist() == [True, True, False]


NUMS = [0.5, 2.0, 5.0, None]


@pytest.mark.parametrize("col", [pd.Series(NUMS, dtype="Float64"),
                                 pd.Series(["0.5", "2", " 5.0", None], dtype="string"),
                                 pd.Series(["0.5", "2", " 5.0", None], dtype="category")],
                         ids=["Float64", "string", "category"])
def test_numbers(col):
    assert mask(col, (0, 2), "DS").tolist() == [True, True, False, False]
    assert mask(col, (2, None), "DS").tolist() == [False, True, True, False]
    assert mask(col, 2, "DS").tolist() == [False, True, False, False]
    assert mask(col, [5, 0.5], "DS").tolist() == [True, False, True, False]


def test_integers_and_text_numbers():
    col = pd.Series([1, 10, 11, None], dtype="Int64")
    assert mask(col, "1", "IS").tolist() == [True, False, False, False]
    assert mask(col, "1*", "IS").tolist() == [True, True, True, False]
    assert mask(col, "1\\11", "IS").tolist() == [True, False, True, False]
    assert mask(col, (2, 10), "IS").tolist() == [False, True, False, False]
    assert mask(col, [1, 2, 3, 11], "IS").tolist() == [True, False, True, False]


def test_vectors():
    ipp = pd.DataFrame({"ImagePositionPatient_0": [0.0, 0.0, None],
                        "ImagePositionPatient_1": [1.0, 1.0, None],
                        "ImagePositionPatient_2": [2.5, 5.0, None]}, dtype="Float64")
    assert mask(ipp, "0\\1\\2.5").tolist() == [True, False, False]
    assert mask(ipp, (0, 1, 5)).tolist() == [False, True, False]
    assert mask(ipp, [(0, 1, 5), "0\\1\\2.5"]).tolist() == [True, True, False]
    assert mask(ipp, None).tolist() == [False, False, True]
    assert mask(ipp, lambda f: f.iloc[:, 2] > 3).tolist() == [False, True, False]
    with pytest.raises(SelectionError, match="components"):
        mask(ipp, (0, 1))  # a 2-tuple on a 3-vector: neither a vector nor a range of it


def test_sequences_only_take_functions():
    seq = pd.Series([[{"CodeValue": "1"}], None], dtype=object)
    assert mask(seq, lambda s: s.map(lambda v: v is not None)).tolist() == [True, False]
    with pytest.raises(SelectionError, match="sequences"):
        mask(seq, "1")


def test_bad_callables_and_criteria_are_refused():
    col = pd.Series([1, 2], dtype="Int64")
    with pytest.raises(SelectionError, match="2 rows"):
        mask(col, lambda c: [True])
    with pytest.raises(SelectionError, match="booleans"):
        mask(col, lambda c: c * 2)
    with pytest.raises(SelectionError, match="unsupported"):
        mask(col, object())
    with pytest.raises(SelectionError, match="not a number"):
        mask(col, "abc", "IS")


def test_empty_columns():
    for col in [pd.Series([], dtype="string"), pd.Series([], dtype="category"),
                pd.Series([], dtype="Float64"), pd.Series([], dtype="datetime64[us]")]:
        assert mask(col, "1*", "LO").shape == (0,)
        assert mask(col, None).shape == (0,)


CRITERIA = st.recursive(
    st.one_of(st.none(), st.text(max_size=8), st.integers(-10**6, 10**6),
              st.floats(allow_nan=False, allow_infinity=True), st.dates(),
              st.datetimes(), st.times()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.tuples(inner, inner, inner)),
    max_leaves=6)


@given(CRITERIA)
def test_criteria_round_trip_through_json(criterion):
    recorded = json.loads(json.dumps(encode_criterion(criterion)))
    assert decode_criterion(recorded) == criterion


def test_criteria_entries_and_callables():
    entry = encode_criteria({"Modality": ["CT", "MR"], "StudyDate": (dt.date(2020, 1, 1), None),
                             "InstanceNumber": lambda c: c > 1}, case_sensitive=True)
    stored = json.loads(json.dumps(entry))
    assert stored["case_sensitive"] is True
    assert stored["select"]["InstanceNumber"]["callable"].startswith("<function")
    with pytest.raises(SelectionError, match="cannot be re-applied"):
        decode_criteria(stored)
    criteria, cs = decode_criteria(stored, callables="skip")
    assert criteria == {"Modality": ["CT", "MR"], "StudyDate": (dt.date(2020, 1, 1), None)} and cs
    col = pd.Series(["CT", "MR", "US"], dtype="category")
    assert np.array_equal(mask(col, criteria["Modality"]), mask(col, ["CT", "MR"]))


# -- fuzzing: no crash, no silently lost value -------------------------------------------
ODD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\\"),
                   max_size=8) | st.sampled_from(["Müller^Jürgen", "山田^太郎=ヤマダ^タロウ", "a*b", "?",
                                                  "*", "", " ", "\x00", "(x)", "[a]", "$^.|+"])
DTYPES = ["string[pyarrow]", "category", "object"]


@given(st.lists(st.one_of(st.none(), ODD_TEXT), min_size=1, max_size=8), st.sampled_from(DTYPES),
       st.booleans())
def test_fuzz_text_every_value_finds_its_rows(values, dtype, case_sensitive):
    col = pd.Series(values, dtype=dtype)
    present = col.notna().to_numpy()
    assert (mask(col, "*", "LO") == present).all()  # "*" = every present value
    assert (mask(col, None, "LO") == ~present).all()  # None = every missing one
    assert mask(col, "", "LO").all()
    for v in {v for v in values if v is not None}:
        rows = np.array([x == v for x in values])
        got = mask(col, v, "LO", case_sensitive=case_sensitive)
        assert got.dtype == bool and got.shape == (len(values),)
        assert got[rows].all(), (v, values)  # a value always matches itself (wildcards too)
        if case_sensitive and v and not any(c in v for c in "*?"):  # "" matches every row
            assert (got == rows).all()  # and only itself
    wanted = [v for v in values if v]
    if wanted:  # a list of the present values selects (at least) their rows
        in_list = np.array([x in wanted for x in values])
        got = mask(col, wanted, "LO", case_sensitive=True)
        assert got[in_list].all()
        if not any(c in v for v in wanted for c in "*?"):
            assert (got == in_list).all()


@given(st.lists(st.one_of(st.none(), st.floats(-1e12, 1e12, allow_nan=False)), min_size=1, max_size=8),
       st.sampled_from(["Float64", "string", "category"]))
def test_fuzz_numbers_every_value_finds_its_rows(values, dtype):
    col = pd.Series(values, dtype="Float64")
    if dtype != "Float64":  # numbers stored as text (typed=False frames, user columns)
        col = pd.Series([None if v is None else repr(v) for v in values], dtype=dtype)
    present = np.array([v is not None for v in values])
    nums = [v for v in values if v is not None]
    for v in set(nums):
        assert (mask(col, v, "DS") == np.array([x == v for x in values])).all()
    if nums:
        assert (mask(col, (min(nums), max(nums)), "DS") == present).all()
        assert (mask(col, (None, None), "DS") == present).all()


@given(st.lists(st.one_of(st.none(), st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31))),
                min_size=1, max_size=8))
def test_fuzz_dates_every_value_finds_its_rows(values):
    col = pd.Series(pd.to_datetime(pd.Series(values, dtype=object)), dtype="datetime64[us]")
    present = np.array([v is not None for v in values])
    days = [v for v in values if v is not None]
    for v in set(days):
        rows = np.array([x == v for x in values])
        assert (mask(col, v, "DA") == rows).all()
        assert (mask(col, v.strftime("%Y%m%d"), "DA") == rows).all()
    if days:
        lo, hi = min(days).strftime("%Y%m%d"), max(days).strftime("%Y%m%d")
        assert (mask(col, f"{lo}-{hi}", "DA") == present).all()
        assert (mask(col, f"{lo}-", "DA") == present).all()
        assert (mask(col, f"-{hi}", "DA") == present).all()


COLUMNS = {
    "text": (pd.Series(["CT", "mr", None, "", "Doe^J"], dtype="string[pyarrow]"), "LO"),
    "category": (pd.Series(["CT", "MR", None, "CT", "US"], dtype="category"), "CS"),
    "int": (pd.Series([1, None, 3, 10, -2], dtype="Int64"), "IS"),
    "float": (pd.Series([0.5, None, 2.0, 1e9, -3.25], dtype="Float64"), "DS"),
    "date": (pd.Series(pd.to_datetime(["2020-01-01", None, "1999-12-31", "2020-02-29", "2021-06-30"])), "DA"),
    "time": (pd.Series(["080000", None, "235959.5", "", "1200"], dtype="category"), "TM"),
}


@given(st.sampled_from(sorted(COLUMNS)), CRITERIA | st.text(max_size=12))
def test_fuzz_any_criterion_on_any_column_gives_a_mask_or_a_selection_error(kind, criterion):
    col, vr = COLUMNS[kind]
    try:
        got = mask(col, criterion, vr)
    except SelectionError as exc:
        assert str(exc)  # a message, never an empty error
        return
    assert got.dtype == bool and got.shape == (len(col),)
    if kind in ("text", "category"):  # the same values in another text dtype: the same rows
        for dtype in DTYPES:
            assert (mask(col.astype(object).astype(dtype), criterion, vr) == got).all(), dtype
