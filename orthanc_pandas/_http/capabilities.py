"""What an Orthanc server can do, read from ``GET /system`` once per client. Pure: no HTTP.

Routes are chosen by capability, never by version number: a 1.13 server whose index lives in
PostgreSQL plugin 5.0 has no extended find, and a patched 1.12 may have more than its number
says.

======================  ==========================================  =========================
capability              where ``/system`` says it                   first in
======================  ==========================================  =========================
``requested_tags``      a ``MainDicomTags`` object (the stored       1.11
                        main tags per level)
``labels``              ``HasLabels`` (top level)                    1.12.0
``extended_find``       ``Capabilities.HasExtendedFind``             1.12.5 (SQLite index)
``extended_changes``    ``Capabilities.HasExtendedChanges``          1.12.5 (SQLite index)
======================  ==========================================  =========================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydicom.datadict import keyword_for_tag

_LEVEL_KEYS = {"patient": "Patient", "study": "Study", "series": "Series", "instance": "Instance"}


@dataclass(frozen=True)
class Capabilities:
    """The routes a server offers (see the module docstring for where each comes from).

    Examples
    --------
    >>> caps = Capabilities.from_system({"Version": "1.13.0", "ApiVersion": 31, "HasLabels": True,
    ...     "Capabilities": {"HasExtendedFind": True, "HasExtendedChanges": True},
    ...     "MainDicomTags": {"Instance": "0008,0018;0018,0050"}})
    >>> caps.extended_find, caps.labels, sorted(caps.main_tags["instance"])
    (True, True, ['SOPInstanceUID', 'SliceThickness'])
    >>> Capabilities.from_system({"Version": "1.10.1", "ApiVersion": 14}).requested_tags
    False
    """

    version: str = ""
    api_version: int = 0
    requested_tags: bool = False
    labels: bool = False
    extended_find: bool = False
    extended_changes: bool = False
    #: level -> keywords (or "gggg,eeee" for tags pydicom does not know) the index stores
    main_tags: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_system(cls, system: Mapping) -> Capabilities:
        caps = system.get("Capabilities") or {}
        tags = system.get("MainDicomTags")
        return cls(
            version=str(system.get("Version", "")),
            api_version=int(system.get("ApiVersion") or 0),
            requested_tags=isinstance(tags, Mapping),
            labels=bool(system.get("HasLabels") or caps.get("HasLabels")),
            extended_find=bool(caps.get("HasExtendedFind")),
            extended_changes=bool(caps.get("HasExtendedChanges")),
            main_tags=stored_tags(tags) if isinstance(tags, Mapping) else {},
        )

    def stores(self, keyword: str) -> bool:
        """Whether the index stores ``keyword`` at some level (so no file needs reading)."""
        return any(keyword in tags for tags in self.main_tags.values())


def stored_tags(main_dicom_tags: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """``/system``'s ``MainDicomTags`` (``"gggg,eeee;..."`` per level) as keywords per level.

    >>> stored_tags({"Series": "0008,0060;0018,0050", "Study": ""})["series"] == {"Modality", "SliceThickness"}
    True
    """
    out: dict[str, frozenset[str]] = {}
    for level, key in _LEVEL_KEYS.items():
        names = set()
        for item in str(main_dicom_tags.get(key) or "").split(";"):
            item = item.strip()
            if not item:
                continue
            try:
                group, element = (int(x, 16) for x in item.split(","))
            except ValueError:
                continue
            names.add(keyword_for_tag((group << 16) | element) or item.lower())
        out[level] = frozenset(names)
    return out
