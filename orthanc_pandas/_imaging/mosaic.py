"""Siemens mosaics: one stored image that tiles the slices of a volume. Pure: no HTTP.

Siemens MR (most fMRI and diffusion data) stores each volume of a series as ONE image whose
``ImageType`` contains ``MOSAIC``: ``n`` slices of ``r x c`` pixels tiled row by row into a
square grid of ``ceil(sqrt(n))`` tiles a side, padded with empty tiles. The header describes
the tiled image, not the slices:

* ``n`` is in the Siemens CSA image header (``NumberOfImagesInMosaic``), read here with
  nibabel's CSA reader (the ``interop`` extra), or in the private element (0019,100A);
* ``ImagePositionPatient`` is the top-left corner of the *whole* tiled image, so the first
  slice's corner is ``(R - r) / 2`` rows and ``(C - c) / 2`` columns further along the image
  axes (nibabel's ``MosaicWrapper.image_position``, dcm2niix's ``nii_SliceBy3D`` fix);
* the slices follow each other along the CSA ``SliceNormalVector`` (which may point against
  the cross product of the row and column directions) at ``SpacingBetweenSlices`` (else
  ``SliceThickness``).

A mosaic whose slice count or slice direction cannot be read is refused with a
:class:`~orthanc_pandas.errors.MissingGeometryError`, never returned as one big slice.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from orthanc_pandas.errors import MissingGeometryError

#: the private element Siemens also writes the slice count to: (0019,100A) US
_N_IMAGES_TAG = 0x0019100A


@dataclass(frozen=True)
class MosaicLayout:
    """How a mosaic image holds its slices: count, tile grid, tile size, positions."""

    count: int  # slices in the mosaic
    grid: int  # tiles per side of the square grid
    rows: int  # rows of one slice
    columns: int  # columns of one slice
    positions: np.ndarray  # (count, 3) LPS position of each slice's first voxel, in tile order


def is_mosaic(ds) -> bool:
    """Whether a dataset's ImageType says MOSAIC (Siemens tiled slices).

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    >>> is_mosaic(ds)
    True
    """
    image_type = ds.get("ImageType")
    if image_type is None:
        return False
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return any(str(v).strip().upper() == "MOSAIC" for v in values)


def _csa(ds):
    try:
        with warnings.catch_warnings():  # nibabel warns that its DICOM *readers* are experimental
            warnings.simplefilter("ignore", UserWarning)
            from nibabel.nicom import csareader  # optional: the "interop" extra
    except ImportError:
        return None, None
    try:
        header = csareader.get_csa_header(ds, "image")
    except Exception:  # a damaged CSA header: fall back to the plain element, or refuse
        return csareader, None
    return csareader, header


def _refuse(ds, why: str) -> MissingGeometryError:
    uid = str(ds.get("SOPInstanceUID", ""))
    return MissingGeometryError(
        f"A Siemens mosaic whose slices cannot be placed: {why} (instance {uid or '?'}, "
        "ImageType MOSAIC: slices tiled into one image), so no volume is built from it. "
        "Install nibabel (pip install 'orthanc-pandas[interop]') to read the Siemens CSA header, "
        "or convert the series with dcm2niix.", slices=[uid] if uid else [])


def mosaic_layout(ds) -> MosaicLayout:
    """The slices of a mosaic dataset: count, tile size and each slice's position.

    Raises
    ------
    MissingGeometryError
        When the slice count, the slice direction or the image geometry is missing.

    Examples
    --------
    >>> from orthanc_pandas.testing.synthetic import make_mosaic
    >>> layout = mosaic_layout(make_mosaic(5, 4, 6))
    >>> layout.count, layout.grid, (layout.rows, layout.columns)
    (5, 3, (4, 6))
    """
    reader, csa = _csa(ds)
    count = None
    if csa is not None:
        try:
            count = reader.get_n_mosaic(csa)
        except (KeyError, ValueError, IndexError):
            count = None
    if not count and _N_IMAGES_TAG in ds:
        count = ds[_N_IMAGES_TAG].value
        count = int(count[0] if isinstance(count, list | tuple) else count) if count else None
    if not count:
        raise _refuse(ds, "its slice count (CSA NumberOfImagesInMosaic or (0019,100A)) is missing")
    grid = math.ceil(math.sqrt(count))
    big_rows, big_cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if not big_rows or big_rows % grid or big_cols % grid:
        raise _refuse(ds, f"its {big_rows} x {big_cols} pixels do not split into a "
                          f"{grid} x {grid} grid of {count} slices")
    rows, cols = big_rows // grid, big_cols // grid
    iop, ipp, ps = ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"), \
        ds.get("PixelSpacing")
    if iop is None or ipp is None or ps is None or len(iop) != 6 or len(ipp) != 3 or len(ps) != 2:
        raise _refuse(ds, "ImagePositionPatient, ImageOrientationPatient or PixelSpacing is missing")
    row_dir, col_dir = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = None
    if csa is not None:
        try:
            normal = reader.get_slice_normal(csa)
        except (KeyError, ValueError, IndexError):
            normal = None
    if normal is None:
        raise _refuse(ds, "the direction its slices follow each other in (CSA SliceNormalVector) "
                          "is not readable")
    normal = np.asarray(normal, float)
    normal = normal / np.linalg.norm(normal)
    spacing = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    if not spacing:
        raise _refuse(ds, "neither SpacingBetweenSlices nor SliceThickness gives the slice spacing")
    row_spacing, col_spacing = float(ps[0]), float(ps[1])
    first = (np.array(ipp, float) + col_dir * row_spacing * (big_rows - rows) / 2
             + row_dir * col_spacing * (big_cols - cols) / 2)
    positions = first + np.arange(count)[:, None] * float(spacing) * normal
    return MosaicLayout(count=count, grid=grid, rows=rows, columns=cols, positions=positions)


def split_mosaic(pixels: np.ndarray, layout: MosaicLayout) -> np.ndarray:
    """The tiled image ``(R, C[, 3])`` as ``(count, rows, columns[, 3])`` slices, in tile order.

    A mosaic of one slice gives that slice ``(rows, columns[, 3])``, as a single frame is.

    Examples
    --------
    >>> import numpy as np
    >>> layout = MosaicLayout(count=3, grid=2, rows=1, columns=2, positions=np.zeros((3, 3)))
    >>> split_mosaic(np.arange(8).reshape(2, 4), layout)[:, 0]
    array([[0, 1],
           [2, 3],
           [4, 5]])
    """
    g, r, c = layout.grid, layout.rows, layout.columns
    tiles = pixels.reshape((g, r, g, c) + pixels.shape[2:])
    tiles = np.moveaxis(tiles, 2, 1).reshape((g * g, r, c) + pixels.shape[2:])
    return np.ascontiguousarray(tiles[0] if layout.count == 1 else tiles[:layout.count])
