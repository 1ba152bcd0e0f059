"""Sample data on a server: pydicom's test files plus a generated CT phantom series."""

from __future__ import annotations

import os
from pathlib import Path

from orthanc_pandas._ops.files import upload
from orthanc_pandas.testing.synthetic import make_series, to_bytes

__all__ = ["sample_files", "load_samples"]


def sample_files() -> list[Path]:
    """pydicom's own test files (real DICOM from many vendors and modalities, some broken)."""
    import pydicom.data

    return sorted(Path(p) for p in pydicom.data.get_testdata_files() if os.path.isfile(p))


def load_samples(server, *, phantom_slices: int = 40, size: int = 128) -> dict:
    """Store pydicom's test files and a CT phantom of patient JaneDoe on ``server``.

    Returns counts per upload outcome: ``Success``, ``AlreadyStored``, ``not DICOM`` (some of
    pydicom's test files are not DICOM at all), ``refused by Orthanc`` (DICOM that Orthanc
    does not accept, e.g. without a SOPInstanceUID), ``Error``; and ``phantom instances``.
    """

    report = upload(sample_files(), server.client(), progress=False, errors="report")
    names = {"NotDicom": "not DICOM", "Failure": "refused by Orthanc"}
    status = report["status"].astype(str).map(lambda s: names.get(s, s)).value_counts().to_dict()
    ct = make_series(phantom_slices, size, size, patient_id="JD0001", patient_name="JaneDoe",
                     patient_sex="F", patient_birth_date="19800214", study_date="20240301",
                     study_description="CT Examination", series_description="ct_scan",
                     pixel_spacing=(0.9, 0.9), slice_spacing=3.0, instance_numbers="shuffled",
                     seed="demo-phantom")
    scout = make_series(2, size // 2, size // 2, patient_id="JD0001", patient_name="JaneDoe",
                        patient_sex="F", patient_birth_date="19800214", study_date="20240301",
                        study_description="CT Examination", series_description="scout",
                        series_number=2, study_uid=ct[0].StudyInstanceUID, seed="demo-scout")
    server.upload_bytes(to_bytes(d) for d in ct + scout)
    status["phantom instances"] = len(ct) + len(scout)
    return status
