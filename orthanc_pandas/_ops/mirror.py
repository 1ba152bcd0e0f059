"""``op.mirror(url, path)``: the archive's index kept on disk as parquet parts, updated by what changed.

The first call reads the archive (``read_orthanc``) and writes ``path``. Later calls load it
and bring it level with the server the way ``refresh()`` does (the change log for what was
stored; per-series counts, and only where they differ a re-read of those series, for what
was deleted, which Orthanc does not log), then write what changed.

The layout: ``path`` is a link to a folder of parquet parts (a dataset), one version of the
mirror: ``pacs.parquet -> .pacs.parquet.d/v.../``. Each part holds whole studies, ~``part_size``
rows, in the frame's order; ``part-000000.parquet`` holds no row, only the schema and the
metadata (the change sequence, the server's identity, the frame format, the parts). An update
writes a new version folder in which the parts whose rows did not change are hard links to
the previous version's files and only the others are written, then swaps the link in one
step (``rename``): a crash or a kill mid-write leaves the previous version whole and the link
on it, and a reader never sees half of two. At 1,000,000 instances an update after 1,000 new
instances writes ~50,000 rows, not a million.

Why not one file: a file can be swapped atomically too (the layout of mirror format 1, which
is still loaded and is rewritten as parts), but only whole: ~1.6 s per million instances at
each update, whatever changed. Why not a plain folder of parts: it cannot be swapped in one
step; the link can.

The folder is plain parquet: ``pd.read_parquet(path)`` gives back the frame with its index and
``attrs`` (``.orthanc`` works on it; each categorical column has the categories of the parts
in order of appearance, where the mirror's own loader sorts them), DuckDB reads
``'pacs.parquet/*.parquet'``, Dask reads it one partition per part. It holds patient data:
folders are created readable by their owner only (0700), files 0600, whatever the umask.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq

from orthanc_pandas._frame.merge import removed_rows
from orthanc_pandas._frame.schema import LABELS_COLUMN, LEVELS, compact_categorical
from orthanc_pandas._http.client import OrthancClient, get_client
from orthanc_pandas._ops.provenance import FORMAT_VERSION, check_format
from orthanc_pandas._ops.read import read_orthanc
from orthanc_pandas._ops.read_levels import FRAME_LEVELS
from orthanc_pandas._ops.refresh import refresh_changes
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

#: version of the mirror's layout and metadata (``orthanc_pandas.mirror``): 2, a link to a
#: folder of parts
MIRROR_FORMAT = 2
#: the one-file layout of earlier versions: loaded, then rewritten as parts
FILE_FORMAT = 1
META_KEY = b"orthanc_pandas.mirror"
#: rows per part (one row group each): the pieces an update rewrites and Dask reads in
#: parallel. At 1M instances, writing one part costs ~0.08 s, the whole mirror ~1.6 s.
PART_SIZE = 50_000
#: the part with no row: schema, pandas metadata, attrs and the mirror's metadata. Named to
#: sort first, so readers that take a dataset's schema from its first file take this one.
HEADER = "part-000000.parquet"
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
           auth=None, progress=None, part_size: int = PART_SIZE, wait: bool = True,
           **read_kwargs) -> pd.DataFrame:
    """The archive's index frame, kept in the parquet dataset ``path`` and updated by what changed.

    The first call reads the archive with :func:`~orthanc_pandas.read_orthanc` and writes
    ``path``. Each later call loads ``path``, applies only what changed on the server since
    it was written, writes the parts that changed (a new version, swapped in atomically) when
    anything did, and returns the frame: equal to what ``read_orthanc(url, level=level)``
    would return now.

    What an update costs (``docs/mirror.md`` has the figures):

    * ``level="instance"``: the changes since the file's change sequence (``/changes``); the
      series they name are read again whole; deletions (which Orthanc does not log) are found
      by comparing counts (``/statistics``), then, only if they differ, per-series instance
      counts (extended ``/tools/find``, Orthanc >= 1.12.5) or, on older servers, the instance
      id list; labels (which write no change entry) are read again: cost grows with the
      labelled resources. Then the parts holding changed rows are written (~0.08 s each).
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
        The mirror: a link to a folder of parquet parts (folders 0700, files 0600), created
        if missing. A file or folder that ``mirror`` did not write is never overwritten; a
        mirror file of an earlier orthanc-pandas (one file) is loaded and rewritten as parts.
    level : {"instance", "series", "study", "patient"}, default "instance"
        The frame kept: instances, or the level frame read level-first.
    auth : (str, str), optional
        As for ``read_orthanc``; never written to the file.
    progress : bool or tqdm, optional
        Progress bar of the reads (a first read, or one read anew).
    part_size : int, default 50,000
        Rows per part (parts hold whole studies): what an update rewrites around a change,
        and the pieces parallel readers take.
    wait : bool, default True
        Return once the file is written. ``False`` returns the frame as soon as it is up to
        date and writes the parts on a background thread. Until that write ends ``path`` is
        the previous mirror, whole and readable; the next ``mirror`` call on ``path`` in this
        process, and the process's exit, wait for it. A write that fails leaves the previous
        mirror and is reported by the next call (a ``MirrorWarning``; that call then updates
        from the previous mirror).
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
        ``path`` is not a mirror (another parquet file or folder, or not parquet), or is the
        mirror of another URL or level: choose another path or delete it.

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
    >>> import orthanc_pandas.dask as opd
    >>> ddf = opd.read_mirror("pacs.parquet")                            # doctest: +SKIP
    """
    if level not in LEVEL_CHOICES:
        raise ValueError(f"level must be one of {', '.join(map(repr, LEVEL_CHOICES))}; got {level!r}.")
    if not isinstance(part_size, int) or isinstance(part_size, bool) or part_size < 1:
        raise ValueError(f"part_size must be a positive integer, got {part_size!r}.")
    client_keys = {"verify", "timeout", "retries", "pool_size", "compress_json"}
    client = get_client(url, auth=auth, **{k: v for k, v in read_kwargs.items() if k in client_keys})
    read_kwargs = {k: v for k, v in read_kwargs.items() if k not in client_keys}
    path = Path(path)
    _join_writer(path)
    lock = _lock(path)
    try:
        _remove_stale_temporaries(path)
        loaded = _cached(path) or (load_mirror(path) if path.exists() else None)
        plan = None
        if loaded is None:
            log.info("mirror %s: first read of %s", path, client.url)
            df = read_orthanc(client, level=level, progress=progress, **read_kwargs)
        else:
            old, info = loaded
            _check_same(info, client, level, path)
            why = _why_read_anew(old, info, client)
            changes = None
            if why is None:
                try:
                    df, changes = _update(old, client, level)
                except ServerMismatchError as exc:  # ChangeLogGapError, or counts that differ
                    why = str(exc)
            if why is not None:
                warn(f"op.mirror: {path} is read anew from {client.url}: {why}", MirrorWarning)
                df = read_orthanc(client, level=level, progress=progress, **read_kwargs)
            elif _same_content(old, df):
                log.info("mirror %s: nothing changed since sequence %s", path, info["last_change"])
                _remember(path, old, info)
                return old.copy(deep=False)
            elif changes is not None:
                plan = reuse_plan(old, info, df, changes, part_size, current_version(path))
        meta = mirror_meta(df, client, level)
        if wait:
            _remember(path, df, write_parts(df, path, meta, part_size, plan))
        else:  # the thread owns the lock from here and releases it when the parts are written
            _start_writer(path, df, meta, part_size, plan, lock)
            lock = None
    finally:
        if lock is not None:
            os.close(lock)
    return df.copy(deep=False)


def _key(path: Path) -> str:
    """One name per mirror: its link's absolute path (not resolved: the link names another
    version folder after each update)."""
    return str(path.parent.resolve() / path.name)


#: background writes of ``mirror(..., wait=False)``: :func:`_key` -> (thread, [error])
_WRITERS: dict[str, tuple[threading.Thread, list]] = {}


def _start_writer(path: Path, df: pd.DataFrame, meta: dict, part_size: int, plan, lock: int) -> None:
    failed: list[BaseException] = []

    def run():
        try:
            _remember(path, df, write_parts(df, path, meta, part_size, plan))
        except BaseException as exc:  # reported by the next call; the previous version is intact
            failed.append(exc)
            log.error("mirror %s: the background write failed (%s); the previous version is kept",
                      path, exc)
        finally:
            os.close(lock)

    # not a daemon: the interpreter's exit waits for the parts to be written
    thread = threading.Thread(target=run, name=f"orthanc-mirror-write-{path.name}")
    _WRITERS[_key(path)] = (thread, failed)
    thread.start()


def _join_writer(path: Path) -> None:
    """Wait for this process's background write of ``path``; warn if it failed."""
    writer = _WRITERS.pop(_key(path), None)
    if writer is None:
        return
    thread, failed = writer
    thread.join()
    if failed:
        warn(f"op.mirror: the background write of {path} failed ({type(failed[0]).__name__}: "
             f"{failed[0]}); the mirror on disk is the previous version, which this call updates.",
             MirrorWarning)


