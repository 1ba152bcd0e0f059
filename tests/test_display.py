"""The compact view of frames (``_frame/display.py``, ``df.orthanc.show()``).

On a generated archive of a realistic size (2,000 instances in 40 series, plus series that do
not make a volume): every level's view fits a 120-character terminal line and, rendered as
HTML, a 1400 px notebook: by the character estimate the view fits itself to, and measured in
headless Chromium when it is installed (Debian's ``chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas._frame.display import (
    HTML_CELL_PX,
    HTML_CHAR_PX,
    HTML_WIDTH_PX,
    HUMAN_COLUMNS,
    ID_CHARS,
    MISSING,
    compact_view,
    format_time,
    format_value,
)
from orthanc_pandas.testing.synthetic import generate_archive, make_series, to_bytes

NOTEBOOK_PX = 1400

#: What JupyterLab's output area looks like to the table, roughly: its sans-serif at 13 px
#: (its tables use 12 px) inside a 1400 px window.
PAGE = ('<!doctype html><html><head><meta charset="utf-8"><style>body{font-family:system-ui,'
        "-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;font-size:13px;"
        "margin:0}</style></head><body>{tables}<script>document.body.setAttribute('data-widths',"
        "Array.from(document.querySelectorAll('.orthanc-view table')).map(t => t.scrollWidth)"
        ".join(','))</script></body></html>")


def table_widths(html_tables: list[str], tmp_path) -> list[int] | None:
    """The rendered width (px) of each view's table in headless Chromium; None without it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    page = tmp_path / "views.html"
    page.write_text(PAGE.replace("{tables}", "".join(html_tables)))
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          "--window-size=1400,1000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-widths="([\d,]+)"', out)
    assert found, f"chromium rendered no table: {out[-500:]}"
    return [int(w) for w in found.group(1).split(",")]


