"""orthanc_pandas.synthetic: one seed gives the same files in every process."""

from __future__ import annotations

import os
import subprocess
import sys

from orthanc_pandas.synthetic import generate_archive, make_series, to_bytes

_DIGEST = """
import hashlib
from orthanc_pandas.synthetic import generate_archive, make_multiframe, make_series, to_bytes
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
