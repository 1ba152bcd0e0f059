"""``df.orthanc``: the thin, stateless accessor on Orthanc index frames.

It validates the frame, finds the client, and calls the modules that do the work. pandas
builds a new accessor object on every ``df.orthanc`` access, so nothing lives on it.
"""

from __future__ import annotations

import pandas as pd

from .client import OrthancClient, get_client
from .errors import NotAnIndexError, OrthancPandasError
from .index import INDEX_NAMES

__all__ = ["OrthancAccessor", "is_index_frame"]


def is_index_frame(df: pd.DataFrame) -> bool:
    """Whether ``df`` has the ``(patient, study, series, instance)`` index of an Orthanc frame."""
    return isinstance(df.index, pd.MultiIndex) and list(df.index.names) == INDEX_NAMES


@pd.api.extensions.register_dataframe_accessor("orthanc")
class OrthancAccessor:
    """Orthanc operations on exactly the rows of an index frame.

    Examples
    --------
    >>> df = orthanc_pandas.read_orthanc("http://127.0.0.1:8042")        # doctest: +SKIP
    >>> df.orthanc.counts                                                # doctest: +SKIP
    {'patients': 1, 'studies': 1, 'series': 2, 'instances': 120}
    """

    def __init__(self, df: pd.DataFrame):
        if not is_index_frame(df):
            names = list(df.index.names) if isinstance(df.index, pd.MultiIndex) else [df.index.name]
            raise NotAnIndexError(
                "df.orthanc works on frames made by orthanc_pandas.read_orthanc (index levels "
                f"{INDEX_NAMES}); this frame's index is {names}. If you called reset_index(), "
                "restore it with df.set_index(['patient', 'study', 'series', 'instance'])."
            )
        self._df = df

    # -- provenance and client -----------------------------------------------------------
    @property
    def info(self) -> dict:
        """The provenance in ``df.attrs["orthanc"]`` (URL, server version, read time, ...)."""
        return dict(self._df.attrs.get("orthanc") or {})

    @property
    def url(self) -> str:
        """The URL of the server the rows come from."""
        url = self.info.get("url")
        if not url:
            raise OrthancPandasError(
                "This frame does not say which Orthanc server it comes from (df.attrs['orthanc'] "
                "is missing, e.g. after pd.concat). Pass client=... or restore the attrs from the "
                "original frame: df.attrs = original.attrs."
            )
        return url

    def client(self, client: OrthancClient | str | None = None) -> OrthancClient:
        """The client for this frame's server.

        The one registered by :func:`~orthanc_pandas.read_orthanc` or
        :func:`~orthanc_pandas.connect` in this process, else a new one with credentials from
        ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD`` or ``~/.netrc``. Never from ``df.attrs``.
        """
        if client is not None:
            return get_client(client)
        return get_client(self.url)

    # -- counts --------------------------------------------------------------------------
    def _nunique(self, level: str) -> int:
        return int(self._df.index.get_level_values(level).nunique())

    @property
    def counts(self) -> dict[str, int]:
        """Patients, studies, series and instances among the rows."""
        return {"patients": self.patient_count, "studies": self.study_count,
                "series": self.series_count, "instances": self.instance_count}

    @property
    def patient_count(self) -> int:
        """Distinct patients among the rows."""
        return self._nunique("patient")

    @property
    def study_count(self) -> int:
        """Distinct studies among the rows."""
        return self._nunique("study")

    @property
    def series_count(self) -> int:
        """Distinct series among the rows."""
        return self._nunique("series")

    @property
    def instance_count(self) -> int:
        """Distinct instances among the rows."""
        return self._nunique("instance")

    # -- selection, tags, sorting (matching.py, tags.py) ---------------------------------

    # -- headers and files (headers.py, transfer.py) ------------------------------------
    def headers(self, *, progress=None, max_workers: int = 4, client=None) -> list:
        """The pydicom header of every row, in row order, without pixel data (lossless).

        See :func:`orthanc_pandas.headers.headers`.

        Examples
        --------
        >>> datasets = df[df.Modality == "CT"].orthanc.headers()          # doctest: +SKIP
        """
        from .headers import headers

        return headers(self._df, self.client(client), progress=progress, max_workers=max_workers)

    def header(self, *, client=None):
        """The pydicom header of the one row of the frame (``SelectionError`` otherwise).

        Examples
        --------
        >>> ds = df[df.SOPInstanceUID == uid].orthanc.header()             # doctest: +SKIP
        """
        from .headers import header

        return header(self._df, self.client(client))

    def download(self, folder=None, *, layout: str = "flat", verify: str = "size", progress=None,
                 max_workers: int = 4, client=None) -> pd.Series:
        """Save the stored file of every row; the paths in row order.

        See :func:`orthanc_pandas.transfer.download`.

        Examples
        --------
        >>> paths = df.orthanc.download("files", layout="tree")            # doctest: +SKIP
        """
        from .transfer import download

        return download(self._df, self.client(client), folder, layout=layout, verify=verify,
                        progress=progress, max_workers=max_workers)

    def to_zip(self, path, *, client=None):
        """Write Orthanc's ZIP archive of the rows' series to ``path``.

        See :func:`orthanc_pandas.transfer.to_zip`.

        Examples
        --------
        >>> df.orthanc.to_zip("cohort.zip")                                # doctest: +SKIP
        """
        from .transfer import to_zip

        return to_zip(self._df, self.client(client), path)

    def delete(self, level: str = "instance", *, confirm: bool = False, progress=None,
               client=None) -> pd.DataFrame:
        """Delete the rows' resources at ``level`` - a dry run unless ``confirm=True``.

        See :func:`orthanc_pandas.transfer.delete`.

        Examples
        --------
        >>> df[df.PatientID == "X"].orthanc.delete(level="patient")        # dry run  # doctest: +SKIP
        """
        from .transfer import delete

        return delete(self._df, self.client(client), level, confirm=confirm, progress=progress)

    # -- freshness (refresh.py) ----------------------------------------------------------
    def refresh(self, *, client=None) -> pd.DataFrame:
        """The frame as it would be read now, from the changes since it was read.

        See :func:`orthanc_pandas.refresh.refresh`.

        Examples
        --------
        >>> df = df.orthanc.refresh()                                      # doctest: +SKIP
        """
        from .refresh import refresh

        return refresh(self._df, self.client(client))

    # -- volumes (volume.py) -------------------------------------------------------------

    # -- scale (dask.py) -----------------------------------------------------------------

    def __repr__(self) -> str:
        c = self.counts
        src = self._df.attrs.get("orthanc", {}).get("url", "unknown server")
        return (f"<orthanc accessor: {c['patients']} patients, {c['studies']} studies, "
                f"{c['series']} series, {c['instances']} instances from {src}>")
