"""SEG and RTSTRUCT headers -> the annotation table: one row per segment or ROI. Pure: no HTTP.

:func:`annotation_records` reads one pydicom dataset (a header without pixel data) and gives
one record per segment of a SEG (``SegmentSequence``) or per ROI of an RTSTRUCT
(``StructureSetROISequence``); :func:`annotation_frame` types a list of them with
:data:`ANNOTATION_COLUMNS`. The server-side steps (which rows are annotations, reading their
headers, finding the Orthanc ids and frame of reference of the referenced series) are in
``orthanc_pandas._ops.annotations``; the columns are described in ``docs/annotations.md``.

Where the source series comes from
----------------------------------
SEG
    ``ReferencedSeriesSequence`` (then ``StudiesContainingOtherReferencedInstancesSequence``):
    its first ``SeriesInstanceUID``, which is what highdicom's ``get_source_image_uids``
    reads. A SEG without it (older writers) names only source instances
    (``SourceImageSequence`` in the shared or per-frame ``DerivationImageSequence``, or at the
    top level): the first of them is kept in ``source_instance_uid`` and its series is found
    on the server.
RTSTRUCT
    The ROI's ``ReferencedFrameOfReferenceUID`` names an item of
    ``ReferencedFrameOfReferenceSequence``, whose ``RTReferencedStudySequence`` /
    ``RTReferencedSeriesSequence`` names the series. Where that is absent (it is optional
    since 2019), the ``ContourImageSequence`` of the ROI's contours names its images, as for
    a SEG. Last, when the whole structure set names exactly one series, that one.
"""

from __future__ import annotations

import pandas as pd

from orthanc_pandas._frame.schema import TEXT_DTYPE

SEG_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4",    # Segmentation
                             "1.2.840.10008.5.1.4.1.1.66.7"})   # Label Map Segmentation
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

#: Modality values whose instances are read as annotations
ANNOTATION_MODALITIES = ("SEG", "RTSTRUCT")

#: The annotation table's columns and dtypes: always these, in this order, whatever the data.
ANNOTATION_COLUMNS: dict[str, object] = {
    # the annotation object itself (Orthanc ids, then its DICOM UIDs)
    "annotation_patient": TEXT_DTYPE,
    "annotation_study": TEXT_DTYPE,
    "annotation_series": TEXT_DTYPE,
    "annotation_instance": TEXT_DTYPE,
    "Modality": TEXT_DTYPE,                 # "SEG" or "RTSTRUCT"
    "SOPInstanceUID": TEXT_DTYPE,
    "SeriesInstanceUID": TEXT_DTYPE,
    # the segment / ROI
    "number": pd.Int64Dtype(),              # SegmentNumber / ROINumber
    "label": TEXT_DTYPE,                    # SegmentLabel / ROIName
    "description": TEXT_DTYPE,              # SegmentDescription / ROIDescription
    "category_code": TEXT_DTYPE,            # SegmentedPropertyCategoryCodeSequence (SEG only)
    "category_scheme": TEXT_DTYPE,
    "category_meaning": TEXT_DTYPE,
    "type_code": TEXT_DTYPE,                # SegmentedPropertyTypeCodeSequence /
    "type_scheme": TEXT_DTYPE,              # RTROIIdentificationCodeSequence
    "type_meaning": TEXT_DTYPE,
    "roi_interpreted_type": TEXT_DTYPE,     # RTROIInterpretedType (RTSTRUCT only)
    "algorithm_type": TEXT_DTYPE,           # SegmentAlgorithmType / ROIGenerationAlgorithm
    "algorithm_name": TEXT_DTYPE,           # SegmentAlgorithmName / AlgorithmName
    # what it annotates
    "frame_of_reference_uid": TEXT_DTYPE,   # FrameOfReferenceUID / ReferencedFrameOfReferenceUID
    "source_series_uid": TEXT_DTYPE,
    "source_instance_uid": TEXT_DTYPE,      # set only when no series is named
    "source_patient": TEXT_DTYPE,           # Orthanc ids of the source series (missing when it
    "source_study": TEXT_DTYPE,             # is not on the server)
    "source_series": TEXT_DTYPE,
    "source_frame_of_reference_uid": TEXT_DTYPE,
    "frame_of_reference_matches": pd.BooleanDtype(),
}


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).strip(" \x00")
    return text or None


