"""``op.sql(query, df)``: DuckDB over the frames of an archive, results the accessor works on.

The query sees up to five tables built from ``df`` (:data:`TABLES`); only those it names are
built (DuckDB parses the query and says which), so a query on ``series`` never reads a SEG
header. Each is handed to DuckDB as an Arrow table (zero-copy for numbers, dictionary-encoded
for categories), with the Orthanc ids of the index as the first columns (``patient``,
``study``, ``series``, ``instance``).

The result comes back typed as the frames are (text ``string``, ``Int64``, ``Float64``,
``boolean``, categories for the source's categorical columns). When it keeps the index columns
of a level (``patient, study, series, instance`` for instance rows; ``patient, study, series``
for series; ``patient, study``; ``patient``) they become its index again and its attrs are
those of that level's table, so ``.orthanc`` works on it. See ``docs/annotations.md``.

DuckDB is the ``sql`` extra: ``pip install 'orthanc-pandas[sql]'``.
"""

from __future__ import annotations

import copy
import re

import pandas as pd
import pyarrow as pa

from orthanc_pandas._frame.contract import LEVEL_INDEX, frame_level
from orthanc_pandas._frame.levels import level_frame
from orthanc_pandas._frame.schema import STR_DTYPE, TEXT_DTYPE, canonical_categorical
from orthanc_pandas._ops.annotations import annotations
from orthanc_pandas._ops.levels import instances_of
from orthanc_pandas._ops.source import frame_client
from orthanc_pandas.errors import NotAnIndexError, SelectionError

#: Table name -> the level of its rows (``annotations``: the annotation table).
TABLES = {"instances": "instance", "series": "series", "studies": "study", "patients": "patient",
          "annotations": "annotations"}

_LEVEL_TABLE = {level: name for name, level in TABLES.items()}

