"""Orthanc's JSON resource lists -> one typed DataFrame, one row per instance. Pure: no HTTP.

The column schema
-----------------
* Index: a :class:`pandas.MultiIndex` named ``patient``, ``study``, ``series``, ``instance``
  holding Orthanc ids.
* One column per main DICOM tag Orthanc reports, named by DICOM keyword, typed by VR:

  ======================  ================================================================
  VR                      dtype
  ======================  ================================================================
  DA                      ``datetime64[us]`` (NaT when empty or unparsable)
  IS, US, SL, SS          ``Int32`` (every value of these VRs fits: IS is -2**31..2**31-1 by
                          the standard); UL, SV, UV ``Int64``
  DS                      ``Float64``
  AS                      age in years, ``Float64``: ``063Y`` -> 63, ``006M`` -> 0.5,
                          ``010W`` -> 10*7/365.25, ``003D`` -> 3/365.25
  multi-valued IS/DS      exactly the dictionary's VM of ``Float64`` columns:
                          ``ImagePositionPatient_0``, ``_1``, ``_2``;
                          ``ImageOrientationPatient_0`` ... ``_5`` (a value with more
                          components is missing, with a warning)
  other (text, TM, UI...) patient/study/series level: ``category`` (values repeat across the
                          instances of a series; categories :data:`STR_DTYPE`, sorted, the
                          values present); instance level: ``string`` (pyarrow)
  ======================  ================================================================

  ONE SCHEMA: a column's dtype depends on its tag (VR, VM) and level only
  (:func:`tag_dtypes`), never on the values: a tag that no resource has is an all-missing
  column of the same dtype. A fresh read, a refreshed frame, the Dask read and frames of two
  servers have the same dtypes, so ``pd.concat`` keeps them (categoricals of different
  categories become text, as pandas does). A text column with no value at all has the single
  category ``""`` (:data:`PLACEHOLDER_CATEGORIES`, never a value): pandas/pyarrow cannot read a
  categorical without categories back from parquet. Parquet round trips with plain
  ``pd.read_parquet`` are exact, except that a frame of ZERO rows gets its categoricals back
  without categories (pyarrow writes no dictionary then).

  Text is kept as Orthanc sends it, less DICOM's trailing padding: DICOM multi-values stay
  joined by ``\\``. An empty value and a tag absent from a resource are the same missing
  value, ``<NA>`` (as they are for dates and numbers), so ``select(PatientSex=None)`` finds
  both; ``typed=False`` keeps the raw strings, ``""`` included.
* Orthanc's own bookkeeping, prefixed ``orthanc_``: ``orthanc_file_size``,
  ``orthanc_series_status``, ``orthanc_series_expected_instances``,
  and ``orthanc_labels``: the Orthanc labels (1.12+) of the instance and of its series, study
  and patient together, sorted and joined by ``","`` (``"done,reviewed"``; labels cannot hold
  commas), ``<NA>`` for an instance with no label on any of the four levels. It is a
  ``category`` column like the other text columns of parent levels (few distinct values),
  also when no resource has a label, which is always the case on servers without labels
  (Orthanc < 1.12). ``orthanc_file_size`` is ``Int64`` (files can pass 2 GiB),
  ``orthanc_series_expected_instances`` ``Int32`` (a count from IS/US tags),
  ``orthanc_series_status`` a ``category``. See :mod:`orthanc_pandas._ops.labels`.

A value that does not parse (a date like ``2020-13-45``) becomes missing with a
:class:`~orthanc_pandas.errors.ParseWarning`: one per frame, naming each column with the count
and an example value (:mod:`.unparsed`); ``typed=False`` keeps every tag as the raw string instead.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_dict

from orthanc_pandas._frame.unparsed import note, one_warning
from orthanc_pandas.errors import InconsistentIndexError

LEVELS = ("patient", "study", "series", "instance")


INDEX_NAMES = list(LEVELS)


ROUTES = {"patient": "patients", "study": "studies", "series": "series", "instance": "instances"}


PARENT_KEY = {"study": "ParentPatient", "series": "ParentStudy", "instance": "ParentSeries"}


#: Main DICOM tags per level: the union over every Orthanc version supported (1.10 to 1.13), so
#: that every server gives the same columns (missing where it does not index a tag; see
#: :data:`NEWER_MAIN_TAGS`). Tags a server is configured to index beyond these
#: (``ExtraMainDicomTags``) are kept too, after them.
MAIN_TAGS: dict[str, tuple[str, ...]] = {
    "patient": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs"),
    "study": ("StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber",
              "StudyInstanceUID", "RequestedProcedureDescription", "InstitutionName",
              "RequestingPhysician", "ReferringPhysicianName", "TimezoneOffsetFromUTC"),
    "series": ("SeriesDate", "SeriesTime", "Modality", "Manufacturer", "StationName",
               "SeriesDescription", "BodyPartExamined", "SequenceName", "ProtocolName",
               "SeriesNumber", "CardiacNumberOfImages", "ImagesInAcquisition",
               "NumberOfTemporalPositions", "NumberOfSlices", "NumberOfTimeSlices",
               "SeriesInstanceUID", "SeriesType", "OperatorsName",
               "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription",
               "ContrastBolusAgent", "PerformedProcedureStepStartDate",
               "PerformedProcedureStepStartTime", "RequestAttributesSequence"),
    "instance": ("InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber",
                 "ImageIndex", "InstanceNumber", "NumberOfFrames", "TemporalPositionIdentifier",
                 "SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                 "ImageComments"),
}


#: Main tags that Orthanc 1.10 does not index and 1.12/1.13 do (measured on 1.10.1, 1.12.7 and
#: 1.13.0 with pydicom's test files): on 1.10 these columns are always missing. 1.13 also
#: reports TimezoneOffsetFromUTC among a series' tags; the column holds the study's value.
NEWER_MAIN_TAGS = ("TimezoneOffsetFromUTC", "PerformedProcedureStepStartDate",
                   "PerformedProcedureStepStartTime", "RequestAttributesSequence")


#: Orthanc bookkeeping fields kept per level: JSON key -> (column, kind)
BOOKKEEPING: dict[str, dict[str, tuple[str, str]]] = {
    "series": {"Status": ("orthanc_series_status", "category"),
               "ExpectedNumberOfInstances": ("orthanc_series_expected_instances", "int32")},
    "instance": {"FileSize": ("orthanc_file_size", "int64")},
}


#: Orthanc labels of every level, combined per instance (see the module docstring); each level's
#: resources are read with ``Labels`` into the field ``book:Labels`` of its table
LABELS_COLUMN = "orthanc_labels"


LABELS_SEPARATOR = ","


TEXT_DTYPE = pd.StringDtype("pyarrow")


#: pandas' default string dtype (``str`` in pandas 3, ``object`` before): what pd.read_parquet
#: gives back for index levels and categories, so those use it.
STR_DTYPE = pd.Index(["x"]).dtype


DATE_DTYPE = np.dtype("datetime64[us]")


#: the dtype all-missing columns had before the one schema (no column has it now; kept for
#: code that tests for it)
NULL_DTYPE = pd.ArrowDtype(pa.null())


#: The categories of a text column with no value at all: one placeholder, ``""`` (never a value:
#: empty text is missing). A categorical with NO category does not survive plain
#: ``pd.read_parquet`` (it comes back as object, or with object categories).
PLACEHOLDER_CATEGORIES = pd.Index([""], dtype=STR_DTYPE)


#: Integer VRs whose every value fits 32 signed bits: ``Int32``, 4 bytes a value less than
#: ``Int64`` (IS is -2**31..2**31-1 by the standard). Not ``UInt16`` for US: unsigned 16-bit
#: arithmetic wraps silently (``Rows * Columns`` of a 512x512 image gives 0).
_INT32_VRS = {"IS", "SL", "SS", "US"}


_INTEGER_VRS = _INT32_VRS | {"UL", "SV", "UV"}


NUMERIC_VRS = _INTEGER_VRS | {"DS", "FL", "FD"}


#: DICOM age (AS, ``063Y``) units -> years
AGE_UNITS = {"Y": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}


def integer_dtype(vr: str) -> pd.Int32Dtype | pd.Int64Dtype:
    """The dtype of an integer VR's values: ``Int32`` where every value fits, else ``Int64``."""
    return pd.Int32Dtype() if vr in _INT32_VRS else pd.Int64Dtype()


