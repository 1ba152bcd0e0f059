"""``op.mirror(url, path)``: the archive's index kept in one parquet file, updated by what changed.

The first call reads the archive (``read_orthanc``) and writes ``path``. Later calls load the
file and bring it level with the server the way ``refresh()`` does (the change log for what
was stored; per-series counts, and only where they differ a re-read of those series, for what
was deleted, which Orthanc does not log), then write it back if anything changed.

Why one file, not a dataset folder: a file can be replaced atomically (written beside the old
one, fsynced, then ``os.replace``), so a crash or a kill mid-write leaves the previous mirror
whole and readable, and two processes never see half of each. A folder of parts cannot be
swapped in one step. One file still splits for parallel readers: it is written in row groups
of ``row_group_size`` rows, which ``dask.dataframe.read_parquet(path,
split_row_groups=True)`` and DuckDB read as separate pieces.

The file is plain parquet: ``pd.read_parquet(path)`` gives back the frame with its index and
``attrs`` (``.orthanc`` works on it), DuckDB and pyarrow read it as a table. Its key-value
metadata ``orthanc_pandas.mirror`` (JSON) holds the change sequence, the server's identity and
the frame format. It holds patient data: it is created readable and writable by its owner
only (mode 0600, as ssh does with private keys), whatever the umask.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from orthanc_pandas._frame.schema import LABELS_COLUMN
from orthanc_pandas._http.client import OrthancClient, get_client
from orthanc_pandas._ops.provenance import FORMAT_VERSION, check_format
from orthanc_pandas._ops.read import read_orthanc
from orthanc_pandas._ops.read_levels import FRAME_LEVELS
from orthanc_pandas._ops.refresh import refresh
from orthanc_pandas._ops.refresh_levels import refresh_level_frame
from orthanc_pandas._util.warn import warn
from orthanc_pandas._version import __version__
from orthanc_pandas.errors import (
    FrameFormatError,
    MirrorError,
    MirrorWarning,
    ServerMismatchError,
)

log = logging.getLogger(__name__)

#: version of the mirror's own metadata (``orthanc_pandas.mirror``)
MIRROR_FORMAT = 1
META_KEY = b"orthanc_pandas.mirror"
#: rows per parquet row group: the pieces Dask and DuckDB read in parallel
ROW_GROUP_SIZE = 100_000
LEVEL_CHOICES = ("instance", *FRAME_LEVELS)
#: columns whose row-group min/max are written, so DuckDB, Dask and pyarrow filters on them
#: skip row groups. Not every column: the statistics of all ~60 (unique UIDs among them) were
#: half the write of a 1M-instance mirror (2.1 s against 1.1 s without, 1.3 s with these).
STATISTICS_COLUMNS = ("PatientID", "StudyDate", "SeriesDate", "Modality")

#: the frame this process last loaded or wrote, per mirror file: (file identity, frame,
#: metadata). A process that updates a mirror again (a notebook, a service) then skips
#: loading it: an update costs what changed, not the archive. Valid while the file on disk
#: is the one written (same inode, size and modification time); frames handed out are
#: shallow copies, which pandas' copy-on-write keeps apart from this one.
_LAST: dict[str, tuple[tuple, pd.DataFrame, dict]] = {}


def mirror(url: str | OrthancClient, path: str | os.PathLike, *, level: str = "instance",
           auth=None, progress=None, row_group_size: int = ROW_GROUP_SIZE, wait: bool = True,
           **read_kwargs) -> pd.DataFrame:
    """The archive's index frame, kept in the parquet file ``path`` and updated by what changed.

    The first call reads the archive with :func:`~orthanc_pandas.read_orthanc` and writes
    ``path``. Each later call loads ``path``, applies only what changed on the server since
    it was written, writes it back (atomically) when anything did, and returns the frame:
    equal to what ``read_orthanc(url, level=level)`` would return now.

    What an update costs (``docs/mirror.md`` has the figures):

    * ``level="instance"``: the changes since the file's change sequence (``/changes``); the
      series they name are read again whole; deletions (which Orthanc does not log) are found
      by comparing counts (``/statistics``), then, only if they differ, per-series instance
      counts (extended ``/tools/find``, Orthanc >= 1.12.5) or, on older servers, the instance
      id list; labels (which write no change entry) are read again: cost grows with the
      labelled resources. Then the file is written again (~1 s per million rows).
    * ``level="series"`` (``"study"``, ``"patient"``): the level frame is read again
      level-first, whose cost grows with the series, not the instances.

    When the server's change log no longer explains what it holds (the log was cleared, the
    database restored from a backup or replaced, or another server answers at ``url``), a
    :class:`~orthanc_pandas.errors.MirrorWarning` says so and the archive is read anew: the
    mirror never mixes two archives.

    Parameters
    ----------
    url : str or OrthancClient
        The server, as for ``read_orthanc``.
    path : str or os.PathLike
        The mirror file (parquet). Created (mode 0600) if missing. A file that ``mirror`` did
        not write is never overwritten.
    level : {"instance", "series", "study", "patient"}, default "instance"
        The frame kept: instances, or the level frame read level-first.
    auth : (str, str), optional
        As for ``read_orthanc``; never written to the file.
    progress : bool or tqdm, optional
        Progress bar of the reads (a first read, or one read anew).
    row_group_size : int, default 100,000
        Rows per parquet row group (the pieces parallel readers take).
    wait : bool, default True
        Return once the file is written. ``False`` returns the frame as soon as it is up to
        date and writes the file on a background thread (at 1M instances the write is most of
        an update: ~1.5 s). Until that write ends the file is the previous mirror, whole and
        readable; the next ``mirror`` call on ``path`` in this process, and the process's
        exit, wait for it. A write that fails leaves the previous file and is reported by the
        next call (a ``MirrorWarning``; that call then updates from the previous file).
    **read_kwargs
        Passed to ``read_orthanc`` (``typed``, ``page_size``, ``route``, ``max_rounds``,
        client options such as ``verify`` or ``timeout``).

    Returns
    -------
    pandas.DataFrame
        The frame, with provenance in ``attrs["orthanc"]`` (``last_change``, ``counts``).

    Raises
    ------
    MirrorError
        ``path`` is not a mirror (another parquet file, or not parquet), or is the mirror of
        another URL or level: choose another path or delete the file.

    Warns
    -----
    MirrorWarning
        When the mirror is read anew instead of updated, with the reason.

    Examples
    --------
    >>> import orthanc_pandas as op
    >>> df = op.mirror("http://127.0.0.1:8042", "pacs.parquet")          # doctest: +SKIP
    >>> # ... tomorrow: only what changed is read
    >>> df = op.mirror("http://127.0.0.1:8042", "pacs.parquet")          # doctest: +SKIP
    >>> series = op.mirror(url, "pacs-series.parquet", level="series")   # doctest: +SKIP
    >>> # a service updating every minute: the frame now, the file written behind
    >>> df = op.mirror(url, "pacs.parquet", wait=False)                  # doctest: +SKIP
    >>> import dask.dataframe as dd
    >>> ddf = dd.read_parquet("pacs.parquet", split_row_groups=True)     # doctest: +SKIP
    """
    if level not in LEVEL_CHOICES:
        raise ValueError(f"level must be one of {', '.join(map(repr, LEVEL_CHOICES))}; got {level!r}.")
    if not isinstance(row_group_size, int) or row_group_size < 1:
        raise ValueError(f"row_group_size must be a positive integer, got {row_group_size!r}.")
    client_keys = {"verify", "timeout", "retries", "pool_size", "compress_json"}
    client = get_client(url, auth=auth, **{k: v for k, v in read_kwargs.items() if k in client_keys})
    read_kwargs = {k: v for k, v in read_kwargs.items() if k not in client_keys}
    path = Path(path)
    _join_writer(path)
    lock = _lock(path)
    try:
        _remove_stale_temporaries(path)
        loaded = _cached(path) or (load_mirror(path) if path.exists() else None)
        if loaded is None:
            log.info("mirror %s: first read of %s", path, client.url)
            df = read_orthanc(client, level=level, progress=progress, **read_kwargs)
        else:
            old, info = loaded
            _check_same(info, client, level, path)
            why = _why_read_anew(old, info, client)
            if why is None:
                try:
                    df = _update(old, client, level)
                except ServerMismatchError as exc:  # ChangeLogGapError, or counts that differ
                    why = str(exc)
            if why is not None:
                warn(f"op.mirror: {path} is read anew from {client.url}: {why}", MirrorWarning)
                df = read_orthanc(client, level=level, progress=progress, **read_kwargs)
            elif _same_content(old, df):
                log.info("mirror %s: nothing changed since sequence %s", path, info["last_change"])
                _remember(path, old, info)
                return old.copy(deep=False)
        meta = mirror_meta(df, client, level)
        if wait:
            write_file(df, path, meta, row_group_size)
            _remember(path, df, meta)
        else:  # the thread owns the lock from here and releases it when the file is written
            _start_writer(path, df, meta, row_group_size, lock)
            lock = None
    finally:
        if lock is not None:
            os.close(lock)
    return df.copy(deep=False)


#: background writes of ``mirror(..., wait=False)``: resolved path -> (thread, [error])
_WRITERS: dict[str, tuple[threading.Thread, list]] = {}


def _start_writer(path: Path, df: pd.DataFrame, meta: dict, row_group_size: int, lock: int) -> None:
    failed: list[BaseException] = []

    def run():
        try:
            write_file(df, path, meta, row_group_size)
            _remember(path, df, meta)
        except BaseException as exc:  # reported by the next call; the previous file is intact
            failed.append(exc)
            log.error("mirror %s: the background write failed (%s); the previous file is kept",
                      path, exc)
        finally:
            os.close(lock)

    # not a daemon: the interpreter's exit waits for the file to be written
    thread = threading.Thread(target=run, name=f"orthanc-mirror-write-{path.name}")
    _WRITERS[str(path.resolve())] = (thread, failed)
    thread.start()


def _join_writer(path: Path) -> None:
    """Wait for this process's background write of ``path``; warn if it failed."""
    writer = _WRITERS.pop(str(path.resolve()), None)
    if writer is None:
        return
    thread, failed = writer
    thread.join()
    if failed:
        warn(f"op.mirror: the background write of {path} failed ({type(failed[0]).__name__}: "
             f"{failed[0]}); the file is the previous mirror, which this call updates.",
             MirrorWarning)


