"""labels.py and the orthanc_labels column: on plain JSON, and on a real Orthanc.

Orthanc 1.10 has no labels: there the clear error and the all-missing column are tested; on
1.12+ (``ORTHANC_ROOT`` with Debian sid's 1.13) labels are added, read back, selected on,
refreshed and removed.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas._frame.schema import (
    LABELS_COLUMN,
    LEVELS,
    ROUTES,
    STR_DTYPE,
    LevelTable,
    build_frame,
)
from orthanc_pandas._ops.labels import check_labels, has_labels, label_map, labels_from_map
from orthanc_pandas._ops.refresh import refresh
from orthanc_pandas.errors import BulkError, SelectionError, ServerCapabilityError
from orthanc_pandas.testing.synthetic import generate_archive

BAD_LABELS = ["two words", "a,b", "x" * 65, "", "é", "semi;colon", 7]


# -- pure: no server ---------------------------------------------------------------------
def _json_archive(labels: dict[str, dict[str, list[str]]]) -> dict[str, list[dict]]:
    """Two series under one study; ``labels``: level -> id -> Labels as Orthanc lists them."""
    def res(level, rid, **kw):
        r = {"ID": rid, "MainDicomTags": {}, **kw}
        if labels is not None:
            r["Labels"] = labels.get(level, {}).get(rid, [])
        return r
    return {
        "patient": [res("patient", "p1", MainDicomTags={"PatientID": "P1"})],
        "study": [res("study", "st1", ParentPatient="p1")],
        "series": [res("series", "se1", ParentStudy="st1"), res("series", "se2", ParentStudy="st1")],
        "instance": [res("instance", f"i{k}", ParentSeries="se1" if k < 2 else "se2",
                         MainDicomTags={"InstanceNumber": str(k), "SOPInstanceUID": f"1.{k}"})
                     for k in range(4)],
    }


def _frame(json_levels) -> pd.DataFrame:
    return build_frame({lvl: LevelTable.from_resources(lvl, json_levels[lvl]) for lvl in LEVELS})


def _labels_by_instance(df: pd.DataFrame) -> dict[str, object]:
    col = df[LABELS_COLUMN].astype(object)
    return {i: (None if pd.isna(v) else v) for i, v in zip(df.index.get_level_values("instance"), col, strict=True)}


def test_column_is_the_sorted_union_of_the_four_levels():
    df = _frame(_json_archive({"patient": {"p1": ["zeta"]}, "series": {"se2": ["b-2", "a_1"]},
                               "instance": {"i1": ["a_1"], "i3": ["c"]}}))
    assert _labels_by_instance(df) == {"i0": "zeta", "i1": "a_1,zeta", "i2": "a_1,b-2,zeta",
                                       "i3": "a_1,b-2,c,zeta"}
    assert isinstance(df[LABELS_COLUMN].dtype, pd.CategoricalDtype)
    assert df[LABELS_COLUMN].cat.categories.dtype == STR_DTYPE
    assert list(df[LABELS_COLUMN].cat.categories) == ["a_1,b-2,c,zeta", "a_1,b-2,zeta", "a_1,zeta", "zeta"]


def test_no_labels_anywhere_is_an_all_missing_categorical():
    for labels in (None, {}):  # 1.10 (no Labels key at all) and 1.12+ with no label set
        df = _frame(_json_archive(labels))
        # the same dtype as with labels: a categorical (with only the placeholder category)
        assert isinstance(df[LABELS_COLUMN].dtype, pd.CategoricalDtype)
        assert list(df[LABELS_COLUMN].cat.categories) == [""]
        assert df[LABELS_COLUMN].isna().all() and len(df) == 4
        assert list(df.columns)[-1] == LABELS_COLUMN


def test_parquet_round_trip_of_the_column(tmp_path):
    for labels in ({"study": {"st1": ["done"]}, "instance": {"i0": ["x"]}}, None):
        df = _frame(_json_archive(labels))
        df.to_parquet(tmp_path / "f.parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), df)


def test_has_labels_all_any_none():
    df = _frame(_json_archive({"study": {"st1": ["s"]}, "series": {"se1": ["a"]},
                               "instance": {"i0": ["b"], "i3": ["b"]}}))
    ids = lambda mask: sorted(df[mask].index.get_level_values("instance"))  # noqa: E731
    assert ids(has_labels(df, "a", "b")) == ["i0"]
    assert ids(has_labels(df, "a", "b", how="any")) == ["i0", "i1", "i3"]
    assert ids(has_labels(df, "a", "b", how="none")) == ["i2"]
    assert ids(has_labels(df, "s")) == ["i0", "i1", "i2", "i3"]
    assert ids(has_labels(df, "nowhere")) == []
    # a prefix of a label is not that label
    assert ids(has_labels(_frame(_json_archive({"series": {"se1": ["ab"]}})), "a")) == []
    with pytest.raises(SelectionError, match="how must be one of"):
        has_labels(df, "a", how="some")
    with pytest.raises(SelectionError, match="no 'orthanc_labels' column"):
        has_labels(df.drop(columns=[LABELS_COLUMN]), "a")


def test_select_by_labels_records_them_in_a_new_attrs_dict():
    df = _frame(_json_archive({"series": {"se2": ["x"]}}))
    df.attrs["orthanc"] = {"url": "http://h:1", "criteria": []}
    sub = df.orthanc.select(labels="x")
    assert sorted(sub.index.get_level_values("instance")) == ["i2", "i3"]
    assert sub.attrs["orthanc"]["url"] == "http://h:1"
    assert sub.attrs["orthanc"]["criteria"] == [
        {"select": {}, "case_sensitive": False, "labels": {"labels": ["x"], "how": "all"}}]
    assert df.attrs["orthanc"]["criteria"] == []
    sub.attrs["orthanc"]["url"] = "changed"
    assert df.attrs["orthanc"]["url"] == "http://h:1"
    # labels combine with tag criteria, and labels_how is checked
    assert len(df.orthanc.select(labels="x", labels_how="none")) == len(df) - 2
    with pytest.raises(SelectionError, match="how must be one of"):
        df.orthanc.select(labels="x", labels_how="some")
    with pytest.raises(SelectionError, match="Invalid Orthanc label"):
        df.orthanc.select(labels=["x", "not ok"])


def test_with_labels_is_gone_and_select_labels_is_the_row_filter():
    df = _frame(_json_archive({"series": {"se2": ["x"]}}))
    assert not hasattr(df.orthanc, "with_labels")


@pytest.mark.parametrize("bad", BAD_LABELS)
def test_check_labels_names_the_bad_label(bad):
    with pytest.raises(SelectionError, match="Invalid Orthanc label") as info:
        check_labels(["fine", bad])
    assert repr(bad) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_labels_from_map_matches_build_frame():
    labels = {"patient": {"p1": ["p"]}, "series": {"se1": ["a", "b"]}, "instance": {"i3": ["a"]}}
    df = _frame(_json_archive(labels))
    derived = labels_from_map(df.index, labels)
    pd.testing.assert_series_equal(pd.Series(derived, index=df.index, name=LABELS_COLUMN),
                                   df[LABELS_COLUMN])


# -- a real Orthanc ----------------------------------------------------------------------
@pytest.fixture
def server(orthanc_factory):
    # no stability events during a test: they would move /changes between two reads
    server = orthanc_factory(config={"StableAge": 3600})
    # 2 patients x 2 studies x 2 series x 3 instances
    server.upload_bytes(generate_archive(2, 2, 2, 3, rows=4, cols=4, seed="labels"))
    return server


def _need_labels(client):
    if not client.capabilities().labels:
        pytest.skip(f"Orthanc {client.version} has no labels (1.12+)")


def _server_truth(client, df: pd.DataFrame) -> dict[str, object]:
    """Per instance, the union of the labels the server reports for its four resources."""
    cache: dict[tuple[str, str], list[str]] = {}
    out = {}
    for ids in df.index:
        found: set[str] = set()
        for level, rid in zip(LEVELS, ids, strict=True):
            if (level, rid) not in cache:
                cache[level, rid] = client.get_json(f"/{ROUTES[level]}/{rid}/labels")
            found.update(cache[level, rid])
        out[ids[3]] = ",".join(sorted(found)) if found else None
    return out


def _rows_of(df, level, rid):
    return df[df.index.get_level_values(level) == rid]


def test_bad_label_raises_before_anything_is_sent(server, monkeypatch):
    client = server.client()
    df = op.read_orthanc(client)
    sent = []
    original = client.request
    monkeypatch.setattr(client, "request", lambda *a, **kw: sent.append(a) or original(*a, **kw))
    for bad in BAD_LABELS:
        with pytest.raises(SelectionError, match="Invalid Orthanc label"):
            df.orthanc.add_labels("good", bad, client=client)
        with pytest.raises(SelectionError, match="Invalid Orthanc label"):
            df.orthanc.remove_labels(bad, client=client)
    with pytest.raises(SelectionError, match="level must be one of"):
        df.orthanc.add_labels("good", level="studies", client=client)
    assert sent == []
    if client.capabilities().labels:
        assert client.get_json("/tools/labels") == []


def test_without_labels_support_a_clear_error_and_a_missing_column(server):
    client = server.client()
    if client.capabilities().labels:
        pytest.skip(f"Orthanc {client.version} has labels")
    df = op.read_orthanc(client)
    assert isinstance(df[LABELS_COLUMN].dtype, pd.CategoricalDtype) and df[LABELS_COLUMN].isna().all()
    for method in (df.orthanc.add_labels, df.orthanc.remove_labels):
        with pytest.raises(ServerCapabilityError, match=r"Orthanc >= 1\.12") as info:
            method("reviewed", client=client)
        assert client.version in str(info.value)
        assert isinstance(info.value, RuntimeError)
    assert len(df.orthanc.select(labels="reviewed")) == 0
    assert len(df.orthanc.select(labels="reviewed", labels_how="none")) == len(df)
    assert label_map(client) == {}
    # refresh keeps the column as a fresh read has it
    pd.testing.assert_frame_equal(df.orthanc.refresh(), op.read_orthanc(client))


def test_add_read_select_remove(server):
    client = server.client()
    _need_labels(client)
    df = op.read_orthanc(client)
    assert df[LABELS_COLUMN].isna().all() and len(df) == 24
    study = df.index.get_level_values("study")[0]
    other_series = df[df.index.get_level_values("study") != study].index.get_level_values("series")[0]
    patient = df.index.get_level_values("patient")[-1]
    one_instance = df.index.get_level_values("instance")[5]

    report = _rows_of(df, "study", study).orthanc.add_labels("reviewed", "qc-1", level="study")
    assert list(report.columns) == ["level", "resource", "label", "status", "message"]
    assert report[["level", "resource", "label"]].values.tolist() == [
        ["study", study, "reviewed"], ["study", study, "qc-1"]]
    assert (report.status == "added").all()
    again = _rows_of(df, "study", study).orthanc.add_labels("reviewed", "new_one", level="study")
    assert dict(zip(again.label, again.status.astype(str), strict=True)) == {
        "reviewed": "already there", "new_one": "added"}
    assert sorted(client.get_json(f"/studies/{study}/labels")) == ["new_one", "qc-1", "reviewed"]
    _rows_of(df, "series", other_series).orthanc.add_labels("reviewed", level="series")
    _rows_of(df, "patient", patient).orthanc.add_labels("P-label", level="patient")
    rep = _rows_of(df, "instance", one_instance).orthanc.add_labels("single", level="instance")
    assert rep.resource.tolist() == [one_instance]
    # labels do not propagate on the server...
    some_series = _rows_of(df, "study", study).index.get_level_values("series")[0]
    assert client.get_json(f"/series/{some_series}/labels") == []

    # ... but the column shows every level's labels on each instance, as the server says
    fresh = op.read_orthanc(client)
    assert _labels_by_instance(fresh) == _server_truth(client, fresh)
    assert fresh.loc[fresh.index.get_level_values("study") == study, LABELS_COLUMN].notna().all()
    assert fresh[LABELS_COLUMN].notna().sum() < len(fresh)
    # both routes (extended find for instances, or the GET lists) agree
    routes = ["lists", "find"] if client.capabilities().extended_find else ["lists"]
    for route in routes:
        pd.testing.assert_frame_equal(op.read_orthanc(client, route=route), fresh)

    reviewed = fresh.orthanc.select(labels="reviewed")
    expected = (fresh.index.get_level_values("study") == study) | (
        fresh.index.get_level_values("series") == other_series)
    assert reviewed.index.equals(fresh.index[expected])
    assert reviewed.attrs["orthanc"]["url"] == fresh.attrs["orthanc"]["url"]
    assert reviewed.attrs["orthanc"]["criteria"][-1]["labels"] == {"labels": ["reviewed"], "how": "all"}
    # the same rows on a refresh: the label criterion is replayed
    pd.testing.assert_frame_equal(reviewed.orthanc.refresh(), reviewed)
    both = fresh.orthanc.select(labels=["reviewed", "single"], labels_how="any")
    assert one_instance in both.index.get_level_values("instance")
    assert len(both) == expected.sum() + (0 if expected[fresh.index.get_level_values("instance") == one_instance].any() else 1)
    assert len(fresh.orthanc.select(labels="reviewed", labels_how="none")) == len(fresh) - expected.sum()

    removed = reviewed.orthanc.remove_labels("reviewed", level="series")
    statuses = dict(zip(removed.resource, removed.status.astype(str), strict=True))
    assert statuses[other_series] == "removed"
    assert {s for r, s in statuses.items() if r != other_series} == {"not there"}
    assert client.get_json(f"/series/{other_series}/labels") == []
    assert "reviewed" in client.get_json(f"/studies/{study}/labels")  # another level: untouched
    fresh.orthanc.remove_labels("reviewed", "qc-1", "new_one", "P-label", level="study")
    fresh.orthanc.remove_labels("P-label", level="patient")
    fresh.orthanc.remove_labels("single", level="instance")
    assert client.get_json("/tools/labels") == []
    assert op.read_orthanc(client)[LABELS_COLUMN].isna().all()


def test_parquet_round_trip_with_labels(server, tmp_path):
    client = server.client()
    df = op.read_orthanc(client)
    if client.capabilities().labels:
        df.orthanc.add_labels("everything", level="patient")
        df.iloc[:3].orthanc.add_labels("first", level="instance")
        df = op.read_orthanc(client)
        assert df[LABELS_COLUMN].nunique() == 2
    path = tmp_path / "index.parquet"
    df.to_parquet(path)
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, df)
    assert back.orthanc.select(labels="first").shape[0] == (3 if client.capabilities().labels else 0)


def test_a_resource_gone_meanwhile_is_a_failed_row(server):
    client = server.client()
    _need_labels(client)
    df = op.read_orthanc(client)
    gone = df.index.get_level_values("series")[0]
    client.delete(f"/series/{gone}")
    with pytest.raises(BulkError, match=r"1 of \d+ label change\(s\) failed") as info:
        df.orthanc.add_labels("late", level="series")
    report = info.value.report  # every other series was labelled before the error was raised
    again = df.orthanc.add_labels("late", level="series", errors="report")
    assert again[again.resource != gone].status.astype(str).eq("already there").all()
    assert again[again.resource == gone].status.astype(str).tolist() == ["failed"]
    failed = report[report.status == "failed"]
    assert failed.resource.tolist() == [gone]
    assert "404" in failed.message.iloc[0]
    assert (report[report.resource != gone].status == "added").all()


def test_refresh_shows_labels_set_by_another_client(server):
    client = server.client()
    _need_labels(client)
    df = op.read_orthanc(client)
    other = server.client()  # labelling writes no /changes entry: refresh must still see it
    seq = client.last_change()
    first, last = df.index[0], df.index[-1]
    other.request("PUT", f"/studies/{first[1]}/labels/from-elsewhere")
    other.request("PUT", f"/instances/{last[3]}/labels/one")
    assert client.last_change() == seq
    refreshed = df.orthanc.refresh()
    fresh = op.read_orthanc(client)
    pd.testing.assert_frame_equal(refreshed, fresh)
    assert _labels_by_instance(refreshed) == _server_truth(client, refreshed)
    assert refreshed.orthanc.select(labels="from-elsewhere").shape[0] == 6

    # removed elsewhere, plus an upload (the affected-series path of refresh)
    other.request("DELETE", f"/studies/{first[1]}/labels/from-elsewhere")
    server.upload_bytes(generate_archive(1, 1, 1, 2, rows=4, cols=4, seed="labels-more"))
    again = refreshed.orthanc.refresh()
    pd.testing.assert_frame_equal(again, op.read_orthanc(client))
    assert again.orthanc.select(labels="from-elsewhere").shape[0] == 0
    assert again.orthanc.select(labels="one").index.get_level_values("instance").tolist() == [last[3]]

    # a selection: the replayed criteria see the new labels too
    sel = again.orthanc.select(PatientID=again.PatientID.iloc[0])
    other.request("PUT", f"/patients/{first[0]}/labels/pat")
    got = sel.orthanc.refresh()
    assert (got[LABELS_COLUMN].astype(str).str.contains("pat")).all()
    assert _labels_by_instance(got) == _server_truth(client, got)


def test_label_map_without_extended_find_gives_the_same(server):
    client = server.client()
    _need_labels(client)
    df = op.read_orthanc(client)
    df.iloc[:2].orthanc.add_labels("a", "b", level="series")
    df.iloc[-1:].orthanc.add_labels("b", level="instance")
    df.iloc[-1:].orthanc.add_labels("c", level="patient")
    paged = label_map(client, page_size=1)  # one resource per page: the paging is exercised
    plain = server.client()
    plain._capabilities = dataclasses.replace(client.capabilities(), extended_find=False)
    assert label_map(plain) == paged
    assert paged["series"] == {df.index[0][2]: ["a", "b"]}
    assert paged["instance"] == {df.index[-1][3]: ["b"]}
    assert paged["patient"] == {df.index[-1][0]: ["c"]}
    assert paged["study"] == {}


def test_refresh_relabel_cost_grows_with_labels_not_rows(server, monkeypatch):
    client = server.client()
    _need_labels(client)
    df = op.read_orthanc(client)
    df.iloc[:1].orthanc.add_labels("x", level="patient")
    calls = []
    original = client.request
    monkeypatch.setattr(client, "request", lambda m, p, **kw: calls.append((m, p)) or original(m, p, **kw))
    out = refresh(df, client)
    assert out.orthanc.select(labels="x").shape[0] == 12
    per_resource = [p for _m, p in calls if p.count("/") >= 2 and p.split("/")[1] in ROUTES.values()]
    assert per_resource == []  # no request per patient, study, series or instance
    assert len(calls) < 25
    assert out.index.equals(df.index)


def test_dask_read_keeps_instance_labels(orthanc_factory):
    """The Dask frame's schema comes from the parent levels; labels of instances alone must
    still reach its partitions (not become missing), as in the pandas read."""
    import orthanc_pandas.dask as opd

    server = orthanc_factory()
    client = server.client()
    if not client.capabilities().labels:
        pytest.skip(f"Orthanc {client.version} has no labels (1.12+)")
    server.upload_bytes(generate_archive(2, 1, 2, 3, rows=4, cols=4, seed="dask-labels"))
    instance = client.list_ids("instances")[0]
    series = client.list_ids("series")[1]
    client.request("PUT", f"/instances/{instance}/labels/mine")
    client.request("PUT", f"/series/{series}/labels/ser")
    df = op.read_orthanc(server.url)
    ddf = opd.read_orthanc(server.url, partition_size=3).compute()
    assert ddf[LABELS_COLUMN].notna().sum() == df[LABELS_COLUMN].notna().sum() >= 4
    pd.testing.assert_series_equal(ddf[LABELS_COLUMN], df[LABELS_COLUMN])
