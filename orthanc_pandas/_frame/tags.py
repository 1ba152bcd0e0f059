"""Names of DICOM tags, and typed columns from the values Orthanc sends. Pure: no HTTP.

A tag can be named by its pydicom keyword (``"SliceThickness"``) or by its number in any of
the usual spellings: ``"0018,0050"``, ``"00180050"``, ``"(0018,0050)"``, an ``int``
(``0x00180050``). Private tags have no keyword; they are named ``"gggg,eeee"`` (lower-case
hex, the way Orthanc writes them).

Values Orthanc sends (``?short`` JSON: strings, ``null``, or lists of dicts for sequences)
become typed columns with the same schema as the index frame (see :mod:`orthanc_pandas._frame.schema`):
``DA`` -> ``datetime64``, ``IS``/``US``/``SS``/``SL`` -> ``Int32`` (``UL`` ``Int64``), ``DS``
and binary floats -> ``Float64``, fixed multi-valued numbers -> one ``Float64`` column per
component (``PixelSpacing_0``, ``PixelSpacing_1``), text -> ``string`` (empty text is missing), ``AS`` -> age in years
(``Float64``); sequences -> an ``object`` column of JSON-like Python lists of dicts keyed by
keyword; binary values (OB, OW, UN..., fetched apart, see :mod:`orthanc_pandas._ops.fetch_tags`) ->
an ``object`` column of ``bytes``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pydicom.datadict import get_entry, keyword_dict, keyword_for_tag

from orthanc_pandas._frame.schema import NUMERIC_VRS, typed_columns, vector_columns
from orthanc_pandas.errors import UnknownTagError

#: VRs whose character repertoire has no "¥" (numbers, codes, dates, UIDs)
_NO_YEN_VRS = NUMERIC_VRS | {"CS", "AE", "AS", "DA", "DT", "TM", "UI"}


_HEX_FORMS = (
    re.compile(r"^\(?\s*([0-9a-fA-F]{4})\s*[,|-]\s*([0-9a-fA-F]{4})\s*\)?$"),
    re.compile(r"^\(?([0-9a-fA-F]{4})([0-9a-fA-F]{4})\)?$"),
)


@dataclass(frozen=True)
class TagInfo:
    """One DICOM tag: its number, its name in frames, its VR and VM.

    Attributes
    ----------
    tag : int
        ``0xggggeeee``.
    name : str
        The pydicom keyword, or ``"gggg,eeee"`` for private and unknown tags; the column name.
    vr, vm : str
        From pydicom's dictionary (first VR when several are possible); ``""`` when unknown.
    """

    tag: int
    name: str
    vr: str
    vm: str

    @property
    def key(self) -> str:
        """``"gggg,eeee"``: how Orthanc's ``?short`` JSON names the tag."""
        return f"{self.tag >> 16:04x},{self.tag & 0xFFFF:04x}"

    @property
    def compact(self) -> str:
        """``"ggggeeee"``: the spelling Orthanc's ``ignore-length`` argument accepts in a list."""
        return f"{self.tag:08x}"

    @property
    def is_private(self) -> bool:
        """Odd group numbers are private."""
        return bool((self.tag >> 16) & 1)


def parse_number(name: object) -> int | None:
    if isinstance(name, int | np.integer) and not isinstance(name, bool):
        value = int(name)
        return value if 0 <= value <= 0xFFFFFFFF else None
    if not isinstance(name, str):
        return None
    text = name.strip()
    for form in _HEX_FORMS:
        m = form.match(text)
        if m:
            return int(m.group(1) + m.group(2), 16)
    return None


def tag_info(tag: int) -> TagInfo:
    try:
        vr, vm, _desc, _retired, keyword = get_entry(tag)
    except KeyError:
        vr, vm, keyword = "", "", ""
    if not keyword:
        keyword = keyword_for_tag(tag) or ""
    name = keyword or f"{tag >> 16:04x},{tag & 0xFFFF:04x}"
    return TagInfo(tag, name, vr.split(" or ")[0] if vr else "", vm or "")


def suggest_keywords(name: str, n: int = 5) -> list[str]:
    """The DICOM keywords closest to a misspelled ``name`` (case-insensitive).

    Examples
    --------
    >>> suggest_keywords("SliceThicknes")[0]
    'SliceThickness'
    >>> suggest_keywords("patientname")[0]
    'PatientName'
    """
    lowered = {k.lower(): k for k in keyword_dict}
    hits = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


def is_tag_name(name: object) -> bool:
    """Whether ``name`` names a DICOM tag (a keyword or a tag number)."""
    return (isinstance(name, str) and name in keyword_dict) or parse_number(name) is not None


