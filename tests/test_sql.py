"""sql.py: DuckDB over the frames; every column of every frame type read natively; results
that keep the index columns are Orthanc frames again."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import orthanc_pandas as op
from orthanc_pandas._frame.annotations import ANNOTATION_COLUMNS
from orthanc_pandas._ops.sql import TABLES, to_arrow
from orthanc_pandas.errors import ParseWarning, SelectionError
from orthanc_pandas.testing.synthetic import make_seg, make_series, to_bytes

duckdb = pytest.importorskip("duckdb")


def _same_values(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal frames; a categorical may hold fewer unused categories (a row subset's)."""
    assert list(got.columns) == list(want.columns)
    assert got.index.equals(want.index) and list(got.index.names) == list(want.index.names)
    for c in want.columns:
        w, g = want[c], got[c]
        if isinstance(w.dtype, pd.CategoricalDtype):
            assert isinstance(g.dtype, pd.CategoricalDtype), c
            w, g = w.astype(object), g.astype(object)
        else:
            assert g.dtype == w.dtype, (c, g.dtype, w.dtype)
        pd.testing.assert_series_equal(g, w, check_dtype=False, obj=c)


def _frames(corpus_frame, url):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        frames = {"instances": corpus_frame, "series": corpus_frame.orthanc.series(),
                  "studies": corpus_frame.orthanc.studies(),
                  "patients": corpus_frame.orthanc.patients(),
                  "series-first": op.read_orthanc(url, level="series"),
                  "studies-first": op.read_orthanc(url, level="study"),
                  "patients-first": op.read_orthanc(url, level="patient"),
                  "protocol": corpus_frame.orthanc.series(protocol=True),
                  "annotations": corpus_frame.orthanc.annotations()}
    return frames


def test_every_column_of_every_frame_type_is_native(corpus, corpus_frame):
    """No Python object in any column: Arrow reads each column natively, DuckDB scans it
    (no BLOB), and SELECT * gives the frame back."""
    frames = _frames(corpus_frame, corpus.url)
    assert len(frames["annotations"]) >= 4       # pydicom's liver SEG and rtstruct.dcm
    for name, frame in frames.items():
        assert not [c for c in frame.columns if frame[c].dtype == object], name
        table = to_arrow(frame, name)
        for field in table.schema:
            assert not pa.types.is_binary(field.type) and not pa.types.is_null(field.type) \
                or len(frame) == 0, (name, field)
        con = duckdb.connect()
        con.register("t", table)
        types = {row[0]: row[1] for row in con.execute("DESCRIBE t").fetchall()}
        assert "BLOB" not in types.values(), (name, types)
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == len(frame)
        con.close()
        key = name.split("-")[0] if name != "protocol" else "series"
        back = op.sql(f"SELECT * FROM {key}", frame) if key in TABLES else None
        if name == "annotations":
            pd.testing.assert_frame_equal(back, frame, check_dtype=True)
            back = op.sql("SELECT * FROM annotations", annotations=frame)
            pd.testing.assert_frame_equal(back, frame, check_dtype=True)
            continue
        assert type(back.orthanc).__name__ == ("InstanceAccessor" if key == "instances"
                                               else "LevelAccessor")
        _same_values(back, frame)
        assert back.attrs == frame.attrs