@pytest.fixture(scope="module")
def frame(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc

    defects = [
        *make_series(4, 8, 8, positions=[(0, 0, 0), (0, 0, 2.5), (0, 0, 5), (0, 0, 20)],
                     seed="d-gap", patient_id="DEFECT", series_description="a gap",
                     patient_name="Averyveryverylongfamilyname^Withalongfirstname"),
        *make_series(2, 8, 8, seed="d-dup", patient_id="DEFECT", series_number=2,
                     positions=[(0, 0, 0), (0, 0, 0)],
                     series_description="two slices at one position, and a long description"),
    ]
    sr = make_series(1, 8, 8, seed="d-sr", patient_id="DEFECT", series_number=3, modality="SR",
                     series_description="a report")[0]
    for kw in ("PixelData", "Rows", "Columns"):
        delattr(sr, kw)
    sr.StudyTime = "165447.788280"
    with LocalOrthanc(name="display") as srv:
        srv.upload_bytes(list(generate_archive(4, 2, 5, 50, seed="display")))
        srv.upload_bytes([to_bytes(d) for d in [*defects, sr]])
        yield op.read_orthanc(srv.url)


@pytest.fixture(scope="module")
def views(frame):
    """level -> (the frame, its view)."""
    frames = {"instance": frame, "series": frame.orthanc.series(geometry=True),
              "study": frame.orthanc.studies(), "patient": frame.orthanc.patients()}
    return {lvl: (f, f.orthanc.show()) for lvl, f in frames.items()}


# -- fits -------------------------------------------------------------------------------------
def test_every_level_fits_a_120_character_line(views):
    essentials = {"instance": ("PatientID", "StudyDate", "Modality", "SeriesDescription"),
                  "series": ("PatientID", "StudyDate", "Modality", "SeriesDescription",
                             "instance_count", "volume_ok", "volume_problem"),
                  "study": ("PatientID", "StudyDate", "StudyDescription", "series_count"),
                  "patient": ("PatientName", "PatientID", "study_count", "instance_count")}
    for level, (_, view) in views.items():
        text = repr(view)
        print(text)
        assert max(map(len, text.splitlines())) <= 120, level
        assert view.index_name == level
        assert all(len(i) <= ID_CHARS for i in view.ids), level
        shown = list(view.frame.columns)
        assert set(essentials[level]) <= set(shown), (level, shown)
        assert shown == [c for c in HUMAN_COLUMNS[level] if c in shown]  # in the level's order


def test_every_level_fits_a_1400_px_notebook(views, tmp_path):
    tables = []
    for level, (_, view) in views.items():
        lay = view._html_layout()
        chars = [max(len(view.index_name), *map(len, view.ids))] + [w for _, w, _ in lay]
        estimate = sum(c * HTML_CHAR_PX + HTML_CELL_PX for c in chars)
        assert estimate <= HTML_WIDTH_PX < NOTEBOOK_PX, level
        tables.append(view._repr_html_())
    measured = table_widths(tables, tmp_path)
    if measured is None:
        pytest.skip("headless Chromium is not installed: checked by the character estimate only")
    assert max(measured) <= NOTEBOOK_PX, dict(zip(views, measured, strict=True))


def test_the_reason_comes_before_the_uid(views):
    s, view = views["series"]
    whole = s.volume_problem.dropna().tolist()
    assert any(p.startswith("Not an image") for p in whole)
    assert any(p.startswith("The slice spacing is not uniform") for p in whole)
    for p in whole:  # every reason is said before any UID
        first_uid = re.search(r"\d+\.\d+\.\d+\.\d+", p)
        assert first_uid is None or first_uid.start() > 10, p
    shown = [c for c in view.frame.volume_problem if c not in (MISSING, "…")]
    assert shown and all(len(c) >= 30 for c in shown)  # enough of the reason to read it


def test_the_html_view_shows_more_and_keeps_whole_values_on_hover(views):
    _, view = views["series"]
    html_cols = [c for c, _, _ in view._html_layout()]
    assert set(view.frame.columns) <= set(html_cols)
    assert "PatientName" in html_cols and "StudyTime" in html_cols
    page = view._repr_html_()
    assert 'title="Averyveryverylongfamilyname^Withalongfirstname"' in page
    assert "Averyveryverylongf" in page and "…" in page


# -- values -----------------------------------------------------------------------------------
def test_times_as_times_and_dates_as_dates(views):
    f, view = views["study"]
    times = view.cells["StudyTime"]
    assert "16:54:47" in times and "12:00:00" in times
    assert all(t == MISSING or re.fullmatch(r"\d\d(:\d\d){0,2}|…", t) for t in times)
    assert all(d in (MISSING, "…") or re.fullmatch(r"\d{4}-\d\d-\d\d", d)
               for d in view.cells["StudyDate"])
    assert str(f.StudyTime.dtype) == str(views["instance"][0].StudyTime.dtype)  # unchanged


def test_one_way_missing_values_look():
    idx = pd.Index(["a" * 44, "b" * 44, "c" * 44], name="patient")
    f = pd.DataFrame({"PatientName": pd.Categorical(["X", None, ""]),
                      "PatientID": pd.array(["1", pd.NA, "3"], dtype="string"),
                      "PatientBirthDate": pd.to_datetime(["2000-01-02", None, "1999-12-31"]),
                      "study_count": pd.array([1, None, 3], dtype="Int64"),
                      "series_count": [1.0, np.nan, 2.5],
                      "instance_count": [1, 2, 3]}, index=idx)
    view = compact_view(f, "patient")
    assert [row[1] for row in view.frame.itertuples()] == ["X", MISSING, MISSING]
    for col in ("PatientID", "PatientBirthDate", "study_count", "series_count"):
        assert view.cells[col][1] == MISSING, col
    assert view.cells["series_count"] == ["1", MISSING, "2.5"]
    assert "nan" not in repr(view).lower() and "<NA>" not in repr(view) and "NaT" not in repr(view)


def test_the_view_changes_nothing_in_the_frame(views):
    f, _ = views["series"]
    before = f.copy(deep=True)
    f.orthanc.show(max_rows=3)
    pd.testing.assert_frame_equal(f, before)


def test_rows_are_bounded_head_and_tail(views):
    f, _ = views["instance"]
    view = f.orthanc.show(max_rows=6)
    assert view.ids[3] == "…" and len(view.ids) == 7
    assert view.ids[:3] == [i[:ID_CHARS] for i in f.index.get_level_values("instance")[:3]]
    assert view.ids[-1] == f.index.get_level_values("instance")[-1][:ID_CHARS]
    assert f"{len(f):,} rows, 6 shown" in repr(view).replace("\n", " ")
    with pytest.raises(ValueError, match="max_rows"):
        f.orthanc.show(max_rows=0)


def test_columns_by_name_and_vectors_and_affines_summarized(views):
    f, _ = views["instance"]
    view = f.orthanc.show(columns=["SeriesDescription", "ImagePositionPatient"], max_rows=2)
    assert list(view.frame.columns) == ["SeriesDescription", "ImagePositionPatient"]
    assert re.fullmatch(r"\(-?[\d.]+, -?[\d.]+, -?[\d.]+\)", view.cells["ImagePositionPatient"][0])
    with pytest.raises(KeyError, match="NoSuchColumn"):
        f.orthanc.show(columns=["NoSuchColumn"])
    affine = [0, 0, 0.8, -100, 0, 0.7, 0, -110, 2.5, 0, 0, 0, 0, 0, 0, 1]
    assert format_value(affine) == "affine: voxel 2.5×0.7×0.8 mm, origin (-100, -110, 0)"
    assert format_value(np.reshape(affine, (4, 4)).ravel()) == format_value(affine)


@pytest.mark.parametrize(("raw", "shown"), [("165447.788280", "16:54:47"), ("1654", "16:54"),
                                            ("16:54:47", "16:54:47"), ("", MISSING),
                                            ("not a time", "not a time")])
def test_format_time(raw, shown):
    assert format_time(raw) == shown
