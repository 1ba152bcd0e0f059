"""refresh(): equal to a fresh read_orthanc after uploads, deletions and overwrites."""

from __future__ import annotations

import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas._frame.schema import LEVELS, LevelTable, build_frame
from orthanc_pandas._ops.refresh import changed_resources, merge_rows
from orthanc_pandas.errors import OrthancPandasError, RefreshWarning
from orthanc_pandas.testing.synthetic import make_series, to_bytes


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_index()


def assert_same(refreshed: pd.DataFrame, fresh: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(refreshed, fresh)  # same rows, values, dtypes and order
    a = {k: v for k, v in refreshed.attrs["orthanc"].items() if k != "read_at"}
    b = {k: v for k, v in fresh.attrs["orthanc"].items() if k != "read_at"}
    assert a == b


def _series(seed, n=4, **kw):
    return make_series(n, 8, 8, seed=seed, **kw)


@pytest.fixture
def server(orthanc_factory):
    # no stability events during a test: one landing between a refresh and the read it is
    # compared with moves last_change in one only (it did on a loaded machine, StableAge 2)
    s = orthanc_factory(config={"OverwriteInstances": True, "StableAge": 3600})
    s.upload_bytes([to_bytes(d) for d in _series("a", patient_id="P1")])
    s.upload_bytes([to_bytes(d) for d in _series("b", patient_id="P2", series_number=2)])
    s.upload_bytes([to_bytes(d) for d in _series("c", patient_id="P2", series_number=3)])
    return s


def test_refresh_without_changes_is_identity(server):
    df = op.read_orthanc(server.url)
    assert_same(df.orthanc.refresh(), op.read_orthanc(server.url))


def test_refresh_full_frame_after_uploads_deletes_and_overwrite(server):
    df = op.read_orthanc(server.url)
    client = server.client()
    # new series for a known patient, new patient, one more instance in an existing series
    server.upload_bytes([to_bytes(d) for d in _series("d", patient_id="P1", series_number=9)])
    # a tag no resource had before: an all-missing column becomes a real one
    assert df.BodyPartExamined.isna().all()
    server.upload_bytes([to_bytes(d) for d in _series("e", patient_id="P3",
                                                      extra={"BodyPartExamined": "HEAD"})])
    extra = _series("b", n=5, patient_id="P2", series_number=2)[4]
    server.upload_bytes([to_bytes(extra)])
    # deletions: one instance, one whole series
    some = df.index[0]
    client.delete(f"/instances/{some[3]}")
    series_c = df[df.PatientID == "P2"].index.get_level_values("series")[-1]
    client.delete(f"/series/{series_c}")
    # overwrite with changed instance-level tags (same SOPInstanceUID, same Orthanc id)
    ds = _series("a", patient_id="P1")[2]
    ds.InstanceNumber = 77
    ds.ImageComments = "re-sent"
    server.upload_bytes([to_bytes(ds)])

    refreshed = df.orthanc.refresh()
    fresh = op.read_orthanc(server.url)
    assert len(refreshed) != len(df)  # the test really changed something
    assert 77 in refreshed.InstanceNumber.tolist()
    assert_same(refreshed, fresh)
    assert (refreshed.BodyPartExamined == "HEAD").sum() == 4
    # and a second refresh with nothing new changes nothing
    assert_same(refreshed.orthanc.refresh(), fresh)
    # deleting the only series with the tag makes the column all-missing again
    client.delete(f"/patients/{refreshed[refreshed.PatientID == 'P3'].index[0][0]}")
    assert_same(refreshed.orthanc.refresh(), op.read_orthanc(server.url))


def test_refresh_cut_frame_keeps_its_rows_and_warns(server):
    df = op.read_orthanc(server.url)
    cut = df[df.PatientID == "P2"]
    client = server.client()
    gone = cut.index[0]
    client.delete(f"/instances/{gone[3]}")
    ds = _series("b", patient_id="P2", series_number=2)[1]
    ds.InstanceNumber = 55
    server.upload_bytes([to_bytes(ds)])
    server.upload_bytes([to_bytes(d) for d in _series("f", patient_id="P2", series_number=7)])
    with pytest.warns(RefreshWarning, match="only the rows"):
        refreshed = cut.orthanc.refresh()
    fresh = op.read_orthanc(server.url)
    expected = fresh[fresh.index.get_level_values("instance").isin(
        cut.index.get_level_values("instance"))]
    assert gone[3] not in refreshed.index.get_level_values("instance")
    assert 55 in refreshed.InstanceNumber.tolist()
    # same values as a fresh read for exactly the surviving rows (categories may differ: the
    # cut frame's categories are those of the whole archive, like any pandas cut)
    pd.testing.assert_frame_equal(_canon(refreshed), _canon(expected), check_categorical=False)
    assert refreshed.attrs["orthanc"]["last_change"] == fresh.attrs["orthanc"]["last_change"]


def test_refresh_needs_last_change(server):
    df = op.read_orthanc(server.url)
    df.attrs["orthanc"].pop("last_change")
    with pytest.raises(OrthancPandasError, match="last_change"):
        df.orthanc.refresh()


def test_callable_criteria_are_not_replayed():
    from orthanc_pandas._ops.refresh import _has_callable

    assert _has_callable({"select": {"Modality": {"callable": "<lambda>"}}, "case_sensitive": False})
    assert not _has_callable({"select": {"Modality": {"any": ["CT"]}}, "case_sensitive": False})


def test_changed_resources_ignores_stable():
    got = changed_resources([
        {"ChangeType": "NewSeries", "ResourceType": "Series", "ID": "s"},
        {"ChangeType": "StableStudy", "ResourceType": "Study", "ID": "t"},
        {"ChangeType": "JobSuccess", "ResourceType": "Job", "ID": "j"},
    ])
    assert got == {"patient": set(), "study": set(), "series": {"s"}, "instance": set()}


def test_refresh_replays_select(server):
    df = op.read_orthanc(server.url)
    sel = df.orthanc.select(PatientID="P2")
    assert sel.attrs["orthanc"]["criteria"]
    server.upload_bytes([to_bytes(d) for d in _series("g", patient_id="P2", series_number=8)])
    server.upload_bytes([to_bytes(d) for d in _series("h", patient_id="P4")])
    server.client().delete(f"/instances/{sel.index[0][3]}")
    refreshed = sel.orthanc.refresh()
    assert len(refreshed) == len(sel) - 1 + 4
    expected = op.read_orthanc(server.url).orthanc.select(PatientID="P2")
    assert_same(refreshed, expected)


# -- the pure merge, on plain frames (no server) -------------------------------------------
def _levels(series: dict[str, dict], instances: dict[str, list[dict]]) -> dict:
    """Four-level JSON: one patient and study; ``series`` id -> tags; instances per series."""
    return {
        "patient": [{"ID": "p", "MainDicomTags": {"PatientID": "P"}}],
        "study": [{"ID": "st", "ParentPatient": "p", "MainDicomTags": {"StudyDate": "20200102"}}],
        "series": [{"ID": sid, "ParentStudy": "st", "Status": "Unknown", "MainDicomTags": tags}
                   for sid, tags in series.items()],
        "instance": [{"ID": f"{sid}-{k}", "ParentSeries": sid, "FileSize": 10 + k,
                      "MainDicomTags": t} for sid, ts in instances.items() for k, t in enumerate(ts)],
    }


def _build(levels: dict) -> pd.DataFrame:
    return build_frame({lvl: LevelTable.from_resources(lvl, levels[lvl]) for lvl in LEVELS})


def test_merge_rows_equals_a_fresh_build_when_tags_first_appear():
    before_series = {"s1": {"Modality": "CT", "SeriesNumber": "1"},
                     "s2": {"Modality": "CT", "SeriesNumber": "2"}}
    before_inst = {"s1": [{"SOPInstanceUID": "1.1", "InstanceNumber": "1"}],
                   "s2": [{"SOPInstanceUID": "2.1", "InstanceNumber": "1"}]}
    # s2 is re-created with a SeriesDate, a BodyPartExamined, an ImageComments and one more
    # instance: tags no resource had
    after_series = {**before_series, "s2": {"Modality": "MR", "SeriesNumber": "2",
                                            "SeriesDate": "20210304", "BodyPartExamined": "HEAD"}}
    after_inst = {**before_inst, "s2": [{"SOPInstanceUID": "2.1", "InstanceNumber": "1"},
                                        {"SOPInstanceUID": "2.2", "InstanceNumber": "2",
                                         "ImageComments": "new"}]}
    old = _build(_levels(before_series, before_inst))
    fresh = _build(_levels(after_series, after_inst))
    only_s2 = _levels({"s2": after_series["s2"]}, {"s2": after_inst["s2"]})
    only_s2["series"][0]["ParentStudy"] = "st"
    new = build_frame({lvl: LevelTable.from_resources(lvl, only_s2[lvl]) for lvl in LEVELS},
                      sort=False)
    merged = merge_rows(old, new, {"s2"}, set())
    pd.testing.assert_frame_equal(merged, fresh)
    # the dtypes never changed: the all-missing columns already had them
    assert (old.dtypes.astype(str) == fresh.dtypes.astype(str)).all()
    assert str(old["SeriesDate"].dtype) == "datetime64[us]" and old["SeriesDate"].isna().all()
    assert fresh.loc[fresh.SOPInstanceUID == "2.2", "ImageComments"].tolist() == ["new"]


def test_merge_rows_drops_deleted_and_emptied_columns():
    series = {"s1": {"Modality": "CT", "BodyPartExamined": "HEAD"}, "s2": {"Modality": "CT"}}
    inst = {"s1": [{"SOPInstanceUID": "1.1"}], "s2": [{"SOPInstanceUID": "2.1"}, {"SOPInstanceUID": "2.2"}]}
    old = _build(_levels(series, inst))
    # s1 deleted (its only instance), one instance of s2 deleted
    merged = merge_rows(old, None, {"s1"}, {"s1-0", "s2-1"})
    fresh = _build(_levels({"s2": series["s2"]}, {"s2": inst["s2"][:1]}))
    pd.testing.assert_frame_equal(merged, fresh)
    assert list(merged["BodyPartExamined"].cat.categories) == [""]  # the placeholder only


def test_merge_rows_keep_only_rows_keeps_the_old_order():
    series = {"s1": {"Modality": "CT"}}
    inst = {"s1": [{"SOPInstanceUID": f"1.{k}", "InstanceNumber": str(k)} for k in range(3)]}
    old = _build(_levels(series, inst)).iloc[[2, 0]]  # cut and reordered by plain pandas
    new = _build(_levels(series, inst))
    merged = merge_rows(old, new, {"s1"}, set(), keep_only_rows=True)
    assert merged.SOPInstanceUID.tolist() == ["1.2", "1.0"]
    assert (merged.dtypes == old.dtypes).all()


def test_refresh_of_a_frame_saved_with_int64_integers_gives_the_fresh_dtypes(server, tmp_path):
    """Parquet files of orthanc-pandas 0.1 hold IS/US columns as Int64; refreshed, they have
    the dtypes of a fresh read (Int32), whether or not anything changed."""
    df = op.read_orthanc(server.url)
    narrow = [c for c in df.columns if df[c].dtype == "Int32"]
    assert "InstanceNumber" in narrow and "orthanc_series_expected_instances" in narrow
    df.astype({c: "Int64" for c in narrow}).to_parquet(tmp_path / "old.parquet")
    old = pd.read_parquet(tmp_path / "old.parquet")
    assert old["InstanceNumber"].dtype == "Int64"
    assert_same(old.orthanc.refresh(), op.read_orthanc(server.url))
    server.upload_bytes([to_bytes(d) for d in _series("z", patient_id="P9")])
    assert_same(old.orthanc.refresh(), op.read_orthanc(server.url))


def test_refreshed_selection_has_the_categories_of_the_archive_after_deletions(server):
    """A selection keeps the categories of the whole archive (as df[mask] does): values whose
    last series was deleted outside it drop out, exactly as in a fresh read + the select."""
    df = op.read_orthanc(server.url)
    sel = df.orthanc.select(PatientID="P2")
    assert "P1" in sel.PatientID.cat.categories  # df[mask] keeps the archive's categories
    server.client().delete(f"/patients/{df[df.PatientID == 'P1'].index[0][0]}")  # outside it
    refreshed = sel.orthanc.refresh()
    assert_same(refreshed, op.read_orthanc(server.url).orthanc.select(PatientID="P2"))
    assert "P1" not in refreshed.PatientID.cat.categories


@pytest.mark.orthanc_min("1.12")
def test_refresh_after_uploads_and_label_changes_equals_a_fresh_read_and_the_same_selects(server):
    """Labels change without any /changes entry; a selection's orthanc_labels categories are
    every label set of the archive, also those of rows outside it (issue 25)."""
    df = op.read_orthanc(server.url)
    sel = df.orthanc.select(PatientID="P2")
    by_labels = df.orthanc.select(labels=["keep"], labels_how="none")
    frames = {"full": df, "select": sel, "labels": by_labels}

    def check():
        fresh = op.read_orthanc(server.url)
        assert_same(frames["full"].orthanc.refresh(), fresh)
        assert_same(frames["select"].orthanc.refresh(), fresh.orthanc.select(PatientID="P2"))
        assert_same(frames["labels"].orthanc.refresh(),
                    fresh.orthanc.select(labels=["keep"], labels_how="none"))

    p1, p2 = df[df.PatientID == "P1"], df[df.PatientID == "P2"]
    p1.iloc[:1].orthanc.add_labels("n")                     # a label set outside the selection
    p2.iloc[:1].orthanc.add_labels("a", "b")
    p2.iloc[1:2].orthanc.add_labels("b")
    p2.orthanc.add_labels("s", level="series")
    server.upload_bytes([to_bytes(d) for d in _series("u", patient_id="P2", series_number=5)])
    check()
    p2.iloc[:1].orthanc.remove_labels("b")                  # "a,b,s" is gone; a, b, s are not
    p1.iloc[:1].orthanc.add_labels("keep", level="patient")
    check()


@pytest.mark.parametrize("by_uid_from", [1, 10 ** 9], ids=["by-uids", "one-by-one"])
def test_changed_series_read_by_uids_or_one_by_one_equal_a_fresh_read(server, monkeypatch,
                                                                       by_uid_from):
    """On a server with extended find the changed series are read again in one find by their
    UIDs (many) or one find per series (few). Either way the rows are a fresh read's, also
    when another patient's series reuses a changed series' UID (a re-sent or re-identified
    series: same SeriesInstanceUID, another Orthanc series, whose rows must not come in)."""
    from orthanc_pandas._ops import refresh as refresh_module

    monkeypatch.setattr(refresh_module, "_BY_UID_FROM", by_uid_from)
    df = op.read_orthanc(server.url)
    # series "b" of P2 once more under patient P9: the same UIDs, other Orthanc ids
    b = df[(df.PatientID == "P2") & (df.SeriesNumber == 2)].iloc[0]
    server.upload_bytes([to_bytes(d) for d in _series(
        "b", patient_id="P9", series_number=2, study_uid=b.StudyInstanceUID,
        series_uid=b.SeriesInstanceUID)])
    # and one more instance in P2's series "b" (changed: read again, its UID shared now)
    server.upload_bytes([to_bytes(_series("b", n=5, patient_id="P2", series_number=2)[4])])
    refreshed = df.orthanc.refresh()
    fresh = op.read_orthanc(server.url)
    uids = fresh.groupby("SeriesInstanceUID", observed=True).apply(
        lambda g: g.index.get_level_values("series").nunique())
    assert uids.max() == 2  # the test really made two series share a UID
    assert len(refreshed) == len(df) + 5
    assert_same(refreshed, fresh)


@pytest.mark.parametrize("by_uid_from", [1, 10 ** 9], ids=["by-uids", "one-by-one"])
def test_new_series_whose_patient_ids_cannot_be_listed_equal_a_fresh_read(server, monkeypatch,
                                                                          by_uid_from):
    """With extended find the studies and patients of the changed series are found by
    StudyInstanceUID and PatientID lists. A PatientID a list cannot carry (empty: universal
    matching; a wildcard) is asked by GET instead. Either way the rows are a fresh read's, and
    no study or listable patient is asked one by one."""
    from orthanc_pandas._ops import refresh as refresh_module

    monkeypatch.setattr(refresh_module, "_BY_UID_FROM", by_uid_from)
    client = op.OrthancClient(server.url)
    df = op.read_orthanc(client)
    for seed, pid in [("e", ""), ("w", "P*7"), ("n", "P5")]:
        server.upload_bytes([to_bytes(d) for d in _series(seed, patient_id=pid, series_number=7)])
    sent: list[tuple[str, str]] = []
    client.session.hooks["response"].append(
        lambda r, *a, **k: sent.append((r.request.method, r.request.path_url.split("?")[0])))
    refreshed = refresh_module.refresh(df, client)
    fresh = op.read_orthanc(server.url)
    # the server kept the three ids (the empty one reads as missing)
    assert set(fresh.PatientID.dropna()) == {"P*7", "P5", "P1", "P2"} and fresh.PatientID.isna().any()
    assert_same(refreshed, fresh)
    if client.capabilities().extended_find:
        parents = [p.split("/")[1] for m, p in sent if m == "GET" and p.count("/") == 2
                   and p.split("/")[1] in ("studies", "patients")]
        assert parents == ["patients", "patients"]  # "" and "P*7" only
