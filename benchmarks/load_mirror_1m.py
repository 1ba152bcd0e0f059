import sys, time, warnings, json
from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.simplefilter("ignore")
import pandas as pd, numpy as np
import orthanc_pandas
print("orthanc_pandas from", orthanc_pandas.__file__)
from orthanc_pandas._ops.mirror import read_frame
path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/p/pacs.parquet"
def best(f, k=3):
    ts = []
    for _ in range(k):
        t = time.perf_counter(); r = f(); ts.append(time.perf_counter() - t)
    return min(ts), r
tr, ref = best(lambda: pd.read_parquet(path))
tf, fast = best(lambda: read_frame(path))
print(f"pd.read_parquet best of 3: {tr:.2f} s; read_frame best of 3: {tf:.2f} s")
pd.testing.assert_frame_equal(fast, ref)
assert fast.attrs == ref.attrs
for a, b, ca, cb in zip(fast.index.levels, ref.index.levels, fast.index.codes, ref.index.codes):
    pd.testing.assert_index_equal(a, b); assert ca.dtype == cb.dtype
assert list(fast.dtypes) == list(ref.dtypes)
print("equal (frame, attrs, levels, codes dtypes)")