def _int(value) -> int | None:
    try:
        return None if value is None or str(value).strip() == "" else int(str(value).strip())
    except ValueError:
        return None


def _first(ds, keyword: str):
    """The first item of a sequence, or None."""
    seq = ds.get(keyword) if ds is not None else None
    return seq[0] if seq else None


def _code(item) -> tuple[str | None, str | None, str | None]:
    """(code value, scheme, meaning) of a code item (CodeValue, LongCodeValue or URNCodeValue)."""
    if item is None:
        return None, None, None
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    return _text(value), _text(item.get("CodingSchemeDesignator")), _text(item.get("CodeMeaning"))


def _referenced_series(items) -> str | None:
    for item in items or ():
        uid = _text(item.get("SeriesInstanceUID"))
        if uid:
            return uid
    return None


def _source_images(ds) -> str | None:
    """The first ReferencedSOPInstanceUID a derived image names as its source."""
    holders = [ds]
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        first = _first(ds, group)
        if first is not None:
            holders += list(first.get("DerivationImageSequence") or ())
    for holder in holders:
        for src in holder.get("SourceImageSequence") or ():
            uid = _text(src.get("ReferencedSOPInstanceUID"))
            if uid:
                return uid
    return None


def _base(ds, modality: str) -> dict:
    return {"Modality": modality, "SOPInstanceUID": _text(ds.get("SOPInstanceUID")),
            "SeriesInstanceUID": _text(ds.get("SeriesInstanceUID"))}


def _seg_records(ds) -> list[dict]:
    series = _referenced_series(ds.get("ReferencedSeriesSequence"))
    if series is None:
        for study in ds.get("StudiesContainingOtherReferencedInstancesSequence") or ():
            series = _referenced_series(study.get("ReferencedSeriesSequence"))
            if series:
                break
    instance = None if series else _source_images(ds)
    frame = _text(ds.get("FrameOfReferenceUID"))
    out = []
    for seg in ds.get("SegmentSequence") or ():
        cat, typ = (_code(_first(seg, kw)) for kw in ("SegmentedPropertyCategoryCodeSequence",
                                                      "SegmentedPropertyTypeCodeSequence"))
        name = _text(seg.get("SegmentAlgorithmName")) or _text(
            (_first(seg, "SegmentationAlgorithmIdentificationSequence") or {}).get("AlgorithmName"))
        out.append({**_base(ds, "SEG"),
                    "number": _int(seg.get("SegmentNumber")), "label": _text(seg.get("SegmentLabel")),
                    "description": _text(seg.get("SegmentDescription")),
                    "category_code": cat[0], "category_scheme": cat[1], "category_meaning": cat[2],
                    "type_code": typ[0], "type_scheme": typ[1], "type_meaning": typ[2],
                    "algorithm_type": _text(seg.get("SegmentAlgorithmType")), "algorithm_name": name,
                    "frame_of_reference_uid": frame, "source_series_uid": series,
                    "source_instance_uid": instance})
    return out


def _rt_series_by_frame(ds) -> tuple[dict[str, str], set[str]]:
    """(frame of reference UID -> its first referenced series, every series named)."""
    by_frame: dict[str, str] = {}
    every: set[str] = set()
    for ref in ds.get("ReferencedFrameOfReferenceSequence") or ():
        frame = _text(ref.get("FrameOfReferenceUID"))
        for study in ref.get("RTReferencedStudySequence") or ():
            for series in study.get("RTReferencedSeriesSequence") or ():
                uid = _text(series.get("SeriesInstanceUID"))
                if uid:
                    every.add(uid)
                    if frame and frame not in by_frame:
                        by_frame[frame] = uid
    return by_frame, every


def _rt_contour_image(roi_contour) -> str | None:
    for contour in (roi_contour.get("ContourSequence") or ()) if roi_contour is not None else ():
        for image in contour.get("ContourImageSequence") or ():
            uid = _text(image.get("ReferencedSOPInstanceUID"))
            if uid:
                return uid
    return None