def resolve_tag(name: object) -> TagInfo:
    """The DICOM tag that ``name`` names.

    Parameters
    ----------
    name : str or int
        A pydicom keyword (``"SliceThickness"``), ``"gggg,eeee"``, ``"ggggeeee"``,
        ``"(gggg,eeee)"`` (private tags too), or the tag as an ``int``.

    Returns
    -------
    TagInfo

    Raises
    ------
    UnknownTagError
        (a ``KeyError``) when ``name`` is none of these, naming the closest real keywords.

    Examples
    --------
    >>> resolve_tag("SliceThickness")
    TagInfo(tag=1572944, name='SliceThickness', vr='DS', vm='1')
    >>> resolve_tag("(0018,0050)").name, resolve_tag("00180050").vr
    ('SliceThickness', 'DS')
    >>> resolve_tag("0019,10AB")
    TagInfo(tag=1642667, name='0019,10ab', vr='', vm='')
    """
    if isinstance(name, TagInfo):
        return name
    if isinstance(name, str) and name.strip() in keyword_dict:
        return tag_info(keyword_dict[name.strip()])
    number = parse_number(name)
    if number is not None:
        return tag_info(number)
    close = suggest_keywords(str(name))
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownTagError(
        f"{name!r} is neither a column of this frame nor a DICOM tag.{hint} Tags are named by "
        "pydicom keyword (e.g. 'SliceThickness') or number ('0018,0050', private tags too)."
    )


def column_names(info: TagInfo, columns: Iterable[str]) -> list[str]:
    """The frame columns that hold ``info``'s values: ``[name]``, its vector components, or ``[]``.

    Examples
    --------
    >>> column_names(resolve_tag("PixelSpacing"), ["PixelSpacing_0", "PixelSpacing_1"])
    ['PixelSpacing_0', 'PixelSpacing_1']
    """
    columns = list(columns)
    if info.name in columns:
        return [info.name]
    return vector_columns(info.name, columns)


def json_like(value):
    """A sequence value from Orthanc's ``?short`` JSON with keywords as keys (hex for private).

    Examples
    --------
    >>> json_like([{"0008,0100": "121320", "0040,a170": [{"0008,0104": "x"}]}])
    [{'CodeValue': '121320', 'PurposeOfReferenceCodeSequence': [{'CodeMeaning': 'x'}]}]
    """
    if isinstance(value, list):
        return [json_like(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            number = parse_number(k)
            out[tag_info(number).name if number is not None else k] = json_like(v)
        return out
    return value


def typed_tag_columns(info: TagInfo, values: Sequence) -> dict[str, pd.Series]:
    """Typed columns for one tag from the raw values Orthanc sent, one per instance.

    ``None`` (absent) becomes missing; ``bytes`` (binary values) give an ``object`` column of
    bytes. The types are those of the index frame's instance-level columns.

    Parameters
    ----------
    info : TagInfo
    values : sequence
        Strings, ``None``, or lists (sequences), as in ``/instances-tags?short``.

    Returns
    -------
    dict
        Column name -> Series (RangeIndex). Fixed multi-valued numeric tags give several
        columns (``PixelSpacing_0``, ``PixelSpacing_1``).

    Examples
    --------
    >>> cols = typed_tag_columns(resolve_tag("PixelSpacing"), ["0.5\\\\0.6", None])
    >>> sorted(cols), cols["PixelSpacing_1"].tolist()
    (['PixelSpacing_0', 'PixelSpacing_1'], [0.6, <NA>])
    >>> typed_tag_columns(resolve_tag("SliceThickness"), ["2.5", ""])["SliceThickness"].dtype
    Float64Dtype()
    """
    values = list(values)
    if any(isinstance(v, bytes) for v in values):
        # binary values (OB, OW, UN...), as stored in the file: not text, not parsed
        return {info.name: pd.Series([v if v is None or isinstance(v, bytes) else str(v).encode()
                                      for v in values], dtype=object)}
    if info.vr == "SQ" or any(isinstance(v, list | dict) for v in values):
        seq = pd.Series([json_like(v) if v is not None else None for v in values], dtype=object)
        return {info.name: seq}
    texts = [None if v is None else str(v) for v in values]
    if info.vr in _NO_YEN_VRS:
        # Orthanc decodes the 0x5C delimiter as "¥" under Japanese character sets (JIS X 0201
        # Roman); these VRs cannot hold "¥", so it can only be the delimiter
        texts = [t.replace("\u00a5", "\\") if t is not None else None for t in texts]
    raw = pa.array(texts, pa.string())
    # the index's own schema and parsers: one place decides how DICOM strings become types
    cols = typed_columns(info.name, raw, "instance", True)
    return {name: pd.Series(col).reset_index(drop=True) for name, col in cols.items()}
