"""protocol.py: protocol columns equal pydicom's reading of every instance, aggregated alike.

CT, MR and PT series generated with values that vary within a series (tube current modulation,
two kernels, multi-echo, diffusion b-values, a missing InversionTime, doses in a sequence) and
constant ones; each column is compared with min/max/constant computed here from pydicom's
values of the generated datasets. The suite runs on each Orthanc (1.10 and 1.13).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

import orthanc_pandas as op
from orthanc_pandas._frame.protocol import NESTED, PROTOCOL_TAGS, default_tags
from orthanc_pandas._ops.protocol import protocol_columns_of, series_protocol
from orthanc_pandas.errors import SelectionError, UnknownTagError
from orthanc_pandas.testing.synthetic import make_series, to_bytes, uid

STUDY = uid("study", "protocol")


def _dose(k: int) -> Sequence:
    item = Dataset()
    item.Radiopharmaceutical = "Fluorodeoxyglucose" if k < 3 else "FDG"
    item.RadionuclideTotalDose = f"{3.5e8 + 1000 * k:.1f}"
    return Sequence([item])


SERIES = {
    # name: (modality, slices, per-slice values)
    "ct-modulated": ("CT", 6, lambda k: {
        "KVP": "120", "XRayTubeCurrent": 180 + 15 * k, "Exposure": 90 + 7 * k, "ExposureTime": 500,
        "CTDIvol": 10.0 + 0.25 * k, "ConvolutionKernel": ["B30f", "B70f"][k % 2],
        "SpiralPitchFactor": 0.9, "ReconstructionDiameter": "350"}),
    "ct-constant": ("CT", 4, lambda k: {
        "KVP": "100", "XRayTubeCurrent": 200, "Exposure": 50, "CTDIvol": 5.5,
        "ConvolutionKernel": ["FC13", "AXIAL"]}),
    "mr-multiecho": ("MR", 6, lambda k: {
        "MagneticFieldStrength": "3", "RepetitionTime": "2000", "EchoTime": f"{10 + 20 * (k % 3)}",
        "FlipAngle": "90", "ScanningSequence": ["SE", "IR"], "SequenceVariant": "SK",
        "InversionTime": "150" if k < 4 else None, "EchoTrainLength": 3,
        "SiemensB": (0x00190010, "LO", "SIEMENS MR HEADER")}),
    "mr-dwi": ("MR", 6, lambda k: {
        "MagneticFieldStrength": "1.5", "RepetitionTime": "4000", "EchoTime": "80",
        "DiffusionBValue": float([0, 500, 1000][k % 3]), "ScanningSequence": "EP",
        "SiemensCreator": (0x00190010, "LO", "SIEMENS MR HEADER"),
        "SiemensB": (0x0019100C, "IS", str([0, 500, 1000][k % 3]))}),
    "pt": ("PT", 5, lambda k: {
        "RadiopharmaceuticalInformationSequence": _dose(k), "Units": "BQML",
        "DecayCorrection": "START", "CorrectedImage": ["DECY", "ATTN"],
        "ReconstructionMethod": "OSEM"}),
    "other": ("OT", 2, lambda k: {"KVP": "80"}),     # no documented tags for OT: nothing read
}


def _make() -> dict[str, list[Dataset]]:
    out = {}
    for n, (name, (modality, count, values)) in enumerate(SERIES.items()):
        out[name] = make_series(count, 8, 8, modality=modality, seed=f"protocol-{name}",
                                study_uid=STUDY, series_number=n + 1, series_description=name,
                                slice_spacing=1.25 if name == "ct-modulated" else 2.5,
                                per_slice=values)
    return out


@pytest.fixture(scope="module")
def protocol_server(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc

    series = _make()
    with LocalOrthanc(name="protocol") as server:
        server.upload_bytes([to_bytes(d) for ds in series.values() for d in ds])
        df = op.read_orthanc(server.url)
        yield dict(server=server, df=df, series=series)


def _pydicom_value(ds: Dataset, tag: str):
    """The value pydicom reads, as a number or text (multi-values joined by '\\')."""
    holder = ds
    if tag in NESTED:
        seq = ds.get(NESTED[tag])
        holder = seq[0] if seq else Dataset()
    if tag.count(",") == 1:   # a private tag by number
        elem = holder.get(int(tag.replace(",", ""), 16))
        return None if elem is None else str(elem.value).strip()
    value = holder.get(tag)
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, str):
        return value.strip()
    return int(value) if isinstance(value, int) else float(value)


def _expected(datasets: list[Dataset], tag: str) -> tuple:
    """(constant, min, max) as this test computes them from pydicom's values."""
    values = [v for v in (_pydicom_value(d, tag) for d in datasets) if v is not None]
    if not values:
        return None, None, None
    return (values[0] if len(set(values)) == 1 else None), min(values), max(values)


def _na(v):
    return None if v is None or pd.isna(v) else v


