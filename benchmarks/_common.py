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

from orthanc_pandas.testing._servers import LocalOrthanc  # noqa: E402
from orthanc_pandas.testing.synthetic import generate_archive  # noqa: E402

CACHE = Path(os.environ.get("ORTHANC_PANDAS_BENCH_CACHE", Path(__file__).parent / ".cache"))
#: patients x studies x series x instances: 20,000 and 1,000,000 (20,000 series)
SIZES = {"20k": (40, 2, 5, 50), "1m": (2000, 2, 5, 50)}


def _cache_name(name: str, server: str | None, extra_main_dicom_tags) -> str:
    """``archive-20k`` for the machine's Orthanc; one more folder per (server, config)."""
    out = f"archive-{name}"
    if server:
        out += f"-{server}"
    if extra_main_dicom_tags:
        out += "-emt-" + "-".join(f"{level}={'+'.join(sorted(tags))}"
                                  for level, tags in sorted(extra_main_dicom_tags.items()))
    return out


def _ensure_cached(name: str, *, root=None, extra_main_dicom_tags=None) -> Path:
    """The cached archive ``name``, ingested by the server ``root`` runs with that config.

    A server stores a file in its index as its version and configuration decide (extra main
    tags only for files ingested while configured), so each (server, config) gets its own
    cache, filled with the same files.
    """
    shape = SIZES[name]
    expected = shape[0] * shape[1] * shape[2] * shape[3]
    server = Path(root).name if root is not None else None
    storage = CACHE / _cache_name(name, server, extra_main_dicom_tags)
    done = storage / ".complete"
    if not done.exists():
        with LocalOrthanc(storage=storage, root=root, extra_main_dicom_tags=extra_main_dicom_tags) as srv:
            have = int(srv.client().statistics()["CountInstances"])
            if have != expected:
                print(f"generating the {name} archive ({expected} instances, cached in {storage})...",
                      file=sys.stderr)
                t = time.perf_counter()
                if root is None and not extra_main_dicom_tags and name == "20k":  # the first cache
                    srv.upload_bytes(generate_archive(*shape, seed="archive"))
                else:  # the same bytes: fast_archive is generate_archive byte for byte
                    assert shape[1:] == (2, 5, 50), shape
                    first = have // 500  # an interrupted build resumes at a patient boundary
                    progress = {"n": 0}

                    def report(count, t=t, progress=progress, first=first):
                        progress["n"] += count
                        if progress["n"] % 50_000 < count:
                            rate = progress["n"] / (time.perf_counter() - t)
                            print(f"  {first * 500 + progress['n']} stored, {rate:.0f}/s", file=sys.stderr)

                    upload_pipelined(srv.client(), fast_archive(shape[0], first), on_batch=report)
                print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
                have = int(srv.client().statistics()["CountInstances"])
                if have != expected:
                    raise RuntimeError(f"{name}: {have} instances stored, {expected} expected")
        done.write_text(str(expected))
    return storage


def sqlite_statistics(index: Path, analyze: bool) -> None:
    """Give the SQLite index at ``index`` the planner statistics of ``ANALYZE``, or remove
    them (the state Orthanc leaves an index in: it never runs ``ANALYZE``). With the server
    stopped. Orthanc 1.13 at 1,000,000 instances without them: each instance-level lookup
    (``GET /instances/{id}``, a find by ``ParentSeries``) scans ``ResourceTypeIndex``, 0.2 s."""
    import sqlite3

    con = sqlite3.connect(index)
    try:
        if analyze:
            con.execute("ANALYZE")
        else:
            for (table,) in con.execute(
                    "SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'").fetchall():
                con.execute(f"DELETE FROM {table}")
        con.commit()
    finally:
        con.close()


@contextlib.contextmanager
def archive_server(name: str = "20k", *, root=None, extra_main_dicom_tags=None, in_place=False,
                   ingest_root="same", sqlite_stats: str | None = None, **kwargs):
    """A started LocalOrthanc on a private copy of the generated archive ``name``.

    The archive is generated once and cached; each run works on a copy, so benchmarks that
    write (refresh, delete) leave the cache intact and two runs never share an SQLite index.
    ``root`` runs another Orthanc (``orthanc_pandas.testing.orthanc_root("sid")``: 1.13) and
    ``extra_main_dicom_tags`` configures it; each combination has its own cached archive,
    ingested by that server with that configuration. ``in_place=True`` runs on the cache
    itself (copying 1,000,000 instances costs more than what is measured): a benchmark that
    writes must then undo what it wrote. ``ingest_root`` names another server to build the
    cache with (``None``: the machine's 1.10, which ingests ~3x faster than 1.13); ``root``
    then serves it. ``sqlite_stats``: "analyze" or "none" sets the index's planner statistics
    first (:func:`sqlite_statistics`); None leaves them as they are.
    """
    storage = _ensure_cached(name, root=root if ingest_root == "same" else ingest_root,
                             extra_main_dicom_tags=extra_main_dicom_tags)
    if in_place:
        if sqlite_stats is not None:
            sqlite_statistics(Path(storage) / "index", sqlite_stats == "analyze")
        with LocalOrthanc(storage=storage, root=root, extra_main_dicom_tags=extra_main_dicom_tags,
                          **kwargs) as server:
            yield server
        return
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        copy = Path(tmp) / "storage"
        shutil.copytree(storage, copy)
        if sqlite_stats is not None:
            sqlite_statistics(copy / "index", sqlite_stats == "analyze")
        with LocalOrthanc(storage=copy, root=root, extra_main_dicom_tags=extra_main_dicom_tags,
                          **kwargs) as server:
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