def file_identity(path: str | os.PathLike) -> tuple:
    """What tells one written mirror from the next: the version folder the link names (each
    update writes a new one) and its inode; for a mirror file, its inode, size and time."""
    st = os.stat(path)
    target = os.readlink(path) if os.path.islink(path) else None
    return target, st.st_ino, st.st_size, st.st_mtime_ns


def _remember(path: Path, df: pd.DataFrame, info: dict) -> None:
    _LAST.clear()  # one mirror's frame at a time: memory for one archive, not one per path
    _LAST[_key(path)] = (file_identity(path), df, info)


def _cached(path: Path) -> tuple[pd.DataFrame, dict] | None:
    hit = _LAST.get(_key(path)) if path.exists() else None
    if hit is None or hit[0] != file_identity(path):
        return None
    return hit[1], hit[2]


def _update(old: pd.DataFrame, client: OrthancClient, level: str
            ) -> tuple[pd.DataFrame, tuple[set, set] | None]:
    """The frame brought level with the server, and for an instance frame what was replaced
    (``(series read again, instances deleted)``; None: every part is written)."""
    if len(old) == 0:  # an empty archive: nothing to keep, and read again it costs nothing
        return read_orthanc(client, level=level, typed=_is_typed(old)), None
    if level == "instance":
        out, affected, deleted = refresh_changes(old, client)
        return out, (affected, deleted)
    return refresh_level_frame(old, client), None


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


