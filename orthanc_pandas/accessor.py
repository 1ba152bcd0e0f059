"""``df.orthanc``: the thin, stateless accessor on Orthanc index frames.

It validates the frame, finds the client, and calls the modules that do the work. pandas
builds a new accessor object on every ``df.orthanc`` access, so nothing lives on it.
"""

from __future__ import annotations

import pandas as pd

from .client import OrthancClient, get_client
from .errors import NotAnIndexError, OrthancPandasError, SelectionError
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

    # -- freshness (refresh.py) ----------------------------------------------------------

    # -- volumes (volume.py) -------------------------------------------------------------
    def volume(self, *, rescale: bool = True, allow_irregular: bool = False, dtype="float32",
               max_workers: int | None = None, progress=None, client=None):
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
        from .pixels import DEFAULT_WORKERS, fetch_datasets
        from .volume import from_datasets

        series = self._df.index.get_level_values("series").unique()
        if len(series) != 1:
            raise SelectionError(
                f"volume() needs the rows of exactly one series; these rows hold {len(series)} "
                "series. Pick one, e.g. df.orthanc.select(SeriesInstanceUID=...) or "
                "df.xs(series_id, level='series', drop_level=False), or use df.orthanc.volumes() "
                "for one volume per series."
            )
        ids = list(dict.fromkeys(self._df.index.get_level_values("instance")))
        cl = self.client(client)
        workers = DEFAULT_WORKERS if max_workers is None else max_workers
        # Decoding happens in the download threads (overlapping the network); the encoded
        # bytes are dropped file by file, so memory holds the stored pixels + the volume.
        datasets, arrays = fetch_datasets(cl, ids, max_workers=workers, progress=progress,
                                          desc=f"Series {series[0][:8]}", decode=True)
        # Filling is a memory-bound copy/rescale per slice: one thread is fastest (measured:
        # 4 threads cost 3x the CPU on 2 cores for no gain in wall time).
        vol = from_datasets(datasets, instances=ids, rescale=rescale,
                            allow_irregular=allow_irregular, dtype=dtype, arrays=arrays,
                            max_workers=1, release=True, progress=False)
        vol.attrs["orthanc_series"] = str(series[0])
        return vol

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
        from .volume import LazyVolumes

        return LazyVolumes(self._df, kwargs)


    # -- scale (dask.py) -----------------------------------------------------------------

    def __repr__(self) -> str:
        c = self.counts
        src = self._df.attrs.get("orthanc", {}).get("url", "unknown server")
        return (f"<orthanc accessor: {c['patients']} patients, {c['studies']} studies, "
                f"{c['series']} series, {c['instances']} instances from {src}>")
