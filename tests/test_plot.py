"""vol.orthanc.plot() and _imaging/display.py: the right way up, windowed, in mm, no UID.

Markers are found where a person would see them: the figure is rendered to RGBA and the
white pixels are located inside the image's box on the canvas.
"""

from __future__ import annotations

import re
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import orthanc_pandas as op  # noqa: E402
from orthanc_pandas._imaging.display import (  # noqa: E402
    CT_WINDOWS,
    apply_window,
    choose_window,
    edge_letters,
    plane_layout,
    plot_title,
)
from orthanc_pandas._imaging.masks import seg_mask  # noqa: E402
from orthanc_pandas.testing.synthetic import make_seg, make_series  # noqa: E402

AIR, MARK = -1000.0, 1000.0  # HU: black and white in every CT window below bone
UID_RE = re.compile(r"\d+(\.\d+){3,}")

ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "axial, both axes reversed": (-1, 0, 0, 0, -1, 0),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "sagittal, rows growing up": (0, 1, 0, 0, 0, 1),
    "coronal": (1, 0, 0, 0, 0, -1),
    "oblique": (np.cos(0.3), np.sin(0.3), 0.0, -np.sin(0.3) * np.cos(0.2),
                np.cos(0.3) * np.cos(0.2), np.sin(0.2)),
}

