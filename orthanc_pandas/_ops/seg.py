"""``vol.orthanc.to_seg()``: a mask -> a DICOM SEG of the volume's source instances, stored back.

The pure work (the grid checks, the segments, the placement on each source image, highdicom)
is in :mod:`orthanc_pandas._imaging.seg`; here are the requests: the source instances' headers
(read up to their pixel data, which a SEG does not need), the upload, the Orthanc labels, and
the new instance's rows.
"""

from __future__ import annotations

import pandas as pd

from orthanc_pandas._frame.matching import encode_criteria
from orthanc_pandas._frame.schema import INDEX_NAMES, LEVELS, sort_order
from orthanc_pandas._http.client import OrthancClient
from orthanc_pandas._imaging.seg import build_seg, seg_bytes, seg_plan
from orthanc_pandas._ops.files import classify_upload
from orthanc_pandas._ops.headers import read_headers
from orthanc_pandas._ops.labels import add_labels, check_labels, require_labels
from orthanc_pandas._ops.provenance import STAT_KEYS
from orthanc_pandas._ops.read import provenance
from orthanc_pandas._ops.refresh import fetch_series
from orthanc_pandas._ops.source import volume_client
from orthanc_pandas._version import __version__
from orthanc_pandas.errors import BulkError, SelectionError

#: Options of :func:`~orthanc_pandas._imaging.seg.seg_plan` (the rest go to ``build_seg``).
PLAN_OPTIONS = ("codes", "fractional", "fractional_type", "algorithm", "algorithm_version",
                "algorithm_type", "algorithm_family", "atol", "plane_atol")


def to_seg(vol, mask, labels=None, *, client: OrthancClient | str | None = None, sources=None,
           upload: bool = False, orthanc_labels=None, max_workers: int | None = None,
           progress=None, **options):
    """The SEG of ``mask`` on ``vol``'s source instances; stored in Orthanc with ``upload``.

    The parameters, result and errors are those of
    :meth:`orthanc_pandas._accessors.volume.VolumeAccessor.to_seg`.

    Examples
    --------
    >>> rows = to_seg(vol, vol > 100, "bone", upload=True)               # doctest: +SKIP
    """
    if isinstance(orthanc_labels, str):
        orthanc_labels = [orthanc_labels]
    if orthanc_labels is not None and not upload:
        raise SelectionError("orthanc_labels= are put on the stored SEG: they need upload=True.")
    marks = check_labels(orthanc_labels) if orthanc_labels else []
    plan = seg_plan(vol, mask, labels, **{k: v for k, v in options.items() if k in PLAN_OPTIONS})
    conn = volume_client(vol, client) if (sources is None or upload) else None
    if marks:
        require_labels(conn)  # before anything is stored: no half-done write on Orthanc < 1.12
    if sources is None:
        ids = plan.source_instances
        if not all(ids):
            raise SelectionError(
                "The volume does not name its Orthanc instances (no 'instance' coordinate: built "
                "by volume_from_datasets?). Pass its source datasets: to_seg(..., sources=datasets).")
        sources = read_headers(conn, ids, max_workers=max_workers, progress=progress,
                               desc="Source headers")
    seg = build_seg(plan, sources, software_versions=f"orthanc-pandas {__version__}",
                    **{k: v for k, v in options.items() if k not in PLAN_OPTIONS})
    if not upload:
        return seg
    return store(seg, conn, marks)


def store(seg, client: OrthancClient, labels=()) -> pd.DataFrame:
    """Upload a SEG dataset, label it, and return its rows (:func:`instance_rows`)."""
    answer = client.post_json("/instances", data=seg_bytes(seg), idempotent=True,
                              headers={"Content-Type": "application/dicom"})
    row = classify_upload(answer)
    if row["status"] not in ("Success", "AlreadyStored"):
        raise BulkError(f"Orthanc did not store the SEG: {row['status']}: {row['message']}",
                        report=pd.DataFrame([{"path": "<SEG>", **row}]))
    if labels:
        where = pd.DataFrame(index=pd.MultiIndex.from_tuples(
            [(row["patient"], row["study"], row["series"], row["instance"])], names=INDEX_NAMES))
        add_labels(where, client, *labels, level="instance")
    return instance_rows(client, row["series"], row["instance"], str(seg.SOPInstanceUID))


def instance_rows(client: OrthancClient, series_id: str, instance_id: str,
                  sop_instance_uid: str) -> pd.DataFrame:
    """The index-frame rows of one stored instance, as a fresh read + ``select`` gives them.

    Built as ``refresh()`` builds the rows of a changed series; ``attrs["orthanc"]`` records the
    server's change sequence and a ``select(SOPInstanceUID=...)``, so ``rows.orthanc.refresh()``
    and every ``rows.orthanc`` method work on it.
    """
    seq = client.last_change()
    stats = client.statistics()
    rows = fetch_series(client, {series_id}, True)
    rows = rows[rows.index.get_level_values("instance") == instance_id]
    rows = rows.take(sort_order(rows))
    info = provenance(client, client.system(), seq,
                      {lvl: int(stats[STAT_KEYS[lvl]]) for lvl in LEVELS})
    info["criteria"] = [encode_criteria({"SOPInstanceUID": sop_instance_uid})]
    rows.attrs = {"orthanc": info}
    return rows