def _compare(frame: pd.DataFrame, df: pd.DataFrame, series: dict[str, list[Dataset]], tags,
             documented: bool, subset: dict[str, set] | None = None, least: int = 20) -> None:
    checked = 0
    for name, datasets in series.items():
        sid = df[df.SeriesDescription == name].index.get_level_values("series")[0]
        row = frame.xs(sid, level="series").iloc[0]
        modality = datasets[0].Modality
        if subset is not None:
            datasets = [d for d in datasets if str(d.SOPInstanceUID) in subset.get(name, ())]
        for tag in tags:
            relevant = not documented or tag in PROTOCOL_TAGS.get(modality, ())
            exp = _expected(datasets, tag) if relevant else (None, None, None)
            got = tuple(_na(row[f"{tag}{s}"]) for s in ("", "_min", "_max"))
            assert got == exp, (name, tag, got, exp)
            checked += exp[1] is not None
    assert checked >= least


def test_documented_columns_equal_pydicom(protocol_server):
    df, series = protocol_server["df"], protocol_server["series"]
    s = df.orthanc.series(protocol=True)
    _compare(s, df, series, default_tags(), documented=True)
    assert s.attrs["orthanc"]["level"] == "series" and len(s) == len(series)


def test_series_first_frame_and_instance_frame_agree(protocol_server):
    df, series = protocol_server["df"], protocol_server["series"]
    level = op.read_orthanc(protocol_server["server"].url, level="series")
    from_server = level.orthanc.with_protocol()
    _compare(from_server, df, series, default_tags(), documented=True)
    from_rows = level.orthanc.with_protocol(df=df)
    cols = protocol_columns_of(True)
    pd.testing.assert_frame_equal(from_server[cols], from_rows[cols])
    with pytest.raises(SelectionError, match="per series"):
        df.orthanc.studies().orthanc.with_protocol()


def test_columns_do_not_depend_on_the_data(protocol_server):
    df = protocol_server["df"]
    full = df.orthanc.series(protocol=True)
    ot_only = df[df.SeriesDescription == "other"].orthanc.series(protocol=True)
    added = [c for c in full.columns if c not in df.orthanc.series().columns]
    assert added == protocol_columns_of(True)
    assert list(ot_only.columns) == list(full.columns)
    assert (ot_only.dtypes == full.dtypes).all()
    assert ot_only[added].isna().all().all()      # OT has no documented tags: none read
    assert full.XRayTubeCurrent_min.dtype == "Int32" and full.KVP.dtype == "Float64"
    assert not any(full[c].dtype == object for c in full.columns)
    empty = df.iloc[:0].orthanc.series(protocol=True)
    assert list(empty.columns) == list(full.columns)


def test_tags_on_request_any_modality_and_private(protocol_server):
    df, series = protocol_server["df"], protocol_server["series"]
    tags = ["KVP", "SliceThickness", "0019,100c", "Radiopharmaceutical"]
    s = df.orthanc.series(protocol=tags)
    _compare(s, df, series, tags, documented=False, least=11)
    ot = s[s.SeriesDescription == "other"].iloc[0]
    assert (ot.KVP, ot.KVP_min) == (80.0, 80.0)       # asked for: read on every series
    vec = df.orthanc.series(protocol=["PixelSpacing"])
    assert {"PixelSpacing_0", "PixelSpacing_0_min", "PixelSpacing_1_max"} <= set(vec.columns)
    assert set(vec.PixelSpacing_1.dropna()) == {0.8}
    with pytest.raises(UnknownTagError):
        df.orthanc.series(protocol=["KVPP"])
    with pytest.raises(SelectionError, match="sequence"):
        df.orthanc.series(protocol=["RadiopharmaceuticalInformationSequence"])
    with pytest.raises(SelectionError, match="True or a list"):
        df.orthanc.series(protocol="KVP")


def test_rows_of_the_frame_only(protocol_server):
    """A frame holding part of a series aggregates those rows, as series() counts them."""
    df, series = protocol_server["df"], protocol_server["series"]
    part = df[df.InstanceNumber <= 2]
    subset = {name: {str(d.SOPInstanceUID) for d in ds if int(d.InstanceNumber) <= 2}
              for name, ds in series.items()}
    s = part.orthanc.series(protocol=True)
    _compare(s, df, series, default_tags(), documented=True, subset=subset)


def test_parquet_and_no_request_for_columns(protocol_server, tmp_path):
    df = protocol_server["df"]
    s = df.orthanc.series(protocol=True)
    s.to_parquet(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s.parquet"), s)
    # a tag that is a column (ExtraMainDicomTags) is not fetched: no client is asked for
    rows = df.orthanc.with_tags("SliceThickness", "KVP")

    def no_client():
        raise AssertionError("a request was made")

    agg = series_protocol(rows, rows.index.get_level_values("series").unique(),
                          ["SliceThickness", "KVP"], no_client)
    assert set(agg.SliceThickness_max.dropna()) == {1.25, 2.5}
    assert np.isclose(agg.KVP_max.max(), 120.0)
