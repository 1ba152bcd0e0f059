"""Shared benchmark fixtures: cached generated archives on real, local Orthanc servers."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orthanc_pandas.synthetic import generate_archive  # noqa: E402
from orthanc_pandas.testing import LocalOrthanc  # noqa: E402

CACHE = Path(os.environ.get("ORTHANC_PANDAS_BENCH_CACHE", Path(__file__).parent / ".cache"))
SIZES = {"20k": (40, 2, 5, 50)}  # patients x studies x series x instances = 20,000


@contextlib.contextmanager
def archive_server(name: str = "20k", **kwargs):
    """A started LocalOrthanc holding the generated archive ``name``, generated once and cached."""
    shape = SIZES[name]
    expected = shape[0] * shape[1] * shape[2] * shape[3]
    storage = CACHE / f"archive-{name}"
    with LocalOrthanc(storage=storage, **kwargs) as server:
        have = server.client().statistics()["CountInstances"]
        if have != expected:
            print(f"generating the {name} archive ({expected} instances, cached in {storage})...",
                  file=sys.stderr)
            t = time.perf_counter()
            server.upload_bytes(generate_archive(*shape, seed="archive"))
            print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        yield server


def best_of(fn, repeat: int = 3):
    """(best, median) wall time of ``fn()`` over ``repeat`` runs, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), result


def table(rows: list[tuple], headers: tuple) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