# -- PostgreSQL-backed archives (benchmarks/scale.py) -------------------------------------------
#: name -> patients (x 2 studies x 5 series x 50 instances); the first 40 patients of every
#: archive are exactly the SQLite "20k" archive (same seed, same UIDs, same Orthanc ids)
PG_SIZES = {"pg-20k": 40, "pg-200k": 400}


def fast_archive(n_patients: int, first_patient: int = 0, *, seed: object = "archive"):
    """The files of ``synthetic.generate_archive(n_patients, 2, 5, 50)`` byte for byte, ~50x faster.

    generate_archive spends ~1 ms per instance in pydicom's encoder. Every value it varies has
    a fixed encoded length (64-character UIDs, zero-padded numbers), except the position of
    each of the 50 slices. So the 50 slices of its first series are encoded once as templates
    and only the varying values are overwritten in place. ``first_patient`` resumes mid-way.
    """
    from orthanc_pandas.testing.synthetic import uid

    templates = list(generate_archive(1, 1, 1, 50, seed=seed))

    def header(group: int, elem: int, vr: bytes) -> bytes:
        return group.to_bytes(2, "little") + elem.to_bytes(2, "little") + vr

    fields = {  # keyword -> (encoded header, VR padding byte)
        "MediaStorageSOPInstanceUID": (header(0x0002, 0x0003, b"UI"), b"\0"),
        "SOPInstanceUID": (header(0x0008, 0x0018, b"UI"), b"\0"),
        "StudyDate": (header(0x0008, 0x0020, b"DA"), b" "),
        "Modality": (header(0x0008, 0x0060, b"CS"), b" "),
        "StudyDescription": (header(0x0008, 0x1030, b"LO"), b" "),
        "SeriesDescription": (header(0x0008, 0x103E, b"LO"), b" "),
        "PatientName": (header(0x0010, 0x0010, b"PN"), b" "),
        "PatientID": (header(0x0010, 0x0020, b"LO"), b" "),
        "PatientBirthDate": (header(0x0010, 0x0030, b"DA"), b" "),
        "PatientSex": (header(0x0010, 0x0040, b"CS"), b" "),
        "StudyInstanceUID": (header(0x0020, 0x000D, b"UI"), b"\0"),
        "SeriesInstanceUID": (header(0x0020, 0x000E, b"UI"), b"\0"),
        "SeriesNumber": (header(0x0020, 0x0011, b"IS"), b" "),
    }
    slots = []  # per template: keyword -> (value offset, length)
    for t in templates:
        where = {}
        for kw, (h, _pad) in fields.items():
            assert t.count(h) == 1, kw
            at = t.index(h) + len(h)
            where[kw] = (at + 2, int.from_bytes(t[at:at + 2], "little"))
        slots.append(where)

    modalities = ("CT", "MR", "CT", "PT", "CT")
    for p in range(first_patient, n_patients):
        pid = f"PAT{p:06d}"
        patient = {"PatientID": pid, "PatientName": f"Synthetic^{p:06d}", "PatientSex": "FM"[p % 2],
                   "PatientBirthDate": f"{1940 + p % 60}0101"}
        for s in range(2):
            study = {"StudyInstanceUID": uid(seed, pid, s), "StudyDate": f"{2010 + s % 12}{1 + p % 12:02d}15",
                     "StudyDescription": f"Study {s}"}
            for r in range(5):
                series = {"SeriesInstanceUID": uid(seed, pid, s, r), "SeriesNumber": str(r + 1),
                          "Modality": modalities[r % 5], "SeriesDescription": f"series {r}"}
                for i in range(50):
                    sop = uid(seed, pid, s, r, i)
                    values = {**patient, **study, **series, "SOPInstanceUID": sop,
                              "MediaStorageSOPInstanceUID": sop}
                    out = bytearray(templates[i])
                    for kw, (at, length) in slots[i].items():
                        v = values[kw].encode("ascii")
                        v += fields[kw][1] * (length - len(v))
                        assert len(v) == length, kw  # a value of another length: use generate_archive
                        out[at:at + length] = v
                    yield bytes(out)


def _chown_tree(path: Path, like: Path) -> None:
    st = like.stat()
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, f) for f in dirs + files)]:
            os.chown(name, st.st_uid, st.st_gid, follow_symlinks=False)


