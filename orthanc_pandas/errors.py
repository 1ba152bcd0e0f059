"""One exception family for everything orthanc-pandas raises.

Every exception derives from :class:`OrthancPandasError` and also from the builtin a user
would naturally catch (``KeyError`` for an unknown tag, ``ValueError`` for bad geometry,
``ConnectionError`` for an unreachable server, ...). Messages say what happened and what to
do about it; they never contain a password.
"""

from __future__ import annotations

__all__ = [
    "OrthancPandasError",
    "OrthancHTTPError",
    "OrthancAuthError",
    "OrthancNotFoundError",
    "OrthancConnectionError",
    "OrthancTimeoutError",
    "OrthancTLSError",
    "NotOrthancError",
    "InvalidURLError",
    "ServerChangedError",
    "InconsistentIndexError",
    "ServerMismatchError",
    "ChangeLogGapError",
    "MirrorError",
    "ServerCapabilityError",
    "FrameFormatError",
    "UnknownTagError",
    "SelectionError",
    "InconsistentTagError",
    "NotAnIndexError",
    "GeometryError",
    "NotAVolumeError",
    "MaskGeometryError",
    "MissingGeometryError",
    "InconsistentSlicesError",
    "MixedOrientationError",
    "DuplicateSliceError",
    "SliceSpacingError",
    "GantryTiltError",
    "PixelDataError",
    "DownloadFolderError",
    "BulkError",
    "JobError",
    "DicomNetworkError",
    "OrthancPandasWarning",
    "ParseWarning",
    "GeometryWarning",
    "RefreshWarning",
    "DeletionWarning",
    "MirrorWarning",
]





class OrthancPandasError(Exception):
    """Base class of every error raised by orthanc-pandas."""


class OrthancHTTPError(OrthancPandasError):
    """The Orthanc server answered a request with an HTTP error status.

    Attributes
    ----------
    status : int
        HTTP status code.
    method, url : str
        The request, with credentials removed from the URL.
    orthanc_message : str or None
        Orthanc's own explanation (its ``Message`` and ``Details`` fields), if it gave one.
    """

    def __init__(self, message: str, *, status: int, method: str, url: str,
                 orthanc_message: str | None = None, orthanc_error: str | None = None):
        super().__init__(message)
        self.status = status
        self.method = method
        self.url = url
        self.orthanc_message = orthanc_message
        self.orthanc_error = orthanc_error


class OrthancAuthError(OrthancHTTPError, PermissionError):
    """The server refused the credentials (HTTP 401/403), or needs some and got none."""


class OrthancNotFoundError(OrthancHTTPError, LookupError):
    """The server has no such resource (HTTP 404): it was deleted or never existed."""


class OrthancConnectionError(OrthancPandasError, ConnectionError):
    """The server could not be reached, or dropped the connection mid-request."""


class OrthancTimeoutError(OrthancConnectionError, TimeoutError):
    """The server did not answer within the configured timeout."""


class OrthancTLSError(OrthancConnectionError):
    """The TLS handshake or certificate verification failed."""


class NotOrthancError(OrthancPandasError, ValueError):
    """Something answered at the URL, but it is not an Orthanc REST API."""


class InvalidURLError(OrthancPandasError, ValueError):
    """The server URL is malformed (no scheme, not http/https, bad port, no host)."""


class ServerChangedError(OrthancPandasError, RuntimeError):
    """The archive kept changing while it was being read; no consistent snapshot was possible."""


class InconsistentIndexError(ServerChangedError):
    """Resources whose parent is not in the lists: the archive changed during the read."""


class ServerMismatchError(OrthancPandasError, ValueError):
    """A frame is used against another server (or another database) than the one it was read from."""


class ChangeLogGapError(ServerMismatchError):
    """The server's change log does not explain what it holds: resources a frame or mirror
    never saw that no change entry names (log cleared, database restored from a backup or
    replaced, another server at the same URL). ``op.mirror`` then reads the archive anew."""


class MirrorError(OrthancPandasError, ValueError):
    """A mirror file cannot be used: written for another URL or level, not a mirror, or
    unreadable. The message says which, and what to do (another path, or delete the file)."""


class ServerCapabilityError(OrthancPandasError, RuntimeError):
    """The server lacks a feature the operation needs (e.g. labels, which need Orthanc >= 1.12)."""


class FrameFormatError(OrthancPandasError, ValueError):
    """The frame was written by an orthanc-pandas with a frame format this version cannot read."""


class UnknownTagError(OrthancPandasError, KeyError):
    """A name is neither a column of the frame nor a DICOM keyword or tag."""

    def __str__(self) -> str:  # KeyError's default str() quotes the message; keep it readable
        return str(self.args[0]) if self.args else ""


