"""The mask of one SEG or RTSTRUCT instance of a frame: download it, rasterise it."""

from __future__ import annotations

import io

import pandas as pd

from orthanc_pandas._imaging.masks import RTSTRUCT_SOP_CLASS, SEG_SOP_CLASS, rtstruct_mask, seg_mask
from orthanc_pandas.errors import SelectionError


# -- rows of a frame ----------------------------------------------------------------------
def mask(rows: pd.DataFrame, client, like, **kwargs):
    """The mask of the one SEG or RTSTRUCT instance in ``rows`` on ``like``'s grid.

    Called by ``rows.orthanc.mask(like=...)``; ``kwargs`` go to :func:`seg_mask` (``atol``,
    ``plane_atol``) or :func:`rtstruct_mask` (``rule``, ``atol``).

    Examples
    --------
    >>> seg = df[df.Modality == "SEG"]                              # doctest: +SKIP
    >>> m = seg.orthanc.mask(like=df[df.Modality == "CT"].orthanc.volume())  # doctest: +SKIP
    """
    import pydicom

    ids = list(dict.fromkeys(rows.index.get_level_values("instance")))
    if len(ids) != 1:
        raise SelectionError(
            f"mask() needs the rows of exactly one SEG or RTSTRUCT instance; these rows hold "
            f"{len(ids)} instances. Pick one, e.g. df[df.Modality == 'SEG'].iloc[[0]].")
    ds = pydicom.dcmread(io.BytesIO(client.get_bytes(f"/instances/{ids[0]}/file")), force=True)
    sop_class = str(getattr(ds, "SOPClassUID", ""))
    modality = str(getattr(ds, "Modality", ""))
    if sop_class == SEG_SOP_CLASS or modality == "SEG":
        return seg_mask(ds, like, **kwargs)
    if sop_class == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return rtstruct_mask(ds, like, **kwargs)
    raise SelectionError(
        f"mask() needs a SEG or RTSTRUCT instance; this one is {modality or 'of no modality'} "
        f"(SOP class {sop_class}). Select it with df[df.Modality.isin(['SEG', 'RTSTRUCT'])].")
