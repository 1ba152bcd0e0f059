"""annotations() on 400 series with 100 SEG/RTSTRUCT objects, and protocol columns on 20,000 instances.

Run: ``PYTHONPATH=. python benchmarks/annotations.py [--server system|sid] [--repeat 3]``.
Both run on a private copy of the cached 20k archive (40 patients x 2 studies x 5 series x 50
instances: 400 series, CT/MR/PT); the archive is never generated here: without
``$ORTHANC_PANDAS_BENCH_CACHE/archive-20k[-sid]/.complete`` the script stops (``with_tags.py``
and the others build it).

annotations
    100 annotation objects are added to the copy: 50 SEGs written by highdicom (2 segments
    over all 50 slices of a series each) and 50 RTSTRUCTs (3 ROIs, contours on 5 slices); half
    of the RTSTRUCTs name their series, half only their contours' images (resolved with
    ``/tools/lookup``). Rows: ``df.orthanc.annotations()`` on the 20,100-row instance frame,
    the same with one thread, on a series frame read series-first (its SEG/RTSTRUCT series
    listed on the server), ``with_annotation`` and an ``op.sql`` cohort on the table, and the
    way without the library: each file downloaded whole and read by pydicom, one after the
    other, its source series looked up with one request per annotation.
protocol
    ``df.orthanc.series(protocol=True)`` (CT, MR and PT series: all 400 are asked, one request
    each), ``read_orthanc(level="series").orthanc.with_protocol()``, and the same tags by
    hand: ``with_tags`` then a groupby min/max.
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import pandas as pd
import pydicom
import requests
from _common import CACHE, archive_server, best_of, table
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

import orthanc_pandas as op
from orthanc_pandas._frame.protocol import default_tags, fetched_tags
from orthanc_pandas.testing import orthanc_root
from orthanc_pandas.testing.synthetic import to_bytes, uid

RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"


def _seg(hd, source: list[Dataset], k: int) -> Dataset:
    n, rows, cols = len(source), int(source[0].Rows), int(source[0].Columns)
    masks = np.zeros((n, rows, cols, 2), dtype=np.uint8)
    masks[:, 2:6, 2:6, 0] = 1
    masks[n // 3: n // 2, 1:4, 4:7, 1] = 1
    code = hd.sr.CodedConcept
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=label,
        segmented_property_category=code("123037004", "SCT", "Anatomical Structure"),
        segmented_property_type=code(*typ), algorithm_type="MANUAL")
        for i, (label, typ) in enumerate([("liver", ("10200004", "SCT", "Liver")),
                                          ("spleen", ("78961009", "SCT", "Spleen"))])]
    return hd.seg.Segmentation(
        source_images=source, pixel_array=masks, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=uid("bench-seg", k),
        series_number=100, sop_instance_uid=uid("bench-seg-sop", k), instance_number=1,
        manufacturer="bench", manufacturer_model_name="bench", software_versions="1",
        device_serial_number="1")


def _rtstruct(source: list[Dataset], k: int, series_refs: bool) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT
    meta.MediaStorageSOPInstanceUID = uid("bench-rt-sop", k)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTSTRUCT, meta.MediaStorageSOPInstanceUID, "RTSTRUCT"
    for kw in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate"):
        setattr(ds, kw, source[0].get(kw, ""))
    ds.SeriesInstanceUID, ds.SeriesNumber = uid("bench-rt", k), 101
    frame = source[0].get("FrameOfReferenceUID") or uid("bench-frame", k)
    ref = Dataset()
    ref.FrameOfReferenceUID = frame
    if series_refs:
        st, se = Dataset(), Dataset()
        st.ReferencedSOPClassUID, st.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", ds.StudyInstanceUID
        se.SeriesInstanceUID = source[0].SeriesInstanceUID
        st.RTReferencedSeriesSequence = Sequence([se])
        ref.RTReferencedStudySequence = Sequence([st])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref])
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for n, (name, kind) in enumerate([("Liver", "ORGAN"), ("GTV", "GTV"), ("Body", "EXTERNAL")], 1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = n, name, frame
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ContourSequence = n, Sequence()
        for sl in source[10:15]:
            c = Dataset()
            z = float(sl.ImagePositionPatient[2])
            c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", 3
            c.ContourData = [-99.0, -99.0, z, -96.0, -99.0, z, -96.0, -96.0, z]
            img = Dataset()
            img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = sl.SOPClassUID, sl.SOPInstanceUID
            c.ContourImageSequence = Sequence([img])
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber, obs.RTROIInterpretedType = n, n, kind
        obs.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(obs)
    return ds


def _add_annotations(server, df) -> int:
    import highdicom as hd

    series = df.orthanc.series()
    picked = series.index.get_level_values("series")[::4][:100]
    headers = df[df.index.get_level_values("series").isin(picked)].orthanc.headers()
    by_series: dict[str, list] = {}
    for (_p, _st, sid, _i), ds in headers.items():
        by_series.setdefault(sid, []).append(ds)
    blobs = []
    for k, sid in enumerate(picked):
        source = sorted(by_series[sid], key=lambda d: float(d.ImagePositionPatient[2]))
        for d in source:  # highdicom checks the source images' pixel description only
            d.file_meta = getattr(d, "file_meta", None) or FileMetaDataset()
        obj = _seg(hd, source, k) if k % 2 == 0 else _rtstruct(source, k, series_refs=k % 4 == 1)
        blobs.append(to_bytes(obj))
    server.upload_bytes(blobs)
    return len(blobs)


def _without_library(url: str, df) -> int:
    """Each SEG/RTSTRUCT downloaded whole, read by pydicom, its source looked up: one by one."""
    sess = requests.Session()
    sess.headers["Accept-Encoding"] = "identity"
    found = 0
    for iid in df[df.Modality.isin(["SEG", "RTSTRUCT"])].index.get_level_values("instance"):
        ds = pydicom.dcmread(io.BytesIO(sess.get(f"{url}/instances/{iid}/file").content))
        if "SegmentSequence" in ds:
            uids = [ds.ReferencedSeriesSequence[0].SeriesInstanceUID]
        else:
            uids = [ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID
                    for ref in ds.ReferencedFrameOfReferenceSequence if "RTReferencedStudySequence" in ref]
            if not uids:  # only the contours name images: look one up, then its series
                sop = ds.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0].ReferencedSOPInstanceUID
                hit = sess.post(f"{url}/tools/lookup", data=sop).json()
                parent = sess.get(f"{url}/instances/{hit[0]['ID']}").json()["ParentSeries"]
                uids = [sess.get(f"{url}/series/{parent}").json()["MainDicomTags"]["SeriesInstanceUID"]]
        found += bool(sess.post(f"{url}/tools/lookup", data=uids[0]).json())
    return found


def bench_annotations(args, root) -> None:
    with archive_server("20k", root=root) as server:
        base = op.read_orthanc(server.url)
        t = time.perf_counter()
        added = _add_annotations(server, base)
        print(f"added {added} SEG/RTSTRUCT objects in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        df = op.read_orthanc(server.url)
        s = op.read_orthanc(server.url, level="series")
        r = args.repeat
        rows = []
        best, med, ann = best_of(lambda: df.orthanc.annotations(progress=False), r)
        assert len(ann) == 50 * 2 + 50 * 3 and ann.source_series.notna().all(), ann.source_series.isna().sum()
        rows.append(("df.orthanc.annotations() (20,100 rows, 4 threads)", len(ann), f"{best:.2f}", f"{med:.2f}"))
        b1, m1, _ = best_of(lambda: df.orthanc.annotations(progress=False, max_workers=1), r)
        rows.append(("the same, 1 thread", len(ann), f"{b1:.2f}", f"{m1:.2f}"))
        bs, ms, ann_s = best_of(lambda: s.orthanc.annotations(progress=False), r)
        assert len(ann_s) == len(ann)
        rows.append(("series frame read series-first: .orthanc.annotations()", len(ann_s), f"{bs:.2f}", f"{ms:.2f}"))
        bw, mw, cohort = best_of(lambda: s.orthanc.with_annotation(label="liver*", annotations=ann), r)
        rows.append(("with_annotation(label='liver*', annotations=ann)", len(cohort), f"{bw:.3f}", f"{mw:.3f}"))
        q = ("SELECT s.* FROM series s WHERE s.Modality = 'CT' AND s.series IN "
             "(SELECT source_series FROM annotations WHERE label ILIKE 'liver%')")
        bq, mq, res = best_of(lambda: op.sql(q, s, annotations=ann), r)
        rows.append(("op.sql cohort (series x annotations)", len(res), f"{bq:.3f}", f"{mq:.3f}"))
        bn, mn, found = best_of(lambda: _without_library(server.url, df), 1)
        rows.append(("without the library: file + pydicom + lookups, one by one (1 run)", found,
                     f"{bn:.2f}", f"{mn:.2f}"))
        print(f"\n### annotations() on {server.client().version}: 400 image series + 100 SEG/RTSTRUCT\n")
        print(table(rows, ("what", "rows", "best s", "median s")))


def bench_protocol(args, root) -> None:
    with archive_server("20k", root=root) as server:
        df = op.read_orthanc(server.url)
        r = args.repeat
        rows = []
        best, med, s = best_of(lambda: df.orthanc.series(protocol=True, progress=False), r)
        rows.append(("df.orthanc.series(protocol=True)", len(s), f"{best:.2f}", f"{med:.2f}"))
        b0, m0, _ = best_of(lambda: df.orthanc.series(), r)
        rows.append(("df.orthanc.series() (no protocol: no request)", len(s), f"{b0:.2f}", f"{m0:.2f}"))
        level = op.read_orthanc(server.url, level="series")
        bl, ml, s2 = best_of(lambda: level.orthanc.with_protocol(progress=False), r)
        rows.append(("read_orthanc(level='series').orthanc.with_protocol()", len(s2), f"{bl:.2f}", f"{ml:.2f}"))
        tags = fetched_tags(default_tags())

        def by_hand():
            wide = df.orthanc.with_tags(*tags, progress=False)
            cols = [c for c in wide.columns if c in default_tags()]
            g = wide[cols].groupby(level="series")
            return pd.concat([g.min(numeric_only=True), g.max(numeric_only=True).add_suffix("_max")],
                             axis=1)
        bh, mh, hand = best_of(by_hand, r)
        rows.append(("by hand: with_tags(...) + groupby min/max (numbers only)", len(hand), f"{bh:.2f}", f"{mh:.2f}"))
        b3, m3, _ = best_of(lambda: df.orthanc.with_tags("SliceThickness", "PixelSpacing",
                                                         "RescaleIntercept", progress=False), r)
        rows.append(("reference: with_tags of 3 tags (benchmarks/with_tags.py's row)", len(s),
                     f"{b3:.2f}", f"{m3:.2f}"))
        print(f"\n### protocol columns on {server.client().version}: 20,000 instances, 400 series\n")
        print(table(rows, ("what", "series", "best s", "median s")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", choices=["system", "sid"], default="system")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["annotations", "protocol"])
    args = ap.parse_args()
    root = orthanc_root("sid") if args.server == "sid" else None
    cache = CACHE / ("archive-20k" + ("-sid" if root is not None else ""))
    if not (cache / ".complete").exists():
        sys.exit(f"{cache} is not complete: this benchmark does not build the archive "
                 "(run benchmarks/with_tags.py once, or wait for it).")
    if args.only in (None, "annotations"):
        bench_annotations(args, root)
    if args.only in (None, "protocol"):
        bench_protocol(args, root)


if __name__ == "__main__":
    main()