#: bookkeeping kind -> dtype (see :data:`BOOKKEEPING`)
BOOKKEEPING_DTYPES = {"int32": pd.Int32Dtype(), "int64": pd.Int64Dtype()}


def tag_vr(keyword: str) -> str:
    """The VR of a DICOM keyword from pydicom's dictionary ("" when unknown)."""
    if keyword not in keyword_dict:
        return ""
    vr = dictionary_VR(keyword)
    return vr.split(" or ")[0]


def vector_length(keyword: str) -> int:
    """How many numbers a multi-valued numeric tag holds (0 for single-valued or text)."""
    if tag_vr(keyword) not in NUMERIC_VRS:
        return 0
    vm = dictionary_VM(keyword)
    if vm.isdigit():
        return int(vm) if int(vm) > 1 else 0
    return 0  # "1-n" and such stay text: their length varies


def tag_dtypes(keyword: str, level: str, typed: bool = True) -> dict[str, object]:
    """The columns and dtypes of tag ``keyword`` read at ``level``: the schema.

    They depend on the tag's VR and VM (pydicom's dictionary) and on the level only, never on
    the values a server holds, so that every read of every server gives the same dtypes.

    Examples
    --------
    >>> tag_dtypes("SeriesDate", "series")
    {'SeriesDate': dtype('<M8[us]')}
    >>> list(tag_dtypes("ImagePositionPatient", "instance"))
    ['ImagePositionPatient_0', 'ImagePositionPatient_1', 'ImagePositionPatient_2']
    >>> tag_dtypes("PatientAge", "study")
    {'PatientAge': Float64Dtype()}
    >>> tag_dtypes("SOPInstanceUID", "instance")["SOPInstanceUID"] == TEXT_DTYPE
    True
    >>> tag_dtypes("InstanceNumber", "instance"), tag_dtypes("FileMetaInformationGroupLength", "instance")
    ({'InstanceNumber': Int32Dtype()}, {'FileMetaInformationGroupLength': Int64Dtype()})
    """
    if not typed:
        return {keyword: TEXT_DTYPE}
    vr = tag_vr(keyword)
    if vr == "DA":
        return {keyword: DATE_DTYPE}
    if vr == "AS":
        return {keyword: pd.Float64Dtype()}
    if vr in NUMERIC_VRS:
        width = vector_length(keyword)
        if width:
            return {f"{keyword}_{i}": pd.Float64Dtype() for i in range(width)}
        return {keyword: integer_dtype(vr) if vr in _INTEGER_VRS else pd.Float64Dtype()}
    if level == "instance":
        return {keyword: TEXT_DTYPE}
    return {keyword: pd.CategoricalDtype(PLACEHOLDER_CATEGORIES)}


def _integer_dtype_of(column: str):
    """The integer dtype the schema gives ``column`` (None: not an integer column)."""
    for book in BOOKKEEPING.values():
        for name, kind in book.values():
            if name == column:
                return BOOKKEEPING_DTYPES.get(kind)
    vr = tag_vr(column)
    return integer_dtype(vr) if vr in _INTEGER_VRS else None


