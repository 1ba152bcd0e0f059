"""merge_rows at 1M: fast path vs the stack-and-sort path, equal results, best of 3."""
import sys, time, warnings
from pathlib import Path; ROOT = Path(__file__).resolve().parents[1]; sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
warnings.simplefilter("ignore")
import pandas as pd, numpy as np
import orthanc_pandas
print("orthanc_pandas from", orthanc_pandas.__file__)
from orthanc_pandas._ops.refresh import merge_rows, merge_rows_by_sort
from test_merge import changes, assert_same_merge

old = pd.read_parquet(sys.argv[1] if len(sys.argv) > 1 else "/tmp/p/pacs.parquet")
check = "--no-check" not in sys.argv
scen = {
    "20 new series (1000 rows) + 100 deleted": dict(n_new_series=20, n_replaced=0, n_deleted=100, drop_patient=False),
    "same + 5 replaced series + a patient deleted (categories go)": dict(n_new_series=20, n_replaced=5, n_deleted=100, drop_patient=True),
    "1 new series (50 rows), new patient": dict(n_new_series=1, n_replaced=0, n_deleted=0, drop_patient=False),
    "only 100 deleted": dict(n_new_series=0, n_replaced=0, n_deleted=100, drop_patient=False),
    "nothing": dict(n_new_series=0, n_replaced=0, n_deleted=0, drop_patient=False),
}
for name, kw in scen.items():
    new, affected, deleted = changes(old, 1, **kw)
    best = min((lambda t: (merge_rows(old, new, affected, deleted), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(3))
    line = f"{name}: new={0 if new is None else len(new)} fast {best:.3f} s"
    if check and ("20 new" in name or "same +" in name):
        t = time.perf_counter(); slow = merge_rows_by_sort(old, new, affected, deleted); ts = time.perf_counter() - t
        fast = merge_rows(old, new, affected, deleted)
        assert_same_merge(fast, slow)
        line += f", stack-and-sort {ts:.2f} s, equal"
    print(line, flush=True)