#: corners as signs along L, P, S; each plane sees its four quadrants among them
CORNERS = {"superior anterior right": (-1, -1, 1), "superior posterior left": (1, 1, 1),
           "inferior anterior left": (1, -1, -1), "inferior posterior right": (-1, 1, -1)}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _series(orientation=(1, 0, 0, 0, 1, 0), n=12, rows=16, cols=16, corner=None,
            pixel_spacing=(2.0, 2.0), slice_spacing=2.0, **kw):
    """Air everywhere and, with ``corner``, a bright block in that corner of the patient box."""
    iop = np.asarray(orientation, float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    origin = np.zeros(3)

    def lps(k):
        r, c = np.mgrid[0:rows, 0:cols]
        p = origin + k * slice_spacing * normal
        return (p[:, None, None] + r * pixel_spacing[0] * col_dir[:, None, None]
                + c * pixel_spacing[1] * row_dir[:, None, None])

    every = np.stack([lps(k) for k in range(n)])  # (n, 3, rows, cols)
    lo, hi = every.min(axis=(0, 2, 3)), every.max(axis=(0, 2, 3))

    def pixels(k, r, c, z):
        out = np.full((r, c), AIR + 1024)
        if corner is not None:
            p = lps(k)
            inside = np.ones((r, c), bool)
            for axis, sign in enumerate(corner):
                t = (p[axis] - lo[axis]) / max(hi[axis] - lo[axis], 1e-9)
                inside &= (t >= 0.7) if sign > 0 else (t <= 0.3)
            out[inside] = MARK + 1024
        return out

    return make_series(n, rows, cols, orientation=orientation, pixel_spacing=pixel_spacing,
                       slice_spacing=slice_spacing, origin=origin, pixels=pixels, **kw)


def _volume(*args, **kw):
    return op.volume_from_datasets(_series(*args, **kw))


def _marker_place(fig, ax=None):
    """(fraction down, fraction across) of the white pixels' centre inside the image box."""
    ax = ax or fig.axes[0]
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    box = ax.images[0].get_window_extent()
    height = rgba.shape[0]
    sub = rgba[int(round(height - box.y1)):int(round(height - box.y0)),
               int(round(box.x0)):int(round(box.x1))]
    white = (sub[..., :3] >= 250).all(axis=-1)
    assert white.any(), "no marker on the screen"
    ys, xs = np.nonzero(white)
    return ys.mean() / sub.shape[0], xs.mean() / sub.shape[1]


def _through_marker(vol, plane):
    """An index of the plane's slices that cuts the marker."""
    dim = plane_layout(vol, plane).normal_dim
    counts = (vol > 0).sum([d for d in vol.dims if d != dim]).values
    return int(np.argmax(counts))


# --------------------------------------------------------------------------- windows


def test_soft_tissue_window_maps_known_hu_to_known_gray():
    c, w = CT_WINDOWS["soft tissue"]
    assert (c, w) == (40.0, 400.0)
    np.testing.assert_allclose(apply_window([-1000, -160, 40, 240, 3000], c, w),
                               [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(apply_window([-60, 140], c, w), [0.25, 0.75])


@pytest.mark.parametrize("name, black, mid, white", [
    ("lung", -1350, -600, 150), ("bone", -500, 400, 1300), ("brain", 0, 40, 80)])
def test_presets_put_their_edges_at_black_and_white(name, black, mid, white):
    np.testing.assert_allclose(apply_window([black, mid, white], *CT_WINDOWS[name]),
                               [0.0, 0.5, 1.0])


def test_the_plotted_gray_levels_are_the_windowed_hu():
    vol = _volume(corner=CORNERS["superior anterior right"])
    vol[:, 8, 8] = 40.0     # mid gray in soft tissue
    vol[:, 9, 9] = -160.0   # black
    vol[:, 10, 10] = 240.0  # white
    gray = vol.orthanc.plot(window="soft tissue", index=3).axes[0].images[0].get_array()
    assert (gray[8, 8], gray[9, 9], gray[10, 10]) == (0.5, 0.0, 1.0)
    gray = vol.orthanc.plot(window=(40, 80), index=3).axes[0].images[0].get_array()
    assert (gray[8, 8], gray[9, 9], gray[10, 10]) == (0.5, 0.0, 1.0)


def test_default_windows():
    ct = _volume()
    assert choose_window(ct) == (40.0, 400.0)  # the file's WindowCenter/Width (synthetic: 40/400)
    no_file_window = ct.copy()
    del no_file_window.attrs["window_center"], no_file_window.attrs["window_width"]
    assert choose_window(no_file_window) == CT_WINDOWS["soft tissue"]
    mr = xr.DataArray(np.arange(1000.0).reshape(10, 10, 10), dims=("z", "y", "x"),
                      attrs={"modality": "MR"})
    c, w = choose_window(mr)  # 1st to 99th percentile
    assert (c - w / 2, c + w / 2) == pytest.approx(tuple(np.percentile(mr.values, (1, 99))))
    assert choose_window(ct, "auto") == (AIR, 1.0)  # all air: a constant image is mid gray


def test_window_errors_say_what_to_do():
    mr = xr.DataArray(np.zeros((2, 2, 2)), dims=("z", "y", "x"), attrs={"modality": "MR"})
    with pytest.raises(ValueError, match="Hounsfield"):
        choose_window(mr, "lung")
    with pytest.raises(ValueError, match="Unknown window"):
        choose_window(mr, "liver")
    with pytest.raises(ValueError, match="positive"):
        choose_window(mr, (40, 0))


# --------------------------------------------------------------------------- orientation


def test_axial_shows_row_0_at_the_top_like_pixel_array():
    datasets = _series(corner=CORNERS["superior anterior right"])
    vol = op.volume_from_datasets(datasets)
    k = _through_marker(vol, "axial")
    fig = vol.orthanc.plot(index=k, window="soft tissue")
    im = fig.axes[0].images[0]
    stored = datasets[k].pixel_array.astype(float) - 1024  # position order = z order
    np.testing.assert_array_equal(im.get_array(), apply_window(stored, 40, 400))
    assert stored[0, 0] == MARK  # the marker is in the stored top-left corner ...
    down, across = _marker_place(fig)
    assert down < 0.5 and across < 0.5  # ... and on the screen's top left
    assert edge_letters(plane_layout(vol, "axial")) == {
        "top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert [t.get_text() for t in fig.axes[0].texts] == ["A", "P", "R", "L"]


EXPECTED = {  # plane -> (what is at the top, what is on the left), as signs along L, P, S
    "axial": (("P", -1), ("L", -1)),      # anterior up, patient right on the left
    "coronal": (("S", 1), ("L", -1)),     # superior up, patient right on the left
    "sagittal": (("S", 1), ("P", -1)),    # superior up, anterior on the left
}
AXIS = {"L": 0, "P": 1, "S": 2}


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
@pytest.mark.parametrize("corner", list(CORNERS))
def test_each_plane_puts_each_corner_where_radiologists_expect(orientation, corner):
    signs = CORNERS[corner]
    vol = _volume(ORIENTATIONS[orientation], corner=signs, seed=orientation)
    for plane, ((top_axis, top_sign), (left_axis, left_sign)) in EXPECTED.items():
        fig = vol.orthanc.plot(plane=plane, index=_through_marker(vol, plane), figsize=(3, 3))
        down, across = _marker_place(fig)
        assert (down < 0.5) == (signs[AXIS[top_axis]] == top_sign), (plane, down)
        assert (across < 0.5) == (signs[AXIS[left_axis]] == left_sign), (plane, across)
        plt.close(fig)


@pytest.mark.parametrize("orientation, plane", [
    ("sagittal", "sagittal"), ("sagittal, rows growing up", "sagittal"),
    ("coronal", "coronal"), ("axial", "axial")])
def test_the_default_plane_is_the_acquired_one_superior_up(orientation, plane):
    vol = _volume(ORIENTATIONS[orientation], corner=CORNERS["superior posterior left"])
    lay = plane_layout(vol)
    assert lay.plane == plane and lay.normal_dim == "z"
    fig = vol.orthanc.plot(index=_through_marker(vol, plane))
    assert plane in fig.axes[0].get_title()
    down, _ = _marker_place(fig)
    assert down < 0.5 if plane != "axial" else down > 0.5  # superior (posterior on axial)


def test_a_reversed_volume_still_shows_anterior_at_the_top():
    vol = _volume(corner=CORNERS["superior anterior right"])
    flipped = vol.isel(y=slice(None, None, -1), x=slice(None, None, -1))
    down, across = _marker_place(flipped.orthanc.plot(index=_through_marker(vol, "axial")))
    assert down < 0.5 and across < 0.5


def test_a_single_slice_plots_in_its_own_plane():
    vol = _volume(corner=CORNERS["superior anterior right"])
    k = _through_marker(vol, "axial")
    fig = vol.isel(z=k).orthanc.plot()
    down, across = _marker_place(fig)
    assert down < 0.5 and across < 0.5
    assert f"z = {float(vol.z[k]):.1f} mm" in fig.axes[0].get_title()
    body = (vol > 0).rename("marker")  # a whole-volume mask on one slice: that slice of it
    legend = vol.isel(z=k).orthanc.plot(mask=body).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["marker"]
    with pytest.raises(ValueError, match="its own plane"):
        vol.isel(z=k).orthanc.plot(plane="coronal")


# --------------------------------------------------------------------------- mm, titles


def test_axes_are_mm_with_the_true_aspect_ratio():
    vol = _volume(rows=20, cols=10, pixel_spacing=(0.5, 2.0))  # 10 mm high, 20 mm wide
    fig = vol.orthanc.plot()
    ax = fig.axes[0]
    left, right, bottom, top = ax.images[0].get_extent()
    assert abs(right - left) == pytest.approx(20.0) and abs(bottom - top) == pytest.approx(10.0)
    assert ax.get_xlabel() == "x (mm)" and ax.get_ylabel() == "y (mm)"
    fig.canvas.draw()
    box = ax.images[0].get_window_extent()
    assert box.width / box.height == pytest.approx(2.0, rel=0.02)


def test_titles_name_series_modality_and_position_never_a_uid():
    datasets = _series(series_description="Thorax 1.0 B30f")
    vol = op.volume_from_datasets(datasets)
    for fig in (vol.orthanc.plot(), vol.orthanc.plot(plane="sagittal"),
                vol.orthanc.plot(view="three")):
        titles = [a.get_title() for a in fig.axes] + [fig.get_suptitle()]
        text = " ".join(titles)
        assert "Thorax 1.0 B30f" in text and "CT" in text
        assert not UID_RE.search(text), text
        assert datasets[0].SeriesInstanceUID not in text
    unnamed = vol.rename(datasets[0].SeriesInstanceUID)  # a UID where a description would be
    title = unnamed.orthanc.plot().axes[0].get_title()
    assert not UID_RE.search(title) and title.startswith("CT · axial z = ")
    assert plot_title(vol.rename(None)) == "CT"


def test_three_planes_side_by_side():
    vol = _volume(corner=CORNERS["superior anterior right"])
    idx = {p: _through_marker(vol, p) for p in ("axial", "coronal", "sagittal")}
    fig = vol.orthanc.plot(view="three", index=idx)
    assert len(fig.axes) == 3
    assert [a.get_title().split()[0] for a in fig.axes] == ["axial", "coronal", "sagittal"]
    for ax in fig.axes:
        down, across = _marker_place(fig, ax)
        assert down < 0.5 and across < 0.5
    with pytest.raises(ValueError, match="dict"):
        vol.orthanc.plot(view="three", index=3)


# --------------------------------------------------------------------------- overlays


def test_mask_contours_with_a_legend_of_labels():
    vol = _volume(corner=CORNERS["superior anterior right"])
    body = vol > -500
    seg = xr.concat([body, ~body], dim="segment").assign_coords(segment=["marker", "air"])
    fig = vol.orthanc.plot(index=_through_marker(vol, "axial"), mask=seg)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["marker", "air"]
    assert ax.collections  # the contours
    one = vol.orthanc.plot(mask=seg.sel(segment="marker")).axes[0].get_legend()
    assert [t.get_text() for t in one.get_texts()] == ["marker"]
    fig = vol.orthanc.plot(index=_through_marker(vol, "axial"), mask=body.rename("tumour"),
                           mask_style="fill")
    assert len(fig.axes[0].images) == 2
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["tumour"]
    labels = body.astype(int) * 3
    fig = vol.orthanc.plot(mask=labels, view="three")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["label 3"]
    with pytest.raises(ValueError, match="grid"):
        vol.orthanc.plot(mask=body.isel(x=slice(1, None)))


def test_a_second_volume_overlays_in_colour():
    vol = _volume(corner=CORNERS["superior anterior right"])
    pet = (vol > 0).astype("float32") * 5.0
    pet.attrs = {"modality": "PT"}
    fig = vol.orthanc.plot(index=_through_marker(vol, "axial"), overlay=pet)
    assert len(fig.axes[0].images) == 2
    with pytest.raises(ValueError, match="interp_like"):
        vol.orthanc.plot(overlay=pet.isel(z=slice(1, None)))


# --------------------------------------------------------------------------- extras


def test_interactive_slider_moves_through_slices():
    vol = _volume(corner=CORNERS["superior anterior right"])
    box = vol.orthanc.plot(interactive=True, window="soft tissue")
    slider = box.children[0]
    assert (slider.min, slider.max, slider.value) == (0, vol.sizes["z"] - 1, vol.sizes["z"] // 2)
    k = _through_marker(vol, "axial")
    slider.value = k
    shown = box.figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown, apply_window(vol.isel(z=k).values, 40, 400))


def test_missing_matplotlib_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"orthanc-pandas\[plot\]"):
        _volume().orthanc.plot()


def test_a_dicom_seg_draws_its_segment_where_the_marker_is():
    pytest.importorskip("highdicom")
    datasets = _series(corner=CORNERS["superior anterior right"])
    vol = op.volume_from_datasets(datasets)
    marker = np.stack([ds.pixel_array > 1024 for ds in datasets])[None]
    seg = seg_mask(make_seg(datasets, marker, ["marker"]), vol)   # (segment, z, y, x)
    fig = vol.orthanc.plot(index=_through_marker(vol, "axial"), mask=seg, letters=False)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["marker"]
    ax.get_legend().remove()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    box = ax.images[0].get_window_extent()
    h = rgba.shape[0]
    sub = rgba[int(h - box.y1):int(h - box.y0), int(box.x0):int(box.x1)]
    blue = (sub[..., 2] - sub[..., 0] > 80)  # tab10's first colour, the contour
    ys, xs = np.nonzero(blue)
    assert blue.any() and ys.mean() / sub.shape[0] < 0.5 and xs.mean() / sub.shape[1] < 0.5