# -- the parts on disk -----------------------------------------------------------------------
def current_version(path: str | os.PathLike) -> Path | None:
    """The version folder the mirror link ``path`` names (None: not a link)."""
    path = Path(path)
    if not path.is_symlink():
        return None
    target = Path(os.readlink(path))
    return target if target.is_absolute() else path.parent / target


def _store(path: Path) -> Path:
    """The folder of a mirror's versions, beside it (``.pacs.parquet.d``)."""
    return path.with_name(f".{path.name}.d")


def mirror_metadata(path: str | os.PathLike) -> dict:
    """The ``orthanc_pandas.mirror`` metadata of a mirror (change sequence, server, level, parts).

    Examples
    --------
    >>> mirror_metadata("pacs.parquet")["last_change"]                   # doctest: +SKIP
    20412
    """
    path = Path(path)
    source = path / HEADER if path.is_dir() else path
    try:
        meta = pq.read_schema(source).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        what = "a folder without the mirror's first part" if path.is_dir() else "parquet"
        raise MirrorError(
            f"{path} cannot be read as {what} ({exc}). op.mirror never overwrites what it did "
            "not write: choose another path, or delete this one to read the archive anew."
        ) from None
    if META_KEY not in meta:
        raise MirrorError(
            f"{path} is parquet but not a mirror written by op.mirror (no "
            f"{META_KEY.decode()} metadata). op.mirror never overwrites what it did not "
            "write: choose another path, or delete this one.")
    return json.loads(meta[META_KEY])


