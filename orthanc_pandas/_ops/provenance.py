"""What ``df.attrs["orthanc"]`` means: the frame format and the ``/statistics`` keys.

Its own module so that the read (which catches up through refresh's machinery) and the
refresh (which checks a frame's format) can both import it without importing each other.
"""

from __future__ import annotations

from orthanc_pandas._version import __version__
from orthanc_pandas.errors import FrameFormatError

#: Version of the frame layout written into ``df.attrs["orthanc"]["format"]``.
FORMAT_VERSION = 1


#: Level -> count in ``GET /statistics``; the one definition (by route: ``ROUTES[level]``).
STAT_KEYS = {"patient": "CountPatients", "study": "CountStudies", "series": "CountSeries",
              "instance": "CountInstances"}


def check_format(attrs) -> None:
    """Refuse a frame whose ``attrs["orthanc"]["format"]`` this version does not know.

    A frame (or parquet file) written by a newer orthanc-pandas may lay out its columns
    differently, so using it here could select or download the wrong rows without any error.
    Frames without provenance (attrs dropped, e.g. by ``pd.concat``) are not refused here.

    Examples
    --------
    >>> check_format({"orthanc": {"format": FORMAT_VERSION}})
    >>> check_format({"orthanc": {"format": 99, "library": "orthanc-pandas 9.0"}})
    Traceback (most recent call last):
    ...
    orthanc_pandas.errors.FrameFormatError: This frame has orthanc-pandas frame format 99 (written by orthanc-pandas 9.0); this orthanc-pandas ... reads format 1. ...
    """
    info = attrs.get("orthanc") if isinstance(attrs, dict) else None
    if not isinstance(info, dict) or "format" not in info:
        return
    fmt = info["format"]
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt == FORMAT_VERSION:
        return
    who = info.get("library") or "an unknown version"
    raise FrameFormatError(
        f"This frame has orthanc-pandas frame format {fmt!r} (written by {who}); this "
        f"orthanc-pandas {__version__} reads format {FORMAT_VERSION}. Upgrade orthanc-pandas, "
        "or read the server again with orthanc_pandas.read_orthanc(url)."
    )