def _rt_records(ds) -> list[dict]:
    by_frame, every = _rt_series_by_frame(ds)
    only = next(iter(every)) if len(every) == 1 else None
    observations: dict[int, object] = {}
    for obs in ds.get("RTROIObservationsSequence") or ():
        observations.setdefault(_int(obs.get("ReferencedROINumber")), obs)
    contours: dict[int, object] | None = None  # parsed only if a ROI names no series
    out = []
    for roi in ds.get("StructureSetROISequence") or ():
        number = _int(roi.get("ROINumber"))
        frame = _text(roi.get("ReferencedFrameOfReferenceUID"))
        obs = observations.get(number)
        typ = _code(_first(obs, "RTROIIdentificationCodeSequence"))
        series = by_frame.get(frame) if frame else None
        instance = None
        if series is None:
            if contours is None:
                contours = {}
                for rc in ds.get("ROIContourSequence") or ():
                    contours.setdefault(_int(rc.get("ReferencedROINumber")), rc)
            instance = _rt_contour_image(contours.get(number))
        if series is None and instance is None:
            series = only
        algorithm = _first(roi, "ROIDerivationAlgorithmIdentificationSequence")
        out.append({**_base(ds, "RTSTRUCT"),
                    "number": number, "label": _text(roi.get("ROIName")),
                    "description": _text(roi.get("ROIDescription")),
                    "category_code": None, "category_scheme": None, "category_meaning": None,
                    "type_code": typ[0], "type_scheme": typ[1], "type_meaning": typ[2],
                    "roi_interpreted_type": _text(obs.get("RTROIInterpretedType")) if obs else None,
                    "algorithm_type": _text(roi.get("ROIGenerationAlgorithm")),
                    "algorithm_name": _text(algorithm.get("AlgorithmName")) if algorithm else None,
                    "frame_of_reference_uid": frame, "source_series_uid": series,
                    "source_instance_uid": instance})
    return out


def annotation_kind(ds) -> str | None:
    """``"SEG"``, ``"RTSTRUCT"`` or ``None``: what :func:`annotation_records` reads in ``ds``.

    By content, not by Modality: a SEG has a ``SegmentSequence``, an RTSTRUCT a
    ``StructureSetROISequence``.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.StructureSetROISequence = []
    >>> annotation_kind(ds), annotation_kind(Dataset())
    ('RTSTRUCT', None)
    """
    if "SegmentSequence" in ds or str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES:
        return "SEG"
    if "StructureSetROISequence" in ds or str(ds.get("SOPClassUID", "")) == RTSTRUCT_SOP_CLASS:
        return "RTSTRUCT"
    return None


def annotation_records(ds) -> list[dict]:
    """One record per segment (SEG) or ROI (RTSTRUCT) of one header.

    Parameters
    ----------
    ds : pydicom.Dataset
        A SEG or RTSTRUCT header (pixel data not needed); anything else gives ``[]``.

    Returns
    -------
    list of dict
        Keys among :data:`ANNOTATION_COLUMNS` (plain ``str``/``int``/``None`` values); the
        Orthanc ids and the source series' are filled in by the caller.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> seg = Dataset(); seg.SOPInstanceUID = "1.2"; item = Dataset()
    >>> item.SegmentNumber, item.SegmentLabel, item.SegmentAlgorithmType = 1, "liver", "MANUAL"
    >>> seg.SegmentSequence = [item]
    >>> rec = annotation_records(seg)[0]
    >>> rec["Modality"], rec["number"], rec["label"], rec["algorithm_type"]
    ('SEG', 1, 'liver', 'MANUAL')
    """
    kind = annotation_kind(ds)
    if kind == "SEG":
        return _seg_records(ds)
    if kind == "RTSTRUCT":
        return _rt_records(ds)
    return []


def annotation_frame(records: list[dict], attrs: dict | None = None) -> pd.DataFrame:
    """The annotation table of ``records``: :data:`ANNOTATION_COLUMNS`, a default index.

    Missing keys are missing values; every column has its schema dtype even with no row, so
    tables of two servers concatenate, and ``to_parquet`` / plain ``pd.read_parquet`` give it
    back equal.

    Examples
    --------
    >>> t = annotation_frame([{"Modality": "SEG", "number": 2, "label": "liver"}])
    >>> t.loc[0, "label"], t.number.dtype, t.frame_of_reference_matches.dtype
    ('liver', Int64Dtype(), BooleanDtype)
    >>> list(annotation_frame([]).columns) == list(ANNOTATION_COLUMNS)
    True
    """
    data = {name: pd.array([r.get(name) for r in records], dtype=dtype)
            for name, dtype in ANNOTATION_COLUMNS.items()}
    out = pd.DataFrame(data, index=pd.RangeIndex(len(records)))
    out.attrs = dict(attrs or {})
    return out
