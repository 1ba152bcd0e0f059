"""tags.py: names -> DICOM tags, typed columns from Orthanc's raw values (pure)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.datadict import keyword_dict

from orthanc_pandas._frame.tags import (
    column_names,
    is_tag_name,
    json_like,
    resolve_tag,
    suggest_keywords,
    typed_tag_columns,
)
from orthanc_pandas.errors import OrthancPandasError, UnknownTagError


@pytest.mark.parametrize("name", ["SliceThickness", "0018,0050", "00180050", "(0018,0050)",
                                  "(0018, 0050)", " 0018,0050 ", 0x00180050, "0018-0050"])
def test_every_spelling_names_the_same_tag(name):
    info = resolve_tag(name)
    assert (info.tag, info.name, info.vr, info.vm) == (0x00180050, "SliceThickness", "DS", "1")
    assert info.key == "0018,0050" and info.compact == "00180050"


def test_private_and_repeating_tags():
    private = resolve_tag("(0019,10AB)")
    assert private.name == "0019,10ab" and private.vr == "" and private.is_private
    overlay = resolve_tag("6002,3000")  # a repeating group: pydicom knows it by mask
    assert overlay.name == "OverlayData"


@given(st.sampled_from(sorted(keyword_dict)))
def test_keywords_round_trip_through_numbers(keyword):
    info = resolve_tag(keyword)
    assert resolve_tag(info.key).tag == info.tag == keyword_dict[keyword]


def test_unknown_name_is_a_key_error_with_suggestions():
    with pytest.raises(UnknownTagError) as info:
        resolve_tag("PatientNmae")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, OrthancPandasError)
    assert "PatientName" in str(err)
    assert suggest_keywords("studydate")[0] == "StudyDate"
    assert not is_tag_name("NotATag") and is_tag_name("0009,0010")


def test_column_names_finds_vectors():
    assert column_names(resolve_tag("ImagePositionPatient"),
                        ["ImagePositionPatient_2", "ImagePositionPatient_0", "ImagePositionPatient_1"]) == [
        "ImagePositionPatient_0", "ImagePositionPatient_1", "ImagePositionPatient_2"]
    assert column_names(resolve_tag("Modality"), ["Modality"]) == ["Modality"]
    assert column_names(resolve_tag("Rows"), ["Modality"]) == []


def test_typed_columns_follow_the_index_schema():
    cols = typed_tag_columns(resolve_tag("Rows"), ["512", None, "256"])
    assert cols["Rows"].dtype == "Int32" and cols["Rows"].tolist() == [512, pd.NA, 256]
    dates = typed_tag_columns(resolve_tag("AcquisitionDate"), ["20200102", "", None])["AcquisitionDate"]
    assert str(dates.dtype).startswith("datetime64") and dates.iloc[0] == pd.Timestamp("2020-01-02")
    assert dates.iloc[1:].isna().all()
    spacing = typed_tag_columns(resolve_tag("PixelSpacing"), ["0.5\\0.7", "0.431\u00a50.431", None])
    assert spacing["PixelSpacing_0"].tolist() == [0.5, 0.431, pd.NA]
    assert spacing["PixelSpacing_1"].tolist() == [0.7, 0.431, pd.NA]
    text = typed_tag_columns(resolve_tag("ImageType"), ["ORIGINAL\u00a5PRIMARY", None])["ImageType"]
    assert text.tolist() == ["ORIGINAL\\PRIMARY", pd.NA]
    private = typed_tag_columns(resolve_tag("0019,1010"), ["a\u00a5b", None])["0019,1010"]
    assert private.tolist() == ["a\u00a5b", pd.NA]  # free text may hold a real yen sign


def test_sequences_become_json_like_structures():
    raw = [[{"0008,0100": "121320", "0009,1001": "x", "0040,a170": [{"0008,0104": "m"}]}], None]
    col = typed_tag_columns(resolve_tag("ReferencedImageSequence"), raw)["ReferencedImageSequence"]
    assert col.iloc[0] == [{"CodeValue": "121320", "0009,1001": "x",
                            "PurposeOfReferenceCodeSequence": [{"CodeMeaning": "m"}]}]
    assert col.iloc[1] is None
    assert json_like("plain") == "plain"
