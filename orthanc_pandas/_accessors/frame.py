"""``df.orthanc``: the thin, stateless accessor on Orthanc index frames.

It validates the frame, finds the client, and calls the modules that do the work. pandas
builds a new accessor object on every ``df.orthanc`` access, so nothing lives on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from orthanc_pandas._frame.contract import check_index_frame, frame_level, frame_url
from orthanc_pandas._frame.levels import GEOMETRY_TAGS, level_frame
from orthanc_pandas._frame.schema import INDEX_NAMES
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._ops import series_map
from orthanc_pandas._ops.files import delete, download, to_zip
from orthanc_pandas._ops.gateway import retrieve, send
from orthanc_pandas._ops.headers import header, headers
from orthanc_pandas._ops.jobs import modify_resources
from orthanc_pandas._ops.labels import add_labels, has_labels, remove_labels
from orthanc_pandas._ops.levels import geometry_report, instances_of, level_with_tags
from orthanc_pandas._ops.masks import mask
from orthanc_pandas._ops.read import check_format
from orthanc_pandas._ops.refresh import refresh
from orthanc_pandas._ops.refresh_levels import refresh_level_frame
from orthanc_pandas._ops.selection import (
    available_tags,
    frame_columns,
    select,
    sort_by,
    tag_values,
    unique_values,
    with_tags,
)
from orthanc_pandas._ops.source import frame_client
from orthanc_pandas._ops.volumes import LazyVolumes, series_volume
from orthanc_pandas._util.fanout import DEFAULT_WORKERS
from orthanc_pandas.errors import NotAnIndexError, SelectionError

if TYPE_CHECKING:
    from tqdm.auto import tqdm


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

    def __new__(cls, df: pd.DataFrame):
        # a series/study/patient frame (df.orthanc.series() ...) gets the level accessor
        if cls is OrthancAccessor and frame_level(df) != "instance":
            return super().__new__(LevelAccessor)
        return super().__new__(cls)

    def __init__(self, df: pd.DataFrame):
        check_index_frame(df)

        check_format(df.attrs)  # a newer frame format could silently mean other rows
        self._df = df

    # -- provenance and client -----------------------------------------------------------
    @property
    def info(self) -> dict:
        """The provenance in ``df.attrs["orthanc"]`` (URL, server version, read time, ...)."""
        return dict(self._df.attrs.get("orthanc") or {})

    @property
    def url(self) -> str:
        """The URL of the server the rows come from."""
        return frame_url(self._df)

    def client(self, client: OrthancClient | str | None = None) -> OrthancClient:
        """The client for this frame's server.

        The one registered by :func:`~orthanc_pandas.read_orthanc` or
        :func:`~orthanc_pandas.connect` in this process, else a new one with credentials from
        ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD`` or ``~/.netrc``. Never from ``df.attrs``.
        """
        return frame_client(self._df, client)

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
    # (imports are local so that parallel branches adding sections do not conflict)
    def select(self, case_sensitive: bool = False, **criteria) -> pd.DataFrame:
        """The rows matching every criterion: a boolean mask on this frame.

        Main tags are columns, so matching them needs no server. A keyword that is a DICOM
        tag but not a column is first fetched for the current rows (:meth:`with_tags`, one
        request per series) and kept as a column of the result. The criteria are recorded
        as JSON in ``attrs["orthanc"]["criteria"]`` of the result (the parent's attrs are not
        changed), so a refresh can apply them again.

        Parameters
        ----------
        case_sensitive : bool, default False
            Text equality and wildcards ignore case unless this is ``True``.
        **criteria
            ``keyword=criterion``; for a tag number use ``**{"0019,10ab": ...}``.
            Criterion forms:

            * ``"CT"`` equality; ``"Doe*"``, ``"C?"`` DICOM wildcards; ``"CT\\\\MR"`` any of;
              ``"*"`` any value (not missing); ``""`` every row (missing values too);
            * DA/TM/DT ranges ``"20200101-20201231"``, ``"20200101-"``, ``"-20201231"``;
              ``datetime.date``/``datetime`` values; ``(low, high)`` tuples (``None`` = open);
            * ``(low, high)`` on numeric tags (IS, DS, US, FL...); a number = equality;
            * a list (or a tuple that is not a 2-tuple range) = any of its criteria;
            * ``None`` = the value is missing;
            * a function ``f(column) -> bool mask`` (not recordable: a refresh cannot re-apply
              it); vector tags pass the (n, k) frame of components.

        Returns
        -------
        pandas.DataFrame
            A row subset of this frame (plus fetched tag columns); possibly empty.

        Raises
        ------
        UnknownTagError
            A keyword that is neither a column nor a DICOM tag (the message names the closest
            keywords).
        SelectionError
            A criterion that does not fit the tag (e.g. a malformed date).

        Examples
        --------
        >>> ct = df.orthanc.select(Modality=["CT", "MR"], StudyDate="20200101-20201231")  # doctest: +SKIP
        >>> thin = ct.orthanc.select(SliceThickness=(0, 2))   # fetched: one request per series  # doctest: +SKIP
        >>> does = df.orthanc.select(PatientName="doe*")         # case-insensitive              # doctest: +SKIP
        >>> df.orthanc.select(PatientName="DOE*", case_sensitive=True)                          # doctest: +SKIP
        >>> df.orthanc.select(InstanceNumber=lambda c: c % 2 == 0)                              # doctest: +SKIP
        """

        return select(self._df, criteria, self.client, case_sensitive=case_sensitive)

    def with_tags(self, *tags, progress: bool | tqdm | None = None,
                  max_workers: int | None = DEFAULT_WORKERS,
                  client: OrthancClient | str | None = None) -> pd.DataFrame:
        """This frame with a typed column for each tag, fetched in bulk.

        In bulk, by the fastest route the server offers (``orthanc_pandas.fetch_tags``): one
        request per series of the rows (``instances-tags`` on 1.10, ``requested-tags`` on
        1.11+), one per instance only for series of which the frame holds a few rows; tags
        that already are columns are not fetched. Long values are fetched in
        full. An instance without the tag gets a missing value. Types follow the index schema:
        DA -> datetime64, IS/DS/US... -> Int64/Float64, fixed multi-valued numbers -> one
        column per component (``PixelSpacing_0``, ``PixelSpacing_1``), text -> string,
        sequences -> lists of dicts keyed by keyword. Private tags are named ``"gggg,eeee"``.

        Parameters
        ----------
        *tags : str or int
            Keywords (``"SliceThickness"``) or tag numbers (``"0018,0050"``, ``"00180050"``).
        progress : bool or tqdm, optional
            Progress bar over the series.
        max_workers : int, default 4
            Concurrent requests (capped by the client's connection pool).
        client : OrthancClient or str, optional
            Defaults to the client of the frame's server.

        Returns
        -------
        pandas.DataFrame

        Examples
        --------
        >>> df2 = df.orthanc.with_tags("SliceThickness", "PixelSpacing", "0019,10ab")  # doctest: +SKIP
        >>> df2[["SliceThickness", "PixelSpacing_0", "PixelSpacing_1"]].dtypes        # doctest: +SKIP
        """

        return with_tags(self._df, tags, lambda: self.client(client), max_workers=max_workers,
                         progress=progress)

    def values(self, tag, **fetch) -> pd.Series:
        """One value of ``tag`` per row (fetched when it is not a column).

        A vector tag (``ImagePositionPatient``, ``PixelSpacing``...) gives a Series of float
        tuples (``None`` when missing); its components as a frame are
        ``df[["ImagePositionPatient_0", "ImagePositionPatient_1", "ImagePositionPatient_2"]]``.

        Examples
        --------
        >>> df.orthanc.values("SliceThickness")                       # doctest: +SKIP
        >>> df.orthanc.values("ImagePositionPatient").iloc[0]         # doctest: +SKIP
        (-100.0, -110.0, 0.0)
        """

        return tag_values(self._df, tag, self.client, **fetch)

    def unique(self, tag, **fetch) -> list:
        """The sorted distinct values of ``tag`` among the rows, without missing values.

        Examples
        --------
        >>> df.orthanc.unique("PatientName")                          # doctest: +SKIP
        ['Doe^John', 'Roe^Jane']
        >>> df.orthanc.unique("Modality")                             # doctest: +SKIP
        ['CT', 'MR']
        """

        return unique_values(self._df, tag, self.client, **fetch)

    def tags(self, **fetch) -> list[str]:
        """Every tag available for the rows: main-tag columns with a value, plus the tags of
        one instance per series (one request per series). Private tags are ``"gggg,eeee"``.

        Examples
        --------
        >>> "SliceThickness" in df.orthanc.tags()                     # doctest: +SKIP
        True
        """

        return available_tags(self._df, self.client, **fetch)

    def sort_by(self, tag, ascending: bool = True, **fetch) -> pd.DataFrame:
        """The rows ordered by any tag (fetched when needed): stable, missing values last.

        Vector tags sort by their components in order; category columns by their text.

        Examples
        --------
        >>> df.orthanc.sort_by("SliceLocation")                       # doctest: +SKIP
        >>> df.orthanc.sort_by("StudyDate", ascending=False)          # doctest: +SKIP
        """

        return sort_by(self._df, tag, self.client, ascending=ascending, **fetch)

    # -- headers and files (headers.py, transfer.py) ------------------------------------
    def headers(self, *, progress: bool | tqdm | None = None, max_workers: int = DEFAULT_WORKERS,
                client: OrthancClient | str | None = None) -> list:
        """The pydicom header of every row, in row order, without pixel data (lossless).

        See :func:`orthanc_pandas.headers.headers`.

        Examples
        --------
        >>> datasets = df[df.Modality == "CT"].orthanc.headers()          # doctest: +SKIP
        """

        return headers(self._df, self.client(client), progress=progress, max_workers=max_workers)

    def header(self, *, client=None):
        """The pydicom header of the one row of the frame (``SelectionError`` otherwise).

        Examples
        --------
        >>> ds = df[df.SOPInstanceUID == uid].orthanc.header()             # doctest: +SKIP
        """

        return header(self._df, self.client(client))

    def download(self, folder=None, *, layout: str = "flat", verify: str = "size",
                 progress: bool | tqdm | None = None, max_workers: int = DEFAULT_WORKERS,
                 client: OrthancClient | str | None = None) -> pd.Series:
        """Save the stored file of every row; the paths in row order.

        See :func:`orthanc_pandas.transfer.download`.

        Examples
        --------
        >>> paths = df.orthanc.download("files", layout="tree")            # doctest: +SKIP
        """

        return download(self._df, self.client(client), folder, layout=layout, verify=verify,
                        progress=progress, max_workers=max_workers)

    def to_zip(self, path, *, client=None):
        """Write Orthanc's ZIP archive of the rows' series to ``path``.

        See :func:`orthanc_pandas.transfer.to_zip`.

        Examples
        --------
        >>> df.orthanc.to_zip("cohort.zip")                                # doctest: +SKIP
        """

        return to_zip(self._df, self.client(client), path)

    def delete(self, level: str = "instance", *, confirm: bool = False, progress=None,
               client=None) -> pd.DataFrame:
        """Delete the rows' resources at ``level`` - a dry run unless ``confirm=True``.

        See :func:`orthanc_pandas.transfer.delete`.

        Examples
        --------
        >>> df[df.PatientID == "X"].orthanc.delete(level="patient")        # dry run  # doctest: +SKIP
        """

        return delete(self._df, self.client(client), level, confirm=confirm, progress=progress)

    # -- gateway and jobs (gateway.py, jobs.py) -----------------------------------------
    def retrieve(self, target: str | None = None, *, method: str = "move", level: str | None = None,
                 max_workers: int = 2, timeout: float | None = 600, progress=None,
                 errors: str = "raise", client=None) -> pd.DataFrame:
        """Pull the rows of a :func:`~orthanc_pandas.gateway.query` answer from the remote.

        One asynchronous Orthanc job per study/series/instance of the rows (C-MOVE, or C-GET
        with ``method="get"`` where the server has it), ``max_workers`` at a time, with a
        progress bar and an overall ``timeout`` (jobs still running then are cancelled).

        Parameters
        ----------
        target : str, optional
            AE title to move to; default this Orthanc (the gateway).
        method : {"move", "get"}
        level : {"study", "series", "instance"}, optional
            Default the query's level.
        errors : {"raise", "report"}
            ``"raise"``: a :class:`~orthanc_pandas.errors.JobError` when any resource failed
            (the report is its ``.report``); ``"report"``: return the report regardless.

        Returns
        -------
        pandas.DataFrame
            One row per resource: ``level``, ``resource`` (Orthanc id), the DICOM identifiers,
            ``status`` (``retrieved``, ``already there``, ``failed``), ``reason``,
            ``instances`` (now on this Orthanc) and ``job``.

        Examples
        --------
        >>> answers = orthanc_pandas.gateway.query(url, "PACS", AccessionNumber=["A1", "A2"])  # doctest: +SKIP
        >>> report = answers.orthanc.retrieve()                                              # doctest: +SKIP
        >>> report.status.value_counts()                                                     # doctest: +SKIP
        """

        return retrieve(self._df, self.client(client), target=target, method=method, level=level,
                        max_workers=max_workers, timeout=timeout, progress=progress, errors=errors)

    def send(self, destination: str, *, level: str = "study", max_workers: int = 2,
             timeout: float | None = 600, progress=None, errors: str = "raise", client=None) -> pd.DataFrame:
        """Store the rows' resources to a DICOM modality (C-STORE) or an Orthanc peer, as jobs.

        Returns a report frame: ``level``, ``resource``, ``status`` (``sent``/``failed``),
        ``reason``, ``job``; with ``errors="raise"`` a failure raises
        :class:`~orthanc_pandas.errors.JobError` carrying it.

        Examples
        --------
        >>> df[df.Modality == "CT"].orthanc.send("RESEARCH_PACS")                  # doctest: +SKIP
        """

        return send(self._df, self.client(client), destination, level=level, max_workers=max_workers,
                    timeout=timeout, progress=progress, errors=errors)

    def anonymize(self, level: str = "study", *, keep=(), replace=None, remove=(), keep_source: bool = True,
                  force: bool = False, confirm: bool = False, done: pd.DataFrame | None = None,
                  max_workers: int = 2, timeout: float | None = None, progress=None,
                  errors: str = "raise", client=None) -> pd.DataFrame:
        """Anonymize the rows' studies/series with Orthanc's own anonymizer, as server jobs.

        A dry run unless ``confirm=True`` (like :meth:`delete`). One asynchronous job per
        resource, ``max_workers`` at a time, progress from ``/jobs/{id}``.

        Parameters
        ----------
        level : {"study", "series", "patient", "instance"}, default "study"
        keep, remove : list of str
            Tags to keep / remove (Orthanc's ``Keep``/``Remove``).
        replace : dict
            ``{"PatientName": "CASE001"}`` (Orthanc's ``Replace``).
        keep_source : bool, default True
            Keep the original resources.
        done : pandas.DataFrame, optional
            The mapping of an earlier run (or a :class:`JobError`'s ``.report``): resources
            it lists as done are not done again, their rows are carried over.
        errors : {"raise", "report"}
            A failed job raises :class:`~orthanc_pandas.errors.JobError` (its ``.report`` is
            the mapping so far) or is only reported.

        Returns
        -------
        pandas.DataFrame
            The mapping (re-identification) frame: one row per instance with ``resource``,
            ``new_resource``, ``job``, ``status`` (``done``, ``done before``, ``failed``,
            ``would anonymize``), ``reason``, the original ``patient``/``study``/``series``/
            ``instance`` ids and ``PatientID``/``StudyInstanceUID``/``SeriesInstanceUID``/
            ``SOPInstanceUID``, and the same with a ``new_`` prefix. Keep it safe: it
            re-identifies the anonymized data.

        Examples
        --------
        >>> plan = cohort.orthanc.anonymize(replace={"PatientName": "CASE"})          # doctest: +SKIP
        >>> mapping = cohort.orthanc.anonymize(replace={"PatientName": "CASE"}, confirm=True)  # doctest: +SKIP
        """

        return modify_resources(self._df, self.client(client), "anonymize", level=level, keep=keep,
                                replace=replace, remove=remove, keep_source=keep_source, force=force,
                                confirm=confirm, done=done, max_workers=max_workers, timeout=timeout,
                                progress=progress, errors=errors)

    def modify(self, level: str = "study", *, replace=None, remove=(), keep=(), keep_source: bool = True,
               force: bool = False, confirm: bool = False, done: pd.DataFrame | None = None,
               max_workers: int = 2, timeout: float | None = None, progress=None,
               errors: str = "raise", client=None) -> pd.DataFrame:
        """Modify the rows' studies/series with Orthanc's ``/modify``, as server jobs.

        The same contract as :meth:`anonymize` (dry run by default, a mapping frame, ``done=``
        to resume); changing identifiers such as ``PatientID`` needs ``force=True``.

        Examples
        --------
        >>> df.orthanc.modify(replace={"InstitutionName": "X"}, confirm=True)       # doctest: +SKIP
        """

        return modify_resources(self._df, self.client(client), "modify", level=level, keep=keep,
                                replace=replace, remove=remove, keep_source=keep_source, force=force,
                                confirm=confirm, done=done, max_workers=max_workers, timeout=timeout,
                                progress=progress, errors=errors)

    # -- freshness (refresh.py) ----------------------------------------------------------
    def refresh(self, *, client=None) -> pd.DataFrame:
        """The frame as it would be read now, from the changes since it was read.

        See :func:`orthanc_pandas.refresh.refresh`.

        Examples
        --------
        >>> df = df.orthanc.refresh()                                      # doctest: +SKIP
        """

        return refresh(self._df, self.client(client))

    # -- labels (labels.py) --------------------------------------------------------------
    def add_labels(self, *labels: str, level: str = "study", max_workers: int = DEFAULT_WORKERS,
                   client=None) -> pd.DataFrame:
        """Put Orthanc labels (Orthanc >= 1.12) on the rows' resources at ``level``.

        Every distinct patient, study, series or instance the rows belong to gets each label.
        The frame is not changed: ``df.orthanc.refresh()`` shows the labels in
        ``orthanc_labels``. See :func:`orthanc_pandas.labels.add_labels`.

        Parameters
        ----------
        *labels : str
            1 to 64 letters, digits, ``_`` or ``-`` each; checked before anything is sent.
        level : {"patient", "study", "series", "instance"}, default "study"
        max_workers : int, default 4
            Concurrent requests.
        client : OrthancClient or str, optional
            Defaults to the client of the frame's server.

        Returns
        -------
        pandas.DataFrame
            One row per resource and label: ``level``, ``resource``, ``label``, ``status``
            (``"added"``, ``"already there"``, ``"failed"``), ``message``.

        Raises
        ------
        SelectionError
            A malformed label or level.
        ServerCapabilityError
            The server has no labels (Orthanc < 1.12).

        Examples
        --------
        >>> report = df[df.Modality == "CT"].orthanc.add_labels("reviewed")      # doctest: +SKIP
        >>> report.status.value_counts()                                          # doctest: +SKIP
        >>> df = df.orthanc.refresh()                   # orthanc_labels up to date  # doctest: +SKIP
        """

        return add_labels(self._df, self.client(client), *labels, level=level,
                          max_workers=max_workers)

    def remove_labels(self, *labels: str, level: str = "study", max_workers: int = DEFAULT_WORKERS,
                      client=None) -> pd.DataFrame:
        """Take Orthanc labels off the rows' resources at ``level``.

        Parameters, report and errors as :meth:`add_labels`; the statuses are ``"removed"``,
        ``"not there"`` and ``"failed"``. Only ``level`` is touched: the same label on another
        level stays. See :func:`orthanc_pandas.labels.remove_labels`.

        Examples
        --------
        >>> df.orthanc.with_labels("reviewed").orthanc.remove_labels("reviewed")  # doctest: +SKIP
        """

        return remove_labels(self._df, self.client(client), *labels, level=level,
                             max_workers=max_workers)

    def with_labels(self, *labels: str, how: str = "all") -> pd.DataFrame:
        """The rows carrying ``labels`` on the instance or any parent: a mask on this frame.

        Reads only the ``orthanc_labels`` column (no server); the result keeps the attrs.

        Parameters
        ----------
        *labels : str
        how : {"all", "any", "none"}, default "all"
            Rows with every label, with at least one, or with none of them.

        Returns
        -------
        pandas.DataFrame

        Examples
        --------
        >>> import pandas as pd
        >>> idx = pd.MultiIndex.from_tuples([("p", "s", "se", "i1"), ("p", "s", "se", "i2")],
        ...                                 names=["patient", "study", "series", "instance"])
        >>> df = pd.DataFrame({"orthanc_labels": pd.Categorical(["done,qc", None])}, index=idx)
        >>> df.orthanc.with_labels("done").index.get_level_values("instance").tolist()
        ['i1']
        >>> len(df.orthanc.with_labels("done", "todo", how="any")), len(df.orthanc.with_labels("qc", how="none"))
        (1, 1)
        """
        import copy


        out = self._df[has_labels(self._df, *labels, how=how)]
        out.attrs = copy.deepcopy(self._df.attrs)  # a new dict, as select() gives
        return out

    # -- volumes (volume.py) -------------------------------------------------------------
    def volume(self, *, rescale: bool = True, allow_irregular: bool = False, dtype="float32",
               max_workers: int | None = None, progress: bool | tqdm | None = None,
               client: OrthancClient | str | None = None):
        """The pixels of the rows' one series as an :class:`xarray.DataArray` with geometry.

        The stored files are downloaded (``/instances/{id}/file``, uncompressed on the wire,
        a few at a time) and decoded here with pydicom and its plugins, so every transfer
        syntax pydicom reads works (JPEG, JPEG-LS, JPEG 2000, RLE, deflated, big endian).
        Slices are sorted by position along the slice normal and checked to form a regular
        grid; see ``docs/volumes.md`` for the layout.

        Parameters
        ----------
        rescale : bool, default True
            Apply the modality LUT (slope/intercept per slice, or ModalityLUTSequence) and
            return ``dtype`` values (``attrs["units"] = "HU"`` for CT); ``False`` keeps the
            stored integers.
        allow_irregular : bool, default False
            Gaps, duplicates, gantry tilt, mixed orientations or pixel spacings raise a
            :class:`~orthanc_pandas.errors.GeometryError` subclass naming the slices; ``True``
            warns instead and ``z`` holds the real positions (never interpolated).
        dtype : numpy dtype, default float32
            Type of rescaled values.
        max_workers : int, optional
            Concurrent downloads (default 4, never above the client's pool size).
        progress : bool or tqdm, optional
            Progress bar; default shown when interactive for 50+ files.
        client : OrthancClient or str, optional
            Default: the client registered for the frame's server.

        Returns
        -------
        xarray.DataArray
            dims ``("z", "y", "x")`` (+ ``"c"`` for colour); coords in mm; per-slice coords
            ``sop_instance_uid`` and ``instance``; attrs ``affine`` (16 floats, row-major
            4x4 LPS), ``spacing``, ``origin``, ``direction``, ...

        Raises
        ------
        SelectionError
            The rows hold no series or several.
        GeometryError
            (a subclass) The slices do not form a regular volume.
        PixelDataError
            An instance has no pixels or cannot be decoded.

        Examples
        --------
        >>> ct = df[df.SeriesInstanceUID == "1.2.3"]                        # doctest: +SKIP
        >>> vol = ct.orthanc.volume()                                        # doctest: +SKIP
        >>> vol.sel(z=42.5, method="nearest").plot()                         # doctest: +SKIP
        >>> np.reshape(vol.attrs["affine"], (4, 4))                          # doctest: +SKIP
        """

        return series_volume(self._df, self.client(client), rescale=rescale,
                             allow_irregular=allow_irregular, dtype=dtype,
                             max_workers=max_workers, progress=progress)

    def mask(self, like, *, client: OrthancClient | str | None = None, **tolerances):
        """The rows' one SEG or RTSTRUCT instance as a boolean mask on ``like``'s grid.

        ``(segment, z, y, x)`` for a SEG (coord ``segment`` = SegmentLabel), ``(roi, z, y, x)``
        for an RTSTRUCT (coord ``roi`` = ROIName); ``like`` is a volume from :meth:`volume`.
        A mask in another frame of reference or off the grid raises
        :class:`~orthanc_pandas.masks.MaskGeometryError`. On a ``df.orthanc.series()`` row,
        the series' instances are read from the server. See :mod:`orthanc_pandas.masks`.

        Examples
        --------
        >>> ct = df[df.Modality == "CT"].orthanc.volume()                    # doctest: +SKIP
        >>> m = df[df.Modality == "SEG"].orthanc.mask(like=ct)               # doctest: +SKIP
        """

        rows = self._df
        if "instance" not in rows.index.names:  # a series()/studies() row: its instances
            rows = self.instances(client=client)
        return mask(rows, self.client(client), like, **tolerances)

    def volumes(self, **kwargs):
        """A lazy mapping ``series id -> DataArray``, one volume per series of the rows.

        Nothing is downloaded until a volume is accessed, and volumes are not cached (so
        iterating over a large cohort holds one volume at a time). ``kwargs`` are those of
        :meth:`volume`.

        Examples
        --------
        >>> vols = df.orthanc.volumes(allow_irregular=True)                  # doctest: +SKIP
        >>> len(vols), list(vols)[:1]                                        # doctest: +SKIP
        (39, ['0b9c...'])
        >>> for series_id, vol in vols.items():                              # doctest: +SKIP
        ...     print(series_id, vol.shape)
        """

        client = self.client(kwargs.pop("client", None))
        return LazyVolumes(self._df, kwargs, client=client)


    # -- level frames (series_frame.py) -------------------------------------------------
    def series(self, *, geometry: bool = False, progress: bool | tqdm | None = None,
               max_workers: int | None = DEFAULT_WORKERS, client: OrthancClient | str | None = None,
               **tolerances) -> pd.DataFrame:
        """One row per series of the rows: its tags, its parents' tags and aggregates.

        Built from the rows alone (no request to the server) unless ``geometry=True``. Index
        ``(patient, study, series)``; columns: the series, study and patient main tags (the
        instance frame's dtypes), ``instance_count``, ``slice_count`` (frames: NumberOfFrames,
        1 when missing), ``slice_spacing`` (median step in mm between positions along the
        first slice's normal), ``orientation`` (the plane nearest the slices: ``"axial"``,
        ``"coronal"``, ``"sagittal"``), the first instance's ``ImageOrientationPatient_*`` and,
        where they are columns, ``PixelSpacing_*`` and ``FrameOfReferenceUID``. The result is an
        Orthanc frame too (``attrs["orthanc"]["level"] == "series"``); see ``docs/series.md``.

        Parameters
        ----------
        geometry : bool, default False
            Also ``volume_ok`` (boolean) and ``volume_problem`` (the message ``volume()`` would
            raise): the same checks as ``volume()``, on the index columns plus PixelSpacing,
            Rows, Columns, SamplesPerPixel and FrameOfReferenceUID, fetched with
            :meth:`with_tags` when missing (one request per series; no pixels).
        **tolerances
            Keyword arguments of :func:`orthanc_pandas.volume.slice_geometry`
            (``spacing_rtol=``, ``tilt_tol=`` ...).

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> thin = s[(s.Modality == "CT") & (s.slice_spacing <= 2)]          # doctest: +SKIP
        >>> vol = thin.iloc[[0]].orthanc.volume(df)                          # doctest: +SKIP
        >>> df.orthanc.series(geometry=True).volume_problem.dropna()         # doctest: +SKIP
        """

        df = self._df
        if geometry:
            missing = [t for t in GEOMETRY_TAGS if not ({t, f"{t}_0"} & set(df.columns))]
            if missing:
                df = self.with_tags(*missing, progress=progress, max_workers=max_workers,
                                    client=client)
        out = level_frame(df, "series")
        if geometry:
            report = geometry_report(df, lambda: self.client(client), fetch=False, **tolerances)
            out["volume_ok"] = report["volume_ok"].array
            out["volume_problem"] = report["volume_problem"].array
        return out

    def studies(self) -> pd.DataFrame:
        """One row per study of the rows (index ``(patient, study)``), no request to the server.

        Columns: the study and patient main tags, ``series_count``, ``instance_count`` and
        ``modalities`` (the distinct Modality values, sorted, joined by ``\\``).

        Examples
        --------
        >>> df.orthanc.studies()[["StudyDate", "series_count", "modalities"]]   # doctest: +SKIP
        """

        return level_frame(self._df, "study")

    def patients(self) -> pd.DataFrame:
        """One row per patient of the rows (index ``patient``), no request to the server.

        Columns: the patient main tags, ``study_count``, ``series_count``, ``instance_count``.

        Examples
        --------
        >>> df.orthanc.patients()[["PatientID", "study_count"]]             # doctest: +SKIP
        """

        return level_frame(self._df, "patient")

    # -- scale (dask.py) -----------------------------------------------------------------
    def map_series(self, func, *, dask_client=None, client: OrthancClient | str | None = None,
                   meta=None, auth: tuple[str, str] | None = None,
                   **volume_kwargs) -> pd.DataFrame:
        """Call ``func(volume, rows)`` once per series of the rows, in parallel.

        Returns one row per series (indexed by series id) with func's results and an
        ``error`` column naming what failed for a series (the others keep their results).
        ``dask_client`` is a ``distributed.Client`` (default: Dask's current scheduler when
        Dask is installed and one is active, else local threads); workers get credentials from
        ``auth=`` (sent with ``Client.run``, never in the task graph), their environment or
        ``~/.netrc``. ``client`` is the Orthanc client, as in every other call (default: the
        frame's server). See :func:`orthanc_pandas.dask.map_series`.

        Examples
        --------
        >>> res = df.orthanc.map_series(lambda vol, rows: {"mean": float(vol.mean())})  # doctest: +SKIP
        >>> res[res.error.notna()]                                          # doctest: +SKIP
        """
        return series_map.map_series(self._df, func, dask_client=dask_client, client=client,
                                     meta=meta, auth=auth, **volume_kwargs)

    def __repr__(self) -> str:
        c = self.counts
        src = self._df.attrs.get("orthanc", {}).get("url", "unknown server")
        return (f"<orthanc accessor: {c['patients']} patients, {c['studies']} studies, "
                f"{c['series']} series, {c['instances']} instances from {src}>")


class LevelAccessor(OrthancAccessor):
    """``.orthanc`` on a series, study or patient frame (``df.orthanc.series()`` ...).

    Instance operations map onto the instance rows of the frame's resources: every row stands
    for all its instances. :meth:`instances` gives those rows - from an instance frame you pass
    (rows whose series/study/patient id is in this frame), else from the server - and
    :meth:`volume`, :meth:`volumes`, :meth:`headers` and :meth:`download` work on them;
    :meth:`select` is a mask on the level frame's own columns; :meth:`with_tags` adds tags
    at the frame's level (checked to be the same in all instances of a row). Other instance operations say
    to call :meth:`instances` first. See ``docs/series.md``.

    Examples
    --------
    >>> s = df.orthanc.series()                                              # doctest: +SKIP
    >>> s.orthanc.instances(df)        # rows of df, no request             # doctest: +SKIP
    >>> s.iloc[[3]].orthanc.volume()   # rows fetched from the server       # doctest: +SKIP
    """

    def __init__(self, df: pd.DataFrame):

        check_format(df.attrs)
        self._df = df

    @property
    def level(self) -> str:
        """``"series"``, ``"study"`` or ``"patient"``."""
        return frame_level(self._df)

    def _count(self, level: str, column: str) -> int:
        if level in self._df.index.names:
            return int(self._df.index.get_level_values(level).nunique())
        if column in self._df.columns:
            return int(self._df[column].sum())
        raise SelectionError(f"A {self.level} frame without a {column!r} column cannot count "
                             f"{level} resources; use .orthanc.instances(df).orthanc.counts.")

    @property
    def patient_count(self) -> int:
        return self._count("patient", "")

    @property
    def study_count(self) -> int:
        return self._count("study", "study_count")

    @property
    def series_count(self) -> int:
        return self._count("series", "series_count")

    @property
    def instance_count(self) -> int:
        return self._count("instance", "instance_count")

    def instances(self, df: pd.DataFrame | None = None, *,
                  client: OrthancClient | str | None = None) -> pd.DataFrame:
        """The instance rows of this frame's resources: an instance frame.

        Parameters
        ----------
        df : pandas.DataFrame, optional
            An instance frame: its rows whose id at this frame's level is in this frame (a
            mask on ``df``, no request). Without it the rows are read from the server (one
            ``GET /series/{id}`` and ``GET /series/{id}/instances`` per series, plus the
            parents), in ``read_orthanc``'s order, with this frame's attrs.

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> rows = s[s.Modality == "CT"].orthanc.instances(df)               # doctest: +SKIP
        """

        if df is not None:
            return instances_of(self._df, self.level, df)
        return instances_of(self._df, self.level, client=self.client(client))

    def select(self, case_sensitive: bool = False, **criteria) -> pd.DataFrame:
        """The level rows matching every criterion, on columns only: a boolean mask.

        The criteria are those of :meth:`OrthancAccessor.select` (``slice_spacing=(0, 2)``,
        ``Modality=["CT", "MR"]``, ``StudyDate="2000-"``); a tag that is not a column is
        refused (its value may differ between the instances of a row): select instances
        first, ``df.orthanc.select(...).orthanc.series()``.

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> s.orthanc.select(Modality="CT", slice_spacing=(None, 2))         # doctest: +SKIP
        """

        method = {"series": "series", "study": "studies", "patient": "patients"}[self.level]
        for key in criteria:
            if frame_columns(self._df, key)[2] is not None:
                raise SelectionError(
                    f"{key} is not a column of this {self.level} frame, and its value may differ "
                    f"between the instances of a row. Select instances first: "
                    f"df.orthanc.select({key}=...).orthanc.{method}().")
        return select(self._df, criteria, self.client, case_sensitive=case_sensitive)

    def with_tags(self, *tags, df: pd.DataFrame | None = None, sample: bool = False,
                  progress: bool | tqdm | None = None, max_workers: int | None = DEFAULT_WORKERS,
                  client: OrthancClient | str | None = None) -> pd.DataFrame:
        """This frame with a typed column per tag: its value at this frame's level.

        A tag of the series (study, patient) is the same in all its instances, so each row
        gets the value its instances share. The values are read for the instances of the
        rows (:meth:`instances`; a tag that is a column of ``df`` is taken from it, the others
        are fetched as :meth:`OrthancAccessor.with_tags` fetches them), and checked: a tag
        whose instances disagree within a row raises :class:`InconsistentTagError` naming
        the tag and the rows, since no single value would be true. Tags that already are
        columns of this frame are left as they are; types follow the index schema.

        Parameters
        ----------
        *tags : str or int
            Keywords or tag numbers, as for the instance frame's ``with_tags``.
        df : pandas.DataFrame, optional
            The instance frame this frame was made from; without it the instance rows are
            read from the server (two requests per series).
        sample : bool, default False
            Read one instance per row (its first) instead of all: one request per row, and
            the value is not checked against the other instances.
        progress, max_workers, client
            As for :meth:`OrthancAccessor.with_tags`.

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> s = s.orthanc.with_tags("ProtocolName", "ConvolutionKernel", df=df)  # doctest: +SKIP
        >>> s.ProtocolName.value_counts()                                    # doctest: +SKIP
        """

        rows = self.instances(df, client=client)
        return level_with_tags(self._df, self.level, rows, tags, lambda: self.client(client),
                               sample=sample, max_workers=max_workers, progress=progress)

    def volume(self, df: pd.DataFrame | None = None, **kwargs):
        """The volume of the one series row (see :meth:`OrthancAccessor.volume`).

        ``df``: an instance frame holding its rows (else they are read from the server).
        """
        if self.level != "series" or len(self._df) != 1:
            raise SelectionError(
                f"volume() on a {self.level} frame needs exactly one series row; this frame has "
                f"{len(self._df)} {self.level} row(s). Pick one, e.g. series.iloc[[k]], or use "
                ".orthanc.volumes() for one volume per series.")
        client = kwargs.pop("client", None)
        return self.instances(df, client=client).orthanc.volume(client=client, **kwargs)

    def volumes(self, df: pd.DataFrame | None = None, **kwargs):
        """A lazy mapping ``series id -> DataArray`` over the frame's series (:meth:`instances`)."""
        client = kwargs.pop("client", None)
        return self.instances(df, client=client).orthanc.volumes(client=client, **kwargs)

    def headers(self, df: pd.DataFrame | None = None, **kwargs) -> list:
        """The headers of the instances of the frame's resources (:meth:`instances`)."""
        return self.instances(df, client=kwargs.get("client")).orthanc.headers(**kwargs)

    def download(self, folder=None, df: pd.DataFrame | None = None, **kwargs) -> pd.Series:
        """Save the files of the instances of the frame's resources (:meth:`instances`)."""
        return self.instances(df, client=kwargs.get("client")).orthanc.download(folder, **kwargs)

    def refresh(self, *, client: OrthancClient | str | None = None) -> pd.DataFrame:
        """A frame read level-first (``read_orthanc(url, level="series")``), read again.

        Its recorded ``select`` criteria are replayed (a frame cut by plain pandas keeps only
        its own rows, with a ``RefreshWarning``). A level frame made from an instance frame
        is refused: refresh the instance frame and make the level frame again. Its cost is
        a level-first read's (it grows with the series). See ``docs/series.md``.

        Examples
        --------
        >>> s = op.read_orthanc(url, level="series")                         # doctest: +SKIP
        >>> s = s.orthanc.refresh()                                          # doctest: +SKIP
        """
        return refresh_level_frame(self._df, self.client(client))

    def __repr__(self) -> str:
        src = self._df.attrs.get("orthanc", {}).get("url", "unknown server")
        return f"<orthanc accessor: {len(self._df)} {self.level} rows from {src}>"


def _instance_only(name: str):
    def refuse(self, *args, **kwargs):
        raise NotAnIndexError(
            f".orthanc.{name}() works on instance rows; this is a {self.level} frame. Use "
            f"frame.orthanc.instances(df).orthanc.{name}(...) (df: the instance frame, or "
            "omit it to read the rows from the server).")
    refuse.__name__ = name
    refuse.__doc__ = f"Not on level frames: ``.orthanc.instances().orthanc.{name}()``."
    return refuse


# instance operations a level frame refuses with the way to them (refresh() has its own)
for _name in ("values", "unique", "tags", "sort_by", "header", "to_zip",
              "delete", "retrieve", "send", "anonymize", "modify", "add_labels",
              "remove_labels", "with_labels", "map_series", "series", "studies", "patients"):
    setattr(LevelAccessor, _name, _instance_only(_name))
del _name
