"""Orthanc's JSON form of a header (``/instances/{id}/tags?short``) as a pydicom dataset. Pure.

The geometry report reads multi-frame, RT Dose and mosaic instances from this JSON instead of
their files, and hands the dataset to the very code ``volume()`` runs on the stored file
(:func:`~orthanc_pandas._imaging.geometry.slice_headers`,
:func:`~orthanc_pandas._imaging.mosaic.mosaic_layout`), so both read the same numbers the same
way. Each value becomes the element pydicom would have read from a file: text (``DS``, ``IS``,
``CS``...) as raw bytes that pydicom converts on access exactly as it converts a file's, binary
numbers (``US``, ``FD``...) packed little endian from Orthanc's decimal text, sequences item by
item. ASCII-only values (``DS``, ``IS``, ``CS``, ``UI``...) get back the bytes the file holds:
Orthanc decodes them with the file's character set too, and JIS X 0201 (``ISO_IR 13``) turns
the value separator ``\\`` into ``¥``. What the JSON cannot carry is left out, never guessed:

* binary values (``OB``, ``OW``, ``UN``: also a private number in an implicit VR file) are
  ``null`` in Orthanc's JSON: pass the ones needed as ``binary`` (the report fetches the
  Siemens CSA image header and (0019,100A) this way, see :data:`CSA_CREATOR`);
* values longer than 256 bytes are ``null`` too unless asked for in full (``ignore-length``):
  :data:`LONG_TAGS` are the ones geometry reads;
* private tags whose VR pydicom's private dictionary does not know for their creator, and ``AT``
  values.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

#: Siemens' private creator of the CSA headers; the image header is element 0x10 of its block
CSA_CREATOR = "SIEMENS CSA HEADER"

#: Tags geometry reads whose values may pass the 256 bytes Orthanc's JSON shows by default
#: (GridFrameOffsetVector holds one offset per frame; the others are long in odd files only)
LONG_TAGS = (0x00080008, 0x00200032, 0x00200037, 0x00280030, 0x3004000C)

_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                       "TM", "UC", "UI", "UR", "UT"})

#: VRs of the default repertoire (ASCII), which a file stores as ASCII whatever its character set
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})

#: Orthanc decodes every text value with the file's character set, ASCII ones too: JIS X 0201
#: (ISO_IR 13) turns byte 0x5C, the value separator, into U+00A5 YEN SIGN and 0x7E into U+203E
_JIS_ROMAN = {0xA5: 0x5C, 0x203E: 0x7E}

_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q",
                   "SV": "q"}

def _tag(key: str) -> int | None:
    if len(key) != 9 or key[4] != ",":
        return None
    try:
        return (int(key[:4], 16) << 16) | int(key[5:], 16)
    except ValueError:
        return None


def private_block(tags: Mapping[str, object], group: int, creator: str) -> int | None:
    """The block (``xx`` of ``(gggg,xx00)``) that ``creator`` reserved in ``group``, or None.

    Examples
    --------
    >>> private_block({"0029,0010": "SIEMENS CSA HEADER", "0029,0011": "SIEMENS MEDCOM"},
    ...               0x0029, "SIEMENS CSA HEADER")
    16
    """
    for key, value in tags.items():
        tag = _tag(key)
        if tag is None or tag >> 16 != group or not 0x10 <= (tag & 0xFFFF) <= 0xFF:
            continue
        if isinstance(value, str) and value.strip() == creator:
            return tag & 0xFF
    return None


def csa_image_tag(tags: Mapping[str, object]) -> int | None:
    """The tag of the Siemens CSA image header in a header's JSON (usually (0029,1010)).

    Examples
    --------
    >>> hex(csa_image_tag({"0029,0010": "SIEMENS CSA HEADER", "0029,1010": None}))
    '0x291010'
    >>> csa_image_tag({"0008,0060": "CT"}) is None
    True
    """
    block = private_block(tags, 0x0029, CSA_CREATOR)
    return None if block is None else 0x00290000 | (block << 8) | 0x10


#: Shared (5200,9229) and per-frame (5200,9230) functional groups, and the macros of theirs
#: that geometry reads: plane position (0020,9113), plane orientation (0020,9116), pixel
#: measures (0028,9110)
_GROUPS = ("5200,9229", "5200,9230")
_GEOMETRY_MACROS = ("0020,9113", "0020,9116", "0028,9110")


def geometry_part(tags: Mapping[str, object]) -> dict:
    """``tags`` with only the geometry macros in each functional-group item.

    An enhanced MR holds tens of macros per frame (timing, diffusion, contrast...) that
    slice geometry never reads; dropping them before :func:`dataset_from_json` makes a
    176-frame file ~5x cheaper to convert. Everything else is kept.

    Examples
    --------
    >>> geometry_part({"0028,0008": "2", "5200,9230": [
    ...     {"0020,9113": [{"0020,0032": "-7"}], "0018,9117": [{"0018,9087": "1000"}]}]})
    {'0028,0008': '2', '5200,9230': [{'0020,9113': [{'0020,0032': '-7'}]}]}
    """
    out = dict(tags)
    for key in _GROUPS:
        items = out.get(key)
        if isinstance(items, list):
            out[key] = [{k: item[k] for k in _GEOMETRY_MACROS if k in item}
                        if isinstance(item, Mapping) else item for item in items]
    return out


@functools.lru_cache(maxsize=4096)
def _known_vr(tag: int, creator: str | None) -> str | None:
    try:
        return dictionary_VR(tag) if creator is None else private_dictionary_VR(tag, creator)
    except KeyError:
        return None


def _vr(tag: int, creators: Mapping[tuple[int, int], str]) -> str | None:
    group, element = tag >> 16, tag & 0xFFFF
    if group % 2 == 0:
        return _known_vr(tag, None)
    if 0x10 <= element <= 0xFF:
        return "LO"  # a private creator
    creator = creators.get((group, element >> 8))
    return None if creator is None else _known_vr(tag, creator)


def _raw(tag: int, vr: str, value: str) -> RawDataElement | None:
    vr = vr.split(" or ")[0]  # "US or SS" (the dictionary's ambiguous VRs): as pydicom reads them
    if vr in _ASCII_VRS:
        data = value.translate(_JIS_ROMAN).encode("utf-8")
    elif vr in _TEXT_VRS:
        data = value.encode("utf-8")
    elif vr in _NUMBER_FORMATS:
        fmt = _NUMBER_FORMATS[vr]
        try:
            numbers = [float(v) if fmt in "fd" else int(float(v)) for v in value.split("\\")
                       if v.strip()]
            data = struct.pack(f"<{len(numbers)}{fmt}", *numbers)
        except (ValueError, struct.error):
            return None
    else:
        return None
    if len(data) % 2:  # DICOM values have even lengths: pad as a writer would
        data += b"\0" if vr == "UI" else b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True, True, False)


def dataset_from_json(tags: Mapping[str, object], binary: Mapping[int, bytes] | None = None,
                      *, _root: bool = True) -> Dataset:
    """A pydicom dataset from Orthanc's short JSON of a header (``{"gggg,eeee": value}``).

    Parameters
    ----------
    tags : mapping
        The answer of ``GET /instances/{id}/tags?short`` (values are text, ``null`` or a list
        of items for a sequence).
    binary : mapping of int to bytes, optional
        Values the JSON shows as ``null`` (binary VRs), fetched as stored
        (``GET /instances/{id}/content/gggg-eeee``), by tag.

    Returns
    -------
    pydicom.Dataset
        Without ``file_meta`` and pixel data. Text is UTF-8 (Orthanc's JSON is), so
        SpecificCharacterSet is set to ``ISO_IR 192``.

    Examples
    --------
    >>> ds = dataset_from_json({"0008,0008": "ORIGINAL\\\\PRIMARY\\\\M\\\\MOSAIC",
    ...     "0028,0010": "384", "0020,0032": "-805.0\\\\-825.0191\\\\-75.097",
    ...     "5200,9229": [{"0028,9110": [{"0028,0030": "2.5\\\\2.5"}]}]})
    >>> list(ds.ImageType), ds.Rows, [float(v) for v in ds.ImagePositionPatient]
    (['ORIGINAL', 'PRIMARY', 'M', 'MOSAIC'], 384, [-805.0, -825.0191, -75.097])
    >>> [float(v) for v in ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    [2.5, 2.5]
    """
    binary = binary or {}
    parsed = {t: v for t, v in ((_tag(k), v) for k, v in tags.items()) if t is not None}
    creators = {(t >> 16, t & 0xFF): v.strip() for t, v in parsed.items()
                if (t >> 16) % 2 and 0x10 <= (t & 0xFFFF) <= 0xFF and isinstance(v, str)}
    # built as pydicom's reader builds a dataset: a dict of raw elements (Dataset.__setitem__
    # costs ~100 us an element, 4x the whole report on a 176-frame enhanced MR)
    elements: dict = {}
    for tag in sorted(parsed):
        value = parsed[tag]
        if tag >> 16 == 0x0002 or tag == 0x00080005 or tag >= 0x7FE00000:
            continue  # file meta, the character set (set below), pixel data
        vr = _vr(tag, creators)
        if tag in binary:
            vr, data = vr or "OB", binary[tag]
            if vr in _NUMBER_FORMATS:  # a number the JSON could not show (VR UN in the file)
                elements[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, len(data), data, 0,
                                                        False, True, True, False)
            else:
                elements[BaseTag(tag)] = DataElement(tag, vr if vr in ("OB", "OW", "UN") else "OB",
                                                     data)
        elif vr == "SQ":
            if isinstance(value, list):
                elements[BaseTag(tag)] = DataElement(tag, "SQ", Sequence(
                    [dataset_from_json(item, _root=False) for item in value
                     if isinstance(item, Mapping)]))
        elif vr is not None and isinstance(value, str):
            raw = _raw(tag, vr, value)
            if raw is not None:
                elements[raw.tag] = raw
    if _root:
        elements[BaseTag(0x00080005)] = _raw(0x00080005, "CS", "ISO_IR 192")
    return Dataset(dict(sorted(elements.items())))
