"""``Orthanc``: a simple-orthanc compatible facade over the index frame and its accessor.

Scripts written for simple-orthanc run unchanged apart from the import::

    from orthanc_pandas import Orthanc          # was: from simple_orthanc import Orthanc

    orthanc = Orthanc(host="127.0.0.1", port=8042, username="user", password="pw")
    orthanc.select(PatientName="JaneDoe", StudyDescription="CT Examination")
    orthanc.SeriesDescriptions                  # unique values in the current selection
    image = Orthanc().select(PatientName="JaneDoe", SeriesDescription="ct_scan").get_array()

It holds one DataFrame (:attr:`Orthanc.df`, the current selection) and delegates every
operation to ``df.orthanc``: there is no second implementation. Differences from
simple-orthanc: tag values are typed (dates as ``Timestamp``, numbers as numbers),
``sort_by`` really sorts, headers are lossless, and selections on non-main tags are fetched
in bulk (one request per series).
"""

from __future__ import annotations

__all__ = ["Orthanc"]

import os
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from pydicom.datadict import keyword_dict

from orthanc_pandas._frame.schema import MAIN_TAGS
from orthanc_pandas._http.client import get_client
from orthanc_pandas._ops.files import upload
from orthanc_pandas._ops.read import read_orthanc
from orthanc_pandas._util.warn import warn
from orthanc_pandas.errors import DeletionWarning


class _Interface:
    """simple-orthanc's ``orthanc.interface``: what the server indexes."""

    def __init__(self, owner: Orthanc):
        self._owner = owner

    @property
    def main_dicom_tags(self) -> list[str]:
        """The main DICOM tags Orthanc indexes (fast to select on), patient level first."""
        seen: dict[str, None] = {}
        for level in ("patient", "study", "series", "instance"):
            seen.update(dict.fromkeys(MAIN_TAGS[level]))
        return list(seen)