@pytest.fixture(scope="module")
def small(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc

    ct = make_series(6, 16, 16, seed="sql-ct", series_description="thin", slice_spacing=1.0,
                     per_slice=lambda k: {"KVP": "120"})
    thick = make_series(4, 16, 16, seed="sql-thick", series_description="thick", slice_spacing=5.0,
                        study_uid=ct[0].StudyInstanceUID, series_number=2)
    m = np.zeros((2, 6, 16, 16), bool)
    m[0, 1:4, 4:9, 4:9] = True
    m[1, 2, 1:3, 1:3] = True
    seg = make_seg(ct, m, ["Liver", "spleen"], seed="sql-seg")
    with LocalOrthanc(name="sql") as server:
        server.upload_bytes([to_bytes(d) for d in ct + thick + [seg]])
        yield dict(server=server, df=op.read_orthanc(server.url))


def test_cohort_query_returns_series_rows_the_accessor_works_on(small):
    df = small["df"]
    cohort = op.sql("""
        SELECT s.* FROM series s
        WHERE s.Modality = 'CT' AND s.slice_spacing <= 2
          AND s.series IN (SELECT source_series FROM annotations WHERE label ILIKE 'liver%')
    """, df)
    expected = df.orthanc.series().orthanc.with_annotation(label="liver*", df=df)
    assert type(cohort.orthanc).__name__ == "LevelAccessor" and cohort.orthanc.level == "series"
    _same_values(cohort, expected[expected.slice_spacing <= 2])
    vol = cohort.orthanc.volume(df)
    assert vol.shape == (6, 16, 16)


def test_joins_expressions_and_plain_results(small):
    df = small["df"]
    counts = op.sql("SELECT Modality, count(*) AS n FROM instances GROUP BY ALL ORDER BY 1", df)
    assert counts.to_dict("list") == {"Modality": ["CT", "SEG"], "n": [10, 1]}
    assert counts.n.dtype == "Int64"
    with pytest.raises(AttributeError):
        counts.orthanc  # noqa: B018  (no index columns: a plain frame)
    rows = op.sql("SELECT i.* FROM instances i JOIN series s USING (patient, study, series) "
                  "WHERE s.SeriesDescription = 'thick' ORDER BY i.InstanceNumber", df)
    assert type(rows.orthanc).__name__ == "InstanceAccessor" and len(rows) == 4
    assert rows.attrs["orthanc"]["url"] == df.attrs["orthanc"]["url"]
    assert rows.Modality.dtype == "category" and rows.InstanceNumber.dtype == "Int32"
    per_patient = op.sql("SELECT patient, count(*) AS series FROM series GROUP BY ALL", df)
    assert per_patient.orthanc.level == "patient" and per_patient.series.tolist() == [3]


def test_tables_are_built_only_when_named(small, monkeypatch):
    """A query naming only `series` reads no header: annotations() is never called."""
    import orthanc_pandas._ops.sql as sql_module

    def boom(*a, **k):
        raise AssertionError("annotations were built")

    monkeypatch.setattr(sql_module, "annotations", boom)
    df = small["df"]
    assert len(op.sql("SELECT * FROM series", df)) == 3
    with pytest.raises(AssertionError, match="annotations were built"):
        op.sql("SELECT * FROM annotations", df)
    ann = small["df"].orthanc.annotations()
    got = op.sql("SELECT label FROM annotations ORDER BY number", df, annotations=ann)
    assert got.label.tolist() == ["Liver", "spleen"]
    assert list(ann.columns) == list(ANNOTATION_COLUMNS)


def test_level_frame_sees_every_table(small):
    s = op.read_orthanc(small["server"].url, level="series")
    n = op.sql("SELECT (SELECT count(*) FROM instances) AS i, (SELECT count(*) FROM studies) AS st, "
               "(SELECT count(*) FROM annotations) AS a", s)
    assert n.iloc[0].tolist() == [11, 1, 2]


def test_extra_tables_and_clear_errors(small, monkeypatch):
    df = small["df"]
    labels = pd.DataFrame({"SeriesDescription": ["thin"], "label": ["good"]})
    got = op.sql("SELECT s.* FROM series s JOIN qc USING (SeriesDescription)", df, qc=labels)
    assert got.SeriesDescription.tolist() == ["thin"] and got.orthanc.level == "series"
    bad = pd.DataFrame({"x": [object(), 1]})
    with pytest.raises(SelectionError, match="x"):
        op.sql("SELECT * FROM bad", bad=bad)
    with pytest.raises(TypeError, match="DataFrame"):
        op.sql("SELECT 1", qc=[1, 2])
    monkeypatch.setitem(sys.modules, "duckdb", None)
    with pytest.raises(ImportError, match=r"orthanc-pandas\[sql\]"):
        op.sql("SELECT 1", df)
