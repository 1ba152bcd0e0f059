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


# -- one accessor surface ---------------------------------------------------------------------
def _tiny_frame() -> pd.DataFrame:
    idx = pd.MultiIndex.from_tuples([("p", "s", "se", "i1"), ("p", "s", "se", "i2")],
                                    names=["patient", "study", "series", "instance"])
    df = pd.DataFrame({"Modality": pd.Categorical(["CT", "MR"]),
                       "orthanc_labels": pd.Categorical(["done", None])}, index=idx)
    df.attrs["orthanc"] = {"url": "http://127.0.0.1:1", "criteria": []}
    return df


def test_one_registered_accessor_picks_the_class_and_keeps_no_state():
    from orthanc_pandas._accessors.frame import InstanceAccessor, orthanc_accessor

    assert pd.DataFrame.orthanc is orthanc_accessor
    df = _tiny_frame()
    assert type(df.orthanc) is InstanceAccessor
    assert set(vars(df.orthanc)) == {"_df"}  # the frame is all an accessor holds


def test_select_takes_one_positional_dict_and_refuses_anything_else():
    df = _tiny_frame()
    by_dict = df.orthanc.select({"0008,0060": "ct"})
    assert by_dict.index.equals(df.orthanc.select(Modality="ct").index) and len(by_dict) == 1
    both = df.orthanc.select({"Modality": ["CT", "MR"]}, labels="done")
    assert both.index.get_level_values("instance").tolist() == ["i1"]
    with pytest.raises(TypeError, match=r"at most one positional argument.*case_sensitive=True"):
        df.orthanc.select(True, Modality="ct")
    with pytest.raises(TypeError, match="a dict of criteria"):
        df.orthanc.select("Modality")
    with pytest.raises(TypeError, match="positional"):
        df.orthanc.select({"Modality": "CT"}, False)  # noqa: FBT003
    with pytest.raises(TypeError, match="both in the criteria dict and as a keyword"):
        df.orthanc.select({"Modality": "CT"}, Modality="MR")
    # the same on a level frame's accessor
    series = _tiny_frame().droplevel("instance").iloc[:1]
    series.attrs = {"orthanc": {"url": "http://127.0.0.1:1", "criteria": [], "level": "series"}}
    assert type(series.orthanc).__name__ == "LevelAccessor"
    assert len(series.orthanc.select({"0008,0060": "CT"})) == 1
    with pytest.raises(TypeError, match=r"case_sensitive=True"):
        series.orthanc.select(True, Modality="ct")


#: accessor method -> whether it acts on resources at a level (and so takes level=)
BULK = {"headers": False, "download": False, "delete": True, "send": True, "retrieve": True,
        "anonymize": True, "modify": True, "add_labels": True, "remove_labels": True}


def _check_bulk_signature(fn, name, *, takes_level):
    import inspect

    params = inspect.signature(fn).parameters
    for p, default in (("max_workers", None), ("errors", "raise"), ("progress", None)):
        assert p in params, f"{name}: no {p}="
        assert params[p].default == default, f"{name}: {p}={params[p].default!r}"
        assert params[p].kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {p} not keyword-only"
    assert "client" in params, f"{name}: no client="
    if takes_level:
        assert params["level"].kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: level positional"
        assert params["level"].default is None or isinstance(params["level"].default, str)


def test_every_bulk_call_takes_the_same_arguments():
    from orthanc_pandas._accessors.frame import InstanceAccessor, LevelAccessor

    for name, takes_level in BULK.items():
        _check_bulk_signature(getattr(InstanceAccessor, name), name, takes_level=takes_level)
        assert "level" in inspect_params(getattr(InstanceAccessor, name)) or not takes_level
    for name in ("headers", "download"):
        _check_bulk_signature(getattr(LevelAccessor, name), f"level {name}", takes_level=False)
    _check_bulk_signature(op.upload, "upload", takes_level=False)
    assert list(inspect_params(op.upload))[:2] == ["paths", "client"]
    # the same defaults as the functions the accessor calls
    assert inspect_params(InstanceAccessor.delete)["level"].default == "instance"
    # exactly the rows unless a coarser level is named (docs/conventions.md)
    for name in ("anonymize", "modify", "send"):
        assert inspect_params(getattr(InstanceAccessor, name))["level"].default is None, name
    for name in ("add_labels", "remove_labels"):
        assert inspect_params(getattr(InstanceAccessor, name))["level"].default == "instance", name
    assert inspect_params(InstanceAccessor.download)["folder"].default is inspect_empty()


def inspect_params(fn):
    import inspect

    return inspect.signature(fn).parameters


def inspect_empty():
    import inspect

    return inspect.Parameter.empty


@pytest.mark.parametrize("call", [
    lambda df: df.orthanc.headers(max_workers=0),
    lambda df: df.orthanc.download("x", max_workers=0),
    lambda df: df.orthanc.delete(max_workers=-1),
    lambda df: df.orthanc.add_labels("a", max_workers=0),
    lambda df: df.orthanc.anonymize(max_workers=0),
    lambda df: df.orthanc.modify(max_workers=0),
    lambda df: df.orthanc.send("PEER", max_workers=0),
    lambda df: df.orthanc.headers(errors="ignore"),
    lambda df: df.orthanc.with_tags("KVP", max_workers=0),
    lambda df: df.orthanc.anonymize(errors="warn"),
])
def test_bad_max_workers_or_errors_raise_before_any_request(call):
    df = _tiny_frame()  # its server does not exist: a request would fail otherwise
    with pytest.raises(ValueError, match="max_workers must be a positive integer|errors must be"):
        call(df)