def load_mirror(path: str | os.PathLike) -> tuple[pd.DataFrame, dict] | None:
    """``(frame, metadata)`` of a mirror; None when it must be read anew (another mirror or
    frame format, written by another orthanc-pandas: said in a warning)."""
    path = Path(path)
    info = mirror_metadata(path)
    layout = MIRROR_FORMAT if path.is_dir() else FILE_FORMAT
    if info.get("mirror_format") != layout or info.get("format") != FORMAT_VERSION:
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


def _read_parts(folder: Path) -> pa.Table | None:
    """The table of a mirror folder (its parts in order, with the first part's metadata); None
    when the folder is not a mirror's."""
    meta = pq.read_schema(folder / HEADER).metadata or {}
    if META_KEY not in meta:
        return None
    return read_parts(folder).replace_schema_metadata(meta)


def read_parts(folder: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """``columns`` (default all) of the parts of a mirror version folder, in order, as one
    table (no schema metadata).

    Parts written at different times may code a categorical with another integer width (more
    categories since): each such column gets one dictionary type, 32-bit.
    """
    folder = Path(folder)
    header = pq.read_schema(folder / HEADER)
    names = [p["file"] for p in json.loads((header.metadata or {})[META_KEY]).get("parts") or []]
    files = [str(folder / name) for name in [HEADER, *names]]
    schemas = [header] + [pq.read_schema(f) for f in files[1:]]  # (the footers only)
    fields = []
    for k, field in enumerate(schemas[0]):
        types = {sc.field(k).type for sc in schemas}
        if len(types) > 1 and all(pa.types.is_dictionary(t) for t in types):
            field = field.with_type(pa.dictionary(pa.int32(), field.type.value_type))
        fields.append(field)
    # one scan of all the files (read side by side by Arrow's threads, in their order)
    dataset = pa_ds.dataset(files, schema=pa.schema(fields), format="parquet")
    return dataset.to_table(columns=columns).replace_schema_metadata(None)


def read_frame(path: str | os.PathLike) -> pd.DataFrame:
    """The frame of a mirror (a folder of parts, or one file): ``pd.read_parquet(path)``, with
    its MultiIndex built faster and, for parts, each categorical's categories sorted.

    pandas rebuilds an index from its columns with ``MultiIndex.from_arrays``: a factorize and
    a sort of every level's values in pandas (1.8 s of 3.3 s for a million instances). Here
    the table is read by pyarrow, the other columns converted as pandas converts them
    (``Table.to_pandas`` with the pandas metadata, as ``pd.read_parquet`` does), and each
    index level dictionary-encoded and sorted in Arrow: the same levels (sorted values) and
    codes. Attributes come back from ``PANDAS_ATTRS`` as ``pd.read_parquet`` restores them.
    Each part holds the categories of its own rows; read together, pyarrow unites them in
    order of appearance, and here they are sorted again as a fresh read has them. Anything
    else than an index of several named text columns without missing values is read by
    ``pd.read_parquet`` itself.

    Examples
    --------
    >>> df = read_frame("pacs.parquet")                                 # doctest: +SKIP
    >>> df.equals(pd.read_parquet("pacs.parquet"))                     # doctest: +SKIP
    True
    """
    path = Path(path)
    several = path.is_dir()  # parts: each has the categories of its own rows
    if several:
        table = _read_parts(path)
        if table is None:
            return pd.read_parquet(path)
    else:
        table = pq.read_table(path, use_pandas_metadata=True)
    meta = dict(table.schema.metadata or {})
    pandas_meta = json.loads(meta.get(b"pandas", b"{}"))
    names = pandas_meta.get("index_columns") or []
    if (len(names) < 2 or not all(isinstance(n, str) and n in table.column_names for n in names)
            or not isinstance(pd.Index([], dtype="str").dtype, pd.StringDtype)
            or any(not (pa.types.is_string(table.schema.field(n).type)
                        or pa.types.is_large_string(table.schema.field(n).type))
                   or table.column(n).null_count for n in names)):
        df = pd.read_parquet(path)
        return _sorted_categories(df) if several else df
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
    return _sorted_categories(df) if several else df


def _sorted_categories(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each categorical column's categories as a full frame has them."""
    for c in df.columns[[isinstance(t, pd.CategoricalDtype) for t in df.dtypes]]:
        values = df[c].array
        compact = compact_categorical(values)
        if compact is not values:
            df[c] = compact
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
                 level: str, part_size: int = PART_SIZE) -> dict:
    """Write ``df`` as the mirror ``path`` (every part), atomically, with the mirror metadata
    (:func:`write_parts`). Returns the metadata written."""
    return write_parts(df, path, mirror_meta(df, client, level), part_size)


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


def write_parts(df: pd.DataFrame, path: str | os.PathLike, meta: dict,
                part_size: int = PART_SIZE, plan: list[tuple[int, int, Path | None]] | None = None
                ) -> dict:
    """``df`` as a new version of the mirror ``path``, swapped in atomically.

    ``plan`` gives the parts: ``(start, stop, file)`` row ranges of ``df``, where ``file`` is
    a part of the previous version holding exactly those rows (hard-linked, not written), or
    None (written). Without a plan every part is written (:func:`row_groups`).

    The version folder is written beside the others under a temporary name, each file flushed
    to disk, the folder renamed, then a new link renamed over ``path`` (a file of the
    one-file layout is replaced the same way). Until that rename the previous version is
    untouched and is what ``path`` names. Versions older than the previous one are removed
    (a reader still on the previous one finishes). Returns the metadata written (``meta``
    with the list of parts).
    """
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise MirrorError(f"{path} is a folder, not the link op.mirror keeps (a copy made with "
                          "`cp -rL`?): pass another path for the mirror.")
    if plan is None:
        plan = [(a, b, None) for a, b in row_groups(df, part_size)] if len(df) else []
    store = _store(path)
    _private_dir(store)
    name = f"v{time.time_ns():x}-{os.getpid()}"
    tmp = store / f".tmp-{name}"
    _private_dir(tmp)
    try:
        files = [(f"part-{k:06d}.parquet", a, b, old) for k, (a, b, old) in enumerate(plan, 1)]
        meta = {**meta, "parts": [{"file": f, "rows": b - a} for f, a, b, _ in files]}
        header = pa.Table.from_pandas(df.iloc[:0], preserve_index=True)
        schema_meta = dict(header.schema.metadata or {})
        if df.attrs:  # as DataFrame.to_parquet stores them, so pd.read_parquet gives them back
            schema_meta[b"PANDAS_ATTRS"] = json.dumps(df.attrs).encode()
        schema_meta[META_KEY] = json.dumps(meta).encode()
        _write_table(header.replace_schema_metadata(schema_meta), tmp / HEADER)
        for f, a, b, old in files:
            if old is not None:
                os.link(old, tmp / f)
            else:
                _write_table(_part_table(df.iloc[a:b]), tmp / f)
        _fsync_dir(tmp)
        final = store / name
        os.rename(tmp, final)
        _fsync_dir(store)
        link = path.with_name(f".{path.name}.link-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        previous = current_version(path)
        os.symlink(os.path.relpath(final, path.parent), link)
        os.replace(link, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    keep = {final.name} | ({previous.name} if previous is not None else set())
    for old_version in store.iterdir():
        if old_version.name not in keep and not old_version.name.startswith(".tmp-"):
            shutil.rmtree(old_version, ignore_errors=True)
    return meta


def _part_table(part: pd.DataFrame) -> pa.Table:
    """One part as a table, each categorical column with the categories of its own rows
    (:func:`compact_categorical`; not the frame's: the series UIDs of a whole archive in every
    part). A mirror of one part then reads back with exactly the frame's categories, even in
    plain pandas."""
    compact = {}
    for c in part.columns[[isinstance(t, pd.CategoricalDtype) for t in part.dtypes]]:
        values = part[c].array
        slim = compact_categorical(values)
        if slim is not values:
            compact[c] = slim
    if compact:
        part = part.assign(**compact)
    return pa.Table.from_pandas(part, preserve_index=True)


def _write_table(table: pa.Table, target: Path) -> None:
    """One parquet file (one row group), mode 0600, flushed to disk."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode is cut by the umask only; never widened
    with os.fdopen(fd, "wb") as f:
        stats = [c for c in STATISTICS_COLUMNS if c in table.schema.names]
        with pq.ParquetWriter(f, table.schema, write_statistics=stats) as writer:
            writer.write_table(table, row_group_size=max(len(table), 1))
        f.flush()
        os.fsync(f.fileno())


def _private_dir(folder: Path) -> None:
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)  # mkdir's mode is cut by the umask only; never widened


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # the folder's entries on disk (not on every platform)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def reuse_plan(old: pd.DataFrame, info: dict, new: pd.DataFrame, changes: tuple[set, set],
               part_size: int, version: Path | None) -> list[tuple[int, int, Path | None]] | None:
    """The parts of ``new`` after an update, with the files of ``version`` (the mirror's
    current folder, whose parts ``info`` lists) that hold exactly their rows; None: write all.

    ``changes`` (from ``refresh_changes``): the series read again and the instances deleted.
    The other rows of ``old`` are in ``new`` in the same order with the same values, apart
    from labels (compared here). A part of ``old`` none of whose rows was removed, relabelled
    or separated by new rows is kept as it is (:func:`plan_parts` says where).
    """
    parts = info.get("parts")
    if version is None or not parts or info.get("mirror_format") != MIRROR_FORMAT:
        return None
    if list(old.columns) != list(new.columns) or any(
            a != b and not (isinstance(a, pd.CategoricalDtype) and isinstance(b, pd.CategoricalDtype))
            for a, b in zip(old.dtypes, new.dtypes, strict=True)):  # (categories may differ)
        return None
    rows = np.array([int(p["rows"]) for p in parts], dtype=np.int64)
    if rows.sum() != len(old) or list(old.index.names) != list(LEVELS):
        return None
    affected, deleted = changes
    keep = ~removed_rows(old.index, affected, deleted)
    fresh = removed_rows(new.index, affected, ())
    if int(keep.sum()) != int((~fresh).sum()):
        return None
    pos = np.full(len(old), -1, np.int64)
    pos[keep] = np.flatnonzero(~fresh)
    same = keep.copy()
    if LABELS_COLUMN in old.columns:
        same &= _same_labels(old[LABELS_COLUMN].array, new[LABELS_COLUMN].array, pos)
    bounds = np.concatenate([[0], np.cumsum(rows)])
    study = np.asarray(new.index.codes[LEVELS.index("study")])
    return [(a, b, None if p is None else version / parts[p]["file"])
            for a, b, p in plan_parts(bounds, same, pos, study, part_size)]


def _same_labels(old: pd.Categorical, new: pd.Categorical, pos: np.ndarray) -> np.ndarray:
    """Per old row: whether its labels are the same in ``new`` at ``pos`` (-1: not there)."""
    to = np.append(new.categories.get_indexer(old.categories), -1)  # old code -> new code
    old_codes = to[np.asarray(old.codes)]
    new_codes = np.asarray(new.codes)
    out = np.zeros(len(pos), bool)
    there = pos >= 0
    out[there] = old_codes[there] == new_codes[pos[there]]
    return out


def plan_parts(bounds: np.ndarray, same: np.ndarray, pos: np.ndarray, study: np.ndarray,
               size: int) -> list[tuple[int, int, int | None]]:
    """The parts of a frame after an update: ``(start, stop, old part or None)`` (pure).

    ``bounds``: the old parts' row bounds; ``same``: per old row, whether it is in the new
    frame unchanged; ``pos``: its row there (-1: gone); ``study``: the new rows' study codes.
    An old part is kept (hard-linked) when all its rows are the same and still next to each
    other, and it shares no study with the rows around it (parts hold whole studies). The
    rows between kept parts are cut into new parts of ~``size`` rows at study boundaries; a
    run of fewer than ``size // 2`` rows is written with its smaller neighbour (which is then
    written too), so that updates do not pile up small files.

    Examples
    --------
    Two old parts of 2 rows; one row added after them, in a study of its own, then one
    added inside the first study:

    >>> b, same = np.array([0, 2, 4]), np.ones(4, bool)
    >>> plan_parts(b, same, np.arange(4), np.array([0, 0, 1, 1, 2]), 2)
    [(0, 2, 0), (2, 4, 1), (4, 5, None)]
    >>> plan_parts(b, same, np.array([0, 2, 3, 4]), np.array([0, 0, 0, 1, 1]), 2)
    [(0, 3, None), (3, 5, 1)]
    """
    n = len(study)
    kept = []
    for p in range(len(bounds) - 1):
        a, b = int(bounds[p]), int(bounds[p + 1])
        if b > a and same[a:b].all() and pos[b - 1] - pos[a] == b - a - 1:
            kept.append((int(pos[a]), int(pos[b - 1]) + 1, p))
    while True:
        out = [(s, e, p) for s, e, p in kept
               if not (s > 0 and study[s - 1] == study[s]) and not (e < n and study[e] == study[e - 1])]
        gaps = _gaps(out, n)
        small = next(((a, b) for a, b in gaps if b - a < size // 2), None)
        if small is not None and out:
            # the smaller of the kept parts next to it is written with it
            nearby = [k for k, (s, e, _) in enumerate(out) if s == small[1] or e == small[0]]
            if nearby:
                drop = min(nearby, key=lambda k: out[k][1] - out[k][0])
                out = out[:drop] + out[drop + 1:]
        if out == kept:
            break
        kept = out
    plan: list[tuple[int, int, int | None]] = []
    for s, e, p in sorted(kept + [(a, b, None) for a, b in _gaps(kept, n)]):
        if p is not None:
            plan.append((s, e, p))
            continue
        starts = np.flatnonzero(np.diff(study[s:e])) + 1 + s
        begin = s
        for cut in starts.tolist():
            if cut - begin >= size and e - cut >= size // 2:
                plan.append((begin, cut, None))
                begin = cut
        plan.append((begin, e, None))
    return plan


def _gaps(kept: list[tuple[int, int, int]], n: int) -> list[tuple[int, int]]:
    """The row ranges of ``[0, n)`` between the (sorted) kept ranges."""
    out, at = [], 0
    for s, e, _ in kept:
        if s > at:
            out.append((at, s))
        at = e
    if n > at:
        out.append((at, n))
    return out


def row_groups(df: pd.DataFrame, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of about ``size`` rows that never split a study (pure).

    An instance frame is sorted study by study, so a cut where the study changes keeps each
    study (and so each series) in one part: a Dask partition per part then sees
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
    """What writes killed mid-way left (their process is gone): a half-written version folder,
    a link not yet renamed, a temporary file of the one-file layout. Never the mirror."""
    leftovers = [(t, t.name[len(path.name) + 2:-4]) for t in path.parent.glob(f".{path.name}.*.tmp")]
    leftovers += [(t, t.name.rsplit("-", 1)[-1]) for t in path.parent.glob(f".{path.name}.link-*")]
    store = _store(path)
    if store.is_dir():
        leftovers += [(t, t.name.rsplit("-", 1)[-1]) for t in store.glob(".tmp-*")]
    for tmp, pid in leftovers:
        if pid.isdigit() and not _alive(int(pid)):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
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


__all__ = ["mirror", "mirror_metadata", "load_mirror", "write_mirror", "mirror_meta", "write_parts",
           "row_groups", "file_identity", "current_version", "reuse_plan", "plan_parts", "read_frame",
           "read_parts"]