def file_identity(path: str | os.PathLike) -> tuple:
    """What tells one written mirror file from the next (a rewrite is a new inode)."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _remember(path: Path, df: pd.DataFrame, info: dict) -> None:
    _LAST.clear()  # one mirror's frame at a time: memory for one archive, not one per path
    _LAST[str(path.resolve())] = (file_identity(path), df, info)


def _cached(path: Path) -> tuple[pd.DataFrame, dict] | None:
    hit = _LAST.get(str(path.resolve())) if path.exists() else None
    if hit is None or hit[0] != file_identity(path):
        return None
    return hit[1], hit[2]


def _update(old: pd.DataFrame, client: OrthancClient, level: str) -> pd.DataFrame:
    if len(old) == 0:  # an empty archive: nothing to keep, and read again it costs nothing
        return read_orthanc(client, level=level, typed=_is_typed(old))
    if level == "instance":
        return refresh(old, client)
    return refresh_level_frame(old, client)


def _is_typed(df: pd.DataFrame) -> bool:
    return not ("StudyDate" in df.columns and isinstance(df["StudyDate"].dtype, pd.StringDtype))


def _same_content(old: pd.DataFrame, new: pd.DataFrame) -> bool:
    """Whether an update changed nothing but the time it was taken (then the file stays)."""
    a = {k: v for k, v in (old.attrs.get("orthanc") or {}).items() if k != "read_at"}
    b = {k: v for k, v in (new.attrs.get("orthanc") or {}).items() if k != "read_at"}
    if a != b or len(old) != len(new) or list(old.columns) != list(new.columns) \
            or not (old.dtypes == new.dtypes).all():
        return False
    # The same change sequence and counts: no resource was stored (each store logs a change
    # and moves the sequence) and none deleted (the counts; a resource deleted and stored
    # again is logged anew). Only labels, which Orthanc does not log, can differ, and an
    # instance frame derives them anew on each update. Comparing every column instead cost
    # ~0.3 s at 1M instances.
    labels = LABELS_COLUMN if LABELS_COLUMN in old.columns else None
    if old.index.names[-1] == "instance":
        return labels is None or old[labels].equals(new[labels])
    return old.equals(new) and old.index.equals(new.index)


# -- the file --------------------------------------------------------------------------------
def mirror_metadata(path: str | os.PathLike) -> dict:
    """The ``orthanc_pandas.mirror`` metadata of a mirror file (change sequence, server, level).

    Examples
    --------
    >>> mirror_metadata("pacs.parquet")["last_change"]                   # doctest: +SKIP
    20412
    """
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise MirrorError(
            f"{path} cannot be read as parquet ({exc}). op.mirror never overwrites a file it "
            "did not write: choose another path, or delete this file to read the archive anew."
        ) from None
    if META_KEY not in meta:
        raise MirrorError(
            f"{path} is a parquet file but not a mirror written by op.mirror (no "
            f"{META_KEY.decode()} metadata). op.mirror never overwrites a file it did not "
            "write: choose another path, or delete this file.")
    return json.loads(meta[META_KEY])


def load_mirror(path: str | os.PathLike) -> tuple[pd.DataFrame, dict] | None:
    """``(frame, metadata)`` of a mirror file; None when it must be read anew (another mirror
    or frame format, written by another orthanc-pandas: said in a warning)."""
    path = Path(path)
    info = mirror_metadata(path)
    if info.get("mirror_format") != MIRROR_FORMAT or info.get("format") != FORMAT_VERSION:
        warn(f"op.mirror: {path} was written by {info.get('library', 'another version')} in "
             f"another format (mirror {info.get('mirror_format')}, frame {info.get('format')}); "
             f"this orthanc-pandas {__version__} reads it anew.", MirrorWarning)
        return None
    df = read_frame(path)
    try:
        check_format(df.attrs)
    except FrameFormatError as exc:
        warn(f"op.mirror: {exc} It is read anew.", MirrorWarning)
        return None
    return df, info


def read_frame(path: str | os.PathLike) -> pd.DataFrame:
    """``pd.read_parquet(path)`` of a frame file, with its MultiIndex built faster.

    pandas rebuilds an index from its columns with ``MultiIndex.from_arrays``: a factorize and
    a sort of every level's values in pandas (1.8 s of 3.3 s for a million instances). Here
    the table is read by pyarrow, the other columns converted as pandas converts them
    (``Table.to_pandas`` with the file's pandas metadata, as ``pd.read_parquet`` does), and
    each index level dictionary-encoded and sorted in Arrow: the same levels (sorted values)
    and codes. Attributes come back from ``PANDAS_ATTRS`` as ``pd.read_parquet`` restores
    them. Anything else than an index of several named text columns without missing values
    is read by ``pd.read_parquet`` itself.

    Examples
    --------
    >>> df = read_frame("pacs.parquet")                                 # doctest: +SKIP
    >>> df.equals(pd.read_parquet("pacs.parquet"))                     # doctest: +SKIP
    True
    """
    table = pq.read_table(path, use_pandas_metadata=True)
    meta = dict(table.schema.metadata or {})
    pandas_meta = json.loads(meta.get(b"pandas", b"{}"))
    names = pandas_meta.get("index_columns") or []
    if (len(names) < 2 or not all(isinstance(n, str) and n in table.column_names for n in names)
            or not isinstance(pd.Index([], dtype="str").dtype, pd.StringDtype)
            or any(not (pa.types.is_string(table.schema.field(n).type)
                        or pa.types.is_large_string(table.schema.field(n).type))
                   or table.column(n).null_count for n in names)):
        return pd.read_parquet(path)
    levels, codes = [], []
    for k, name in enumerate(names):
        column = table.column(name).combine_chunks()
        # the last level (instance ids: one per row) is sorted whole; the others, with few
        # values, are dictionary-encoded first and only their distinct values sorted
        found = _sorted_fixed_width(column) if k == len(names) - 1 else None
        if found is None:
            encoded = column.dictionary_encode()
            order = pc.sort_indices(encoded.dictionary).to_numpy()
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            found = encoded.dictionary.take(pa.array(order)), rank[encoded.indices.to_numpy()]
        values, level_codes = found
        levels.append(pd.Index(pd.array(values, dtype="str"), name=name))
        codes.append(level_codes)
    # the other columns, converted with the pandas metadata of the file minus the index
    pandas_meta = {**pandas_meta, "index_columns": [],
                   "columns": [c for c in pandas_meta.get("columns", [])
                               if c.get("field_name") not in names]}
    body = table.drop_columns(names)
    body = body.replace_schema_metadata({**meta, b"pandas": json.dumps(pandas_meta).encode()})
    df = body.to_pandas()
    df.index = pd.MultiIndex(levels=levels, codes=codes, names=names, verify_integrity=False)
    if b"PANDAS_ATTRS" in meta:
        df.attrs = json.loads(meta[b"PANDAS_ATTRS"])
    return df


def _sorted_fixed_width(column: pa.Array) -> tuple[pa.Array, np.ndarray] | None:
    """``(sorted distinct values, code of each row)`` of a text column whose values all have
    the same byte length (Orthanc ids), sorted by numpy as fixed-width bytes: about three
    times faster than sorting the strings in Arrow or pandas. None for other columns.

    >>> values, codes = _sorted_fixed_width(pa.array(["b", "a", "b"]))
    >>> values.to_pylist(), codes.tolist()
    (['a', 'b'], [1, 0, 1])
    """
    n = len(column)
    if not n or column.null_count or not (pa.types.is_string(column.type)
                                          or pa.types.is_large_string(column.type)):
        return None
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64 if pa.types.is_large_string(
        column.type) else np.int32)[column.offset:column.offset + n + 1]
    width = int(offsets[1] - offsets[0])
    if width <= 0 or not (np.diff(offsets) == width).all():
        return None
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    if not data[width - 1::width].all():  # a trailing NUL: numpy's bytes would drop it
        return None
    fixed = data.view(f"S{width}")
    order = np.argsort(fixed, kind="stable")  # byte order = code point order for UTF-8
    ordered = fixed[order]
    first = np.ones(n, bool)
    first[1:] = ordered[1:] != ordered[:-1]
    distinct = np.ascontiguousarray(ordered[first])
    codes = np.empty(n, np.int64)
    codes[order] = np.cumsum(first) - 1
    values = pa.Array.from_buffers(
        pa.large_string(), len(distinct),
        [None, pa.py_buffer(np.arange(len(distinct) + 1, dtype=np.int64) * width),
         pa.py_buffer(distinct.view(np.uint8))])
    return values, codes


def write_mirror(df: pd.DataFrame, path: str | os.PathLike, client: OrthancClient, *,
                 level: str, row_group_size: int = ROW_GROUP_SIZE) -> dict:
    """Write ``df`` to ``path`` atomically, mode 0600, with the mirror metadata.

    The table is written to a temporary file beside ``path`` (same folder, so the same file
    system), flushed to disk, then renamed over ``path`` in one step; the folder is synced so
    the rename survives a crash. Until that rename the previous file is untouched. Returns
    the metadata written.
    """
    meta = mirror_meta(df, client, level)
    write_file(df, path, meta, row_group_size)
    return meta


def mirror_meta(df: pd.DataFrame, client: OrthancClient, level: str) -> dict:
    """The ``orthanc_pandas.mirror`` metadata of ``df`` (asks the server its identity)."""
    info = dict(df.attrs.get("orthanc") or {})
    system = client.system()
    meta = {
        "mirror_format": MIRROR_FORMAT,
        "format": FORMAT_VERSION,
        "library": f"orthanc-pandas {__version__}",
        "level": level,
        "url": client.url,
        "last_change": info.get("last_change"),
        "counts": info.get("counts"),
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "server": {"name": system.get("Name"), "version": system.get("Version"),
                   "database_backend": system.get("DatabaseBackendPlugin"),
                   "database_version": system.get("DatabaseVersion"),
                   "anchor": _anchor(client, info.get("last_change"))},
    }
    return meta


def write_file(df: pd.DataFrame, path: str | os.PathLike, meta: dict,
               row_group_size: int = ROW_GROUP_SIZE) -> None:
    """The file part of :func:`write_mirror`: ``df`` and ``meta`` to ``path``, atomically."""
    path = Path(path)
    table = pa.Table.from_pandas(df, preserve_index=True)
    schema_meta = dict(table.schema.metadata or {})
    if df.attrs:  # as DataFrame.to_parquet stores them, so pd.read_parquet gives them back
        schema_meta[b"PANDAS_ATTRS"] = json.dumps(df.attrs).encode()
    schema_meta[META_KEY] = json.dumps(meta).encode()
    table = table.replace_schema_metadata(schema_meta)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is cut by the umask only; never widened
        with os.fdopen(fd, "wb") as f:
            stats = [c for c in STATISTICS_COLUMNS if c in table.schema.names]
            with pq.ParquetWriter(f, table.schema, write_statistics=stats) as writer:
                for start, stop in row_groups(df, row_group_size):
                    writer.write_table(table.slice(start, stop - start), row_group_size=stop - start)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself on disk (not on every platform)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def row_groups(df: pd.DataFrame, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of about ``size`` rows that never split a study (pure).

    An instance frame is sorted study by study, so a cut where the study changes keeps each
    study (and so each series) in one row group: a Dask partition per row group then sees
    whole series, as the partitions of ``orthanc_pandas.dask.read_orthanc`` do. Level frames
    and frames without a ``study`` level are cut every ``size`` rows.

    Examples
    --------
    >>> idx = pd.MultiIndex.from_arrays([list("pppp"), list("aabb"), list("ssss"), list("1234")],
    ...                                 names=["patient", "study", "series", "instance"])
    >>> row_groups(pd.DataFrame(index=idx), 1)
    [(0, 2), (2, 4)]
    >>> row_groups(pd.DataFrame(index=idx), 3)
    [(0, 4)]
    """
    n = len(df)
    if n == 0:
        return [(0, 0)]
    names = list(df.index.names) if isinstance(df.index, pd.MultiIndex) else []
    if "instance" not in names or "study" not in names:
        return [(i, min(i + size, n)) for i in range(0, n, size)]
    codes = pd.factorize(df.index.get_level_values("study"))[0]
    starts = np.flatnonzero(np.diff(codes)) + 1  # the first row of each study but the first
    out, begin = [], 0
    for s in starts.tolist():
        if s - begin >= size:
            out.append((begin, s))
            begin = s
    out.append((begin, n))
    return out


def _anchor(client: OrthancClient, seq) -> dict | None:
    """The change entry at ``seq``: a fingerprint of this server's log (another database has
    another resource at that sequence)."""
    if not seq:
        return None
    page = client.get_json("/changes", params={"since": int(seq) - 1, "limit": 1})
    for c in page.get("Changes") or []:
        if int(c.get("Seq", -1)) == int(seq):
            return {"seq": int(seq), "id": c.get("ID"), "type": c.get("ChangeType")}
    return None


# -- checks ----------------------------------------------------------------------------------
def _check_same(info: dict, client: OrthancClient, level: str, path: Path) -> None:
    if info.get("url") != client.url:
        raise MirrorError(
            f"{path} is the mirror of {info.get('url')}, not of {client.url}. Use another path "
            "for this server (or, if it is the same server under a new address, delete the file "
            "to read it anew).")
    if info.get("level") != level:
        raise MirrorError(
            f"{path} is a mirror at level {info.get('level')!r}, not {level!r}. Use another path "
            f"for the {level} frame, or pass level={info.get('level')!r}.")


def _why_read_anew(old: pd.DataFrame, info: dict, client: OrthancClient) -> str | None:
    """Why the change log cannot bring this mirror up to date (None: it can)."""
    seq = client.last_change()
    mine = int(info.get("last_change") or 0)
    system = client.system(refresh=True)
    server = info.get("server") or {}
    if server.get("name") != system.get("Name"):
        return (f"another server answers at this URL (named {system.get('Name')!r}; the mirror "
                f"was written from {server.get('name')!r})")
    if seq < mine:
        return (f"the server's change sequence ({seq}) is behind the mirror's ({mine}): its "
                "database was restored from a backup or replaced, or another server answers "
                "here, or the newest resources were deleted (Orthanc drops their change "
                "entries, and the log alone cannot tell that from a restored backup)")
    anchor = server.get("anchor")
    if anchor:
        now = _anchor(client, anchor["seq"])
        if now is not None and (now["id"], now["type"]) != (anchor["id"], anchor["type"]):
            return (f"the server's change log holds another resource at sequence {anchor['seq']} "
                    "than when the mirror was written: another database or server answers here")
    return None


# -- housekeeping ----------------------------------------------------------------------------
def _lock(path: Path) -> int:
    """One update of a mirror at a time: an advisory lock on a file beside it, held until the
    returned descriptor is closed (by a background writer when it hands the lock over)."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of writes killed mid-way (their process is gone): never the mirror."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-4]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["mirror", "mirror_metadata", "load_mirror", "write_mirror", "mirror_meta", "write_file",
           "row_groups", "file_identity"]