class SelectionError(OrthancPandasError, ValueError):
    """The rows do not fit the operation (e.g. ``volume()`` on zero or several series)."""


class InconsistentTagError(SelectionError):
    """A tag asked at the series/study/patient level differs between the instances of a row."""


class NotAnIndexError(OrthancPandasError, AttributeError):
    """The DataFrame is not an Orthanc index frame, so ``df.orthanc`` does not apply."""


class GeometryError(OrthancPandasError, ValueError):
    """A series does not form a regular volume (base of the geometry errors).

    Attributes
    ----------
    slices : list of str
        The SOPInstanceUIDs of the slices involved.
    """

    def __init__(self, message: str, *, slices=()):
        super().__init__(message)
        self.slices = list(slices)


class MissingGeometryError(GeometryError):
    """Some slices have ImagePositionPatient/ImageOrientationPatient and others do not."""


class InconsistentSlicesError(GeometryError):
    """Slices differ in Rows, Columns, PixelSpacing or samples per pixel, so they do not stack."""


class MixedOrientationError(GeometryError):
    """The slices do not all share one ImageOrientationPatient (e.g. a localizer in the series)."""


class DuplicateSliceError(GeometryError):
    """Two or more slices sit at the same position along the slice normal."""


class SliceSpacingError(GeometryError):
    """The distance between consecutive slices is not uniform (missing slices, or mixed spacing)."""


class GantryTiltError(GeometryError):
    """Slice positions step at an angle to the slice normal (gantry tilt): the grid is sheared."""


class PixelDataError(OrthancPandasError, ValueError):
    """An instance has no pixel data, or its pixel data cannot be decoded here."""


class DownloadFolderError(OrthancPandasError, PermissionError):
    """The download folder cannot be created or written to."""


class BulkError(OrthancPandasError, RuntimeError):
    """Some items of a bulk call failed; ``.report`` says which and why.

    Raised by bulk calls (``upload``, ``delete``, ``add_labels``, ...) with ``errors="raise"``
    after every item was tried; ``errors="report"`` returns the same report instead.

    Attributes
    ----------
    report : pandas.DataFrame
        The call's report, failed and successful rows alike, so a rerun can skip what is done.
    """

    def __init__(self, message: str, *, report=None):
        super().__init__(message)
        self.report = report


class JobError(BulkError):
    """Some Orthanc jobs (retrieve, send, anonymize, modify) failed; ``.report`` says which and why.

    Attributes
    ----------
    report : pandas.DataFrame
        One row per requested resource with its ``status`` and ``reason``; resources that
        succeeded are in it too, so a rerun can skip them.
    """


class DicomNetworkError(OrthancPandasError, ConnectionError):
    """A remote DICOM node did not answer or refused (C-ECHO, C-FIND through Orthanc)."""


class OrthancPandasWarning(UserWarning):
    """Base class of every warning emitted by orthanc-pandas."""


class ParseWarning(OrthancPandasWarning):
    """Some values could not be converted to their column's type and were kept as missing.

    One per frame built, naming each column with a count and an example value.

    Attributes
    ----------
    columns : dict
        ``{column: number of values that did not parse}``.
    """

    def __init__(self, message: str = "", columns: dict[str, int] | None = None):
        super().__init__(message)
        self.columns = dict(columns or {})


class GeometryWarning(OrthancPandasWarning):
    """A volume was built from irregular or missing geometry (``allow_irregular=True``, or no
    ImagePositionPatient at all); the message says what is off."""


class RefreshWarning(OrthancPandasWarning):
    """``refresh()`` could not reproduce a fresh read exactly (a frame cut by plain pandas, or
    selection criteria that cannot be replayed)."""


class MirrorWarning(OrthancPandasWarning):
    """``op.mirror`` reads the archive anew instead of updating the file, and says why."""


class DeletionWarning(OrthancPandasWarning):
    """A whole patient or study is being deleted, including resources outside the selection."""


class NotAVolumeError(OrthancPandasError, ValueError):
    """The DataArray is not a volume (no ``y`` and ``x`` dims), so ``vol.orthanc`` does not apply.

    A ``ValueError``, not an ``AttributeError``: xarray turns the latter into a bare
    ``RuntimeError`` when an accessor fails to initialise, which would hide this message.
    """


class MaskGeometryError(GeometryError):
    """A segmentation does not fit the image it is to be laid on: another frame of reference,
    orientation or pixel spacing, an offset that is not a whole number of voxels, or a
    contour between slices. Nothing is resampled."""