def narrow_integers(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its ``Int64`` columns in the schema's narrower integer dtypes.

    Frames written before IS, US, SL and SS became ``Int32`` (parquet files of orthanc-pandas
    0.1) hold them as ``Int64``; ``refresh()`` gives them the dtypes of a fresh read. A column
    whose values do not all fit keeps its dtype (nothing is lost).

    >>> old = pd.DataFrame({"InstanceNumber": pd.array([1, None], dtype="Int64"),
    ...                     "orthanc_file_size": pd.array([7, 8], dtype="Int64")})
    >>> narrow_integers(old).dtypes.astype(str).tolist()
    ['Int32', 'Int64']
    """
    narrower = {}
    for column in df.columns:
        if not isinstance(column, str) or df[column].dtype != pd.Int64Dtype():
            continue
        dtype = _integer_dtype_of(column)
        if dtype is None or dtype == pd.Int64Dtype():
            continue
        info = np.iinfo(dtype.numpy_dtype)
        if df[column].dropna().between(info.min, info.max).all():
            narrower[column] = dtype
    return df.astype(narrower) if narrower else df


def categorical(codes: np.ndarray, categories: Iterable[str]) -> pd.Categorical:
    """A text column of the schema from codes into sorted categories (:data:`STR_DTYPE`).

    With no category at all it gets :data:`PLACEHOLDER_CATEGORIES` (codes must then be -1).
    """
    cats = pd.Index(list(categories), dtype=STR_DTYPE)
    if not len(cats):
        cats = PLACEHOLDER_CATEGORIES
    return pd.Categorical.from_codes(np.asarray(codes), categories=cats)


def canonical_categorical(values, categories: Iterable[str] | None = None) -> pd.Categorical:
    """``values`` (a categorical) with the categories the schema gives: :data:`STR_DTYPE`, sorted,
    without the placeholder ``""`` unless there is no other category (see :func:`categorical`).

    ``categories`` replaces the categories ``values`` has (those in use are always kept).

    >>> canonical_categorical(pd.Categorical(["b", None], categories=["", "z", "b"])).categories.tolist()
    ['b', 'z']
    >>> canonical_categorical(pd.Categorical(["b"], categories=["z", "b"]), ["a"]).categories.tolist()
    ['a', 'b']
    """
    values = pd.Categorical(values)
    old = values.categories
    codes = np.asarray(values.codes)
    wanted = set(old) if categories is None else set(categories) | set(old[np.unique(codes[codes >= 0])])
    new = pd.Index(sorted(c for c in wanted if c != "") or [""], dtype=STR_DTYPE)
    # recoded by hand: pd.Categorical(values, categories=new) warns (Pandas4Warning) whenever
    # a category is dropped, even an unused one like the placeholder
    position = new.get_indexer(old)
    position[np.asarray(old == "", dtype=bool)] = -1  # "" is never a value: missing
    codes = np.where(codes >= 0, position[np.maximum(codes, 0)] if len(old) else -1, -1)
    return pd.Categorical.from_codes(codes, categories=new)


def compact_categorical(values: pd.Categorical) -> pd.Categorical:
    """``values`` with the categories of a full frame: the values present, sorted (the
    placeholder when none), codes of the smallest integer type. The same values.

    What a column read back from several parquet parts needs: each part holds the categories
    of its own rows, and reading them together unites those in order of appearance.

    >>> c = compact_categorical(pd.Categorical(["b", "a", None], categories=["z", "b", "a"]))
    >>> c.categories.tolist(), c.codes.tolist()
    (['a', 'b'], [1, 0, -1])
    >>> compact_categorical(pd.Categorical([None], categories=["z"])).categories.tolist()
    ['']
    """
    cats = values.categories
    codes = np.asarray(values.codes)
    used = np.bincount(codes.astype(np.intp) + 1, minlength=len(cats) + 1)[1:] > 0
    if cats.dtype == STR_DTYPE and used.all() and cats.is_monotonic_increasing and \
            not (len(cats) > 1 and (cats == "").any()):
        return values
    used &= np.asarray(cats != "", dtype=bool)  # "" is never a value (the placeholder)
    kept = cats[used]
    order = np.asarray(kept.argsort())
    to = np.full(len(cats) + 1, -1, np.int64)  # (slot -1: missing)
    to[np.flatnonzero(used)[order]] = np.arange(len(kept))
    new = pd.Index(kept.take(order), dtype=STR_DTYPE) if len(kept) else PLACEHOLDER_CATEGORIES
    return pd.Categorical.from_codes(to[codes], dtype=pd.CategoricalDtype(new), validate=False)


def missing_values(dtype, n: int):
    """``n`` missing values of a schema ``dtype`` (an all-missing column of that dtype)."""
    if isinstance(dtype, pd.CategoricalDtype):
        return categorical(np.full(n, -1, np.int8), dtype.categories)
    if dtype == DATE_DTYPE:
        return np.full(n, np.datetime64("NaT"), dtype=DATE_DTYPE)
    if dtype == TEXT_DTYPE:
        return pd.array(pa.nulls(n, pa.string()), dtype=TEXT_DTYPE)
    return pd.array([], dtype=dtype).take(np.full(n, -1, np.intp), allow_fill=True)


def vector_columns(keyword: str, columns: Iterable[str]) -> list[str]:
    """The component columns of a multi-valued numeric tag, in order.

    >>> vector_columns("ImagePositionPatient", ["ImagePositionPatient_0", "ImagePositionPatient_1",
    ...                                         "ImagePositionPatient_2", "PatientName"])
    ['ImagePositionPatient_0', 'ImagePositionPatient_1', 'ImagePositionPatient_2']
    """
    prefix = keyword + "_"
    found = [c for c in columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return sorted(found, key=lambda c: int(c[len(prefix):]))


def tag_level(keyword: str) -> str | None:
    """The level whose main tags hold ``keyword`` (the most specific level wins)."""
    for level in reversed(LEVELS):
        if keyword in MAIN_TAGS[level]:
            return level
    return None


class LevelTable:
    """Accumulates the pages of one level as compact Arrow columns, so the JSON can be freed.

    Parameters
    ----------
    level : {"patient", "study", "series", "instance"}
    """

    def __init__(self, level: str):
        self.level = level
        self._chunks: list[dict[str, pa.Array]] = []
        self.n = 0

    def add_page(self, page: list[dict]) -> None:
        """Convert one page of ``GET /{level}?expand`` answers into Arrow arrays."""
        if not page:
            return
        cols: dict[str, pa.Array] = {"ID": pa.array([r["ID"] for r in page], pa.string())}
        pkey = PARENT_KEY.get(self.level)
        if pkey:
            cols[pkey] = pa.array([r.get(pkey) for r in page], pa.string())
        keys: dict[str, None] = {}
        for r in page:
            keys.update(dict.fromkeys(r.get("MainDicomTags") or ()))
        for k in keys:
            cols["tag:" + k] = pa.array([_as_text((r.get("MainDicomTags") or {}).get(k)) for r in page],
                                        pa.string())
        for jkey, (_col, kind) in BOOKKEEPING.get(self.level, {}).items():
            values = [bookkeeping_value(r, jkey) for r in page]
            if kind in BOOKKEEPING_DTYPES:
                cols["book:" + jkey] = pa.array([v if isinstance(v, int) else None for v in values], pa.int64())
            else:
                cols["book:" + jkey] = pa.array([None if v is None else str(v) for v in values], pa.string())
        if any("Labels" in r for r in page):  # Orthanc >= 1.12; absent on 1.10
            cols["book:Labels"] = pa.array([_joined_labels(r.get("Labels")) for r in page], pa.string())
        self._chunks.append(cols)
        self.n += len(page)

    def extend(self, other: LevelTable) -> None:
        """Append the pages of ``other`` (the same level read by another stream)."""
        if other.level != self.level:
            raise ValueError(f"cannot extend a {self.level} table with {other.level} rows")
        self._chunks.extend(other._chunks)
        self.n += other.n
        other._chunks, other.n = [], 0

    def finish(self) -> dict[str, pa.Array]:
        """One Arrow array per field over all pages (missing fields of a page are nulls).

        The pages are joined column by column and replaced by the result, so the level is
        never held twice in memory (at 200k instances that was the largest transient).
        """
        names: dict[str, None] = {}
        for c in self._chunks:
            names.update(dict.fromkeys(c))
        lengths = [len(c["ID"]) for c in self._chunks]
        out = {}
        for name in names:
            typ = next(c[name].type for c in self._chunks if name in c)
            parts = [c.pop(name) if name in c else pa.nulls(k, typ) for c, k in zip(self._chunks, lengths, strict=True)]
            out[name] = pa.concat_arrays(parts) if parts else pa.array([], typ)
            del parts
        if "ID" not in out:
            out["ID"] = pa.array([], pa.string())
        self._chunks = [out] if self.n else []
        return dict(out)

    def column(self, name: str) -> pa.Array:
        """One field over all rows (``"ID"``, ``"ParentSeries"``...; nulls where absent)."""
        arrays = self.finish()
        return arrays.get(name, pa.nulls(self.n, pa.string()))

    def keep(self, mask) -> None:
        """Keep only the rows where ``mask`` (booleans, in row order) is true."""
        mask = pa.array(mask, pa.bool_())
        arrays = self.finish()
        if self.n:
            self._chunks = [{k: v.filter(mask) for k, v in arrays.items()}]
            self.n = len(self._chunks[0]["ID"])

    @classmethod
    def from_resources(cls, level: str, resources: list[dict]) -> LevelTable:
        """A table from one list of expanded resources (convenience for tests)."""
        t = cls(level)
        t.add_page(resources)
        return t


def bookkeeping_value(resource: dict, key: str):
    """A bookkeeping field of one resource, from a ``GET /{level}?expand`` answer or from
    extended ``/tools/find`` (which gives ``Attachments`` instead of ``FileSize``).

    >>> bookkeeping_value({"Attachments": [{"ContentType": 1, "UncompressedSize": 6124}]}, "FileSize")
    6124
    """
    value = resource.get(key)
    if value is not None or key not in _FIND_SOURCES:
        return value
    source = resource.get(_FIND_SOURCES[key])
    if key == "FileSize" and source:
        # attachment type 1 is the DICOM file; its uncompressed size is what expand reports
        return next((a.get("UncompressedSize") for a in source if a.get("ContentType") == 1), None)
    return None


#: where extended /tools/find puts the bookkeeping fields that expanded lists give directly
_FIND_SOURCES = {"FileSize": "Attachments"}


def _joined_labels(labels) -> str | None:
    """A resource's ``Labels`` list as one sorted, comma-joined string (None when empty)."""
    return LABELS_SEPARATOR.join(sorted(labels)) if labels else None


def _as_text(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, list) and any(isinstance(item, dict) for item in v):
        # a sequence (RequestAttributesSequence on 1.12+, or ExtraMainDicomTags): Orthanc's
        # JSON of its items, as JSON text that json.loads and DuckDB's JSON functions read
        return json.dumps(v, ensure_ascii=False, separators=(",", ":")) if v else None
    if isinstance(v, list):  # a multi-valued tag given as a list
        return "\\".join(map(str, v))
    return str(v)


@contextlib.contextmanager
def system_memory_pool() -> Iterator[None]:
    """Allocate Arrow memory from the C heap (malloc) for the duration of a read.

    Reading turns hundreds of pages into Arrow arrays and frees most of them again. Arrow's
    default pool (mimalloc or jemalloc) keeps freed memory for reuse, so the process peaked at
    ~3.7x the final frame at 200,000 instances; with malloc, whose freed memory the JSON
    parsing and numpy reuse, and :func:`release_memory` between phases it peaks at ~2.7x
    (measured by replaying the pages of benchmarks/scale.py's 200k archive). Arrays keep the
    pool they were made with, so switching back afterwards is safe.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def release_memory() -> None:
    """Return memory that Arrow's pool freed to the OS (``malloc_trim`` for the system pool)."""
    pa.default_memory_pool().release_unused()


def _codes(child_parents: pa.Array, parent_ids: pa.Array, what: str) -> np.ndarray:
    # an Arrow hash lookup: no Python string per instance (pandas' get_indexer needed one)
    if child_parents.type != parent_ids.type:
        child_parents = child_parents.cast(parent_ids.type)
    codes = pc.index_in(child_parents, value_set=parent_ids)
    if codes.null_count:
        raise InconsistentIndexError(f"{codes.null_count} {what} refer to a parent that was not listed")
    return codes.to_numpy(zero_copy_only=False).astype(np.int32)


@one_warning()  # one ParseWarning for the whole frame
def build_frame(tables: Mapping[str, LevelTable | Mapping[str, pa.Array]], *, typed: bool = True,
                sort: bool = True, consume: bool = False) -> pd.DataFrame:
    """Join the four levels into one frame, one row per instance.

    Parameters
    ----------
    tables : mapping level -> LevelTable (or its finished arrays)
    typed : bool, default True
        Convert tags to the dtypes of the schema; ``False`` keeps raw strings.
    sort : bool, default True
        Order rows by PatientID, StudyDate, StudyInstanceUID, SeriesNumber,
        SeriesInstanceUID, InstanceNumber, SOPInstanceUID (ids break ties).
    consume : bool, default False
        Free each level's raw Arrow columns as they are typed, emptying the LevelTables (once
        the levels are known to join: on :class:`InconsistentIndexError` they are intact).
        The raw text and the frame are then never held whole together (a read's peak memory).

    Raises
    ------
    InconsistentIndexError
        When an instance's series (or a series' study, ...) is not in the tables: the server
        changed between the requests. :func:`~orthanc_pandas.read_orthanc` catches up then.

    Examples
    --------
    >>> tables = {lvl: LevelTable.from_resources(lvl, []) for lvl in LEVELS}
    >>> build_frame(tables).shape[0]
    0
    """
    arrays = {lvl: (t.finish() if isinstance(t, LevelTable) else dict(t)) for lvl, t in tables.items()}
    release_memory()  # the pages' pieces, freed by finish()
    inst = arrays["instance"]
    n = len(inst["ID"])
    # codes of each instance at each level
    series_codes = _codes(inst.get("ParentSeries", pa.array([], pa.string())), arrays["series"]["ID"], "instances")
    s2study = _codes(arrays["series"].get("ParentStudy", pa.array([], pa.string())), arrays["study"]["ID"], "series")
    st2pat = _codes(arrays["study"].get("ParentPatient", pa.array([], pa.string())), arrays["patient"]["ID"], "studies")
    study_codes = s2study[series_codes]
    patient_codes = st2pat[study_codes]
    per_instance = {"patient": patient_codes, "study": study_codes, "series": series_codes,
                    "instance": np.arange(n, dtype=np.int32)}
    instance_tags = {k[4:] for k in inst if k.startswith("tag:")}
    if consume:  # the levels join: from here on the raw columns live in `arrays` only
        for t in tables.values():
            if isinstance(t, LevelTable):
                t._chunks, t.n = [], 0
        for lvl, key in PARENT_KEY.items():
            arrays[lvl].pop(key, None)
    del inst
    take = dict.pop if consume else dict.get

    columns: dict[str, pd.Series | np.ndarray | pd.api.extensions.ExtensionArray] = {}
    for level in LEVELS:
        lvl = arrays[level]
        codes = per_instance[level]
        seen = [k[4:] for k in lvl if k.startswith("tag:")]
        # a tag of another level's main tags is that level's column (1.13 repeats
        # TimezoneOffsetFromUTC among a series' tags); extras of this server come after
        ordered = [k for k in MAIN_TAGS[level]] + [k for k in seen if tag_level(k) is None]
        for kw in ordered:
            if level != "instance" and kw in instance_tags:
                continue  # the instance level reports it too; merged below
            raw = take(lvl, "tag:" + kw, None)
            if raw is None:
                raw = pa.nulls(len(lvl["ID"]), pa.string())
            if level == "instance":
                raw = _fill_from_parents(kw, raw, arrays, per_instance)
            for name, col in typed_columns(kw, raw, level, typed).items():
                columns[name] = _expand(col, codes, level)
            del raw
            if consume:
                release_memory()  # this tag's raw text and parsing temporaries (~free: malloc_trim)
        for jkey, (name, kind) in BOOKKEEPING.get(level, {}).items():
            raw = take(lvl, "book:" + jkey, None)
            if raw is None:
                raw = pa.nulls(len(lvl["ID"]), pa.int64() if kind in BOOKKEEPING_DTYPES else pa.string())
            if raw.null_count == len(raw):
                col = missing_values(BOOKKEEPING_DTYPES.get(kind, _NO_CATEGORIES), len(raw))
            elif kind in BOOKKEEPING_DTYPES:
                col = _bookkeeping_integers(raw, BOOKKEEPING_DTYPES[kind])
            else:
                col = _category(raw)
            columns[name] = _expand(col, codes, level)
    columns[LABELS_COLUMN] = labels_column(
        {lvl: arrays[lvl].get("book:Labels") for lvl in LEVELS}, per_instance, n)

    index = pd.MultiIndex(
        levels=[_id_index(arrays[lvl]["ID"]) for lvl in LEVELS],
        codes=[per_instance[lvl] for lvl in LEVELS],
        names=INDEX_NAMES, verify_integrity=False,
    )
    if consume:
        arrays.clear()  # the ids are in the index now
    if sort and n:
        # order from the key columns alone, then permute one column at a time (each unsorted
        # column is freed as its sorted copy is made): df.take(order) held the frame twice
        release_memory()  # the untyped text, freed as columns were typed
        keys = pd.DataFrame({k: columns[k] for k in SORT_KEYS if k in columns}, index=index, copy=False)
        order = sort_order(keys)
        del keys
        index = index.take(order)
        for name in list(columns):
            col = columns[name]
            columns[name] = (col.array if isinstance(col, pd.Series) else col).take(order)
            del col
            if consume:
                release_memory()
    df = pd.DataFrame(columns, index=index, copy=False) if columns else pd.DataFrame(index=index)
    return df


def joinable_tables(tables: Mapping[str, LevelTable]) -> dict[str, LevelTable]:
    """The levels without what a read of a changing archive can leave in them (in place).

    Offset pages of a list that grows or shrinks meanwhile can hold a resource twice (kept
    once), a child whose parent the parent list missed (dropped, with its own children), and
    a parent all of whose children are gone (dropped: a fresh read never lists one). What is
    dropped is not lost: a read that catches up finds it missing from the server's id list
    and fetches its series again.

    Examples
    --------
    >>> tables = {lvl: LevelTable.from_resources(lvl, []) for lvl in LEVELS}
    >>> tables["instance"] = LevelTable.from_resources("instance", [
    ...     {"ID": "i1", "ParentSeries": "gone"}, {"ID": "i1", "ParentSeries": "gone"}])
    >>> joinable_tables(tables)["instance"].n
    0
    """
    out = dict(tables)
    for k, level in enumerate(LEVELS):  # top down: duplicates, then orphans
        ids = out[level].column("ID")
        keep = ~pd.Series(pd.array(ids, dtype=pd.ArrowDtype(ids.type))).duplicated().to_numpy()
        if level in PARENT_KEY:
            listed = pc.is_in(out[level].column(PARENT_KEY[level]),
                              value_set=out[LEVELS[k - 1]].column("ID"))
            keep &= listed.to_numpy(zero_copy_only=False)
        if not keep.all():
            out[level].keep(keep)
    for k in range(len(LEVELS) - 2, -1, -1):  # bottom up: parents left without a child
        child = LEVELS[k + 1]
        used = pc.is_in(out[LEVELS[k]].column("ID"), value_set=out[child].column(PARENT_KEY[child]))
        used = used.to_numpy(zero_copy_only=False)
        if not used.all():
            out[LEVELS[k]].keep(used)
    return out


def labels_column(labels: Mapping[str, pa.Array | None], per_instance: Mapping[str, np.ndarray],
                  n: int, categories: Iterable[str] = ()) -> pd.Categorical | pd.Series:
    """The ``orthanc_labels`` column: per instance, the union of its four levels' labels.

    Parameters
    ----------
    labels : mapping level -> Arrow strings (one per resource of the level: its labels sorted
        and comma-joined, null when none) or None (the level carries no labels)
    per_instance : mapping level -> the row of each instance's resource in that level
    n : int
        Number of instances.
    categories : iterable of str, optional
        More categories to keep besides the values present (a selection keeps the categories
        of the whole archive).

    Returns
    -------
    Categorical of sorted comma-joined labels (categories in :data:`STR_DTYPE`; without any
    label and any category kept, all missing with the placeholder category, see
    :func:`categorical`).

    Examples
    --------
    >>> labels = {"patient": pa.array(["a"]), "study": None, "series": pa.array([None, "b,c"]),
    ...           "instance": pa.array([None, "a", None])}
    >>> per_instance = {"patient": np.array([0, 0, 0]), "study": np.array([0, 0, 0]),
    ...                 "series": np.array([0, 1, 1]), "instance": np.arange(3)}
    >>> list(labels_column(labels, per_instance, 3))
    ['a', 'a,b,c', 'a,b,c']
    """
    # Most resources have no label: work on codes into each level's few distinct label sets,
    # and form unions only for the distinct combinations that occur.
    level_codes, level_values = [], []
    for level in LEVELS:
        raw = labels.get(level)
        if raw is None or raw.null_count == len(raw):
            continue
        encoded = pc.dictionary_encode(raw)
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        level_codes.append(codes[per_instance[level]])
        level_values.append(encoded.dictionary.to_pylist())
    extra = sorted(set(categories))
    if not level_codes:
        return categorical(np.full(n, -1, np.int8), extra)
    stacked = np.column_stack(level_codes)
    combos, inverse = np.unique(stacked, axis=0, return_inverse=True)
    unions = []
    for combo in combos:
        found = set()
        for values, code in zip(level_values, combo, strict=True):
            if code >= 0:
                found.update(values[code].split(LABELS_SEPARATOR))
        unions.append(LABELS_SEPARATOR.join(sorted(found)) if found else None)
    cats = sorted({u for u in unions if u is not None} | set(extra))
    position = {c: i for i, c in enumerate(cats)}
    combo_codes = np.array([-1 if u is None else position[u] for u in unions], dtype=np.int64)
    codes = combo_codes[np.asarray(inverse).reshape(-1)]
    return categorical(codes, cats)  # (no label on these rows: the placeholder category)


def _bookkeeping_integers(raw: pa.Array, dtype) -> pd.Series:
    """Orthanc's integers (Arrow int64) in ``dtype``; one beyond its range is missing."""
    info = np.iinfo(dtype.numpy_dtype)
    fits = pc.and_(pc.greater_equal(raw, info.min), pc.less_equal(raw, info.max))
    raw = pc.if_else(pc.fill_null(fits, False), raw, pa.scalar(None, raw.type))
    return pd.Series(pd.array(raw, dtype=pd.Int64Dtype()).astype(dtype), copy=False)


def _fill_from_parents(kw: str, raw: pa.Array, arrays, per_instance) -> pa.Array:
    """Instance value if present, else the value of the nearest parent level that reports it."""
    for level in ("series", "study", "patient"):
        parent = arrays[level].get("tag:" + kw)
        if parent is None or raw.null_count == 0:
            continue
        expanded = parent.take(pa.array(per_instance[level]))
        raw = pc.if_else(pc.is_null(raw), expanded, raw)
    return raw


def _id_index(ids: pa.Array) -> pd.Index:
    # pandas' default string dtype: what pd.read_parquet gives back for index levels
    if not isinstance(STR_DTYPE, pd.StringDtype):  # pandas < 3: object
        return pd.Index(ids.to_pylist(), dtype=STR_DTYPE)
    return pd.Index(pd.array(ids, dtype=STR_DTYPE))  # from the Arrow buffers, no Python strings


def _expand(col, codes: np.ndarray, level: str):
    """Level values -> one value per instance."""
    if level == "instance":
        return col.array if isinstance(col, pd.Series) else col
    if isinstance(col, pd.Categorical):
        return pd.Categorical.from_codes(col.codes[codes] if len(col) else np.zeros(0, np.int8),
                                         dtype=col.dtype)
    series = col if isinstance(col, pd.Series) else pd.Series(col)
    return series.array.take(codes)


_NO_CATEGORIES = pd.CategoricalDtype(PLACEHOLDER_CATEGORIES)


def _category(raw: pa.Array) -> pd.Categorical | pd.Series:
    if raw.null_count == len(raw):
        return missing_values(_NO_CATEGORIES, len(raw))
    strings = pd.array(raw.to_numpy(zero_copy_only=False), dtype=TEXT_DTYPE)
    # categories in pandas' default string dtype: what pd.read_parquet gives back
    cats = pd.Index(pd.unique(strings[~pd.isna(strings)]).to_numpy(dtype=object, na_value=None),
                    dtype=STR_DTYPE)
    return pd.Categorical(strings.to_numpy(dtype=object, na_value=None), categories=cats.sort_values())


def _text(raw: pa.Array) -> pd.Series:
    return pd.Series(pd.array(raw, dtype=TEXT_DTYPE))


def _strip_padding(raw: pa.Array) -> pa.Array:
    """Drop trailing spaces and NULs: DICOM padding, insignificant (pydicom drops it too)."""
    return pc.utf8_rtrim(raw, characters=" \x00")


_NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


_NULL_STR = pa.scalar(None, pa.string())


def _arrow_text(text) -> pa.Array:
    """Strings as one Arrow array, whatever pandas holds them in."""
    if isinstance(text, pa.ChunkedArray):
        return text.combine_chunks()
    if isinstance(text, pa.Array):
        return text
    arr = pa.array(pd.Series(text).astype(TEXT_DTYPE).array)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _numeric_text(a: pa.Array) -> pa.Array:
    # Numeric VRs use the default repertoire, but Orthanc decodes them with the dataset's
    # character set: under Japanese JIS X 0201 the value separator '\\' arrives as '¥'.
    return pc.utf8_trim_whitespace(pc.replace_substring(a, "¥", "\\"))


def _present(a: pa.Array) -> pa.Array:
    return pc.fill_null(pc.greater(pc.utf8_length(a), 0), False)


def _arrow_numbers(a: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Trimmed strings -> (float64 values, bool: present but not a number)."""
    ok = pc.fill_null(pc.match_substring_regex(a, _NUMBER_RE), False)
    values = pc.cast(pc.if_else(ok, a, _NULL_STR), pa.float64())
    # '1e400' matches the pattern but overflows to inf: not a value, say so
    finite = pc.fill_null(pc.is_finite(values), True)
    values = pc.if_else(finite, values, pa.scalar(None, pa.float64()))
    return values, pc.or_(pc.and_(_present(a), pc.invert(ok)), pc.invert(finite))


def typed_columns(kw: str, raw: pa.Array, level: str, typed: bool) -> dict[str, object]:
    """One or more typed columns for the raw strings of one tag at its own level."""
    if not typed:
        return {kw: _text(raw)}
    raw = _strip_padding(raw)
    # an empty value and an absent one are the same missing value in a typed frame
    raw = pc.if_else(_present(raw), raw, _NULL_STR)
    if raw.null_count == len(raw):
        # no resource has a value: the same columns and dtypes as when some have one
        return {name: missing_values(dtype, len(raw)) for name, dtype in tag_dtypes(kw, level).items()}
    vr = tag_vr(kw)
    if vr == "DA":
        return {kw: parse_dates(raw, kw)}
    if vr == "AS":
        return {kw: parse_ages(raw, kw)}
    if vr in NUMERIC_VRS:
        length = vector_length(kw)
        if length:
            return parse_vectors(raw, kw, length)
        return {kw: parse_numbers(raw, kw, integer=integer_dtype(vr) if vr in _INTEGER_VRS else False)}
    if level == "instance":
        return {kw: _text(raw)}
    return {kw: _category(raw)}


def parse_dates(text, kw: str = "date") -> pd.Series:
    """DICOM DA strings -> ``datetime64[us]``; empty -> NaT; unparsable -> NaT with a warning.

    Exactly ``YYYYMMDD`` (or ACR-NEMA's ``YYYY.MM.DD``, which pydicom reads too).

    >>> parse_dates(pd.Series(["20200131", "", None])).tolist()
    [Timestamp('2020-01-31 00:00:00'), NaT, NaT]
    """
    a = pc.utf8_trim_whitespace(_arrow_text(text))
    a = pc.replace_substring_regex(a, r"^(\d{4})\.(\d{2})\.(\d{2})$", r"\1\2\3")
    ok = pc.fill_null(pc.match_substring_regex(a, r"^\d{8}$"), False)
    dates = pc.strptime(pc.if_else(ok, a, _NULL_STR), format="%Y%m%d", unit="us", error_is_null=True)
    # Arrow rolls impossible days over ('20200230' -> 2020-03-01): keep only exact round trips
    exact = pc.fill_null(pc.equal(pc.strftime(dates, format="%Y%m%d"), a), False)
    dates = pc.if_else(exact, dates, pa.scalar(None, dates.type))
    note(kw, pc.and_(_present(a), pc.is_null(dates)), a, "a date YYYYMMDD")
    return pd.Series(dates.to_numpy(zero_copy_only=False).astype(DATE_DTYPE), copy=False)


def parse_ages(text, kw: str = "age") -> pd.Series:
    """DICOM AS strings (``nnnD``, ``nnnW``, ``nnnM``, ``nnnY``) -> age in years, ``Float64``.

    ``063Y`` -> 63, ``006M`` -> 0.5, ``010W`` -> 10*7/365.25, ``003D`` -> 3/365.25; empty ->
    NA; anything else -> NA with a :class:`ParseWarning`.

    >>> parse_ages(pd.Series(["063Y", "006M", "", "010W", None])).round(3).tolist()
    [63.0, 0.5, <NA>, 0.192, <NA>]
    """
    a = pc.utf8_upper(pc.utf8_trim_whitespace(_arrow_text(text)))
    ok = pc.fill_null(pc.match_substring_regex(a, r"^\d{3}[DWMY]$"), False)
    good = pc.if_else(ok, a, _NULL_STR)
    number = pc.cast(pc.utf8_slice_codeunits(good, 0, 3), pa.float64())
    unit = pc.utf8_slice_codeunits(good, 3, 4)
    which = pc.index_in(unit, value_set=pa.array(list(AGE_UNITS)))
    scale = np.append(np.array(list(AGE_UNITS.values())), np.nan)
    years = number.to_numpy(zero_copy_only=False) * scale[
        pc.fill_null(which, len(AGE_UNITS)).to_numpy(zero_copy_only=False)]
    note(kw, pc.and_(_present(a), pc.invert(ok)), a, "an age nnnY/M/W/D")
    out = pd.array(years, dtype="Float64")
    out[np.isnan(years)] = pd.NA
    return pd.Series(out, copy=False)


def parse_numbers(text, kw: str = "number", integer=False) -> pd.Series:
    """DICOM IS/DS strings -> ``Int32``/``Float64``; unparsable -> NA with a warning.

    ``integer`` is False (decimal numbers, ``Float64``), True (``Int64``) or the integer dtype
    (:func:`integer_dtype`); an integer beyond the dtype's range is not a value either.

    >>> parse_numbers(pd.Series([" 12 ", "x", None]), integer=pd.Int32Dtype()).tolist()
    [12, <NA>, <NA>]
    """
    a = _numeric_text(_arrow_text(text))
    values, bad = _arrow_numbers(a)
    if integer is True:
        integer = pd.Int64Dtype()
    if integer:
        # fractions are not integers; beyond 2**53 a float64 no longer holds every integer,
        # and a value beyond the dtype's range would wrap around
        info = np.iinfo(integer.numpy_dtype)
        low, high = max(float(info.min), -2.0 ** 53), min(float(info.max), 2.0 ** 53)
        frac = pc.fill_null(pc.or_(pc.not_equal(values, pc.floor(values)),
                                   pc.or_(pc.greater(values, high), pc.less(values, low))), False)
        values = pc.if_else(frac, pa.scalar(None, pa.float64()), values)
        bad = pc.or_(bad, frac)
    note(kw, bad, a, "an integer" if integer else "a number")
    out = pd.array(values.to_numpy(zero_copy_only=False), dtype="Float64")
    out[np.asarray(pc.is_null(values))] = pd.NA
    return pd.Series(out.astype(integer) if integer else out, copy=False)


def parse_vectors(text, kw: str, length: int) -> dict[str, pd.Series]:
    r"""``"x\y\z"`` -> columns ``kw_0``.. ``kw_{length-1}`` (the schema: DICOM's VM).

    A value with more components is not a valid value of the tag: missing, with a
    :class:`ParseWarning`, as a component that is no number or is lacking.

    >>> parse_vectors(pd.Series(["1\\2\\3"]), "ImagePositionPatient", 3)["ImagePositionPatient_2"].tolist()
    [3.0]
    """
    a = _numeric_text(_arrow_text(text))
    present = _present(a)
    lists = pc.split_pattern(pc.if_else(present, a, ""), "\\")
    # more components than the dictionary's VM: not a value of this tag (no extra columns:
    # the columns are the schema); fewer leave the missing components NA, with the warning
    wrong = pc.and_(present, pc.greater(pc.list_value_length(lists), length))
    lists = pc.if_else(wrong, pa.scalar([], lists.type), lists)
    out = {}
    bad = wrong
    for i in range(length):
        comp = pc.list_flatten(pc.list_slice(lists, i, i + 1, return_fixed_size_list=True))
        values, _ = _arrow_numbers(pc.utf8_trim_whitespace(comp))
        bad = pc.or_(bad, pc.and_(pc.and_(present, pc.invert(wrong)), pc.is_null(values)))
        col = pd.array(values.to_numpy(zero_copy_only=False), dtype="Float64")
        col[np.asarray(pc.is_null(values))] = pd.NA
        out[f"{kw}_{i}"] = pd.Series(col, copy=False)
    note(kw, bad, a, f"{length} numbers")
    return out


SORT_KEYS = ("PatientID", "StudyDate", "StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID",
             "InstanceNumber", "SOPInstanceUID")


def sort_order(df: pd.DataFrame) -> np.ndarray:
    """Row positions in the index frame's order: :data:`SORT_KEYS`, then the ids; NA last."""
    keys = [rank_values(df[k]) for k in SORT_KEYS if k in df.columns]
    index = df.index
    if isinstance(index, pd.MultiIndex):
        for level, codes in zip(index.levels, index.codes, strict=True):
            keys.append(_rank_codes(np.asarray(codes), level))
    if not keys:
        return np.arange(len(df))
    return np.lexsort(keys[::-1])  # lexsort sorts by its last key first


def _rank_codes(codes: np.ndarray, categories) -> np.ndarray:
    """Codes into (possibly unsorted) categories -> ranks in sorted order; -1 (NA) last."""
    n = len(categories)
    rank = np.empty(n + 1, dtype=np.int32)  # int32 keys: half the sort's memory
    # Index.argsort sorts Arrow-backed strings in Arrow (code point order, as Python's str):
    # an object array of 200k ids cost ~20 MB and 0.2 s
    rank[np.asarray(pd.Index(categories).argsort())] = np.arange(n)
    rank[n] = n
    return rank[np.where(codes < 0, n, codes)]


def rank_values(col: pd.Series) -> np.ndarray:
    """Integer ranks of a column's values (ties equal, NA last), for np.lexsort."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return _rank_codes(col.cat.codes.to_numpy(), col.cat.categories)
    if isinstance(col.dtype, pd.ArrowDtype) and col.dtype.pyarrow_dtype == pa.null():
        return np.zeros(len(col), dtype=np.int32)
    if isinstance(col.dtype, pd.StringDtype) and col.dtype.storage == "pyarrow":
        # ranked in Arrow: pd.factorize(sort=True) of 200k UIDs cost ~30 MB and 3x the time
        # (missing values rank last: Arrow's default null placement)
        ranks = pc.rank(col.array.__arrow_array__(), sort_keys="ascending", tiebreaker="dense")
        return ranks.to_numpy().astype(np.int32) - 1
    codes, uniques = pd.factorize(col, sort=True)
    return np.where(codes < 0, len(uniques), codes).astype(np.int32)


def sort_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.take(sort_order(df))


def empty_frame() -> pd.DataFrame:
    """The frame of an empty archive: every column of the schema, zero rows."""
    return build_frame({lvl: LevelTable(lvl) for lvl in LEVELS})
