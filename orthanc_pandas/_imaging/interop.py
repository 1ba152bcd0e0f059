"""Volumes -> other tools: the LPS affine, NIfTI (RAS), SimpleITK geometry, netCDF-safe attrs. Pure."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from orthanc_pandas.errors import GeometryError

#: Tolerance on ``D @ D.T == I`` for the direction cosines of the three axes.
ORTHONORMAL_ATOL = 1e-4


#: LPS -> RAS: DICOM's patient axes grow to the Left and Posterior, NIfTI's to the Right and
#: Anterior, so the first two world coordinates change sign.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def extra_missing(module: str, exc: Exception) -> ImportError:
    err = ImportError(f"{module} is needed for this: pip install 'orthanc-pandas[interop]' "
                      f"(or pip install {module}).")
    err.__cause__ = exc
    return err


def volume_affine(da: xr.DataArray) -> np.ndarray:
    a = da.attrs.get("affine")
    if a is None:
        raise GeometryError(
            "The volume has no affine (attrs['affine']): its slices have no position or "
            f"orientation (geometry={da.attrs.get('geometry', 'unknown')!r}), so it has no place "
            "in patient space. Only volumes with geometry 'regular' or 'irregular' can be exported "
            "with their geometry.")
    a = np.asarray(a, dtype=np.float64).reshape(4, 4)
    return a


def sitk_geometry(affine: np.ndarray, *, atol: float = ORTHONORMAL_ATOL
                  ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """ITK's origin, spacing and direction from a ``(z, y, x, 1) -> LPS`` affine.

    ITK indexes ``(i, j, k) = (x, y, z)`` (column, row, slice), in LPS like DICOM, so the
    columns of the affine are taken in reverse order; ``direction`` is ITK's row-major 3x3
    matrix whose *columns* are the unit vectors of the i, j and k axes.

    Parameters
    ----------
    affine : (4, 4) array
        Array indices ``(z, y, x, 1)`` to LPS mm, as in ``vol.attrs["affine"]``.
    atol : float
        Tolerance of the orthonormality check of the three axes.

    Returns
    -------
    origin, spacing, direction : tuples of 3, 3 and 9 floats

    Raises
    ------
    GeometryError
        The axes are not orthonormal (a sheared stack, e.g. from gantry tilt): ITK's direction
        would be wrong; resample the volume first (nothing is interpolated here).

    Examples
    --------
    >>> A = np.array([[0, 0, 0.8, -100], [0, 0.7, 0, -110], [2.5, 0, 0, 0], [0, 0, 0, 1]])
    >>> sitk_geometry(A)
    ((-100.0, -110.0, 0.0), (0.8, 0.7, 2.5), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    """
    a = np.asarray(affine, float)
    cols = a[:3, [2, 1, 0]]  # i = x, j = y, k = z
    spacing = np.linalg.norm(cols, axis=0)
    if np.any(spacing == 0):
        raise GeometryError(f"The affine has a zero-length axis (spacing {spacing.tolist()}).")
    d = cols / spacing
    if not np.allclose(d.T @ d, np.eye(3), atol=atol):
        raise GeometryError(
            "The volume's axes are not orthonormal (a sheared stack, e.g. gantry tilt: "
            f"D.T @ D = {np.round(d.T @ d, 6).tolist()}). ITK images need orthonormal "
            "directions; resample the volume onto a rectangular grid first.")
    return (tuple(float(v) for v in a[:3, 3]), tuple(float(v) for v in spacing),
            tuple(float(v) for v in d.ravel()))


def nifti_affine(affine: np.ndarray) -> np.ndarray:
    """The NIfTI (RAS) affine of a volume stored with voxel order ``(x, y, z)``.

    ``vol.values`` is ``(z, y, x)``; NIfTI's first index runs fastest on disk and is
    conventionally ``i``, so the data are written as ``vol.values.transpose(2, 1, 0)``
    (``i`` = column, ``j`` = row, ``k`` = slice) and the affine's first three columns are
    reversed; then LPS -> RAS negates the first two rows.

    Examples
    --------
    >>> A = np.array([[0, 0, 0.8, -100], [0, 0.7, 0, -110], [2.5, 0, 0, 0], [0, 0, 0, 1]])
    >>> nifti_affine(A).tolist()
    [[-0.8, 0.0, 0.0, 100.0], [0.0, -0.7, 0.0, 110.0], [0.0, 0.0, 2.5, 0.0], [0.0, 0.0, 0.0, 1.0]]
    """
    a = np.asarray(affine, float)
    return LPS_TO_RAS @ a[:, [2, 1, 0, 3]]


def _safe(value: Any) -> Any:
    """One attribute value as netCDF allows it (str, number, or flat list of numbers)."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        flat = np.asarray(value, dtype=object).ravel().tolist() if value else []
        if flat and all(isinstance(v, (int, float, np.integer, np.floating))
                        and not isinstance(v, (bool, np.bool_)) for v in flat):
            return [float(v) for v in flat] if any(isinstance(v, (float, np.floating)) for v in flat) \
                else [int(v) for v in flat]
        if flat and all(isinstance(v, str) for v in flat):
            return flat
    return json.dumps(value, default=str)


def netcdf_safe_attrs(attrs: dict) -> dict:
    """A copy of ``attrs`` that netCDF can store: None dropped, bools as 0/1, nested lists
    flattened row-major, anything else (dicts, mixed lists) as a JSON string.

    Examples
    --------
    >>> netcdf_safe_attrs({"a": True, "b": None, "c": [[1.0, 2.0], [3.0, 4.0]], "d": {"k": 1}})
    {'a': 1, 'c': [1.0, 2.0, 3.0, 4.0], 'd': '{"k": 1}'}
    """
    return {str(k): _safe(v) for k, v in attrs.items() if v is not None}
