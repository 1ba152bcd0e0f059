"""merge_rows' fast path (merge_sorted) against independent slow truths, on generated frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orthanc_pandas._frame.merge import merge_sorted, removed_rows
from orthanc_pandas._frame.schema import (
    LEVELS,
    STR_DTYPE,
    LevelTable,
    build_frame,
    canonical_categorical,
    categorical,
    sort_frame,
)
from orthanc_pandas._ops.refresh import merge_rows, merge_rows_by_sort

MODALITIES = ["CT", "MR", "US"]


def archive(n_patients: int = 6, studies: int = 2, series: int = 3, instances: int = 4,
            seed: int = 0) -> pd.DataFrame:
    """A frame as read_orthanc builds it: ids in random (hex) order, UIDs, a few values."""
    rng = np.random.default_rng(seed)

    def hexid():
        return "-".join(f"{rng.integers(16 ** 8):08x}" for _ in range(5))

    res = {lvl: [] for lvl in LEVELS}
    for p in range(n_patients):
        pid = hexid()
        res["patient"].append({"ID": pid, "MainDicomTags": {
            "PatientID": f"PAT{p:04d}", "PatientName": f"Name^{p}",
            "PatientSex": "MF"[p % 2]}})
        for s in range(studies):
            stid = hexid()
            res["study"].append({"ID": stid, "ParentPatient": pid, "MainDicomTags": {
                "StudyInstanceUID": f"1.2.{rng.integers(10 ** 9)}",
                "StudyDate": f"20{10 + s:02d}01{1 + p % 28:02d}"}})
            for r in range(series):
                seid = hexid()
                res["series"].append({"ID": seid, "ParentStudy": stid, "Status": "Unknown",
                                      "MainDicomTags": {
                                          "SeriesInstanceUID": f"1.3.{rng.integers(10 ** 9)}",
                                          "SeriesNumber": str(1 + r),
                                          "Modality": MODALITIES[(p + r) % 2],
                                          "SeriesDescription": f"desc {r % 2}"}})
                for k in range(instances):
                    tags = {"SOPInstanceUID": f"1.4.{rng.integers(10 ** 9)}",
                            "InstanceNumber": str(1 + k)}
                    if k == 0 and p == 0:
                        tags["ImageComments"] = "first"
                    res["instance"].append({"ID": hexid(), "ParentSeries": seid,
                                            "FileSize": 100 + k, "MainDicomTags": tags})
    return build_frame({lvl: LevelTable.from_resources(lvl, res[lvl]) for lvl in LEVELS})


def _renamed(value: str, where: str, k: int) -> str:
    """A new id near ``value``: sorting before everything, just after ``value``, or after all."""
    return {"before": f"0{k:03d}{value}", "between": f"{value}~{k}", "after": f"~{k}{value}"}[where]


def changes(old: pd.DataFrame, seed: int, *, n_new_series: int = 3, n_replaced: int = 1,
            n_deleted: int = 5, drop_patient: bool = True, new_values: bool = True,
            shuffle: bool = True) -> tuple[pd.DataFrame | None, set, set]:
    """``(new rows, affected series, deleted instances)`` as refresh would hand them over.

    New series copy existing ones with every id and UID renamed to sort before, between or
    after the existing ones (some under a new patient with a new PatientID, some new
    Modality); existing series are replaced by a version with fewer instances and another
    description; instances are deleted here and there, and optionally a whole patient (its
    PatientID and name categories disappear). The new rows' categories and index levels are
    those of their own values, in shuffled order (build_frame makes no promise of order).
    """
    rng = np.random.default_rng(seed)
    idx = old.index
    series_ids = idx.levels[2][np.unique(idx.codes[2])]
    picks = rng.choice(len(series_ids), size=min(len(series_ids), n_new_series + n_replaced),
                       replace=False)
    pieces = []
    affected: set[str] = set()
    for j, pick in enumerate(picks):
        sid = series_ids[pick]
        rows = old[idx.get_level_values("series") == sid].copy()
        ids = {lvl: rows.index.get_level_values(lvl).astype(object).to_numpy() for lvl in LEVELS}
        if j < n_new_series:  # a new series: every id renamed
            where = ["before", "between", "after"][j % 3]
            new_patient = j % 2 == 0
            for lvl in LEVELS:
                if lvl == "patient" and not new_patient:
                    continue
                ids[lvl] = np.array([_renamed(v, where, j) for v in ids[lvl]], dtype=object)
            for col in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                rows[col] = [_renamed(v, where, j) for v in rows[col].astype(object)]
            if new_patient:
                rows["PatientID"] = [_renamed(v, where, j) for v in rows["PatientID"].astype(object)]
            if new_values and j % 3 == 1:
                rows["Modality"] = "XA"  # a Modality the archive never had
        else:  # an existing series re-read: one instance fewer, another description
            affected.add(sid)
            keep = np.arange(len(rows)) != rng.integers(len(rows))
            rows = rows[keep]
            ids = {lvl: v[keep] for lvl, v in ids.items()}
            rows["SeriesDescription"] = "re-read"
        # plain values assigned above: back to the archive's dtypes (categoricals: _as_built)
        rows = rows.astype({c: old[c].dtype for c in rows.columns
                            if not isinstance(old[c].dtype, pd.CategoricalDtype)})
        affected.add(ids["series"][0])
        rows.index = pd.MultiIndex.from_arrays(
            [pd.Index(ids[lvl], dtype=STR_DTYPE) for lvl in LEVELS], names=LEVELS)
        pieces.append(rows)
    new = pd.concat(pieces) if pieces else None
    if new is not None:
        new = _as_built(new, rng if shuffle else None)
    deleted = set(rng.choice(idx.get_level_values("instance").astype(object).to_numpy(),
                             size=n_deleted, replace=False)) if n_deleted else set()
    if drop_patient:
        p = idx.levels[0][idx.codes[0][len(idx) // 2]]
        deleted |= set(idx.get_level_values("instance")[idx.get_level_values("patient") == p])
    return new, affected, deleted


def _as_built(new: pd.DataFrame, rng) -> pd.DataFrame:
    """Categoricals with the categories of their own values (shuffled), levels shuffled."""
    out = {}
    for c in new.columns:
        a = new[c].array
        if isinstance(new[c].dtype, pd.CategoricalDtype) or c in (
                "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                "SeriesDescription"):
            a = canonical_categorical(pd.Categorical(np.asarray(new[c].astype(object))))
            if rng is not None and len(a.categories) > 1:
                a = a.reorder_categories(list(rng.permutation(np.asarray(a.categories, dtype=object))))
        out[c] = a
    frame = pd.DataFrame(out, index=new.index, columns=new.columns)
    if rng is None:
        return frame
    levels, codes = [], []
    for level, code in zip(frame.index.levels, frame.index.codes, strict=True):
        perm = rng.permutation(len(level))
        levels.append(level.take(perm))
        inv = np.empty(len(perm), np.int64)
        inv[perm] = np.arange(len(perm))
        codes.append(inv[np.asarray(code)])
    frame.index = pd.MultiIndex(levels=levels, codes=codes, names=LEVELS)
    return frame


def truth(old: pd.DataFrame, new: pd.DataFrame | None, affected: set, deleted: set) -> pd.DataFrame:
    """The merge built the obvious way: keep, stack as plain values, re-categorise, sort."""
    ids = old.index
    keep = ~(ids.get_level_values("series").isin(list(affected))
             | ids.get_level_values("instance").isin(list(deleted)))
    parts = [old[keep]] + ([new] if new is not None and len(new) else [])
    cats = [c for c in old.columns if isinstance(old[c].dtype, pd.CategoricalDtype)]
    plain = [p.astype({c: object for c in cats}) for p in parts]
    stacked = pd.concat(plain) if len(plain) > 1 else plain[0]
    for c in cats:
        values = stacked[c]
        present = sorted(set(values.dropna()) - {""})
        codes = pd.Index(present, dtype=STR_DTYPE).get_indexer(values.where(values != "", None))
        stacked[c] = categorical(codes, present)
    for c in stacked.columns:
        if c not in cats and stacked[c].isna().all():
            stacked[c] = stacked[c].array.take(np.full(len(stacked), -1), allow_fill=True)
    # the index with the sorted levels of its values, whatever the levels of the pieces were
    # (MultiIndex.from_arrays factorizes each level sorted)
    index = parts[0].index
    for p in parts[1:]:
        index = index.append(p.index)
    stacked.index = pd.MultiIndex.from_arrays(
        [pd.Index(np.asarray(index.get_level_values(k), dtype=object), dtype=STR_DTYPE)
         for k in range(index.nlevels)], names=index.names)
    return sort_frame(stacked)


def assert_same_merge(fast: pd.DataFrame, slow: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(fast, slow)
    for a, b in zip(fast.index.levels, slow.index.levels, strict=True):
        pd.testing.assert_index_equal(a, b)
    for c in fast.columns:
        if isinstance(fast[c].dtype, pd.CategoricalDtype):
            assert fast[c].cat.codes.dtype == slow[c].cat.codes.dtype, c


SCENARIOS = {
    "new-and-deleted": {},
    "only-new": {"n_replaced": 0, "n_deleted": 0, "drop_patient": False},
    "only-deleted": {"n_new_series": 0, "n_replaced": 0},
    "only-replaced": {"n_new_series": 0, "n_deleted": 0, "drop_patient": False},
    "nothing": {"n_new_series": 0, "n_replaced": 0, "n_deleted": 0, "drop_patient": False},
    "sorted-new": {"shuffle": False},
    "no-new-values": {"new_values": False, "drop_patient": False},
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_merge_rows_equals_stacking_and_sorting(scenario, seed):
    old = archive(seed=seed)
    new, affected, deleted = changes(old, seed, **SCENARIOS[scenario])
    fast = merge_sorted(old, new, removed_rows(old.index, affected, deleted))
    assert fast is not None  # the fast path took it
    assert_same_merge(fast, truth(old, new, affected, deleted))
    assert_same_merge(merge_rows(old, new, affected, deleted),
                      merge_rows_by_sort(old, new, affected, deleted))


def test_merge_rows_after_merge_rows_and_with_a_new_category_set():
    # merging into a merged frame (chunked text columns) and a patient whose only value goes
    old = archive(seed=7)
    for seed in range(3):
        new, affected, deleted = changes(old, 10 + seed)
        merged = merge_rows(old, new, affected, deleted)
        assert_same_merge(merged, truth(old, new, affected, deleted))
        old = merged
    assert "XA" in old["Modality"].cat.categories


def test_merge_sorted_declines_a_frame_out_of_order():
    old = archive(seed=1)
    reordered = old.iloc[::-1]
    new, affected, deleted = changes(old, 1)
    assert merge_sorted(reordered, new, removed_rows(reordered.index, affected, deleted)) is None
    # merge_rows then stacks and sorts all
    assert_same_merge(merge_rows(reordered, new, affected, deleted),
                      truth(reordered, new, affected, deleted))


def test_merge_sorted_places_ties_after_the_kept_rows():
    # a new row equal in every sort key but the ids to a kept one, and ids sorting first:
    # the ids decide; identical keys keep the stack's order (kept first)
    old = archive(n_patients=2, seed=3)
    new = old.iloc[[0, 5]].copy()
    new.index = pd.MultiIndex.from_arrays(
        [pd.Index(list(new.index.get_level_values(lvl)), dtype=STR_DTYPE) for lvl in LEVELS[:3]]
        + [pd.Index(["0000", "~~~~"], dtype=STR_DTYPE)], names=LEVELS)
    new = _as_built(new, None)
    fast = merge_sorted(old, new, np.zeros(len(old), bool))
    assert_same_merge(fast, truth(old, new, set(), set()))


def test_merge_sorted_from_an_empty_or_all_deleted_frame():
    old = archive(n_patients=1, seed=4)
    ids = set(old.index.get_level_values("instance"))
    out = merge_rows(old, None, set(), ids)
    assert len(out) == 0
    assert_same_merge(out, merge_rows_by_sort(old, None, set(), ids))


@pytest.mark.parametrize("scenario", ["new-and-deleted", "only-new", "only-replaced"])
def test_merge_sorted_large_level_paths(monkeypatch, scenario):
    # the paths for a million instance ids (binary search, scan against the new ids,
    # comparison on demand) on a small frame: every level counts as large
    monkeypatch.setattr("orthanc_pandas._frame.merge.LARGE_LEVEL", 0)
    old = archive(seed=5)
    for seed in range(2):  # the second merge starts from the first's result
        new, affected, deleted = changes(old, 20 + seed, **SCENARIOS[scenario])
        fast = merge_sorted(old, new, removed_rows(old.index, affected, deleted))
        assert fast is not None
        assert_same_merge(fast, truth(old, new, affected, deleted))
        old = fast


@pytest.mark.parametrize("ids", ["fixed", "varying", "repeated"])
def test_read_frame_equals_read_parquet(tmp_path, ids):
    from orthanc_pandas._ops.mirror import read_frame

    df = archive(seed=2)
    if ids != "fixed":  # instance ids of varying lengths, or one id on two rows
        values = list(df.index.get_level_values("instance"))
        values = [v[: 10 + k % 7] for k, v in enumerate(values)] if ids == "varying" \
            else values[:1] + values[:-1]
        df.index = pd.MultiIndex.from_arrays(
            [df.index.get_level_values(lvl) for lvl in LEVELS[:3]]
            + [pd.Index(values, dtype=STR_DTYPE)], names=LEVELS)
    df.attrs = {"orthanc": {"last_change": 3}}
    path = tmp_path / "f.parquet"
    df.to_parquet(path)
    fast, slow = read_frame(path), pd.read_parquet(path)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast.attrs == slow.attrs == df.attrs
    for a, b, ca, cb in zip(fast.index.levels, slow.index.levels, fast.index.codes,
                            slow.index.codes, strict=True):
        pd.testing.assert_index_equal(a, b)
        assert ca.dtype == cb.dtype
    # not a frame with an id index: pd.read_parquet itself
    df.reset_index().to_parquet(path)
    pd.testing.assert_frame_equal(read_frame(path), pd.read_parquet(path))


@pytest.mark.parametrize("large", [False, True])
def test_merge_sorted_sorts_the_levels_of_a_frame_from_elsewhere(monkeypatch, large):
    # an old frame whose levels are in any order (built by hand, or by an older version in
    # order of first appearance): the merge gives the sorted levels a fresh read has
    if large:
        monkeypatch.setattr("orthanc_pandas._frame.merge.LARGE_LEVEL", 0)
    old = _as_built(archive(seed=8), np.random.default_rng(8))
    assert not all(level.is_monotonic_increasing for level in old.index.levels)
    new, affected, deleted = changes(old, 8)
    fast = merge_sorted(old, new, removed_rows(old.index, affected, deleted))
    assert fast is not None
    assert all(level.is_monotonic_increasing for level in fast.index.levels)
    assert_same_merge(fast, truth(old, new, affected, deleted))


def test_merge_sorted_puts_a_full_tie_after_the_kept_row():
    # a new row equal to a kept one in every sort key and id (only ImageComments differs):
    # the stack has the kept row first, and a stable sort keeps it first
    old = archive(n_patients=2, seed=6)
    new = old.iloc[[0, 5]].copy()
    new["ImageComments"] = pd.array(["dup", "dup"], dtype=old["ImageComments"].dtype)
    new = _as_built(new, None)
    fast = merge_sorted(old, new, np.zeros(len(old), bool))
    assert_same_merge(fast, truth(old, new, set(), set()))
    assert fast["ImageComments"].iloc[1] == "dup"
