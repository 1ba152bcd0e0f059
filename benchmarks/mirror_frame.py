"""The mirror's in-memory work at 1,000,000 instances: merging changed rows, loading the file.

    python benchmarks/mirror_frame.py PATH [--no-check]

``PATH`` is a mirror file of the 1M archive (``op.mirror``'s, e.g. one ``scale.py --million``
wrote). No server is asked: the changes are made from the frame itself by
``tests/test_merge.py``'s ``changes`` (new series whose ids and UIDs sort before, between and
after existing ones; replaced series; deletions; a deleted patient). Printed, best of 3:

* ``merge_rows`` (the fast merge of sorted rows) for each scenario, and for two of them the
  stack-and-sort path it replaced, with both results checked equal (``--no-check``: skip that);
* ``load_mirror``'s ``read_frame`` against ``pd.read_parquet``, results checked equal.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import pandas as pd  # noqa: E402
from _common import best_of  # noqa: E402
from test_merge import assert_same_merge, changes  # noqa: E402

from orthanc_pandas._ops.mirror import read_frame  # noqa: E402
from orthanc_pandas._ops.refresh import merge_rows, merge_rows_by_sort  # noqa: E402

SCENARIOS = {
    "20 new series (1,000 rows) + 100 deleted":
        dict(n_new_series=20, n_replaced=0, n_deleted=100, drop_patient=False),
    "the same + 5 replaced series + a patient deleted":
        dict(n_new_series=20, n_replaced=5, n_deleted=100, drop_patient=True),
    "1 new series (50 rows), new patient":
        dict(n_new_series=1, n_replaced=0, n_deleted=0, drop_patient=False),
    "only 100 deleted": dict(n_new_series=0, n_replaced=0, n_deleted=100, drop_patient=False),
    "nothing": dict(n_new_series=0, n_replaced=0, n_deleted=0, drop_patient=False),
}
CHECKED = tuple(SCENARIOS)[:2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t_read, _, ref = best_of(lambda: pd.read_parquet(args.path))
    t_fast, _, fast = best_of(lambda: read_frame(args.path))
    pd.testing.assert_frame_equal(fast, ref)
    assert fast.attrs == ref.attrs
    print(f"load {len(ref):,} rows: pd.read_parquet {t_read:.2f} s, read_frame {t_fast:.2f} s (equal)")
    for name, kw in SCENARIOS.items():
        new, affected, deleted = changes(ref, 1, **kw)
        seconds, _, _ = best_of(lambda a=(ref, new, affected, deleted): merge_rows(*a))
        line = f"merge_rows, {name}: {seconds:.3f} s"
        if name in CHECKED and not args.no_check:
            slow_seconds, _, slow = best_of(
                lambda a=(ref, new, affected, deleted): merge_rows_by_sort(*a), 1)
            assert_same_merge(merge_rows(ref, new, affected, deleted), slow)
            line += f"; stack and sort {slow_seconds:.2f} s (equal)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
