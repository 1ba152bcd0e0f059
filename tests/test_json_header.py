"""json_header.py: Orthanc's JSON of a header as a pydicom dataset, for the geometry report.

The independent answer is pydicom on the original file: for every file of pydicom's test
corpus and nibabel's real Siemens mosaics and Philips enhanced MR, the slices read from the
server's JSON (:func:`orthanc_pandas._ops.levels.tag_headers`) equal the slices read from the
file, field for field, or fail with the same error.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pydicom
import pytest

from orthanc_pandas._imaging.geometry import number_of_frames, slice_headers
from orthanc_pandas._imaging.json_header import csa_image_tag, dataset_from_json
from orthanc_pandas._ops.levels import tag_headers
from orthanc_pandas.testing.synthetic import make_mosaic, make_multiframe, to_bytes


def _slices(ds, iid):
    """What the geometry reads from a dataset: its slice headers and frames, or its error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values some corpus files hold on purpose
        try:
            return slice_headers(ds, iid), number_of_frames(ds)
        except Exception as exc:
            return type(exc).__name__, str(exc)


def _compare(server, files: dict[str, Path]) -> int:
    ids = list(files)
    from_json = tag_headers(server.client(), ids)
    differ = {}
    for iid, ds in zip(ids, from_json, strict=True):
        want = _slices(pydicom.dcmread(files[iid], force=True), iid)
        if _slices(ds, iid) != want:
            differ[files[iid].name] = (_slices(ds, iid), want)
    assert differ == {}
    return len(ids)


def test_every_corpus_file_gives_the_slices_its_file_gives(corpus):
    assert _compare(corpus.server, corpus.stored) > 80


def test_real_mosaics_and_enhanced_mr_give_the_slices_their_files_give(empty_server, tmp_path):
    nib = pytest.importorskip("nibabel")
    data = Path(nib.__file__).parent / "nicom" / "tests" / "data"
    files = {}
    for name in ("siemens_dwi_1000.dcm.gz", "siemens_dwi_0.dcm.gz", "philips_mprage.dcm.gz"):
        path = tmp_path / name.removesuffix(".gz")
        path.write_bytes(gzip.open(data / name).read())
        files[path] = path
    for k, ds in enumerate([make_mosaic(9, 4, 6, normal_sign=-1.0, seed="j"),
                            make_mosaic(3, 4, 6, csa=False, seed="k"),
                            make_multiframe(6, 8, 8, frame_order="descending", seed="l")]):
        path = tmp_path / f"synthetic{k}.dcm"
        path.write_bytes(to_bytes(ds))
        files[path] = path
    answers = empty_server.upload(list(files))
    stored = {answers[str(p)]["ID"]: p for p in files}
    assert len(stored) == 6
    assert _compare(empty_server, stored) == 6
    mosaics = [_slices(d, "")[0] for d in tag_headers(empty_server.client(), list(stored)[:2])]
    assert [len(m) for m in mosaics] == [48, 48]  # each tile a slice (dcm2niix: 48 too)


def test_values_become_the_elements_pydicom_reads():
    ds = dataset_from_json({
        "0008,0005": "ISO_IR 100", "0010,0010": "Müller^Zoë", "0028,0010": "64",
        "0018,9082": "3.5129999999999999", "0028,0030": "0.5\\0.6", "0008,0008": "A\\B",
        "0019,0010": "SIEMENS MR HEADER", "0019,100a": "35", "0019,10ff": "unknown private",
        "0029,0010": "SIEMENS CSA HEADER", "0029,1010": None, "7fe0,0010": None,
        "0008,1140": [{"0008,1150": "1.2.3", "0008,1155": "1.2.3.4"}], "0008,1115": [],
        "0020,0013": ""}, binary={0x00291010: b"SV10\x04\x03\x02\x01"})
    assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Müller^Zoë"
    assert ds.Rows == 64 and ds[0x00189082].value == 3.513  # FD packed from Orthanc's text
    assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.6] and list(ds.ImageType) == ["A", "B"]
    assert ds[0x0019100A].value == 35 and ds[0x0019100A].VR == "US"  # private, known VR
    assert 0x001910FF not in ds and "PixelData" not in ds
    assert ds[0x00291010].value == b"SV10\x04\x03\x02\x01"
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert len(ds.ReferencedSeriesSequence) == 0 and ds.InstanceNumber is None
    assert csa_image_tag({"0029,0011": "SIEMENS CSA HEADER"}) == 0x00291110
    # a private number the JSON shows as null (VR UN in an implicit VR file), fetched as stored
    implicit = dataset_from_json({"0019,0010": "SIEMENS MR HEADER", "0019,100a": None},
                                 binary={0x0019100A: b"0\x00"})
    assert implicit[0x0019100A].value == 48  # what pydicom reads from nibabel's DWI file
    assert list(dataset_from_json({"0020,0032": "-110.2¥-98.1¥72.1"}).ImagePositionPatient) \
        == [-110.2, -98.1, 72.1]  # JIS X 0201: Orthanc shows the separator as a yen sign
