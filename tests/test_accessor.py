"""The df.orthanc accessor skeleton: validation, counts, how a frame finds its client."""

from __future__ import annotations

import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas.errors import NotAnIndexError


def test_not_an_index_frame_raises_attributeerror_saying_why():
    with pytest.raises(AttributeError, match="read_orthanc") as info:
        pd.DataFrame({"a": [1]}).orthanc  # noqa: B018
    assert isinstance(info.value, NotAnIndexError)
    assert not hasattr(pd.DataFrame({"a": [1]}), "orthanc")


def test_every_error_and_warning_is_in_the_family():
    from orthanc_pandas import errors

    assert issubclass(errors.InconsistentIndexError, errors.OrthancPandasError)
    assert issubclass(errors.InconsistentIndexError, RuntimeError)
    assert issubclass(errors.DeletionWarning, errors.OrthancPandasWarning)
    assert errors.DeletionWarning is op.DeletionWarning
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, (errors.OrthancPandasError, errors.OrthancPandasWarning)), name


def test_reset_index_frame_explains_how_to_restore(corpus_frame):
    with pytest.raises(AttributeError, match="set_index"):
        corpus_frame.reset_index().orthanc  # noqa: B018


def test_counts_follow_the_rows(corpus_frame):
    ct = corpus_frame[corpus_frame["Modality"] == "CT"]
    assert ct.orthanc.instance_count == len(ct)
    assert ct.orthanc.series_count == ct["SeriesInstanceUID"].nunique()
    assert ct.orthanc.study_count == ct["StudyInstanceUID"].nunique()
    assert ct.orthanc.patient_count == ct.index.get_level_values("patient").nunique()
    assert ct.orthanc.counts["instances"] < corpus_frame.orthanc.counts["instances"]
    assert "instances" in repr(ct.orthanc)


def test_client_comes_from_attrs_url_not_from_attrs_secrets(corpus, corpus_frame):
    client = corpus_frame.orthanc.client()
    assert client.url == corpus.url
    sub = corpus_frame.iloc[:3]
    assert sub.orthanc.client() is client  # attrs survive pandas operations


def test_frame_without_provenance_says_what_to_do(corpus_frame):
    bare = corpus_frame.copy()
    bare.attrs = {}
    with pytest.raises(op.OrthancPandasError, match="client="):
        bare.orthanc.client()
