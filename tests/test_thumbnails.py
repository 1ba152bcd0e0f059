"""Thumbnails (``_ops/thumbnails.py``, ``_imaging/thumbnails.py``, ``middle_instances``).

Panels are read back from the figure a user gets: one axes per series (its label is the
series id), the title and the text under the image, and the image array itself, compared with
pydicom's decoding of the instance that holds the middle slice.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402

import orthanc_pandas as op  # noqa: E402
from orthanc_pandas._frame.levels import middle_instances  # noqa: E402
from orthanc_pandas._frame.schema import INDEX_NAMES  # noqa: E402
from orthanc_pandas._imaging.display import apply_window  # noqa: E402
from orthanc_pandas._imaging.thumbnails import decoded_panel_image, instance_slice  # noqa: E402
from orthanc_pandas.testing.synthetic import (  # noqa: E402
    make_multiframe,
    make_series,
    to_bytes,
    uid,
)

MARK = 3000  # stored value of the marker pixel (white in every window used here)


def _numbered(k, rows, cols, z):
    """Each slice distinct (its index in the ramp), a marker in the stored top-left pixel."""
    out = (np.arange(rows * cols).reshape(rows, cols) % 200 + 900 + 37 * k).astype(np.int16)
    out[0, 0] = MARK
    return out


def _series():
    """name -> (datasets in position order, what the panel's status line says)."""
    common = dict(patient_id="THUMB1", patient_name="Thumb^Nail", study_date="20210305",
                  study_uid="1.2.826.0.1.3680043.10.4242.1")
    out = {
        # numbered against its positions: the InstanceNumber middle is another slice
        "ct shuffled": make_series(9, 24, 32, series_number=1, instance_numbers="shuffled",
                                   pixels=_numbered, seed="t-ct", series_description="ct shuffled",
                                   **common),
        "mr": make_series(4, 16, 16, modality="MR", dtype=np.uint16, intercept=0.0,
                          series_number=2, seed="t-mr", series_description="mr", **common),
        # both in-plane axes reversed: the stored top-left pixel shows at the bottom right
        "flipped": make_series(3, 16, 20, orientation=(-1, 0, 0, 0, -1, 0), pixels=_numbered,
                               series_number=3, seed="t-flip", series_description="flipped",
                               **common),
        "gap": make_series(4, 8, 8, positions=[(0, 0, 0), (0, 0, 2.5), (0, 0, 5), (0, 0, 20)],
                           series_number=4, seed="t-gap", series_description="gap", **common),
    }
    # a localizer in front of an axial stack: the middle is the stack's, not moved by it
    stack = make_series(5, 12, 12, series_number=5, pixels=_numbered, seed="t-loc",
                        series_description="with localizer", **common)
    scout = make_series(1, 12, 12, orientation=(1, 0, 0, 0, 0, -1), series_number=5,
                        series_uid=stack[0].SeriesInstanceUID, seed="t-scout",
                        series_description="with localizer", **common)[0]
    scout.ImagePositionPatient = [0, 500, 500]
    scout.SOPInstanceUID = scout.file_meta.MediaStorageSOPInstanceUID = uid("scout", "t-loc")
    out["with localizer"] = [scout, *stack]
    no_pixels = make_series(1, 8, 8, series_number=6, modality="SR", seed="t-sr",
                            series_description="no pixels", **common)
    for ds in no_pixels:
        for kw in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                   "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
            if kw in ds:
                delattr(ds, kw)
    out["no pixels"] = no_pixels
    # 4 frames stored in descending position: the middle by position (rank 2) is frame 1,
    # the middle by frame index frame 2
    mf = make_multiframe(4, 8, 8, frame_order="descending", seed="t-mf",
                         series_description="multiframe", patient_id="THUMB1")
    mf.SeriesNumber = 7
    mf.StudyInstanceUID = common["study_uid"]
    mf.StudyDate = "20210305"
    out["multiframe"] = [mf]
    return out


SERIES = _series()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def server(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc

    with LocalOrthanc(name="thumbnails") as srv:
        srv.upload_bytes([to_bytes(ds) for dss in SERIES.values() for ds in dss])
        yield srv


@pytest.fixture(scope="module")
def frame(server):
    return op.read_orthanc(server.url)


@pytest.fixture(scope="module")
def series(frame):
    return frame.orthanc.series(geometry=True)


def _panels(fig) -> dict[str, dict]:
    """series id -> its panel's artists by part ("image", "title", "status", "error")."""
    (ax,) = fig.axes
    out: dict[str, dict] = {}
    for artist in [*ax.images, *ax.texts]:
        if artist.get_gid() in ("image", "title", "status", "error"):
            out.setdefault(artist.get_label(), {})[artist.get_gid()] = artist
    return out


def _by_description(series: pd.DataFrame) -> dict[str, str]:
    return {str(d): i[2] for i, d in zip(series.index, series.SeriesDescription, strict=True)}


def _status(panel: dict) -> str:
    return panel["status"].get_text().replace("\n", " ") if "status" in panel else ""


def _title(panel: dict) -> str:
    return panel["title"].get_text()


def _image(panel: dict) -> np.ndarray:
    return np.asarray(panel["image"].get_array())


def _note(fig) -> str:
    return " ".join(t.get_text() for t in fig.axes[0].texts if t.get_gid() == "note")


def _middle_by_position(name: str) -> pydicom.Dataset:
    """The middle slice as a person counts it: sorted along the normal (make_series order)."""
    stack = [d for d in SERIES[name] if tuple(map(float, d.ImageOrientationPatient)) ==
             tuple(map(float, SERIES[name][-1].ImageOrientationPatient))]
    return stack[len(stack) // 2]


def _windowed(ds, center=40.0, width=400.0) -> np.ndarray:
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return apply_window(hu, center, width)


# -- panels and labels ------------------------------------------------------------------------
def test_one_panel_per_series_labelled_with_what_identifies_it(frame, series):
    fig = series.orthanc.thumbnails(frame)
    panels = _panels(fig)
    assert len(panels) == len(series) == len(SERIES)
    assert set(panels) == set(series.index.get_level_values("series"))
    for (_, _, sid), row in series.iterrows():
        ax = panels[sid]
        title = _title(ax)
        assert "THUMB1" in title and "2021-03-05" in title
        assert f"#{row.SeriesNumber} {row.Modality}" in title
        assert str(row.SeriesDescription)[:20] in title.replace("\n", " ")
        status = _status(ax)
        if row.volume_ok:
            assert status.startswith("volume of ")
        else:
            assert status.startswith("no volume: ")
    by = _by_description(series)
    assert "not uniform" in _status(panels[by["gap"]])
    assert "Not an image" in _status(panels[by["no pixels"]])


def test_a_series_without_pixels_gets_a_panel_saying_why(frame, series):
    fig = series.orthanc.thumbnails(frame)
    panel = _panels(fig)[_by_description(series)["no pixels"]]
    assert "image" not in panel
    assert "Not an image" in panel["error"].get_text()


def test_without_geometry_the_panel_says_the_slice_count(frame):
    fig = frame.orthanc.thumbnails()  # the instance frame: series() without geometry
    panels = _panels(fig)
    by = _by_description(frame.orthanc.series())
    assert len(panels) == len(SERIES)
    assert _status(panels[by["ct shuffled"]]) == "9 slices"
    assert _status(panels[by["multiframe"]]) == "4 slices"


# -- the pixels -------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["file", "rendered"])
def test_the_middle_slice_by_position_is_pydicoms_decoding_windowed(frame, series, source):
    fig = series.orthanc.thumbnails(frame, source=source)
    ax = _panels(fig)[_by_description(series)["ct shuffled"]]
    expected = _windowed(_middle_by_position("ct shuffled"))  # the file's window, W400 L40
    got = _image(ax)
    assert got.shape == expected.shape
    if source == "file":  # the stored values, windowed here: exact
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    else:  # Orthanc's 8-bit rendering of the same window: within one gray level
        assert np.abs(got * 255 - np.round(expected * 255)).max() <= 1.0
    # not the slice a sort by InstanceNumber would give
    numbers = sorted(SERIES["ct shuffled"], key=lambda d: int(d.InstanceNumber))
    assert not np.allclose(got, _windowed(numbers[len(numbers) // 2]), atol=2 / 255)


@pytest.mark.parametrize("source", ["file", "rendered"])
def test_panels_are_the_right_way_up(frame, series, source):
    """IOP (-1,0,0, 0,-1,0): rows run anterior and columns to the patient's right, so the
    stored top-left pixel belongs at the screen's bottom right (radiological display)."""
    fig = series.orthanc.thumbnails(frame, source=source)
    got = _image(_panels(fig)[_by_description(series)["flipped"]])
    peak = np.unravel_index(np.argmax(got), got.shape)
    assert peak == (got.shape[0] - 1, got.shape[1] - 1)
    ax = _panels(fig)[_by_description(series)["ct shuffled"]]  # the usual axial: as stored
    assert np.unravel_index(np.argmax(_image(ax)), _image(ax).shape) == (0, 0)


def test_what_the_figure_shows_is_the_right_way_up(frame, series):
    """Rendered to pixels: the flipped series' marker is at the bottom right of its image."""
    fig = series.orthanc.thumbnails(frame)
    image = _panels(fig)[_by_description(series)["flipped"]]["image"]
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    box = image.get_window_extent()  # display pixels, from the bottom left
    height = rgba.shape[0]
    crop = rgba[int(height - box.y1) + 1:int(height - box.y0) - 1,
                int(box.x0) + 1:int(box.x1) - 1, 0]
    rows, cols = np.nonzero(crop >= 250)
    assert rows.size and rows.min() > crop.shape[0] * 0.8 and cols.min() > crop.shape[1] * 0.8


def test_a_localizer_does_not_move_the_middle(frame, series):
    fig = series.orthanc.thumbnails(frame)
    got = _image(_panels(fig)[_by_description(series)["with localizer"]])
    np.testing.assert_allclose(got, _windowed(_middle_by_position("with localizer")), atol=1e-12)


def test_a_multiframe_instance_shows_its_middle_frame_by_position(frame, series):
    fig = series.orthanc.thumbnails(frame)
    got = _image(_panels(fig)[_by_description(series)["multiframe"]])
    mf = SERIES["multiframe"][0]
    vol = op.volume_from_datasets([mf])  # sorted by position
    middle = vol.isel(z=vol.sizes["z"] // 2)
    assert int(middle.frame) == 1
    hu = mf.pixel_array[1].astype(np.float64) * 1.0 - 1024.0
    np.testing.assert_allclose(middle.values, hu)
    np.testing.assert_allclose(got, apply_window(hu, 40, 400), atol=1e-12)  # soft tissue


def test_rendered_shows_a_multiframe_frame_and_says_what_it_cannot_render(frame, series):
    fig = series.orthanc.thumbnails(frame, source="rendered")
    panels, by = _panels(fig), _by_description(series)
    mf = SERIES["multiframe"][0]  # /frames/2/rendered: the middle by frame index
    assert _image(panels[by["multiframe"]]).shape == mf.pixel_array[2].shape
    assert "image" not in panels[by["no pixels"]] and panels[by["no pixels"]]["error"].get_text()


def test_windows_presets_apply_to_ct_panels_and_pairs_to_all(frame, series):
    fig = series.orthanc.thumbnails(frame, window="lung")
    by, panels = _by_description(series), _panels(fig)
    lung = _windowed(_middle_by_position("ct shuffled"), -600, 1500)
    np.testing.assert_allclose(_image(panels[by["ct shuffled"]]), lung, atol=1e-12)
    assert _image(panels[by["mr"]]).max() == pytest.approx(1.0)  # the MR keeps its percentiles
    with pytest.raises(ValueError, match="source='file'"):
        series.orthanc.thumbnails(frame, window="auto", source="rendered")
    with pytest.raises(ValueError, match="Unknown window"):
        series.orthanc.thumbnails(frame, window="liver")


def test_monochrome1_is_shown_inverted():
    ds = make_series(1, 6, 6, modality="CR", seed="mono1")[0]
    ds.PhotometricInterpretation = "MONOCHROME1"
    image, _, window = decoded_panel_image(instance_slice(ds))
    plain = make_series(1, 6, 6, modality="CR", seed="mono1")[0]
    normal, _, _ = decoded_panel_image(instance_slice(plain), window)
    np.testing.assert_allclose(image, 1.0 - normal)


# -- bounded, saved, from every kind of frame -------------------------------------------------
def test_bounded_says_what_was_left_out(frame, series):
    fig = series.orthanc.thumbnails(frame, max_panels=3)
    panels = _panels(fig)
    assert list(panels) == list(series.index.get_level_values("series")[:3])
    note = _note(fig)
    assert f"3 of {len(series)} series shown" in note
    assert f"{len(series) - 3} left out" in note and f"max_panels={len(series)}" in note
    assert _note(series.orthanc.thumbnails(frame)) == ""
    with pytest.raises(ValueError, match="max_panels"):
        series.orthanc.thumbnails(frame, max_panels=0)


def test_save_writes_a_png(frame, series, tmp_path):
    path = tmp_path / "cohort.png"
    fig = series.orthanc.thumbnails(frame, save=path, max_panels=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(_panels(fig)) == 4  # the figure is returned too


def test_level_first_frame_reads_its_rows_and_gives_the_same_images(server, frame, series):
    s2 = op.read_orthanc(server.url, level="series")
    fig1, fig2 = series.orthanc.thumbnails(frame), s2.orthanc.thumbnails()
    p1, p2 = _panels(fig1), _panels(fig2)
    assert set(p1) == set(p2)
    for sid, panel in p1.items():
        if "image" in panel:
            np.testing.assert_array_equal(_image(panel), _image(p2[sid]))


def test_instance_frame_bounded_checks_only_the_series_shown(frame, series):
    fig = frame.orthanc.thumbnails(geometry=True, max_panels=2)
    panels = _panels(fig)
    assert list(panels) == list(series.index.get_level_values("series")[:2])
    assert all(_status(p).startswith(("volume of", "no volume")) for p in panels.values())
    assert f"2 of {len(series)} series shown" in _note(fig)


def test_study_frame_gives_a_panel_per_series(frame):
    fig = frame.orthanc.studies().orthanc.thumbnails(frame)
    assert len(_panels(fig)) == len(SERIES)


# -- the middle instance (pure) ---------------------------------------------------------------
def _frame_of(rows: list[dict]) -> pd.DataFrame:
    idx = pd.MultiIndex.from_tuples([("p", "st", r.pop("series", "se"), f"i{k}")
                                     for k, r in enumerate(rows)], names=INDEX_NAMES)
    return pd.DataFrame(rows, index=idx)


def _axial(z, number=None, iop=(1, 0, 0, 0, 1, 0), **extra):
    row = {f"ImagePositionPatient_{k}": v for k, v in enumerate((0.0, 0.0, z))}
    row |= {f"ImageOrientationPatient_{k}": float(v) for k, v in enumerate(iop)}
    return row | {"InstanceNumber": number} | extra


def test_middle_instances_sort_by_position_not_number():
    df = _frame_of([_axial(z, n) for z, n in [(40, 1), (0, 2), (30, 3), (10, 4), (20, 5)]])
    assert middle_instances(df).instance.tolist() == ["i4"]  # z = 20, not InstanceNumber 3


def test_middle_instances_without_positions_fall_back_to_instance_number():
    df = _frame_of([{"InstanceNumber": n} for n in (5, 1, 3, 2, 4)])
    assert middle_instances(df).instance.tolist() == ["i2"]  # number 3 of 1..5


def test_middle_instances_ignore_a_second_orientation_and_name_the_frame():
    rows = [_axial(500, 1, iop=(1, 0, 0, 0, 0, -1))] + [_axial(z, 2 + k) for k, z in enumerate(
        (0, 5, 10))] + [_axial(0, 1, series="mf", NumberOfFrames=9)]
    out = middle_instances(_frame_of(rows))
    assert out.instance.tolist() == ["i2", "i4"]  # z = 5 of the axial stack; the multi-frame
    assert out.frame.tolist() == [0, 4]
    assert out.index.get_level_values("series").tolist() == ["se", "mf"]


def test_rendered_needs_no_window_it_cannot_apply(frame):
    with pytest.raises(ValueError, match="source must be one of"):
        frame.orthanc.thumbnails(source="preview")


def test_png_bytes_are_a_figure_a_notebook_can_show(frame, series):
    fig = series.orthanc.thumbnails(frame, max_panels=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"
