"""Shared benchmark fixtures: cached generated archives on real, local Orthanc servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orthanc_pandas.synthetic import generate_archive  # noqa: E402
from orthanc_pandas.testing import LocalOrthanc  # noqa: E402

CACHE = Path(os.environ.get("ORTHANC_PANDAS_BENCH_CACHE", Path(__file__).parent / ".cache"))
SIZES = {"20k": (40, 2, 5, 50)}  # patients x studies x series x instances = 20,000


def _ensure_cached(name: str) -> Path:
    shape = SIZES[name]
    expected = shape[0] * shape[1] * shape[2] * shape[3]
    storage = CACHE / f"archive-{name}"
    done = storage / ".complete"
    if not done.exists():
        with LocalOrthanc(storage=storage) as server:
            if server.client().statistics()["CountInstances"] != expected:
                print(f"generating the {name} archive ({expected} instances, cached in {storage})...",
                      file=sys.stderr)
                t = time.perf_counter()
                server.upload_bytes(generate_archive(*shape, seed="archive"))
                print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        done.write_text(str(expected))
    return storage


@contextlib.contextmanager
def archive_server(name: str = "20k", **kwargs):
    """A started LocalOrthanc on a private copy of the generated archive ``name``.

    The archive is generated once and cached; each run works on a copy, so benchmarks that
    write (refresh, delete) leave the cache intact and two runs never share an SQLite index.
    """
    storage = _ensure_cached(name)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        copy = Path(tmp) / "storage"
        shutil.copytree(storage, copy)
        with LocalOrthanc(storage=copy, **kwargs) as server:
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
