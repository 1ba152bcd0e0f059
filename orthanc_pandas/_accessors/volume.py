"""``vol.orthanc``: interop on the volumes that ``df.orthanc.volume()`` returns.

The accessor reads only ``attrs["affine"]`` (16 floats, the row-major 4x4 matrix from array
indices in dims order ``(z, y, x, 1)`` to LPS millimetres) and the array itself, never the
``x``/``y``/``z`` coordinate values, so it works whatever origin those coordinates use.

* ``vol.orthanc.affine``: the 4x4 matrix as a numpy array.
* ``vol.orthanc.to_sitk()``: a SimpleITK image (``pip install 'orthanc-pandas[interop]'``).
* ``vol.orthanc.to_nifti(path)``: a NIfTI-1 file in RAS (nibabel, same extra).
* ``vol.orthanc.to_netcdf(path)``: netCDF with netCDF-safe attrs; works in a base install
  (h5netcdf is a dependency).

Importing :mod:`orthanc_pandas` registers the accessor. See ``docs/interop.md``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from orthanc_pandas._imaging.interop import (
    ORTHONORMAL_ATOL,
    extra_missing,
    netcdf_safe_attrs,
    nifti_affine,
    sitk_geometry,
    volume_affine,
)
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
