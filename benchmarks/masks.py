"""Benchmark: an RTSTRUCT with 10 ROIs on a 100 x 512 x 512 CT, as masks: ours vs rt-utils.

The case is generated: the CT with ``make_series(100, 512, 512)`` (axial, square 0.977 mm
pixels, 3 mm slices), ten known masks (a body outline, lungs, heart, liver, spinal cord and
four small nodes of 2.5 to 5 voxels radius), and the RTSTRUCT written from them by rt-utils'
own ``RTStructBuilder`` (``add_roi``: OpenCV contours through the centres of the boundary
voxels). Then, each timed ``--repeat`` times (median):

* rt-utils: ``RTStructBuilder.create_from(ct_dir, rt_path)`` (reads the 100 CT files and
  the RTSTRUCT) and ``get_roi_mask_by_name`` for the 10 ROIs; and the masks alone;
* ours, from the file: ``pydicom.dcmread(rt_path)`` + ``rtstruct_mask(ds, ct, rule=...)``
  (``ct`` is the volume, built once, as a user has it), for ``rule="centre"`` and
  ``rule="fillpoly"``;
* ours, from a local Orthanc (unless ``--no-server``): ``rows.orthanc.mask(like=ct, rule=...)``,
  which also downloads the RTSTRUCT.

Then the agreement of each with rt-utils' masks and with the known masks (voxel counts,
voxels that differ, Dice), per ROI. No time is asserted anywhere (the tests check the
agreement, tests/test_masks.py, and never time anything); the one assert here checks that
``mask()`` through Orthanc gives the masks the file gave.

Run: ``PYTHONPATH=. python benchmarks/masks.py [--repeat 3] [--no-server]`` (needs
``pip install rt-utils``, which brings OpenCV).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

import orthanc_pandas as op
from orthanc_pandas._imaging.masks import rtstruct_mask
from orthanc_pandas.testing.synthetic import make_series, to_bytes

N, SIZE = 100, 512
SPACING = (0.9765625, 0.9765625)   # square: rt-utils swaps row and column spacing


def known_masks() -> dict[str, np.ndarray]:
    """Ten ROIs as ``(z, y, x)`` bool arrays in slice-position order."""
    z, y, x = np.ogrid[0:N, 0:SIZE, 0:SIZE]

    def ellipsoid(cz, cy, cx, rz, ry, rx):
        return ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1

    body = np.broadcast_to(((y - 256) / 170.0) ** 2 + ((x - 256) / 220.0) ** 2 <= 1, (N, SIZE, SIZE))
    cord = np.broadcast_to(((y - 370) / 9.0) ** 2 + ((x - 256) / 9.0) ** 2 <= 1, (N, SIZE, SIZE))
    rois = {
        "body": body.copy(),
        "lung_l": ellipsoid(45, 240, 340, 35, 90, 60),
        "lung_r": ellipsoid(45, 240, 172, 35, 90, 60),
        "heart": ellipsoid(40, 260, 270, 15, 50, 45),
        "liver": ellipsoid(80, 270, 180, 15, 70, 80),
        "cord": cord.copy(),
    }
    for n, (cz, cy, cx, r) in enumerate([(30, 200, 330, 2.5), (50, 280, 160, 3.0),
                                         (60, 230, 350, 4.0), (70, 300, 250, 5.0)]):
        rois[f"node_{n + 1}"] = ellipsoid(cz, cy, cx, max(r * SPACING[0] / 3.0, 1.0), r, r)
    return rois


def build_case(folder: Path):
    """The CT datasets, the CT folder, the RTSTRUCT path and the known masks."""
    from rt_utils import RTStructBuilder

    ct = make_series(N, SIZE, SIZE, seed="masks-bench", pixel_spacing=SPACING, slice_spacing=3.0,
                     series_description="ct")
    ct_dir = folder / "ct"
    ct_dir.mkdir()
    for k, ds in enumerate(ct):
        (ct_dir / f"{k:03d}.dcm").write_bytes(to_bytes(ds))
    known = known_masks()
    rt = RTStructBuilder.create_new(dicom_series_path=str(ct_dir))
    for name, m in known.items():   # rt-utils wants (y, x, slice), slices by position
        rt.add_roi(mask=np.ascontiguousarray(np.moveaxis(m, 0, -1)), name=name)
    rt_path = folder / "rt.dcm"
    rt.save(str(rt_path))
    return ct, ct_dir, rt_path, known


def rt_utils_masks(ct_dir: Path, rt_path: Path, names) -> tuple[dict[str, np.ndarray], float, float]:
    from rt_utils import RTStructBuilder

    t0 = time.perf_counter()
    rt = RTStructBuilder.create_from(dicom_series_path=str(ct_dir), rt_struct_path=str(rt_path))
    t1 = time.perf_counter()
    masks = {n: rt.get_roi_mask_by_name(n) for n in names}
    t2 = time.perf_counter()
    uids = [str(ds.SOPInstanceUID) for ds in rt.series_data]
    return {n: (uids, np.moveaxis(m, -1, 0)) for n, m in masks.items()}, t2 - t0, t2 - t1


def _median_time(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2 * np.logical_and(a, b).sum() / s


def main(argv: list[str]) -> int:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 3
    server = "--no-server" not in argv
    with tempfile.TemporaryDirectory() as tmp:
        print(f"building the case ({N} x {SIZE} x {SIZE} CT, 10 ROIs written by rt-utils)...",
              file=sys.stderr)
        ct, ct_dir, rt_path, known = build_case(Path(tmp))
        names = list(known)
        vol = op.volume_from_datasets(ct)
        order = [{str(d.SOPInstanceUID): k for k, d in enumerate(ct)}[u]
                 for u in vol.sop_instance_uid.values]   # the volume's slices, by position index
        rows = []
        totals, masks_only, theirs = [], [], None
        for _ in range(repeat):
            theirs, total, only = rt_utils_masks(ct_dir, rt_path, names)
            totals.append(total)
            masks_only.append(only)
        rows.append(("rt-utils: read CT + RTSTRUCT, 10 masks", statistics.median(totals)))
        rows.append(("rt-utils: 10 masks (CT already read)", statistics.median(masks_only)))
        ours = {}
        for rule in ("centre", "fillpoly"):
            t, m = _median_time(lambda rule=rule: rtstruct_mask(pydicom.dcmread(rt_path), vol, rule=rule),
                                repeat)
            rows.append((f"ours, rule={rule!r}: read RTSTRUCT file + masks", t))
            ours[rule] = m
        if server:
            from orthanc_pandas.testing import LocalOrthanc

            with LocalOrthanc(name="masks-bench") as srv:
                srv.upload_bytes([to_bytes(d) for d in ct] + [rt_path.read_bytes()])
                df = op.read_orthanc(srv.url)
                like = df[df.Modality == "CT"].orthanc.volume()
                rt_rows = df[df.Modality == "RTSTRUCT"]
                for rule in ("centre", "fillpoly"):
                    t, m = _median_time(lambda rule=rule: rt_rows.orthanc.mask(like=like, rule=rule),
                                        repeat)
                    rows.append((f"ours, rule={rule!r}: rows.orthanc.mask() from Orthanc", t))
                    assert np.array_equal(m.values, ours[rule].values)

    print(f"\n{N} x {SIZE} x {SIZE} CT, 10 ROIs; median of {repeat} runs\n")
    print("| what | seconds |\n|---|---:|")
    for what, t in rows:
        print(f"| {what} | {t:.2f} |")
    print("\nAgreement per ROI (voxels; differ = voxels where the two masks differ)\n")
    print("| ROI | known | rt-utils | fillpoly | fillpoly vs rt-utils differ | centre "
          "| centre vs rt-utils Dice | centre vs known Dice |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, name in enumerate(names):
        uids, theirs_m = theirs[name]
        pos = {u: k for k, u in enumerate(uids)}
        t = theirs_m[[pos[u] for u in vol.sop_instance_uid.values]].astype(bool)
        k = known[name][order]
        f, c = ours["fillpoly"].values[i], ours["centre"].values[i]
        print(f"| {name} | {int(k.sum())} | {int(t.sum())} | {int(f.sum())} | {int((f != t).sum())} "
              f"| {int(c.sum())} | {_dice(c, t):.3f} | {_dice(c, k):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
