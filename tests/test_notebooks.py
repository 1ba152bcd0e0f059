"""The notebooks and the demo run top to bottom against a real Orthanc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, orthanc_available, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # plots rendered: at least one image output
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot was rendered"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_as_stored(path):
    # nbformat only warns about a cell without an id today (it will be an error); editors that
    # add cells by hand forget them, so check the stored file, before nbformat fills them in
    nbformat = pytest.importorskip("nbformat")
    raw = json.loads(path.read_text())
    assert [i for i, c in enumerate(raw["cells"]) if "id" not in c] == []
    ids = [c["id"] for c in raw["cells"]]
    assert len(set(ids)) == len(ids), "cell ids repeat"
    nbformat.validate(nbformat.from_dict(raw))


def test_demo_writes_valid_parquet_and_png(orthanc_available, tmp_path):
    res = subprocess.run([sys.executable, "-m", "orthanc_pandas._cli", "demo", "--output-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(tmp_path / "demo-index.parquet")
    assert df.orthanc.counts["instances"] == len(df) > 100
    assert (df["PatientName"] == "JaneDoe").sum() == 42  # 40 phantom slices + 2 scout images
    assert f"{df.orthanc.counts['instances']} instances" in res.stdout
    png = (tmp_path / "demo-phantom.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    img = matplotlib.image.imread(tmp_path / "demo-phantom.png")
    assert img.shape[:2] == (128, 128)
    assert img.std() > 0.05  # an image with content, not a blank square
