"""``df.orthanc``: the thin, stateless accessors on Orthanc frames.

One accessor name, two classes on a shared base: an instance frame (``read_orthanc``'s, and
any row subset) gets :class:`InstanceAccessor`; a series, study or patient frame
(``df.orthanc.series()`` ...) gets :class:`LevelAccessor`, which offers only what works on
it (the rest raises an ``AttributeError`` that says to go through ``.instances()``).
:func:`orthanc_accessor`, registered with pandas, picks the class from the frame.

Each method validates the frame, finds the client, and calls the modules that do the work.
pandas 3 builds a new accessor object on every ``df.orthanc`` access and pandas 2.x builds
one on first access and caches it on the frame object, so nothing may live on an accessor
but the frame itself: everything else (level, URL, client) is looked up on each call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from orthanc_pandas._frame.contract import check_index_frame, frame_level, frame_url
from orthanc_pandas._frame.display import FrameView, compact_view
from orthanc_pandas._frame.levels import REPORT_TAGS, level_frame
from orthanc_pandas._frame.matching import merge_criteria
from orthanc_pandas._frame.schema import INDEX_NAMES, LABELS_COLUMN
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._imaging.display import PERCENTILES
from orthanc_pandas._imaging.thumbnails import PANEL_INCHES
from orthanc_pandas._ops import series_map
from orthanc_pandas._ops.annotations import annotations, with_annotation
from orthanc_pandas._ops.files import delete, download, to_zip
from orthanc_pandas._ops.gateway import retrieve, send
from orthanc_pandas._ops.headers import header, headers
from orthanc_pandas._ops.jobs import modify_resources
from orthanc_pandas._ops.labels import add_labels, remove_labels
from orthanc_pandas._ops.levels import geometry_report, instances_of, level_with_tags
from orthanc_pandas._ops.masks import mask
from orthanc_pandas._ops.protocol import add_protocol_columns, level_protocol, series_protocol
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
from orthanc_pandas._ops.thumbnails import MAX_PANELS, instance_thumbnails, level_thumbnails
from orthanc_pandas._ops.volumes import LazyVolumes, series_volume
from orthanc_pandas.errors import NotAnIndexError, SelectionError

if TYPE_CHECKING:
    from tqdm.auto import tqdm


def is_index_frame(df: pd.DataFrame) -> bool:
    """Whether ``df`` has the ``(patient, study, series, instance)`` index of an Orthanc frame.

    Examples
    --------
    >>> import pandas as pd
    >>> is_index_frame(pd.DataFrame({"a": [1]}))
    False
    """
    return isinstance(df.index, pd.MultiIndex) and list(df.index.names) == INDEX_NAMES


class BaseAccessor:
    """What ``df.orthanc`` offers on every Orthanc frame, instance or level.

    Not registered itself: :func:`orthanc_accessor` gives an :class:`InstanceAccessor` or a
    :class:`LevelAccessor`, both built on this class.

    Examples
    --------
    >>> df.orthanc.url, df.orthanc.series().orthanc.url                 # doctest: +SKIP
    ('http://127.0.0.1:8042', 'http://127.0.0.1:8042')
    """

    _df: pd.DataFrame

    # -- provenance and client -----------------------------------------------------------
    @property
    def info(self) -> dict:
        """The provenance in ``df.attrs["orthanc"]`` (URL, server version, read time, ...)."""
        return dict(self._df.attrs.get("orthanc") or {})

    @property
    def url(self) -> str:
        """The URL of the server the rows come from."""
        return frame_url(self._df)

    @property
    def level(self) -> str:
        """``"instance"``, ``"series"``, ``"study"`` or ``"patient"``: what one row stands for."""
        return frame_level(self._df)

    def client(self, client: OrthancClient | str | None = None) -> OrthancClient:
        """The client for this frame's server.

        The one registered by :func:`~orthanc_pandas.read_orthanc` or
        :func:`~orthanc_pandas.connect` in this process, else a new one with credentials from
        ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD`` or ``~/.netrc``. Never from ``df.attrs``.

        Examples
        --------
        >>> df.orthanc.client().version                                  # doctest: +SKIP
        '1.10.1'
        """
        return frame_client(self._df, client)

    # -- looking at the rows -------------------------------------------------------------
    def show(self, max_rows: int = 20, *, columns: str | Sequence[str] | None = None,
             width: int = 120) -> FrameView:
        """The rows as a person reads them: short ids, the human columns first, bounded.

        The index shows only each row's own id (first 8 characters); the columns a person
        looks for come first (who, when, modality, description, counts and, on a series frame
        with ``geometry=True``, ``volume_ok`` and ``volume_problem`` with its reason), as many as
        fit ``width`` characters (the HTML table in a notebook fits a 1400 px window); dates
        read ``2020-01-31``, times ``16:54:47``, every missing value ``—``. The frame itself is
        not changed. See ``docs/conventions.md``, "Looking at a frame".

        Parameters
        ----------
        max_rows : int, default 20
            Rows shown at most: the first and the last half, with a ``…`` row between.
        columns : str or list of str, optional
            Exactly these columns, all shown (cut as the others); default: the level's human
            columns, as many as fit.
        width : int, default 120
            Characters per line of the text view.

        Returns
        -------
        FrameView
            Shows as a table in a notebook and as text in a terminal; ``.frame`` is the text
            view as a DataFrame of strings.

        Examples
        --------
        >>> df.orthanc.show()                                                # doctest: +SKIP
        >>> df.orthanc.series(geometry=True).orthanc.show(max_rows=40)       # doctest: +SKIP
        >>> df.orthanc.show(columns=["PatientID", "SliceThickness"])         # doctest: +SKIP
        """
        return compact_view(self._df, self.level, max_rows=max_rows, columns=columns,
                            width=width)

    # -- counts --------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Patients, studies, series and instances among the rows."""
        return {"patients": self.patient_count, "studies": self.study_count,
                "series": self.series_count, "instances": self.instance_count}

    @property
    def patient_count(self) -> int:
        """Distinct patients among the rows."""
        raise NotImplementedError

    @property
    def study_count(self) -> int:
        """Distinct studies among the rows."""
        raise NotImplementedError

    @property
    def series_count(self) -> int:
        """Distinct series among the rows."""
        raise NotImplementedError

    @property
    def instance_count(self) -> int:
        """Distinct instances among the rows."""
        raise NotImplementedError


