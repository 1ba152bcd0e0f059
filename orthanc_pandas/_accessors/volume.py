"""``vol.orthanc``: interop on the volumes that ``df.orthanc.volume()`` returns.

The accessor reads only ``attrs["affine"]`` (16 floats, the row-major 4x4 matrix from array
indices in dims order ``(z, y, x, 1)`` to LPS millimetres) and the array itself, never the
``x``/``y``/``z`` coordinate values, so it works whatever origin those coordinates use.

* ``vol.orthanc.affine``: the 4x4 matrix as a numpy array.
* ``vol.orthanc.to_sitk()``: a SimpleITK image (``pip install 'orthanc-pandas[interop]'``).
* ``vol.orthanc.to_nifti(path)``: a NIfTI-1 file in RAS (nibabel, same extra).
* ``vol.orthanc.to_netcdf(path)``: netCDF with netCDF-safe attrs; works in a base install
  (h5netcdf is a dependency).
* ``vol.orthanc.to_seg(mask, labels)``: a DICOM SEG of the volume's source instances
  (highdicom, ``pip install 'orthanc-pandas[masks]'``); ``upload=True`` stores it in the
  source Orthanc and returns its rows. See ``docs/interop.md``, "Writing a SEG".
* ``vol.orthanc.plot()``: a slice the right way up (radiological), windowed, in mm, with
  optional mask contours; three planes with ``view="three"`` (``pip install
  'orthanc-pandas[plot]'``). See ``docs/volumes.md``, "Looking at a volume".

Importing :mod:`orthanc_pandas` registers the accessor. See ``docs/interop.md``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from orthanc_pandas._imaging.display import PERCENTILES, plot_volume
from orthanc_pandas._imaging.interop import (
    ORTHONORMAL_ATOL,
    extra_missing,
    netcdf_safe_attrs,
    nifti_affine,
    sitk_geometry,
    volume_affine,
)
from orthanc_pandas._imaging.masks import GRID_ATOL
from orthanc_pandas._ops.seg import to_seg
from orthanc_pandas.errors import NotAVolumeError


@xr.register_dataarray_accessor("orthanc")
class VolumeAccessor:
    """Geometry and export for a volume from ``df.orthanc.volume()``.

    Examples
    --------
    >>> vol = ct.orthanc.volume()                                # doctest: +SKIP
    >>> vol.orthanc.affine @ [0, 0, 0, 1]                        # doctest: +SKIP
    array([-100., -110.,    0.,    1.])
    >>> img = vol.orthanc.to_sitk()                              # doctest: +SKIP
    >>> vol.orthanc.to_nifti("ct.nii.gz")                        # doctest: +SKIP
    """

    def __init__(self, da: xr.DataArray):
        if "y" not in da.dims or "x" not in da.dims:
            raise NotAVolumeError(
                f"vol.orthanc needs a volume with dims ('z', 'y', 'x') as df.orthanc.volume() "
                f"gives; this DataArray has dims {da.dims}.")
        self._da = da

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 matrix from array indices ``(z, y, x, 1)`` to LPS mm (a new array)."""
        return volume_affine(self._da)

    def _spatial(self, allow_colour: bool) -> xr.DataArray:
        da = self._da
        want = ("z", "y", "x", "c") if allow_colour and "c" in da.dims else ("z", "y", "x")
        if tuple(da.dims) != want:
            extra = [d for d in da.dims if d not in want]
            hint = (f" Pick one first, e.g. vol.isel({extra[0]}=0)." if extra else
                    f" Reorder with vol.transpose{want}.")
            raise ValueError(f"Export needs dims {want}; this volume has {da.dims}.{hint}")
        return da

    def to_sitk(self, *, atol: float = ORTHONORMAL_ATOL):
        """A ``SimpleITK.Image`` with the volume's voxels, origin, spacing and direction.

        ITK's index ``(i, j, k)`` is ``(x, y, z)`` of the DataArray and its physical space is
        LPS, as DICOM's: ``img.TransformIndexToPhysicalPoint((c, r, k))`` equals
        ``vol.orthanc.affine @ [k, r, c, 1]``. Colour volumes become vector images.

        Parameters
        ----------
        atol : float
            Tolerance of the orthonormality check of the axes.

        Raises
        ------
        ImportError
            SimpleITK is not installed (``pip install 'orthanc-pandas[interop]'``).
        GeometryError
            No affine, or a sheared one (ITK needs orthonormal directions).

        Examples
        --------
        >>> img = vol.orthanc.to_sitk()                               # doctest: +SKIP
        >>> img.GetSize()                                             # (x, y, z)  # doctest: +SKIP
        """
        try:
            import SimpleITK as sitk
        except ImportError as exc:
            raise extra_missing("SimpleITK", exc) from exc
        da = self._spatial(allow_colour=True)
        origin, spacing, direction = sitk_geometry(self.affine, atol=atol)
        values = np.ascontiguousarray(da.values)
        if values.dtype == bool:
            values = values.astype(np.uint8)
        img = sitk.GetImageFromArray(values, isVector="c" in da.dims)
        img.SetOrigin(origin)
        img.SetSpacing(spacing)
        img.SetDirection(direction)
        return img

    def to_nifti(self, path=None, *, dtype=None):
        """Write (or return) a NIfTI-1 image in RAS, as NIfTI readers expect.

        Voxel order: the data are ``vol.values.transpose(2, 1, 0)``, i.e. NIfTI ``(i, j, k)``
        = DataArray ``(x, y, z)`` (column, row, slice); the affine is
        :func:`nifti_affine` of ``vol.orthanc.affine`` (columns reversed, LPS -> RAS). Both
        sform and qform are set (code 1, scanner), the qform only when the axes are
        orthonormal (a qform cannot hold a shear). ``xyzt_units`` = mm.

        Parameters
        ----------
        path : str or path, optional
            Where to write (``.nii`` or ``.nii.gz``); ``None`` only returns the image.
        dtype : numpy dtype, optional
            Type of the stored voxels (default: the volume's; bool masks become uint8).

        Returns
        -------
        nibabel.Nifti1Image

        Examples
        --------
        >>> vol.orthanc.to_nifti("ct.nii.gz")                         # doctest: +SKIP
        >>> nib.load("ct.nii.gz").affine                              # doctest: +SKIP
        """
        try:
            import nibabel as nib
        except ImportError as exc:
            raise extra_missing("nibabel", exc) from exc
        da = self._spatial(allow_colour=False)
        aff = nifti_affine(self.affine)
        data = np.asarray(da.values).transpose(2, 1, 0)
        if dtype is not None:
            data = data.astype(dtype)
        elif data.dtype == bool:
            data = data.astype(np.uint8)
        img = nib.Nifti1Image(data, None)
        img.set_sform(aff, code=1)
        d = aff[:3, :3] / np.linalg.norm(aff[:3, :3], axis=0)
        if np.allclose(d.T @ d, np.eye(3), atol=ORTHONORMAL_ATOL):
            img.set_qform(aff, code=1)
        else:
            img.set_qform(None, code=0)
        img.header.set_xyzt_units("mm")
        if path is not None:
            nib.save(img, str(path))
        return img

    def to_netcdf(self, path=None, **kwargs):
        """``DataArray.to_netcdf`` with netCDF-safe attrs (on the array and its coords).

        Any installed backend works (xarray's order: netCDF4, h5netcdf, scipy); h5netcdf is
        a dependency, so a base install can write. ``np.reshape(xr.open_dataarray(path)
        .attrs["affine"], (4, 4))`` gives the affine back.

        Examples
        --------
        >>> vol.orthanc.to_netcdf("ct.nc")                            # doctest: +SKIP
        >>> back = xr.open_dataarray("ct.nc")                         # doctest: +SKIP
        """
        da = self._da.copy(deep=False)
        da.attrs = netcdf_safe_attrs(da.attrs)
        for name in da.coords:
            da.coords[name].attrs = netcdf_safe_attrs(da.coords[name].attrs)
        if da.name is None:
            da.name = "volume"
        return da.to_netcdf(path, **kwargs)

    def plot(self, *, plane: str | None = None, index=None, view: str = "single", window=None,
             percentiles: tuple[float, float] = PERCENTILES, mask=None,
             mask_style: str = "contour", overlay=None, overlay_window=None,
             overlay_cmap: str = "hot", overlay_alpha: float = 0.5, letters: bool = True,
             ax=None, figsize=None, interactive: bool = False):
        """Show a slice as a radiologist would: right way up, gray, windowed, mm axes.

        Radiological convention, decided from ``attrs["direction"]`` (the LPS axes of ``z``,
        ``y``, ``x``), whatever plane the series was acquired in:

        * axial: anterior at the top, the patient's right on the screen's left (for the
          usual axial acquisition this is ``pixel_array``: row 0 at the top);
        * coronal: superior at the top, the patient's right on the screen's left;
        * sagittal: superior at the top, anterior on the screen's left.

        Orientation letters mark the four edges. The axes are the volume's own ``x``/``y``/``z``
        coordinates in mm with ``aspect="equal"``, so the pixel spacing shows true; the title
        is the series description, modality, plane, slice position and window (never a UID).

        Parameters
        ----------
        plane : {"axial", "coronal", "sagittal"}, optional
            Which plane; default the acquired one (the plane of the slices). A plane cuts the
            array dim closest to its normal: for an axial stack, axial takes a ``z`` index,
            coronal a ``y`` index and sagittal an ``x`` index.
        index : int, optional
            The slice along that dim (default the middle one); with ``view="three"`` a dict
            such as ``{"axial": 40, "sagittal": 256}``.
        view : {"single", "three"}
            One plane, or axial, coronal and sagittal side by side (1 x 3 axes).
        window : None, str or (center, width)
            ``"soft tissue"`` (W400 L40), ``"lung"`` (W1500 L-600), ``"bone"`` (W1800 L400),
            ``"brain"`` (W80 L40) for volumes in HU; ``"auto"`` for the ``percentiles``; or
            ``(center, width)``. Default: for CT in HU the file's window, else soft tissue;
            for MR, PET and anything else the 1st-99th percentiles of the volume.
        percentiles : (low, high)
            Percentiles of the automatic window.
        mask : DataArray or array, optional
            On the volume's grid: boolean ``(z, y, x)`` (one structure), integer labels
            (one structure per nonzero value), or ``(segment|roi, z, y, x)`` as
            ``seg_rows.orthanc.mask(like=vol)`` gives (named by that coordinate). Drawn in
            colours with a legend.
        mask_style : {"contour", "fill"}
            Outlines, or translucent fills.
        overlay : DataArray, optional
            A second volume on the same grid (a PET resampled onto the CT), drawn with
            ``overlay_cmap`` at ``overlay_alpha`` above its window's low end; its window is
            ``overlay_window`` (same choices as ``window``; default by its own modality).
        letters : bool
            Orientation letters at the image edges.
        ax : matplotlib Axes, optional
            Draw into it (one plane only).
        figsize : (width, height), optional
        interactive : bool
            In Jupyter: a slider per plane that moves through the slices (ipywidgets).

        Returns
        -------
        matplotlib.figure.Figure
            The figure (one axes per plane; ``fig.axes[0].images[0]`` holds the windowed
            gray levels in ``[0, 1]`` as displayed, row 0 at the top). End a notebook cell
            with ``;`` so that it is not shown twice. With ``interactive=True``: an
            ``ipywidgets.VBox`` of the sliders and the image, whose ``.figure`` is the Figure.

        Raises
        ------
        ImportError
            matplotlib (or, for ``interactive``, ipywidgets) is missing:
            ``pip install 'orthanc-pandas[plot]'``.
        ValueError
            An unknown plane, view or window; a HU preset on values that are not HU; a mask or
            overlay that is not on the volume's grid.

        Examples
        --------
        >>> vol.orthanc.plot();                                       # doctest: +SKIP
        >>> vol.orthanc.plot(plane="coronal", window="bone");         # doctest: +SKIP
        >>> vol.orthanc.plot(view="three", mask=seg_rows.orthanc.mask(like=vol));  # doctest: +SKIP
        >>> vol.isel(z=40).orthanc.plot(window="lung");               # doctest: +SKIP
        >>> vol.orthanc.plot(interactive=True)                        # doctest: +SKIP
        """
        return plot_volume(self._da, plane=plane, index=index, view=view, window=window,
                           percentiles=percentiles, mask=mask, mask_style=mask_style,
                           overlay=overlay, overlay_window=overlay_window,
                           overlay_cmap=overlay_cmap, overlay_alpha=overlay_alpha,
                           letters=letters, ax=ax, figsize=figsize, interactive=interactive)

    def to_seg(self, mask, labels=None, *, codes=None, fractional: bool = False,
               fractional_type: str = "PROBABILITY", algorithm: str | None = None,
               algorithm_version: str | None = None, algorithm_type: str | None = None,
               algorithm_family="ArtificialIntelligence", series_description: str | None = None,
               series_number: int | None = None, series_instance_uid: str | None = None,
               sop_instance_uid: str | None = None, content_label: str | None = None,
               content_description: str | None = None, content_creator_name: str | None = None,
               upload: bool = False, orthanc_labels=None, sources=None, atol: float = GRID_ATOL,
               max_workers: int | None = None, progress=None, client=None):
        """A DICOM SEG of ``mask`` on the volume's source instances; stored with ``upload=True``.

        The SEG is written by highdicom on the headers of the instances the volume was read
        from (``pip install 'orthanc-pandas[masks]'``). Each source image is placed by its own
        ImagePositionPatient, ImageOrientationPatient and PixelSpacing, never by its rank, so
        the SEG lies on its source pixels for axial, sagittal and oblique series, in whatever
        dims order the volume and the mask are (a DataArray mask is matched by dim names). A
        mask that is not on the volume's grid is refused. See ``docs/interop.md``, "Writing a
        SEG".

        Parameters
        ----------
        mask : DataArray or array
            On the volume's grid. One segment: booleans (or 0/1) of the volume's shape. Several:
            a ``segment`` dim (``roi`` too), or a numpy array with segments first, one boolean
            mask each (they may overlap); or an integer label map, value ``k`` being segment
            ``k`` (0: background). A numpy array is read in the volume's dims order
            (``vol.dims``); a DataArray by its dim names, and its ``z``/``y``/``x`` coordinates
            and ``attrs["affine"]`` must be the volume's. With ``fractional=True``: values in
            [0, 1].
        labels : str, list of str or dict, optional
            SegmentLabel of each segment: one string for one segment; a list in segment order
            (for a label map, ``labels[k - 1]`` names value ``k``); or ``{k: label}`` with keys
            1..n for a label map. Default: the ``segment`` coordinate of a DataArray mask (as
            ``seg_rows.orthanc.mask(like=vol)`` gives).
        codes : dict, optional
            ``label -> type`` or ``label -> (category, type)``: segmented property codes, each a
            pydicom ``Code``, a highdicom ``CodedConcept``, a ``(value, scheme, meaning)`` tuple
            or a ``pydicom.sr.codedict.codes.SCT`` keyword (``"Liver"``). Labels without an entry
            are looked up in DICOM's segmentation property types ("liver" -> SCT 10200004
            Liver, category Anatomical Structure; "tumor" -> Neoplasm), else Tissue / Tissue.
        fractional : bool, default False
            ``False``: a BINARY SEG (1 bit per pixel). ``True``: FRACTIONAL, values in [0, 1]
            stored as ``round(value * 255)``.
        fractional_type : {"PROBABILITY", "OCCUPANCY"}
        algorithm, algorithm_version : str, optional
            The algorithm that made the mask (AlgorithmName and AlgorithmVersion, both or
            neither); then the segments are ``"AUTOMATIC"``, else ``"MANUAL"``.
        algorithm_type : {"AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"}, optional
        algorithm_family : str or code, default "ArtificialIntelligence"
            A keyword of CID 7162 (``codes.cid7162``) or a code.
        series_description : str, optional
            Default ``"Segmentation: "`` and the labels (at most 64 characters).
        series_number : int, optional
            Default 1000 + the source series' number.
        series_instance_uid, sop_instance_uid : str, optional
            Default: new UIDs. Fixed UIDs make a rerun store nothing new (Orthanc keeps the
            instance it has: ``AlreadyStored``).
        content_label, content_description, content_creator_name : str, optional
            ContentLabel (default highdicom's, e.g. ``"CT_SEG"``), ContentDescription,
            ContentCreatorName.
        upload : bool, default False
            Store the SEG in the Orthanc the volume was read from (``attrs["orthanc_url"]``, or
            ``client``) and return its rows instead of the dataset.
        orthanc_labels : str or list of str, optional
            Orthanc labels (Orthanc >= 1.12) put on the stored SEG instance (with ``upload``).
        sources : list of pydicom.Dataset, optional
            The source instances' datasets (headers are enough); default: read from the
            server (up to their pixel data, ``max_workers`` at a time).
        atol : float
            Tolerance, in voxels, of the grid checks and of each image's place.
        max_workers : int, optional
        progress : bool or tqdm, optional
            Progress bar over the source headers read.
        client : OrthancClient or str, optional
            Default: the client registered for the volume's server.

        Returns
        -------
        highdicom.seg.Segmentation or pandas.DataFrame
            Without ``upload``: the SEG, a ``pydicom.Dataset`` (``seg.save_as("seg.dcm")``).
            With ``upload``: the new instance's rows, an index frame as a fresh read (or
            ``df.orthanc.refresh()``) gives them, on which ``.orthanc`` works
            (``rows.orthanc.mask(like=vol)``).

        Raises
        ------
        ImportError
            highdicom is missing: ``pip install 'orthanc-pandas[masks]'``.
        MaskGeometryError
            The mask is not on the volume's grid (its shape, coordinates or affine differ: the
            message says which), or a source image is not where the volume says.
        GeometryError
            The volume has no geometry, or sources a SEG cannot reference frame by frame
            (several multi-frame images, mosaics, frames without per-frame positions).
        SelectionError
            Labels, codes, values or options that do not fit (values other than 0/1 without
            ``fractional``, a label map value without a label, ...).
        ServerCapabilityError
            ``orthanc_labels`` on Orthanc < 1.12 (checked before anything is stored).

        Examples
        --------
        >>> ct = df[df.SeriesInstanceUID == "1.2.3"].orthanc.volume()            # doctest: +SKIP
        >>> liver = model(ct.values) > 0.5                                        # doctest: +SKIP
        >>> rows = ct.orthanc.to_seg(liver, "liver", algorithm="nnU-Net", algorithm_version="2.5",
        ...                          upload=True, orthanc_labels="ai-draft")   # doctest: +SKIP
        >>> rows.orthanc.mask(like=ct)                       # the same voxels back  # doctest: +SKIP
        >>> seg = ct.orthanc.to_seg(labelmap, ["liver", "spleen"])                 # doctest: +SKIP
        >>> seg.save_as("seg.dcm")                                                 # doctest: +SKIP
        """
        return to_seg(self._da, mask, labels, client=client, sources=sources, upload=upload,
                      orthanc_labels=orthanc_labels, max_workers=max_workers, progress=progress,
                      codes=codes, fractional=fractional, fractional_type=fractional_type,
                      algorithm=algorithm, algorithm_version=algorithm_version,
                      algorithm_type=algorithm_type, algorithm_family=algorithm_family,
                      atol=atol, series_description=series_description,
                      series_number=series_number, series_instance_uid=series_instance_uid,
                      sop_instance_uid=sop_instance_uid, content_label=content_label,
                      content_description=content_description,
                      content_creator_name=content_creator_name)
