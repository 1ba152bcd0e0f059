"""Which ``/changes`` entries alter what an index frame holds. Pure: no HTTP.

An index frame holds instances and their main tags. Only entries that add resources (or
re-store one, which logs a new ``NewInstance``) change that. Everything else is *neutral* and
never causes a re-read, a :class:`~orthanc_pandas.errors.ServerChangedError`, or a re-fetch in
``refresh()``: stability events (``StableSeries`` ...), metadata updates, jobs, and the
metadata-cache attachment that the DICOMweb plugin (>= 1.15) writes on a *series* whenever
the series becomes stable or a viewer reads its metadata (``UpdatedAttachment``, resource type
``Series``). An ``UpdatedAttachment`` on an *instance* can replace its DICOM file (compression,
``/reconstruct``), which changes ``orthanc_file_size``: it counts.

Deletions are not logged by Orthanc at all; readers compare counts and id lists for them.
"""

from __future__ import annotations

from collections.abc import Iterable

#: change types that add or re-store resources (CompletedSeries changes a series' status)
CONTENT_CHANGES = frozenset({"NewInstance", "NewSeries", "NewStudy", "NewPatient",
                             "NewChildInstance", "CompletedSeries", "Deleted"})


def is_content_change(change: dict) -> bool:
    """Whether one ``/changes`` entry can alter an index frame.

    >>> is_content_change({"ChangeType": "NewInstance", "ResourceType": "Instance"})
    True
    >>> is_content_change({"ChangeType": "UpdatedAttachment", "ResourceType": "Series"})
    False
    >>> is_content_change({"ChangeType": "UpdatedAttachment", "ResourceType": "Instance"})
    True
    >>> is_content_change({"ChangeType": "StableSeries", "ResourceType": "Series"})
    False
    """
    kind = change.get("ChangeType")
    if kind in CONTENT_CHANGES:
        return True
    return kind == "UpdatedAttachment" and change.get("ResourceType") == "Instance"


def content_only(changes: Iterable[dict]) -> list[dict]:
    """The entries of ``changes`` that can alter an index frame, in order."""
    return [c for c in changes if is_content_change(c)]


#: the ``type=`` filter of ``/changes`` on servers with extended changes (fewer entries to page)
CONTENT_TYPES_FILTER = ";".join(sorted(CONTENT_CHANGES | {"UpdatedAttachment"}))
