"""Protocol columns of a series frame: which tags, and how a series' values become columns. Pure.

``df.orthanc.series(protocol=True)`` adds, for every tag of :data:`PROTOCOL_TAGS` (the union
over the modalities, so the columns never depend on the data), three columns:

``<tag>``
    The series' value when every instance that has one holds the same (missing values are
    ignored); missing when they differ or none has it.
``<tag>_min``, ``<tag>_max``
    The smallest and largest value among the instances (numbers by value, text by its
    characters' order, as ``min``/``max`` order Python strings); equal to ``<tag>`` when it is
    constant.

A series is given only the tags of its own modality (CT, MR, PT); the other protocol columns of
its row are missing, as are all of them for other modalities. Types follow the index schema:
``IS`` -> ``Int64``, ``DS``/``FD`` -> ``Float64``, text (DICOM multi-values joined by ``\\``,
``ConvolutionKernel`` ``"B30f"``, ``ScanningSequence`` ``"GR\\IR"``) -> ``string``.
``protocol=[tags]`` asks for other tags (any modality) with the same three columns each; a
fixed multi-valued number gives them per component (``PixelSpacing_0``, ``PixelSpacing_0_min``).

``Radiopharmaceutical`` and ``RadionuclideTotalDose`` are read from the first item of
``RadiopharmaceuticalInformationSequence`` (:data:`NESTED`). Diffusion b-values are the
standard ``DiffusionBValue`` (0018,9087) only: the private Siemens (0019,100C) and GE
(0043,1039) forms need the private creator checked and GE's value decoded, and are not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from orthanc_pandas._frame.schema import TEXT_DTYPE, tag_dtypes

#: The documented protocol tags per modality (``docs/series.md``, "Protocol columns").
PROTOCOL_TAGS: dict[str, tuple[str, ...]] = {
    "CT": ("KVP", "XRayTubeCurrent", "Exposure", "ExposureTime", "CTDIvol", "SliceThickness",
           "ConvolutionKernel", "SpiralPitchFactor", "ReconstructionDiameter"),
    "MR": ("MagneticFieldStrength", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle",
           "ScanningSequence", "SequenceVariant", "EchoTrainLength", "DiffusionBValue",
           "SliceThickness"),
    "PT": ("Radiopharmaceutical", "RadionuclideTotalDose", "Units", "DecayCorrection",
           "CorrectedImage", "ReconstructionMethod", "SliceThickness"),
}

#: Tags read from the first item of a sequence: tag -> the sequence.
NESTED: dict[str, str] = {"Radiopharmaceutical": "RadiopharmaceuticalInformationSequence",
                          "RadionuclideTotalDose": "RadiopharmaceuticalInformationSequence"}

#: Suffixes of the two aggregate columns of each tag.
SUFFIXES = ("_min", "_max")


def default_tags() -> list[str]:
    """Every tag of :data:`PROTOCOL_TAGS`, in order, each once.

    Examples
    --------
    >>> default_tags()[:3], len(default_tags())
    (['KVP', 'XRayTubeCurrent', 'Exposure'], 24)
    """
    return list(dict.fromkeys(t for tags in PROTOCOL_TAGS.values() for t in tags))


def fetched_tags(tags: Iterable[str]) -> list[str]:
    """What to fetch for ``tags``: the sequence that holds a :data:`NESTED` tag, else the tag.

    Examples
    --------
    >>> fetched_tags(["Units", "Radiopharmaceutical", "RadionuclideTotalDose"])
    ['Units', 'RadiopharmaceuticalInformationSequence']
    """
    return list(dict.fromkeys(NESTED.get(t, t) for t in tags))


def _item_value(item, keyword: str, number: str):
    if not isinstance(item, dict):
        return None
    for key in (keyword, number, number.upper()):
        if key in item:
            return item[key]
    return None


def nested_values(sequences: Iterable, keyword: str, number: str) -> list:
    """The raw value of ``keyword`` in the first item of each sequence value (``None`` if none).

    Sequence items are keyed by keyword (``with_tags`` columns) or by ``"gggg,eeee"`` (raw
    Orthanc answers); both are read.

    Examples
    --------
    >>> nested_values([[{"Radiopharmaceutical": "FDG"}], None, [{"0018,0031": "NaF"}], []],
    ...               "Radiopharmaceutical", "0018,0031")
    ['FDG', None, 'NaF', None]
    """
    out = []
    for seq in sequences:
        first = seq[0] if isinstance(seq, list | tuple) and len(seq) else None
        out.append(_item_value(first, keyword, number))
    return out


def protocol_dtypes(name: str) -> dict[str, object]:
    """The value columns of one tag (before aggregation) and their dtypes.

    Examples
    --------
    >>> protocol_dtypes("KVP"), protocol_dtypes("XRayTubeCurrent")
    ({'KVP': Float64Dtype()}, {'XRayTubeCurrent': Int32Dtype()})
    >>> protocol_dtypes("ConvolutionKernel")["ConvolutionKernel"] == TEXT_DTYPE
    True
    """
    return {c: (TEXT_DTYPE if not _numeric(d) else d)
            for c, d in tag_dtypes(name, "instance").items()}


def _numeric(dtype) -> bool:
    return isinstance(dtype, pd.Int32Dtype | pd.Int64Dtype | pd.Float64Dtype)


def protocol_schema(columns: dict[str, object]) -> dict[str, object]:
    """The output columns (``c``, ``c_min``, ``c_max`` for each value column) and dtypes.

    Examples
    --------
    >>> list(protocol_schema({"KVP": pd.Float64Dtype()}))
    ['KVP', 'KVP_min', 'KVP_max']
    """
    return {f"{c}{s}": d for c, d in columns.items() for s in ("", *SUFFIXES)}


def aggregate(values: pd.DataFrame, series: Sequence, order: Sequence,
              dtypes: dict[str, object]) -> pd.DataFrame:
    """Per series: the constant value, the minimum and the maximum of each column of ``values``.

    Parameters
    ----------
    values : pandas.DataFrame
        One row per instance, a column per value column (any index).
    series : sequence
        The series id of each row of ``values``.
    order : sequence
        The series of the result's rows, in order (a series without rows: missing values).
    dtypes : dict
        Value column -> dtype (:func:`protocol_dtypes`); columns absent from ``values`` are
        all missing.

    Returns
    -------
    pandas.DataFrame
        Default index (one row per ``order`` entry), the columns of :func:`protocol_schema`.

    Examples
    --------
    >>> v = pd.DataFrame({"KVP": pd.array([120, 120, 100, None], dtype="Float64")})
    >>> out = aggregate(v, ["a", "a", "b", "b"], ["a", "b", "c"], {"KVP": pd.Float64Dtype()})
    >>> out.KVP.tolist(), out.KVP_min.tolist(), out.KVP_max.tolist()
    ([120.0, 100.0, <NA>], [120.0, 100.0, <NA>], [120.0, 100.0, <NA>])
    >>> v = pd.DataFrame({"KVP": pd.array([120, 100], dtype="Float64")})
    >>> aggregate(v, ["a", "a"], ["a"], {"KVP": pd.Float64Dtype()}).iloc[0].tolist()
    [<NA>, 100.0, 120.0]
    """
    order = pd.Index(list(order), dtype=object)
    codes = order.get_indexer(pd.Index(list(series), dtype=object)) if len(order) else \
        np.full(len(values), -1)
    keep = codes >= 0
    n = len(order)
    present = [c for c in dtypes if c in values.columns]
    data = {c: _as_dtype(values[c], dtypes[c])[keep] for c in present}
    table = pd.DataFrame(data, index=pd.RangeIndex(int(keep.sum())))
    grouped = table.groupby(codes[keep], sort=True)
    low = grouped.min().reindex(range(n))
    high = grouped.max().reindex(range(n))
    distinct = grouped.nunique().reindex(range(n))
    out: dict[str, object] = {}
    for col, dtype in dtypes.items():
        if col in data:
            single = distinct[col].fillna(0).to_numpy() == 1
            parts = (low[col].where(single), low[col], high[col])
        else:
            parts = (None, None, None)
        for suffix, part in zip(("", *SUFFIXES), parts, strict=True):
            out[f"{col}{suffix}"] = (pd.array([None] * n, dtype=dtype) if part is None
                                     else part.astype(dtype).array)
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _as_dtype(column: pd.Series, dtype) -> pd.api.extensions.ExtensionArray:
    """``column``'s values as an array of ``dtype`` (text for categoricals and objects)."""
    if column.dtype == dtype:
        return column.array
    if isinstance(column.dtype, pd.CategoricalDtype) or not _numeric(dtype):
        return pd.array(column.to_numpy(dtype=object, na_value=None), dtype=dtype)
    return column.astype(dtype).array


def modality_mask(modality: np.ndarray, tag: str) -> np.ndarray:
    """Rows whose modality's documented set holds ``tag``.

    Examples
    --------
    >>> modality_mask(np.array(["CT", "MR", None], dtype=object), "KVP").tolist()
    [True, False, False]
    """
    mods = [m for m, tags in PROTOCOL_TAGS.items() if tag in tags]
    return np.isin(np.asarray(modality, dtype=object), mods)