def upload_pipelined(client, blobs, *, batch: int = 1000, on_batch=None) -> int:
    """Zip ``batch`` files at a time in this thread while the previous ZIP is being stored.

    One upload at a time: two concurrent ZIPs were measured slower with the PostgreSQL index
    (serializable transactions conflicting on the same parents, then retried).
    """
    import io
    import zipfile
    from concurrent.futures import ThreadPoolExecutor

    def post(data: bytes, count: int) -> int:
        ans = client.post_json("/instances", data=data, headers={"Content-Type": "application/zip"},
                               idempotent=True)
        ans = ans if isinstance(ans, list) else [ans]
        bad = [a for a in ans if a.get("Status") not in ("Success", "AlreadyStored")]
        if bad or len(ans) != count:
            raise RuntimeError(f"upload failed: {len(ans)} answers for {count} files, {bad[:2]}")
        if on_batch:
            on_batch(count)
        return count

    stored, pending = 0, None
    with ThreadPoolExecutor(1) as ex:
        it = iter(blobs)
        while True:
            buf, count = io.BytesIO(), 0
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                for count, blob in enumerate(it, 1):  # noqa: B007
                    zf.writestr(f"{count:05d}.dcm", blob)
                    if count == batch:
                        break
            if pending is not None:
                stored += pending.result()
            if not count:
                break
            pending = ex.submit(post, buf.getvalue(), count)
    return stored


def _pg_dirs(name: str) -> tuple[Path, Path, Path]:
    root = CACHE / name
    return root / "pgdata", root / "storage", root / ".complete"


def ensure_pg_archives(name: str | None = None) -> None:
    """Build the cached PostgreSQL-backed archives (``PG_SIZES``) that are not complete yet
    (only what archive ``name`` needs, when given).

    They are built as one: the big one is filled with the small one's patients first, a copy
    of its PostgreSQL data directory and Orthanc storage is taken, then it is filled on.
    Interrupted builds resume (instances already stored are skipped by position).
    """
    from orthanc_pandas.testing import LocalPostgres

    names = sorted(PG_SIZES, key=PG_SIZES.get)
    if all(_pg_dirs(n)[2].exists() for n in ([name] if name else names)):
        return
    big = names[-1]
    pgdata, storage, done = _pg_dirs(big)
    per_patient = 2 * 5 * 50
    for name in names:
        target = PG_SIZES[name] * per_patient
        if _pg_dirs(name)[2].exists() and name != big:
            continue
        with LocalPostgres(storage=pgdata) as pg, \
                LocalOrthanc(postgres=pg, storage=storage, config=PG_ORTHANC_CONFIG) as server:
            have = int(server.client().statistics()["CountInstances"])
            if have < target:
                first = min(have // per_patient, PG_SIZES[name])  # resume at a patient boundary
                print(f"generating {name}: patients {first}..{PG_SIZES[name] - 1} "
                      f"({target - first * per_patient} instances, in {CACHE / big})", file=sys.stderr)
                t0 = time.perf_counter()
                progress = {"n": 0}

                def report(count, t0=t0, progress=progress, first=first):
                    progress["n"] += count
                    if progress["n"] % 20_000 < count:
                        rate = progress["n"] / (time.perf_counter() - t0)
                        print(f"  {first * per_patient + progress['n']} stored, {rate:.0f}/s",
                              file=sys.stderr)

                upload_pipelined(server.client(), fast_archive(PG_SIZES[name], first), on_batch=report)
                print(f"  done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            have = int(server.client().statistics()["CountInstances"])
            if have != target:
                raise RuntimeError(f"{name}: {have} instances stored, {target} expected")
        if name != big:  # both servers are stopped cleanly: snapshot the small archive
            s_pgdata, s_storage, s_done = _pg_dirs(name)
            for src, dst in ((pgdata, s_pgdata), (storage, s_storage)):
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst, symlinks=True)
                _chown_tree(dst, src)
            s_pgdata.chmod(0o700)
            s_done.write_text(str(target))
    done.write_text(str(PG_SIZES[big] * per_patient))


#: Orthanc options for the PostgreSQL-backed benchmark servers
PG_ORTHANC_CONFIG = {"StableAge": 60}


@contextlib.contextmanager
def pg_archive_server(name: str = "pg-200k", **kwargs):
    """A started LocalOrthanc, index in a LocalPostgres, on the cached archive ``name``.

    Unlike :func:`archive_server` this works in place (a copy of 200k instances would cost
    more than the reads measured): benchmarks that write must undo what they wrote.
    """
    from orthanc_pandas.testing import LocalPostgres

    ensure_pg_archives(name)
    pgdata, storage, _ = _pg_dirs(name)
    with LocalPostgres(storage=pgdata) as pg, \
            LocalOrthanc(postgres=pg, storage=storage, config={**PG_ORTHANC_CONFIG, **kwargs.pop("config", {})},
                         **kwargs) as server:
        yield server