class InstanceAccessor(BaseAccessor):
    """``df.orthanc`` on an instance frame: Orthanc operations on exactly its rows.

    The frame of :func:`~orthanc_pandas.read_orthanc` (index ``(patient, study, series,
    instance)``) and any row subset of it. Everything a level frame's accessor offers, plus
    the calls that need instance rows (tags, files, labels, jobs, refresh, level frames).

    Examples
    --------
    >>> df = orthanc_pandas.read_orthanc("http://127.0.0.1:8042")        # doctest: +SKIP
    >>> df.orthanc.counts                                                # doctest: +SKIP
    {'patients': 1, 'studies': 1, 'series': 2, 'instances': 120}
    """

    def __init__(self, df: pd.DataFrame):
        check_index_frame(df)
        check_format(df.attrs)  # a newer frame format could silently mean other rows
        self._df = df

    # -- counts --------------------------------------------------------------------------
    def _nunique(self, level: str) -> int:
        return int(self._df.index.get_level_values(level).nunique())

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
    def select(self, criteria: Mapping | None = None, /, *, case_sensitive: bool = False,
               labels: str | Sequence[str] | None = None, labels_how: str = "all",
               **criteria_kwargs) -> pd.DataFrame:
        """The rows matching every criterion: a boolean mask on this frame.

        Main tags are columns, so matching them needs no server. A keyword that is a DICOM
        tag but not a column is first fetched for the current rows (:meth:`with_tags`, one
        request per series) and kept as a column of the result. The criteria are recorded
        as JSON in ``attrs["orthanc"]["criteria"]`` of the result (the parent's attrs are not
        changed), so a refresh can apply them again.

        Parameters
        ----------
        criteria : dict, optional
            ``{tag: criterion}``, positional only, like xarray's ``sel``: tag numbers need no
            ``**{}`` (``select({"0019,10ab": "x"})``). Merged with ``criteria_kwargs``; a tag
            in both raises ``TypeError``.
        case_sensitive : bool, default False
            Text equality and wildcards ignore case unless this is ``True``.
        labels : str or list of str, optional
            Keep the rows whose instance or a parent carries these Orthanc labels (read from
            the ``orthanc_labels`` column, no request).
        labels_how : {"all", "any", "none"}, default "all"
            Rows with every label, with at least one, or with none of them.
        **criteria_kwargs
            ``keyword=criterion``. Criterion forms:

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
        TypeError
            A first positional argument that is not a dict (``select(True, ...)``: did you
            mean ``case_sensitive=True``?).
        UnknownTagError
            A keyword that is neither a column nor a DICOM tag (the message names the closest
            keywords).
        SelectionError
            A criterion that does not fit the tag (e.g. a malformed date), or a malformed label.

        Examples
        --------
        >>> ct = df.orthanc.select(Modality=["CT", "MR"], StudyDate="20200101-20201231")  # doctest: +SKIP
        >>> thin = ct.orthanc.select(SliceThickness=(0, 2))   # fetched: one request per series  # doctest: +SKIP
        >>> does = df.orthanc.select(PatientName="doe*")         # case-insensitive              # doctest: +SKIP
        >>> df.orthanc.select(PatientName="DOE*", case_sensitive=True)                          # doctest: +SKIP
        >>> df.orthanc.select({"0019,10ab": "x"}, Modality="MR")  # a tag number                 # doctest: +SKIP
        >>> df.orthanc.select(labels=["reviewed", "qc"], labels_how="any")                      # doctest: +SKIP
        >>> df.orthanc.select(InstanceNumber=lambda c: c % 2 == 0)                              # doctest: +SKIP
        """

        merged = merge_criteria(criteria, criteria_kwargs)
        return select(self._df, merged, self.client, case_sensitive=case_sensitive,
                      labels=labels, labels_how=labels_how)

    def with_tags(self, *tags, progress: bool | tqdm | None = None,
                  max_workers: int | None = None,
                  client: OrthancClient | str | None = None) -> pd.DataFrame:
        """This frame with a typed column for each tag, fetched in bulk.

        In bulk, by the fastest route the server offers (``orthanc_pandas._ops.fetch_tags``): one
        request per series of the rows (``instances-tags`` on 1.10, ``requested-tags`` on
        1.11+), one per instance only for series of which the frame holds a few rows; tags
        that already are columns are not fetched. Long values are fetched in
        full. An instance without the tag gets a missing value. Types follow the index schema:
        DA -> datetime64, IS/US/SS/SL -> Int32, UL -> Int64, DS -> Float64, fixed multi-valued numbers -> one
        column per component (``PixelSpacing_0``, ``PixelSpacing_1``), text -> string,
        sequences -> lists of dicts keyed by keyword. Private tags are named ``"gggg,eeee"``.

        Parameters
        ----------
        *tags : str or int
            Keywords (``"SliceThickness"``) or tag numbers (``"0018,0050"``, ``"00180050"``).
        progress : bool or tqdm, optional
            Progress bar over the series.
        max_workers : int, optional
            Concurrent requests (default 4, capped by the client's connection pool).
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

    def tag_values(self, tag, **fetch) -> pd.Series:
        """One value of ``tag`` per row (fetched when it is not a column).

        A vector tag (``ImagePositionPatient``, ``PixelSpacing``...) gives a Series of float
        tuples (``None`` when missing); its components as a frame are
        ``df[["ImagePositionPatient_0", "ImagePositionPatient_1", "ImagePositionPatient_2"]]``.

        Examples
        --------
        >>> df.orthanc.tag_values("SliceThickness")                   # doctest: +SKIP
        >>> df.orthanc.tag_values("ImagePositionPatient").iloc[0]     # doctest: +SKIP
        (-100.0, -110.0, 0.0)
        """

        return tag_values(self._df, tag, self.client, **fetch)

    def unique_tag_values(self, tag, **fetch) -> list:
        """The sorted distinct values of ``tag`` among the rows, without missing values.

        Examples
        --------
        >>> df.orthanc.unique_tag_values("PatientName")               # doctest: +SKIP
        ['Doe^John', 'Roe^Jane']
        >>> df.orthanc.unique_tag_values("Modality")                  # doctest: +SKIP
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
    def headers(self, *, progress: bool | tqdm | None = None, max_workers: int | None = None,
                errors: str = "raise", client: OrthancClient | str | None = None) -> pd.Series:
        """The pydicom header of every row, without pixel data (lossless), indexed like the rows.

        ``result.index`` is this frame's index, in the same order; see ``docs/conventions.md``
        for ``progress``, ``max_workers`` (default 4), ``errors`` (``"report"``: ``None`` for a
        refused instance, named in ``result.attrs["errors"]``) and ``client``.

        Returns
        -------
        pandas.Series
            ``pydicom.FileDataset`` objects, named ``header``.

        Examples
        --------
        >>> datasets = df[df.Modality == "CT"].orthanc.headers()          # doctest: +SKIP
        >>> datasets.iloc[0].SliceThickness                               # doctest: +SKIP
        """

        return headers(self._df, self.client(client), progress=progress, max_workers=max_workers,
                       errors=errors)

    def header(self, *, client=None):
        """The pydicom header of the one row of the frame (``SelectionError`` otherwise).

        Examples
        --------
        >>> ds = df[df.SOPInstanceUID == uid].orthanc.header()             # doctest: +SKIP
        """

        return header(self._df, self.client(client))

    def download(self, folder: str | os.PathLike, *, layout: str = "flat", verify: str = "size",
                 progress: bool | tqdm | None = None, max_workers: int | None = None,
                 errors: str = "raise", client: OrthancClient | str | None = None) -> pd.Series:
        """Save the stored file of every row into ``folder``; the paths, indexed like the rows.

        ``folder`` is required. See :func:`orthanc_pandas._ops.files.download` for ``layout``
        and ``verify``, and ``docs/conventions.md`` for the other arguments (``errors="report"``:
        ``None`` as the path of a refused file, named in ``result.attrs["errors"]``).

        Returns
        -------
        pandas.Series
            String paths, named ``path``.

        Examples
        --------
        >>> paths = df.orthanc.download("files", layout="tree")            # doctest: +SKIP
        """

        return download(self._df, self.client(client), folder, layout=layout, verify=verify,
                        progress=progress, max_workers=max_workers, errors=errors)

    def to_zip(self, path, *, client=None):
        """Write Orthanc's ZIP archive of the rows' series to ``path``.

        See :func:`orthanc_pandas._ops.files.to_zip`.

        Examples
        --------
        >>> df.orthanc.to_zip("cohort.zip")                                # doctest: +SKIP
        """

        return to_zip(self._df, self.client(client), path)

    def delete(self, *, level: str = "instance", confirm: bool = False,
               progress: bool | tqdm | None = None, max_workers: int | None = None,
               errors: str = "raise", client: OrthancClient | str | None = None) -> pd.DataFrame:
        """Delete the rows' resources at ``level`` - a dry run unless ``confirm=True``.

        ``level`` defaults to ``"instance"`` (exactly the rows). See
        :func:`orthanc_pandas._ops.files.delete` and ``docs/conventions.md``.

        Returns
        -------
        pandas.DataFrame
            One row per instance that goes, with ``status`` and ``reason``.

        Examples
        --------
        >>> df[df.PatientID == "X"].orthanc.delete(level="patient")        # dry run  # doctest: +SKIP
        """

        return delete(self._df, self.client(client), level=level, confirm=confirm, progress=progress,
                      max_workers=max_workers, errors=errors)

    # -- gateway and jobs (gateway.py, jobs.py) -----------------------------------------
    def retrieve(self, target: str | None = None, *, method: str = "move", level: str | None = None,
                 max_workers: int | None = None, timeout: float | None = 600,
                 progress: bool | tqdm | None = None, errors: str = "raise",
                 client: OrthancClient | str | None = None) -> pd.DataFrame:
        """Pull the rows of a :func:`~orthanc_pandas._ops.gateway.query` answer from the remote.

        One asynchronous Orthanc job per study/series/instance of the rows (C-MOVE, or C-GET
        with ``method="get"`` where the server has it), ``max_workers`` at a time, with a
        progress bar and an overall ``timeout`` (jobs still running then are cancelled).

        Parameters
        ----------
        target : str, optional
            AE title to move to; default this Orthanc (the gateway).
        method : {"move", "get"}
        level : {"study", "series", "instance"}, optional
            Default (``None``): the query's level.
        max_workers : int, optional
            Jobs at a time (default 2).
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
        >>> answers = orthanc_pandas._ops.gateway.query(url, "PACS", AccessionNumber=["A1", "A2"])  # doctest: +SKIP
        >>> report = answers.orthanc.retrieve()                                              # doctest: +SKIP
        >>> report.status.value_counts()                                                     # doctest: +SKIP
        """

        return retrieve(self._df, self.client(client), target=target, method=method, level=level,
                        max_workers=max_workers, timeout=timeout, progress=progress, errors=errors)

    def send(self, destination: str, *, level: str | None = None, max_workers: int | None = None,
             timeout: float | None = 600, progress: bool | tqdm | None = None, errors: str = "raise",
             client: OrthancClient | str | None = None) -> pd.DataFrame:
        """Store the rows' resources to a DICOM modality (C-STORE) or an Orthanc peer, as jobs.

        By default exactly the rows' instances (one job per series, holding that series' row
        instances); ``level="series"``/``"study"``/``"patient"`` sends those whole resources,
        instances that are not rows included (the report's ``beyond_rows`` counts them per
        resource). ``max_workers`` jobs at a time (default 2). Returns a report frame:
        ``level``, ``resource``, ``status`` (``sent``/``failed``), ``reason``, ``job``,
        ``beyond_rows``; with ``errors="raise"`` a failure raises
        :class:`~orthanc_pandas.errors.JobError` carrying it. See ``docs/conventions.md``.

        Examples
        --------
        >>> df[df.Modality == "CT"].orthanc.send("RESEARCH_PACS")                  # doctest: +SKIP
        """

        return send(self._df, self.client(client), destination, level=level, max_workers=max_workers,
                    timeout=timeout, progress=progress, errors=errors)

    def anonymize(self, *, level: str | None = None, keep=(), replace=None, remove=(),
                  keep_source: bool = True, force: bool = False, confirm: bool = False,
                  done: pd.DataFrame | None = None, max_workers: int | None = None,
                  timeout: float | None = None, progress: bool | tqdm | None = None,
                  errors: str = "raise", client: OrthancClient | str | None = None) -> pd.DataFrame:
        """Anonymize the rows with Orthanc's own anonymizer, as server jobs.

        A dry run unless ``confirm=True`` (like :meth:`delete`). One asynchronous job per
        resource, ``max_workers`` at a time, progress from ``/jobs/{id}``.

        Parameters
        ----------
        level : {None, "patient", "study", "series"}, default None
            ``None`` acts on exactly the rows: at the coarsest level whose resources the rows
            hold whole (their patients, else studies, else series: a study's series stay one
            new study); rows holding part of a series are refused (Orthanc anonymizes whole
            series at the least). A named level acts on those whole resources, instances that
            are not rows included: the ``beyond_rows`` column of the dry run and of the report
            counts them per resource. See ``docs/conventions.md``.
        force : bool, default False
            Needed to change DICOM identifiers (PatientID and the UIDs) with ``replace``,
            ``remove`` or ``keep``; without it the dry run refuses what the real run would.
        keep, remove : list of str
            Tags to keep / remove (Orthanc's ``Keep``/``Remove``).
        replace : dict
            ``{"PatientName": "CASE001"}`` (Orthanc's ``Replace``).
        keep_source : bool, default True
            Keep the original resources.
        done : pandas.DataFrame, optional
            The mapping of an earlier run (or a :class:`JobError`'s ``.report``): resources
            it lists as done are not done again, their rows are carried over.
        max_workers : int, optional
            Jobs at a time (default 2).
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
            re-identifies the anonymized data. A dry run has the same columns and dtypes
            (``string``), one row per resource.

        Examples
        --------
        >>> plan = cohort.orthanc.anonymize(replace={"PatientName": "CASE"})          # doctest: +SKIP
        >>> mapping = cohort.orthanc.anonymize(replace={"PatientName": "CASE"}, confirm=True)  # doctest: +SKIP
        """

        return modify_resources(self._df, self.client(client), "anonymize", level=level, keep=keep,
                                replace=replace, remove=remove, keep_source=keep_source, force=force,
                                confirm=confirm, done=done, max_workers=max_workers, timeout=timeout,
                                progress=progress, errors=errors)

    def modify(self, *, level: str | None = None, replace=None, remove=(), keep=(),
               keep_source: bool = True, force: bool = False, confirm: bool = False,
               done: pd.DataFrame | None = None, max_workers: int | None = None,
               timeout: float | None = None, progress: bool | tqdm | None = None,
               errors: str = "raise", client: OrthancClient | str | None = None) -> pd.DataFrame:
        """Modify the rows with Orthanc's ``/modify``, as server jobs.

        The same contract as :meth:`anonymize` (exactly the rows unless ``level`` is named, dry
        run by default, a mapping frame, ``done=`` to resume); changing identifiers such as
        ``PatientID`` needs ``force=True``, and the dry run says so too.

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

        See :func:`orthanc_pandas._ops.refresh.refresh`.

        Examples
        --------
        >>> df = df.orthanc.refresh()                                      # doctest: +SKIP
        """

        return refresh(self._df, self.client(client))

    # -- labels (labels.py) --------------------------------------------------------------
    def add_labels(self, *labels: str, level: str = "instance", max_workers: int | None = None,
                   progress: bool | tqdm | None = None, errors: str = "raise",
                   client: OrthancClient | str | None = None) -> pd.DataFrame:
        """Put Orthanc labels (Orthanc >= 1.12) on the rows' resources at ``level``.

        Every distinct patient, study, series or instance the rows belong to gets each label.
        The frame is not changed: ``df.orthanc.refresh()`` shows the labels in
        ``orthanc_labels``. See :func:`orthanc_pandas._ops.labels.add_labels`.

        Parameters
        ----------
        *labels : str
            1 to 64 letters, digits, ``_`` or ``-`` each; checked before anything is sent.
        level : {"patient", "study", "series", "instance"}, default "study"
        max_workers : int, optional
            Concurrent requests (default 4).
        progress : bool or tqdm, optional
            Progress bar over the resources.
        errors : {"raise", "report"}, default "raise"
            A resource the server refused is a ``"failed"`` row; ``"raise"`` then raises
            :class:`~orthanc_pandas.errors.BulkError` (``.report``) after all were tried.
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
                          max_workers=max_workers, progress=progress, errors=errors)

    def remove_labels(self, *labels: str, level: str = "instance", max_workers: int | None = None,
                      progress: bool | tqdm | None = None, errors: str = "raise",
                      client: OrthancClient | str | None = None) -> pd.DataFrame:
        """Take Orthanc labels off the rows' resources at ``level``.

        Parameters, report and errors as :meth:`add_labels`; the statuses are ``"removed"``,
        ``"not there"`` and ``"failed"``. Only ``level`` is touched: the same label on another
        level stays. See :func:`orthanc_pandas._ops.labels.remove_labels`.

        Examples
        --------
        >>> df.orthanc.select(labels="reviewed").orthanc.remove_labels("reviewed")  # doctest: +SKIP
        """

        return remove_labels(self._df, self.client(client), *labels, level=level,
                             max_workers=max_workers, progress=progress, errors=errors)


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
        >>> vol.sel(z=42.5, method="nearest").orthanc.plot()                 # doctest: +SKIP
        >>> np.reshape(vol.attrs["affine"], (4, 4))                          # doctest: +SKIP
        """

        return series_volume(self._df, self.client(client), rescale=rescale,
                             allow_irregular=allow_irregular, dtype=dtype,
                             max_workers=max_workers, progress=progress)

    def mask(self, like, *, client: OrthancClient | str | None = None, **options):
        """The rows' one SEG or RTSTRUCT instance as a boolean mask on ``like``'s grid.

        ``(segment, z, y, x)`` for a SEG (coord ``segment`` = SegmentLabel), ``(roi, z, y, x)``
        for an RTSTRUCT (coord ``roi`` = ROIName); ``like`` is a volume from :meth:`volume`.
        A mask in another frame of reference or off the grid raises
        :class:`~orthanc_pandas._imaging.masks.MaskGeometryError`. On a ``df.orthanc.series()`` row,
        the series' instances are read from the server (:meth:`LevelAccessor.mask`).
        For an RTSTRUCT, ``rule="centre"`` (default) keeps the voxels whose centre is strictly
        inside the contours, ``rule="fillpoly"`` gives rt-utils' masks (centres inside or on
        the contours rounded to voxel centres, plus OpenCV's line along each edge); see
        :func:`~orthanc_pandas._imaging.masks.rtstruct_mask`.

        Examples
        --------
        >>> ct = df[df.Modality == "CT"].orthanc.volume()                    # doctest: +SKIP
        >>> m = df[df.Modality == "SEG"].orthanc.mask(like=ct)               # doctest: +SKIP
        >>> rt = df[df.Modality == "RTSTRUCT"].orthanc.mask(like=ct, rule="fillpoly")  # doctest: +SKIP
        """

        return mask(self._df, self.client(client), like, **options)

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


    # -- looking at the pixels (thumbnails.py) --------------------------------------------
    def thumbnails(self, *, geometry: bool = False, max_panels: int = MAX_PANELS,
                   source: str = "file", window=None,
                   percentiles: tuple[float, float] = PERCENTILES, columns: int | None = None,
                   panel_size: float = PANEL_INCHES, title: str | None = None, save=None,
                   max_workers: int | None = None,
                   progress: bool | tqdm | None = None, client: OrthancClient | str | None = None):
        """One middle slice per series of the rows, in a grid: a cohort checked by eye.

        What ``df.orthanc.series(geometry=geometry).orthanc.thumbnails(df)`` draws, the
        geometry report made for the series shown only (see :meth:`LevelAccessor.thumbnails`):
        per series one instance is fetched, the one holding its middle slice by position
        along the slice normal (not by InstanceNumber), shown the right way up and windowed
        as ``vol.orthanc.plot()`` shows a slice, titled with the patient, study date, series
        number, modality and description. With ``geometry=True`` each panel also says whether
        the series makes a volume and, if not, why (one more request per series, no pixels).

        Parameters
        ----------
        geometry : bool, default False
            Check each series shown as ``series(geometry=True)`` does, and say the verdict.
        max_panels, source, window, percentiles, columns, panel_size, title, save
            As for :meth:`LevelAccessor.thumbnails`.
        max_workers, progress, client
            As for :meth:`LevelAccessor.thumbnails`.

        Returns
        -------
        matplotlib.figure.Figure

        Examples
        --------
        >>> df[df.Modality == "CT"].orthanc.thumbnails(geometry=True);          # doctest: +SKIP
        >>> df.orthanc.thumbnails(max_panels=400, save="cohort.png")           # doctest: +SKIP
        """

        def make_series(rows: pd.DataFrame) -> pd.DataFrame:
            return rows.orthanc.series(geometry=geometry, progress=progress,
                                       max_workers=max_workers, client=client)

        return instance_thumbnails(self._df, lambda: self.client(client), make_series,
                                   max_panels=max_panels, source=source, window=window,
                                   percentiles=percentiles, columns=columns,
                                   panel_size=panel_size, title=title, save=save,
                                   max_workers=max_workers, progress=progress)


    # -- level frames (series_frame.py) -------------------------------------------------
    def series(self, *, geometry: bool = False, protocol: bool | Sequence[str] = False,
               progress: bool | tqdm | None = None, max_workers: int | None = None,
               client: OrthancClient | str | None = None, **tolerances) -> pd.DataFrame:
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
            Rows, Columns, SamplesPerPixel, FrameOfReferenceUID and ImageType, fetched with
            :meth:`with_tags` when missing (one request per series). Multi-frame (enhanced,
            RT Dose) and Siemens mosaic instances are read from Orthanc's JSON
            (``/instances/{id}/tags``, and a mosaic's CSA header element by ``/content``): no
            file is downloaded. For those series ``slice_count`` and ``slice_spacing`` are the
            slices ``volume()`` stacks (a mosaic's tiles; RT Dose frames GridFrameOffsetVector
            apart).
        protocol : bool or list of str, default False
            Protocol columns: ``True`` for the documented set of each series' modality (CT:
            KVP, XRayTubeCurrent, Exposure, CTDIvol, SliceThickness, ConvolutionKernel...; MR:
            RepetitionTime, EchoTime, InversionTime, FlipAngle, MagneticFieldStrength,
            ScanningSequence, SequenceVariant, DiffusionBValue...; PT: Radiopharmaceutical,
            RadionuclideTotalDose, Units, DecayCorrection...), a list of tags for those tags
            on every series. Each tag gives ``<tag>`` (its value when the instances agree,
            else missing), ``<tag>_min`` and ``<tag>_max``: the same columns whatever the
            data. Fetched for the rows with :meth:`with_tags` (one request per series; tags
            that are columns are not fetched). See ``docs/series.md``, "Protocol columns".
        **tolerances
            Keyword arguments of :func:`orthanc_pandas._imaging.geometry.slice_geometry`
            (``spacing_rtol=``, ``tilt_tol=`` ...).

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> thin = s[(s.Modality == "CT") & (s.slice_spacing <= 2)]          # doctest: +SKIP
        >>> vol = thin.iloc[[0]].orthanc.volume(df)                          # doctest: +SKIP
        >>> df.orthanc.series(geometry=True).volume_problem.dropna()         # doctest: +SKIP
        >>> p = df.orthanc.series(protocol=True)                             # doctest: +SKIP
        >>> p[(p.Modality == "CT") & (p.SliceThickness_max <= 2) & (p.KVP == 120)]  # doctest: +SKIP
        >>> df.orthanc.series(protocol=["KVP", "0019,100c"])                 # doctest: +SKIP
        """

        df = self._df
        if geometry:
            missing = [t for t in REPORT_TAGS if not ({t, f"{t}_0"} & set(df.columns))]
            if missing:
                df = self.with_tags(*missing, progress=progress, max_workers=max_workers,
                                    client=client)
        out = level_frame(df, "series")
        if protocol is not False:
            agg = series_protocol(df, out.index.get_level_values("series"), protocol,
                                  lambda: self.client(client), max_workers=max_workers,
                                  progress=progress)
            out = add_protocol_columns(out, agg)
        if geometry:
            report = geometry_report(df, lambda: self.client(client), fetch=False,
                                     max_workers=max_workers, progress=progress, **tolerances)
            for col in ("slice_count", "slice_spacing"):  # what the headers say, where read
                out[col] = report[col].fillna(out[col]).array
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

    # -- annotations (annotations.py) -----------------------------------------------------
    def annotations(self, *, progress: bool | tqdm | None = None, max_workers: int | None = None,
                    errors: str = "raise", client: OrthancClient | str | None = None) -> pd.DataFrame:
        """The annotation table: one row per segment of every SEG and ROI of every RTSTRUCT.

        The SEG and RTSTRUCT rows of this frame (``Modality``) are read without pixel data,
        one request per instance, and each segment or ROI becomes a row: the annotation's own
        ids (``annotation_patient`` ... ``annotation_instance``, ``SOPInstanceUID``,
        ``SeriesInstanceUID``), ``number`` and ``label`` (SegmentNumber/SegmentLabel or
        ROINumber/ROIName), ``description``, the coded category and type (``category_code``,
        ``_scheme``, ``_meaning``; ``type_*``), ``roi_interpreted_type``, ``algorithm_type``,
        ``algorithm_name``, and what it annotates: ``source_series_uid`` and the Orthanc ids
        ``source_series``, ``source_study``, ``source_patient`` (missing when that series is
        not on the server), ``frame_of_reference_uid``, ``source_frame_of_reference_uid``
        and ``frame_of_reference_matches``. Plain types only (text, Int64, boolean): it
        round-trips through ``to_parquet``/``pd.read_parquet`` and DuckDB. A header naming
        only source instances (no referenced series) is resolved through those instances:
        rows of this frame first, else ``POST /tools/lookup``. See ``docs/annotations.md``.

        Parameters
        ----------
        progress, max_workers, errors, client
            As for :meth:`headers` (``errors="report"``: an annotation the server refuses is
            left out and named in ``result.attrs["errors"]``).

        Returns
        -------
        pandas.DataFrame
            Default index; ``attrs["orthanc"]`` is this frame's provenance with
            ``table="annotations"``. Not an Orthanc frame: ``.orthanc`` does not apply.

        Examples
        --------
        >>> ann = df.orthanc.annotations()                                   # doctest: +SKIP
        >>> ann[["Modality", "label", "type_meaning", "source_series"]]      # doctest: +SKIP
        >>> ann[ann.label.str.contains("liver", case=False)].source_series.nunique()  # doctest: +SKIP
        """
        return annotations(self._df, "instance", lambda: self.client(client), progress=progress,
                           max_workers=max_workers, errors=errors)

    def with_annotation(self, criteria: Mapping | None = None, /, *,
                        annotations: pd.DataFrame | None = None, case_sensitive: bool = False,
                        progress: bool | tqdm | None = None, max_workers: int | None = None,
                        client: OrthancClient | str | None = None,
                        **criteria_kwargs) -> pd.DataFrame:
        """The rows of the series that a matching segment or ROI annotates: a cohort in one line.

        Criteria are on the columns of :meth:`annotations` (``label``, ``type_code``,
        ``type_meaning``, ``category_code``, ``Modality``, ``algorithm_type`` ...), in the
        forms of :meth:`select`: wildcards (``label="liver*"``, case-insensitive unless
        ``case_sensitive=True``), lists (any of), ``None`` (missing). A row is kept when its
        series is the ``source_series`` of a segment/ROI matching every criterion. A boolean
        mask on this frame.

        Parameters
        ----------
        criteria : dict, optional
            ``{column: criterion}``, positional only; merged with ``criteria_kwargs``.
        annotations : pandas.DataFrame, optional
            The table of :meth:`annotations`, when you have it (no request then); by default
            it is read for this frame, so the frame must hold the SEG/RTSTRUCT rows.

        Examples
        --------
        >>> livers = df.orthanc.with_annotation(label="liver*")              # doctest: +SKIP
        >>> livers.orthanc.series()                                          # doctest: +SKIP
        >>> ann = df.orthanc.annotations()                                   # doctest: +SKIP
        >>> ct = df[df.Modality == "CT"]                                     # doctest: +SKIP
        >>> ct.orthanc.with_annotation(type_code="10200004", annotations=ann)  # doctest: +SKIP
        """
        merged = merge_criteria(criteria, criteria_kwargs)
        if annotations is None:
            annotations = self.annotations(progress=progress, max_workers=max_workers, client=client)
        return with_annotation(self._df, "instance", annotations, merged,
                               case_sensitive=case_sensitive)

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


class LevelAccessor(BaseAccessor):
    """``.orthanc`` on a series, study or patient frame (``df.orthanc.series()`` ...).

    Every row stands for all the instances of its resource. :meth:`instances` gives those
    rows - from an instance frame you pass (rows whose series/study/patient id is in this
    frame), else from the server - and :meth:`volume`, :meth:`volumes`, :meth:`mask`,
    :meth:`headers` and :meth:`download` work on them; :meth:`select` is a mask on the level
    frame's own columns; :meth:`with_tags` adds tags at the frame's level (checked to be the
    same in all instances of a row). Nothing else is offered: an instance operation
    (``tag_values``, ``delete``, ``add_labels`` ...) raises an ``AttributeError`` that says
    to call it on ``.orthanc.instances()``. See ``docs/series.md``.

    Examples
    --------
    >>> s = df.orthanc.series()                                              # doctest: +SKIP
    >>> s.orthanc.instances(df)        # rows of df, no request             # doctest: +SKIP
    >>> s.iloc[[3]].orthanc.volume()   # rows fetched from the server       # doctest: +SKIP
    """

    def __init__(self, df: pd.DataFrame):
        if frame_level(df) == "instance":  # raises NotAnIndexError for a frame of neither kind
            raise NotAnIndexError("LevelAccessor works on series, study and patient frames "
                                  "(df.orthanc.series() ...); this is an instance frame.")
        check_format(df.attrs)
        self._df = df

    def __getattr__(self, name: str):
        # called only for names the class lacks: say where an instance operation lives
        if name in INSTANCE_ONLY:
            raise NotAnIndexError(
                f"{name}() works on instance frames; this is a {self.level} frame. Use "
                f"frame.orthanc.instances().orthanc.{name}(...) (or instances(df) with the instance "
                "frame at hand: no request).")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _count(self, level: str, column: str) -> int:
        if level in self._df.index.names:
            return int(self._df.index.get_level_values(level).nunique())
        if column in self._df.columns:
            return int(self._df[column].sum())
        raise SelectionError(f"A {self.level} frame without a {column!r} column cannot count "
                             f"{level} resources; use .orthanc.instances(df).orthanc.counts.")

    @property
    def patient_count(self) -> int:
        """Distinct patients among the rows."""
        return self._count("patient", "")

    @property
    def study_count(self) -> int:
        """Studies of the rows (distinct ids, or the sum of ``study_count``)."""
        return self._count("study", "study_count")

    @property
    def series_count(self) -> int:
        """Series of the rows (distinct ids, or the sum of ``series_count``)."""
        return self._count("series", "series_count")

    @property
    def instance_count(self) -> int:
        """Instances of the rows (the sum of ``instance_count``)."""
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
        client : OrthancClient or str, optional
            Defaults to the client of the frame's server.

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> rows = s[s.Modality == "CT"].orthanc.instances(df)               # doctest: +SKIP
        """

        if df is not None:
            return instances_of(self._df, self.level, df)
        return instances_of(self._df, self.level, client=self.client(client))

    def select(self, criteria: Mapping | None = None, /, *, case_sensitive: bool = False,
               labels: str | Sequence[str] | None = None, labels_how: str = "all",
               **criteria_kwargs) -> pd.DataFrame:
        """The level rows matching every criterion, on columns only: a boolean mask.

        The criteria are those of :meth:`InstanceAccessor.select` (``slice_spacing=(0, 2)``,
        ``Modality=["CT", "MR"]``, ``StudyDate="2000-"``, a positional dict for tag numbers);
        a tag that is not a column is refused (its value may differ between the instances of a
        row): select instances first, ``df.orthanc.select(...).orthanc.series()``. ``labels``
        needs an ``orthanc_labels`` column in this frame.

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> s.orthanc.select(Modality="CT", slice_spacing=(None, 2))         # doctest: +SKIP
        >>> s.orthanc.select({"Modality": "CT"})                             # doctest: +SKIP
        """

        merged = merge_criteria(criteria, criteria_kwargs)
        method = {"series": "series", "study": "studies", "patient": "patients"}[self.level]
        for key in merged:
            if frame_columns(self._df, key)[2] is not None:
                raise SelectionError(
                    f"{key} is not a column of this {self.level} frame, and its value may differ "
                    f"between the instances of a row. Select instances first: "
                    f"df.orthanc.select({key}=...).orthanc.{method}().")
        if labels is not None and LABELS_COLUMN not in self._df.columns:
            raise SelectionError(
                f"This {self.level} frame has no {LABELS_COLUMN!r} column. Select by labels on "
                f"the instance frame first: df.orthanc.select(labels=...).orthanc.{method}().")
        return select(self._df, merged, self.client, case_sensitive=case_sensitive,
                      labels=labels, labels_how=labels_how)

    def with_tags(self, *tags, df: pd.DataFrame | None = None, sample: bool = False,
                  progress: bool | tqdm | None = None, max_workers: int | None = None,
                  client: OrthancClient | str | None = None) -> pd.DataFrame:
        """This frame with a typed column per tag: its value at this frame's level.

        A tag of the series (study, patient) is the same in all its instances, so each row
        gets the value its instances share. The values are read for the instances of the
        rows (:meth:`instances`; a tag that is a column of ``df`` is taken from it, the others
        are fetched as :meth:`InstanceAccessor.with_tags` fetches them), and checked: a tag
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
            As for :meth:`InstanceAccessor.with_tags`.

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
        """The volume of the one series row (see :meth:`InstanceAccessor.volume`).

        ``df``: an instance frame holding its rows (else they are read from the server).

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> vol = s.iloc[[0]].orthanc.volume(df)                             # doctest: +SKIP
        """
        if self.level != "series" or len(self._df) != 1:
            raise SelectionError(
                f"volume() on a {self.level} frame needs exactly one series row; this frame has "
                f"{len(self._df)} {self.level} row(s). Pick one, e.g. series.iloc[[k]], or use "
                ".orthanc.volumes() for one volume per series.")
        client = kwargs.pop("client", None)
        return self.instances(df, client=client).orthanc.volume(client=client, **kwargs)

    def volumes(self, df: pd.DataFrame | None = None, **kwargs):
        """A lazy mapping ``series id -> DataArray`` over the frame's series (:meth:`instances`).

        Examples
        --------
        >>> vols = df.orthanc.series().orthanc.volumes(df)                   # doctest: +SKIP
        """
        client = kwargs.pop("client", None)
        return self.instances(df, client=client).orthanc.volumes(client=client, **kwargs)

    def mask(self, like, df: pd.DataFrame | None = None, *,
             client: OrthancClient | str | None = None, **options):
        """The rows' one SEG or RTSTRUCT instance as a mask on ``like``'s grid (:meth:`instances`).

        Examples
        --------
        >>> seg = df.orthanc.series().query("Modality == 'SEG'")             # doctest: +SKIP
        >>> m = seg.orthanc.mask(like=ct_volume, df=df)                      # doctest: +SKIP
        """
        return self.instances(df, client=client).orthanc.mask(like, client=client, **options)

    def thumbnails(self, df: pd.DataFrame | None = None, *, max_panels: int = MAX_PANELS,
                   source: str = "file", window=None,
                   percentiles: tuple[float, float] = PERCENTILES, columns: int | None = None,
                   panel_size: float = PANEL_INCHES, title: str | None = None, save=None,
                   max_workers: int | None = None,
                   progress: bool | tqdm | None = None, client: OrthancClient | str | None = None):
        """One middle slice per series, in a grid: a cohort checked by eye.

        A series frame gives a panel per row, in row order; a study or patient frame a panel
        per series of its rows. Per series one instance is fetched: the one holding its
        middle slice by position along the slice normal (not by InstanceNumber; among the
        slices of its most common orientation, so a localizer does not move it; a
        multi-frame instance shows its middle frame). It is shown the right way up
        (radiological, as ``vol.orthanc.plot()``), windowed, with the true aspect ratio, and
        titled with the patient (PatientID), study date, series number, modality and series
        description; under it, when the frame has ``volume_ok`` (``series(geometry=True)``),
        whether the series makes a volume and why not, else its slice count. A series that
        has no image (SR, RTSTRUCT ...) or cannot be decoded gets a panel saying why.

        Parameters
        ----------
        df : pandas.DataFrame, optional
            The instance frame the rows come from: the positions that choose the middle
            slice are read from it (no request). Without it, the instance rows of the series
            shown are read from the server first (two requests per series).
        max_panels : int, default 48
            Panels at most: the first ``max_panels`` series of the rows; the figure says
            under the grid how many were left out and how to see them.
        source : {"file", "rendered"}, default "file"
            Where the pixels come from. ``"file"``: the stored file, decoded here by pydicom
            (every transfer syntax pydicom reads; exact values, windowed as
            ``vol.orthanc.plot()`` windows). ``"rendered"``: Orthanc's ``/rendered`` PNG, an
            8-bit image the server decodes and windows (the file's window unless ``window``
            gives one; ``"auto"`` is not available). ``"file"`` measured faster on a
            loopback (4 against 10 ms a series on the benchmark archive, 7 against 11 ms for
            512 x 512 CT); ``"rendered"`` receives ~175x fewer bytes, so it wins over links
            slower than ~1 Gbit/s. See ``docs/volumes.md``, "Thumbnails".
        window : None, str or (center, width)
            ``None``: each panel its own (a CT's window from its file or soft tissue; the
            1st-99th percentiles of the slice for MR, PET and the rest). A preset name
            (``"lung"``, ``"bone"``, ``"brain"``, ``"soft tissue"``) for the CT panels, the
            others keeping theirs; ``"auto"``: percentiles everywhere; a pair: every panel.
        percentiles : (low, high), default (1, 99)
            The percentiles of the automatic window.
        columns : int, default 6
            Panels per row (six fill a 1400 px notebook at matplotlib's 100 dpi).
        panel_size : float, default 2.2
            Inches of each image's side.
        title : str, optional
            A title above the grid.
        save : str or path, optional
            Also write the figure there (``fig.savefig``; PNG by the file extension), e.g.
            for a report.
        max_workers : int, optional
            Series fetched at a time (default 4, at most the client's connection pool).
        progress : bool or tqdm, optional
            Progress bar over the series (default: shown when interactive, for 50+ series).
        client : OrthancClient or str, optional
            Defaults to the client of the frame's server.

        Returns
        -------
        matplotlib.figure.Figure
            The grid in one axes; each panel's image and texts carry its series id as their
            label and their part as gid (``"image"``, ``"title"``, ``"status"``, ``"error"``;
            see ``docs/volumes.md``). In a notebook end the line with ``;`` so that it shows
            once (as for ``vol.orthanc.plot()``).

        Examples
        --------
        >>> s = df.orthanc.series(geometry=True)                               # doctest: +SKIP
        >>> s[s.Modality == "CT"].orthanc.thumbnails(df);                       # doctest: +SKIP
        >>> s.orthanc.thumbnails(df, max_panels=400, save="cohort.png")        # doctest: +SKIP
        """

        return level_thumbnails(self._df, self.level, df, lambda: self.client(client),
                                max_panels=max_panels, source=source, window=window,
                                percentiles=percentiles, columns=columns, panel_size=panel_size,
                                title=title, save=save, max_workers=max_workers,
                                progress=progress)

    def headers(self, df: pd.DataFrame | None = None, *, progress: bool | tqdm | None = None,
                max_workers: int | None = None, errors: str = "raise",
                client: OrthancClient | str | None = None) -> pd.Series:
        """The headers of the instances of the frame's resources, indexed like those instance rows.

        See :meth:`InstanceAccessor.headers`; ``df`` as for :meth:`instances`.

        Examples
        --------
        >>> hdrs = df.orthanc.series().iloc[[0]].orthanc.headers(df)         # doctest: +SKIP
        """
        return self.instances(df, client=client).orthanc.headers(
            progress=progress, max_workers=max_workers, errors=errors, client=client)

    def download(self, folder: str | os.PathLike, df: pd.DataFrame | None = None, *,
                 layout: str = "flat", verify: str = "size", progress: bool | tqdm | None = None,
                 max_workers: int | None = None, errors: str = "raise",
                 client: OrthancClient | str | None = None) -> pd.Series:
        """Save the files of the instances of the frame's resources (:meth:`instances`).

        See :meth:`InstanceAccessor.download`; ``df`` as for :meth:`instances`.

        Examples
        --------
        >>> paths = df.orthanc.studies().iloc[[0]].orthanc.download("study0", df)  # doctest: +SKIP
        """
        return self.instances(df, client=client).orthanc.download(
            folder, layout=layout, verify=verify, progress=progress, max_workers=max_workers,
            errors=errors, client=client)

    def annotations(self, df: pd.DataFrame | None = None, *, progress: bool | tqdm | None = None,
                    max_workers: int | None = None, errors: str = "raise",
                    client: OrthancClient | str | None = None) -> pd.DataFrame:
        """The annotation table of the SEG/RTSTRUCT series among this frame's resources.

        See :meth:`InstanceAccessor.annotations`. ``df``: the instance frame this frame was
        made from (no listing request); without it the SEG/RTSTRUCT series of the rows are
        listed on the server (one request per SEG/RTSTRUCT series row, or per study/patient
        row; study rows whose ``modalities`` name neither are skipped).

        Examples
        --------
        >>> s = op.read_orthanc(url, level="series")                         # doctest: +SKIP
        >>> ann = s.orthanc.annotations()                                    # doctest: +SKIP
        """
        return annotations(self._df, self.level, lambda: self.client(client), instances=df,
                           progress=progress, max_workers=max_workers, errors=errors)

    def with_annotation(self, criteria: Mapping | None = None, /, *,
                        annotations: pd.DataFrame | None = None, df: pd.DataFrame | None = None,
                        case_sensitive: bool = False, progress: bool | tqdm | None = None,
                        max_workers: int | None = None, client: OrthancClient | str | None = None,
                        **criteria_kwargs) -> pd.DataFrame:
        """The rows annotated by a matching segment or ROI (see :meth:`InstanceAccessor.with_annotation`).

        Series rows: the source series of a match. Study and patient rows: those holding such
        a source series. ``df`` as for :meth:`annotations`.

        Examples
        --------
        >>> s = df.orthanc.series()                                          # doctest: +SKIP
        >>> s.orthanc.with_annotation(label="liver*", df=df)                 # doctest: +SKIP
        >>> df.orthanc.studies().orthanc.with_annotation(type_meaning="Liver", df=df)  # doctest: +SKIP
        """
        merged = merge_criteria(criteria, criteria_kwargs)
        if annotations is None:
            annotations = self.annotations(df, progress=progress, max_workers=max_workers,
                                           client=client)
        return with_annotation(self._df, self.level, annotations, merged,
                               case_sensitive=case_sensitive)

    def with_protocol(self, protocol: bool | Sequence[str] = True, *, df: pd.DataFrame | None = None,
                      progress: bool | tqdm | None = None, max_workers: int | None = None,
                      client: OrthancClient | str | None = None) -> pd.DataFrame:
        """This series frame with protocol columns (see :meth:`InstanceAccessor.series`, ``protocol``).

        ``df``: the instance frame this frame was made from (its rows are aggregated, as
        ``df.orthanc.series(protocol=...)`` does); without it every instance of each CT/MR/PT
        series row (each row, for a list of tags) is read on the server, one request per
        series. A tag that is a column of this frame is taken from it.

        Examples
        --------
        >>> s = op.read_orthanc(url, level="series")                         # doctest: +SKIP
        >>> s = s.orthanc.with_protocol()                                    # doctest: +SKIP
        >>> s[s.EchoTime_max < 10]                                           # doctest: +SKIP
        """
        if self.level != "series":
            raise SelectionError(f"Protocol columns are per series; this is a {self.level} frame. "
                                 "Use df.orthanc.series(protocol=True) or a series frame.")
        if df is not None:
            agg = series_protocol(self.instances(df), self._df.index.get_level_values("series"),
                                  protocol, lambda: self.client(client), max_workers=max_workers,
                                  progress=progress)
        else:
            agg = level_protocol(self._df, protocol, lambda: self.client(client),
                                 max_workers=max_workers, progress=progress)
        return add_protocol_columns(self._df, agg)

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


def _public(cls) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


#: What an instance frame's accessor offers and a level frame's does not.
INSTANCE_ONLY = frozenset(_public(InstanceAccessor) - _public(LevelAccessor))


def orthanc_accessor(df: pd.DataFrame) -> InstanceAccessor | LevelAccessor:
    """``df.orthanc``: the accessor that fits the frame.

    A series, study or patient frame (``attrs["orthanc"]["level"]`` and that level's index)
    gets a :class:`LevelAccessor`, an instance frame an :class:`InstanceAccessor`; any other
    frame raises :class:`~orthanc_pandas.errors.NotAnIndexError` (an ``AttributeError``, so
    ``hasattr(df, "orthanc")`` is ``False``).

    Examples
    --------
    >>> type(df.orthanc).__name__, type(df.orthanc.series().orthanc).__name__  # doctest: +SKIP
    ('InstanceAccessor', 'LevelAccessor')
    """
    if frame_level(df) == "instance":
        return InstanceAccessor(df)
    return LevelAccessor(df)


pd.api.extensions.register_dataframe_accessor("orthanc")(orthanc_accessor)
