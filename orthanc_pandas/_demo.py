"""``orthanc-pandas demo``: the library end to end on a throw-away local Orthanc.

Starts a :class:`~orthanc_pandas.testing.LocalOrthanc`, loads pydicom's sample files and a
generated CT phantom (patient ``JaneDoe``, series ``ct_scan``), reads the index, prints a
cohort summary, writes ``demo-index.parquet`` and ``demo-phantom.png`` (the phantom's middle
slice), and stops the server.
"""

from __future__ import annotations

import os
import struct
import sys
import textwrap
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from orthanc_pandas._ops.read import read_orthanc
from orthanc_pandas.errors import ParseWarning
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing.samples import load_samples


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a 2D array as an 8-bit grayscale PNG (scaled to its min..max), no extra packages."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.nanmin(img), np.nanmax(img)
    scaled = np.zeros(img.shape, np.uint8) if hi <= lo else ((img - lo) / (hi - lo) * 255).round().astype(np.uint8)
    h, w = scaled.shape
    raw = b"".join(b"\x00" + scaled[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def run_demo(output_dir: str | os.PathLike = ".", *, out=None) -> dict:
    """Run the demo; returns the paths written. Printing goes to ``out`` (stdout)."""

    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stdout = sys.stdout
    if out is not None:
        sys.stdout = out
    try:
        with LocalOrthanc(name="orthanc-pandas-demo") as server:
            _section(f"A throw-away Orthanc {server.client().version} at {server.url}")
            status = load_samples(server)
            print("stored:", ", ".join(f"{v} {k}" for k, v in status.items()))
            t = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ParseWarning)
                df = read_orthanc(server.url, progress=False)
            print(f"read_orthanc: {len(df)} rows x {df.shape[1]} columns in {time.perf_counter() - t:.2f} s "
                  f"({df.memory_usage(deep=True).sum() / max(len(df), 1):.0f} bytes per instance)")
            for w in caught:
                print(f"  warning: {w.message}")

            _section("Cohort")
            c = df.orthanc.counts
            print(f"{c['patients']} patients, {c['studies']} studies, {c['series']} series, {c['instances']} instances")
            patients = df.orthanc.patients()  # one row per patient / study, no request
            print("\npatients by sex:\n" + patients["PatientSex"].value_counts(dropna=False).to_string())
            studies = df.orthanc.studies()
            print("\nstudies per year:\n" + studies["StudyDate"].dt.year.astype("Int64").value_counts(dropna=False)
                  .sort_index().to_string())
            per_mod = df.groupby("Modality", observed=True).agg(
                series=("SeriesInstanceUID", "nunique"), instances=("SOPInstanceUID", "size"))
            print("\nseries and instances per modality:\n" + per_mod.sort_values("instances", ascending=False).to_string())

            _section("One row per series")
            series = df.orthanc.series(geometry=True)
            ok = series["volume_ok"]  # boolean, never missing
            print(f"{int(ok.sum())} of {len(series)} series make a volume (checked from the index "
                  "columns with volume()'s own checks, no pixels read); why not, for the others:")
            bad = series.loc[~ok, ["Modality", "slice_count", "volume_problem"]]
            for row in bad.head(6).itertuples(index=False):  # the whole reason, wrapped
                print(textwrap.fill(f"{row.Modality} ({row.slice_count} slices): {row.volume_problem}",
                                    width=100, initial_indent="- ", subsequent_indent="  "))
            if len(bad) > 6:
                print(f"... {len(bad) - 6} more")

            _section("Selecting the CT phantom")
            ct = df[(df["PatientName"] == "JaneDoe") & (df["SeriesDescription"] == "ct_scan")]
            print(f"{len(ct)} slices of series {ct['SeriesInstanceUID'].iloc[0]}")
            written = {}
            if hasattr(ct.orthanc, "volume"):
                vol = ct.orthanc.volume()
                mid = vol.sizes["z"] // 2
                print(f"volume: dims {dict(vol.sizes)}, dtype {vol.dtype}, units {vol.attrs.get('units')}, "
                      f"spacing {vol.attrs.get('spacing')}")
                png = out_dir / "demo-phantom.png"
                write_png(png, np.clip(vol.isel(z=mid).values, -200, 200))
                written["png"] = png
                print(f"wrote {png} (middle slice z = {float(vol['z'][mid]):.1f} mm, window -200..200 HU)")

            _section("Parquet")
            pq = out_dir / "demo-index.parquet"
            df.to_parquet(pq)
            back = pd.read_parquet(pq)
            pd.testing.assert_frame_equal(back, df)
            written["parquet"] = pq
            print(f"wrote {pq} ({pq.stat().st_size / 1e3:.0f} kB); pd.read_parquet gives back an equal "
                  f"frame, attrs included: {back.attrs == df.attrs}")
            print(f"\nthe server at {server.url} stops now; its files are removed.")
        return written
    finally:
        sys.stdout = stdout