_TYPES = {pa.string(): TEXT_DTYPE, pa.large_string(): TEXT_DTYPE, pa.bool_(): pd.BooleanDtype(),
          pa.int8(): pd.Int64Dtype(), pa.int16(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(),
          pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.Int64Dtype(), pa.uint16(): pd.Int64Dtype(),
          pa.uint32(): pd.Int64Dtype(), pa.float32(): pd.Float64Dtype(),
          pa.float64(): pd.Float64Dtype()}


def _duckdb():
    try:
        import duckdb
    except ImportError:
        raise ImportError("op.sql needs DuckDB: pip install 'orthanc-pandas[sql]' "
                          "(or pip install duckdb).") from None
    return duckdb


def to_arrow(frame: pd.DataFrame, name: str = "frame") -> pa.Table:
    """``frame`` as an Arrow table, its Orthanc index as leading columns.

    Raises :class:`~orthanc_pandas.errors.SelectionError` naming a column Arrow cannot read
    (Python objects of mixed kinds).

    Examples
    --------
    >>> t = to_arrow(pd.DataFrame({"a": pd.array([1, None], dtype="Int64")}))
    >>> t.schema.field("a").type
    DataType(int64)
    """
    names = [n for n in frame.index.names if n is not None]
    flat = frame.reset_index() if names else frame.reset_index(drop=True)
    try:
        return pa.Table.from_pandas(flat, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        bad = []
        for c in flat.columns:
            try:
                pa.array(flat[c])
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                bad.append(c)
        raise SelectionError(
            f"The {name} table cannot be given to DuckDB: column(s) {bad or '?'} hold Python "
            f"objects Arrow cannot read ({exc}). Drop them or turn them into text first."
        ) from None


class _Tables:
    """The tables of ``df``, built on first use."""

    def __init__(self, df: pd.DataFrame | None, given: dict[str, pd.DataFrame], client, progress):
        if df is not None and ((df.attrs or {}).get("orthanc") or {}).get("table") == "annotations":
            given.setdefault("annotations", df)   # an annotation table is the annotations
            df = None
        self.df, self.given, self.client, self.progress = df, given, client, progress
        self.built: dict[str, pd.DataFrame] = {}
        self.level = frame_level(df) if df is not None else None

    def _client(self):
        return frame_client(self.df, self.client)

    def get(self, name: str) -> pd.DataFrame:
        if name in self.given:
            return self.given[name]
        if name not in self.built:
            self.built[name] = self._build(name)
        return self.built[name]

    def _build(self, name: str) -> pd.DataFrame:
        level = TABLES[name]
        if self.level == level:
            return self.df
        if name == "annotations":
            return annotations(self.df, self.level, self._client, progress=self.progress)
        if level == "instance":  # the instances of a level frame's resources, from the server
            return instances_of(self.df, self.level, client=self._client())
        rows = self.df if self.level == "instance" else self.get("instances")
        return level_frame(rows, level)


def _result_frame(table: pa.Table) -> pd.DataFrame:
    out = table.to_pandas(types_mapper=_TYPES.get)
    for c in out.columns:
        if isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = canonical_categorical(out[c].astype(TEXT_DTYPE).to_numpy(dtype=object,
                                                                               na_value=None))
    return out


def _restore(out: pd.DataFrame, tables: _Tables) -> pd.DataFrame:
    """Index and attrs of the deepest level whose index columns the result keeps."""
    for level in ("instance", "series", "study", "patient"):
        names = LEVEL_INDEX[level]
        if all(n in out.columns for n in names):
            break
    else:
        return out
    name = _LEVEL_TABLE[level]
    source = tables.given.get(name)
    if source is None and tables.df is not None:
        source = tables.get(name) if (name in tables.built or tables.level == level
                                      or tables.level == "instance") else None
    for c in out.columns:  # the source's dtypes for its columns (categories, dates...)
        if source is not None and c in source.columns and c not in names:
            want = source[c].dtype
            try:
                out[c] = (canonical_categorical(out[c].astype(TEXT_DTYPE).to_numpy(
                    dtype=object, na_value=None)) if isinstance(want, pd.CategoricalDtype)
                    else out[c].astype(want))
            except (TypeError, ValueError):
                pass  # an expression reusing a column name: keep what DuckDB gave
    for n in names:
        out[n] = out[n].astype(STR_DTYPE)
    out = out.set_index(names if len(names) > 1 else names[0])
    attrs = copy.deepcopy(source.attrs) if source is not None else \
        copy.deepcopy(tables.df.attrs) if tables.df is not None else {}
    info = attrs.setdefault("orthanc", {})
    if level == "instance":
        for key in ("level", "read_level", "missing_columns"):
            info.pop(key, None)
    else:
        info["level"] = level
    out.attrs = attrs
    try:
        frame_level(out)
    except NotAnIndexError:
        return out.reset_index()
    return out


def _named(duckdb, query: str) -> set[str]:
    try:
        names = duckdb.get_table_names(query)
    except Exception:  # a query DuckDB cannot parse alone: its own error comes when it runs
        names = set(re.findall(r"[A-Za-z_]+", query))
    return {n.lower().split(".")[-1] for n in names}


def sql(query: str, df: pd.DataFrame | None = None, /, *, client=None, progress=None,
        **tables: pd.DataFrame) -> pd.DataFrame | None:
    """Run ``query`` with DuckDB on the tables of ``df`` (see the module docstring).

    Parameters
    ----------
    query : str
        Any DuckDB SQL; the tables are ``instances``, ``series``, ``studies``, ``patients``
        and ``annotations``, plus the names of ``tables``.
    df : pandas.DataFrame, optional
        An instance frame, or a series/study/patient frame (its own level's table; the other
        levels from its instances, read from the server when named), or an annotation table
        (``annotations`` only).
    client : OrthancClient or str, optional
        For the tables that need the server (``annotations``, the instances of a level
        frame).
    progress : bool or tqdm, optional
        For ``annotations``.
    **tables : pandas.DataFrame
        More tables by name, or a table to use instead of building it (``annotations=ann``).

    Returns
    -------
    pandas.DataFrame or None
        ``None`` for a statement DuckDB gives no result for.

    Raises
    ------
    ImportError
        DuckDB is not installed (the ``sql`` extra).

    Examples
    --------
    >>> import orthanc_pandas as op
    >>> cohort = op.sql('''
    ...     SELECT s.* FROM series s
    ...     WHERE s.Modality = 'CT' AND s.slice_spacing <= 2
    ...       AND s.series IN (SELECT source_series FROM annotations WHERE label ILIKE 'liver%')
    ... ''', df)                                                            # doctest: +SKIP
    >>> vols = cohort.orthanc.volumes(df)                                 # doctest: +SKIP
    >>> op.sql("SELECT Modality, count(*) AS n FROM instances GROUP BY ALL", df)  # doctest: +SKIP
    """
    duckdb = _duckdb()
    for name, frame in tables.items():
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"sql(): table {name!r} must be a DataFrame, got {type(frame).__name__}.")
    given = {k.lower(): v for k, v in tables.items()}
    built = _Tables(df, given, client, progress)
    con = duckdb.connect()
    try:
        for name in _named(duckdb, query):
            if name in built.given or (built.df is not None and name in TABLES):
                con.register(name, to_arrow(built.get(name), name))
        rel = con.sql(query)
        if rel is None:
            return None
        fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
        result = fetch()
    finally:
        con.close()
    return _restore(_result_frame(result), built)