class Orthanc:
    """A simple-orthanc style session on one Orthanc server.

    Parameters
    ----------
    host : str, default "127.0.0.1"
    port : int, default 8042
    username, password : str, optional
        HTTP Basic credentials (also from ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD`` or ~/.netrc).
    url : str, optional
        Full URL instead of host and port, e.g. ``"https://pacs.example.org/orthanc"``.
    verify : bool or str, default True
        TLS verification (a CA bundle path, or False).
    progress : bool, optional
        Progress bars for long operations.

    Examples
    --------
    >>> from orthanc_pandas import Orthanc
    >>> orthanc = Orthanc()                                               # doctest: +SKIP
    >>> orthanc.select(PatientName="JaneDoe").SeriesDescriptions          # doctest: +SKIP
    ['ct_scan', 'scout']
    >>> orthanc.df                       # the current selection as a DataFrame  # doctest: +SKIP
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8042, username: str | None = None,
                 password: str | None = None, *, url: str | None = None, verify: bool | str = True,
                 progress: bool | None = None, **client_kwargs):
        auth = (username, password or "") if username else None
        self._client = get_client(url or f"http://{host}:{port}", auth=auth, verify=verify, **client_kwargs)
        self._progress = progress
        self.interface = _Interface(self)
        self._criteria: dict[str, Any] = {}
        self._sort: tuple[str, bool] | None = None
        self._full = read_orthanc(self._client, progress=progress)
        self._df = self._full

    # -- the frame -------------------------------------------------------------------------
    @property
    def df(self) -> pd.DataFrame:
        """The current selection (sorted when :meth:`sort_by` was called)."""
        return self._df

    @property
    def url(self) -> str:
        return self._client.url

    def __repr__(self) -> str:
        c = self._df.orthanc.counts
        sel = f", selection={self._criteria}" if self._criteria else ""
        return (f"<Orthanc {self.url}: {c['patients']} patients, {c['studies']} studies, "
                f"{c['series']} series, {c['instances']} instances{sel}>")

    def _apply(self) -> None:
        df = self._full
        if self._criteria:
            df = df.orthanc.select(self._criteria)
        if self._sort is not None:
            df = df.orthanc.sort_by(self._sort[0], ascending=self._sort[1])
        self._df = df

    # -- counts ----------------------------------------------------------------------------
    @property
    def patient_count(self) -> int:
        """Patients in the current selection."""
        return self._df.orthanc.patient_count

    @property
    def study_count(self) -> int:
        """Studies in the current selection."""
        return self._df.orthanc.study_count

    @property
    def series_count(self) -> int:
        """Series in the current selection."""
        return self._df.orthanc.series_count

    @property
    def instance_count(self) -> int:
        """Instances in the current selection."""
        return self._df.orthanc.instance_count

    # -- selection -------------------------------------------------------------------------
    def select(self, **criteria) -> Orthanc:
        """Narrow the selection (any DICOM keyword; see ``df.orthanc.select``); returns self.

        Selecting a tag again replaces its earlier value, as in simple-orthanc.
        """
        replaced = any(k in self._criteria for k in criteria)
        self._criteria.update(criteria)
        if replaced or self._sort is not None:
            self._apply()
        else:  # only new tags: narrow the current selection, no need to start over
            self._df = self._df.orthanc.select(criteria)
        return self

    @property
    def selection(self) -> dict[str, Any]:
        """The criteria of the current selection."""
        return dict(self._criteria)

    def reset(self, *tags: str) -> Orthanc:
        """Clear the whole selection, or only the criteria on ``tags``."""
        if tags:
            for t in tags:
                self._criteria.pop(t, None)
        else:
            self._criteria.clear()
            self._sort = None
        self._apply()
        return self

    def refresh(self) -> Orthanc:
        """Bring the index up to date with the server (after uploads and deletions).

        As in simple-orthanc, this clears the selection (and the sort order): afterwards the
        whole server is selected.
        """
        full = self._full.copy()
        full.attrs = {**self._full.attrs, "orthanc": {**self._full.attrs["orthanc"], "criteria": []}}
        self._full = full.orthanc.refresh()
        self._criteria.clear()
        self._sort = None
        self._df = self._full
        return self

    # -- tags ------------------------------------------------------------------------------
    def __getattr__(self, name: str):
        # Only called for names that are not attributes: DICOM keywords, singular or plural.
        if name.startswith("_"):
            raise AttributeError(name)
        if name in keyword_dict or name in self.__dict__.get("_df", pd.DataFrame()).columns:
            return self._unique(name)
        if name.endswith("s") and name[:-1] in keyword_dict:
            return self._unique(name[:-1])
        raise AttributeError(
            f"'Orthanc' object has no attribute {name!r} (not a DICOM keyword, singular or plural)")

    def _unique(self, tag: str) -> list:
        if self._sort is not None:  # values in the order of the sorted rows
            values = self._df.orthanc.tag_values(tag)
            return [_py(v) for v in pd.unique(values.dropna().to_numpy())]
        return [_py(v) for v in self._df.orthanc.unique_tag_values(tag)]

    def get_dicom_tag(self, tag: str, unique: bool = True) -> list:
        """Values of ``tag`` in the selection: the unique ones (the default, as in
        simple-orthanc), or with ``unique=False`` one per instance in row order."""
        if unique:
            return self._unique(tag)
        return [_py(v) for v in self._df.orthanc.tag_values(tag).to_numpy()]

    def get_all_dicom_tags(self) -> list[str]:
        """Tag keywords available: all tags of the series when one series is selected, else the main tags."""
        if self.series_count == 1:
            return list(self._df.orthanc.tags())
        return self.interface.main_dicom_tags

    def sort_by(self, tag: str, order: str = "ascending") -> Orthanc:
        """Sort the selection by any tag; later tag reads and headers follow this order."""
        if order not in ("ascending", "descending"):
            raise ValueError(f"order must be 'ascending' or 'descending', got {order!r}")
        self._sort = (tag, order == "ascending")
        self._df = self._df.orthanc.sort_by(tag, ascending=order == "ascending")
        return self

    # -- headers and pixels ----------------------------------------------------------------
    def get_header(self):
        """The pydicom header (no pixel data) of the one selected instance."""
        return self._df.orthanc.header()

    def get_headers(self, index: int | None = None, silent: bool = True):
        """Headers of the selected instances in row order, or the one at ``index``.

        ``silent`` is accepted for compatibility: headers here are the stored files' own
        elements, so no tag is ever excluded.
        """
        if index is not None:
            return self._df.iloc[[index]].orthanc.header()
        return self._df.orthanc.headers(progress=self._progress).tolist()

    def get_volume(self, **kwargs):
        """The selected series as an ``xarray.DataArray`` with its geometry."""
        return self._df.orthanc.volume(progress=self._progress, **kwargs)

    def get_array(self) -> np.ndarray:
        """Pixels of the selected series: float32, ``(slices, rows, cols, channels)``, slice order."""
        vol = self.get_volume()
        arr = np.asarray(vol.values, dtype=np.float32)
        if "c" not in vol.dims:
            arr = arr[..., np.newaxis]
        if arr.ndim == 3:  # a single 2D image with channels
            arr = arr[np.newaxis]
        return arr

    # -- files -----------------------------------------------------------------------------
    def download(self, folder: str | os.PathLike | None = None) -> list[str]:
        """Download the selected instances; returns the file paths.

        Without ``folder``, files go to a new folder under the system temp dir.
        """
        if folder is None:
            folder = tempfile.mkdtemp(prefix="orthanc-pandas-")
        return [str(p) for p in self._df.orthanc.download(folder, progress=self._progress)]

    def upload_file(self, file: str | os.PathLike | Iterable[str | os.PathLike], test_dicom: bool = True):
        """Upload one file or a list of files; returns the per-file report. Call refresh() after."""

        paths = [file] if isinstance(file, str | os.PathLike) else list(file)
        return upload(paths, self._client, check_dicom=test_dicom, progress=self._progress,
                      errors="report")

    def upload_folder(self, folder: str | os.PathLike, test_dicom: bool = True, recursive: bool = False):
        """Upload every file of a folder (``recursive`` for subfolders); returns the report."""

        return upload(folder, self._client, recursive=recursive, check_dicom=test_dicom,
                      progress=self._progress, errors="report")

    def _delete(self, level: str):
        # then refresh(), which clears the selection as simple-orthanc does after a deletion
        report = self._df.orthanc.delete(level=level, confirm=True)
        self.refresh()
        return report

    def delete_selected_patient(self):
        """Delete the selected patients ENTIRELY, including studies and series not selected.

        This cannot be undone. Use ``df.orthanc.delete(level="patient")`` (without ``confirm``)
        first to see everything that would go.
        """
        warn("Deleting whole patients: their studies and series outside the selection "
                      "go too, and this cannot be undone.", DeletionWarning)
        return self._delete("patient")

    def delete_selected_study(self):
        """Delete the selected studies ENTIRELY, including series not selected. Cannot be undone."""
        warn("Deleting whole studies: their series outside the selection go too, and "
                      "this cannot be undone.", DeletionWarning)
        return self._delete("study")

    def delete_selected_series(self):
        """Delete the selected series entirely (all their instances). Cannot be undone."""
        return self._delete("series")


def _py(v):
    """numpy/pandas scalars -> plain Python values."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v
