"""orthanc_pandas.synthetic: one seed gives the same files in every process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orthanc_pandas.testing.synthetic import generate_archive, make_series, to_bytes

_DIGEST = """
import hashlib
from orthanc_pandas.testing.synthetic import generate_archive, make_multiframe, make_series, to_bytes
h = hashlib.sha256()
for ds in make_series(6, 8, 8, seed="same", instance_numbers="shuffled"):
    h.update(to_bytes(ds))
h.update(to_bytes(make_multiframe(3, 8, 8, seed="same")))
for blob in generate_archive(1, 1, 2, 3, seed="same"):
    h.update(blob)
print(h.hexdigest())
"""


def _digest_in_a_new_process(hash_seed: str) -> str:
    # a different PYTHONHASHSEED per process is what made hash(str(seed)) differ between runs
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run([sys.executable, "-c", _DIGEST], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_same_seed_gives_byte_identical_files_in_two_processes():
    assert _digest_in_a_new_process("1") == _digest_in_a_new_process("2")


def test_a_shuffled_order_is_a_permutation_that_depends_on_the_seed():
    numbers = [int(ds.InstanceNumber) for ds in make_series(8, 4, 4, seed="a", instance_numbers="shuffled")]
    assert sorted(numbers) == list(range(1, 9))
    other = [int(ds.InstanceNumber) for ds in make_series(8, 4, 4, seed="b", instance_numbers="shuffled")]
    assert numbers != other


def test_generate_archive_is_reproducible():
    first = list(generate_archive(1, 1, 1, 2, seed="x"))
    assert first == list(generate_archive(1, 1, 1, 2, seed="x"))
    assert to_bytes(make_series(1, 4, 4, seed="x")[0]) == to_bytes(make_series(1, 4, 4, seed="x")[0])


def test_the_benchmarks_fast_archive_is_generate_archive_byte_for_byte(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    from _common import fast_archive

    assert list(fast_archive(1)) == list(generate_archive(1, 2, 5, 50))


def test_make_seg_holds_the_masks_it_was_given():
    hd = pytest.importorskip("highdicom")
    import io

    import numpy as np

    from orthanc_pandas.testing.synthetic import make_seg, make_series, to_bytes

    ct = make_series(4, 16, 16, seed="seg-test")
    masks = np.stack([[ds.pixel_array > 1000 for ds in ct], [ds.pixel_array <= 1000 for ds in ct]])
    seg = hd.seg.segread(io.BytesIO(to_bytes(make_seg(ct, masks, ["dense", "rest"]))))
    got = seg.get_pixels_by_source_instance([str(ds.SOPInstanceUID) for ds in ct],
                                            segment_numbers=[1, 2], skip_overlap_checks=True)
    assert got.shape == (4, 16, 16, 2)
    np.testing.assert_array_equal(np.moveaxis(got, -1, 0).astype(bool), masks)
    assert masks[0].any() and masks[1].any()
    with pytest.raises(ValueError, match="expected \\(2 segments, 4 slices"):
        make_seg(ct, masks[:, :3], ["dense", "rest"])
