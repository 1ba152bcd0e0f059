"""The notebooks and the demo run top to bottom against a real Orthanc; what the notebooks
show is looked at: rendered to HTML by nbconvert and opened in headless Chromium."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import IN_CI
from headless_chromium import Chromium, find_chromium

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))

#: What a notebook may print on stderr: a read's one-line summary of the values that did not
#: parse, as Python shows a warning (the user's cell and line, then that line's code).
READ_SUMMARY = re.compile(r"\S+:\d+: ParseWarning: \d+ values? did not parse \(now missing\): [^\n]+\n"
                          r"  [^\n]+\n?")

#: Every output area of a page rendered by nbconvert: its MIME type, its text as shown, and the
#: first line of its cell's code (to say where)
OUTPUTS_JS = """Array.from(document.querySelectorAll('.jp-OutputArea-output')).map(e => ({
  mime: e.getAttribute('data-mime-type') || '', text: e.innerText,
  cell: ((e.closest('.jp-Cell') || e).querySelector('.jp-InputArea-editor') || {innerText: ''})
        .innerText.split('\\n')[0]}))"""


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=lambda p: p.name)
def executed(request, orthanc_available, tmp_path_factory):
    """``(path, notebook, error)``: the notebook run ONCE, top to bottom, with its outputs and
    widget state; every test here looks at that run. ``error`` is the failing cell's
    ``CellExecutionError`` (the outputs stop there, its traceback included), else None."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = request.param
    nb = nbformat.read(path, as_version=4)
    folder = tmp_path_factory.mktemp(path.stem)  # the notebook's working folder
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        return path, nb, exc
    return path, nb, None


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module. Missing: skipped, except under CI (a failure)."""
    binary = find_chromium()
    if binary is None:
        why = ("headless Chromium looks at the rendered notebooks: apt-get install chromium "
               "(scripts/setup.sh does), or set CHROMIUM to the browser's binary")
        if IN_CI:
            pytest.fail(f"CI needs Chromium: {why}")
        pytest.skip(why)
    with Chromium(binary, width=1400) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the rendered notebooks and their full-page screenshots go: $NOTEBOOK_SCREENSHOTS,
    else a folder of this run's temporary directory (the test prints the path)."""
    chosen = os.environ.get("NOTEBOOK_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("notebook-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_notebook_runs_top_to_bottom(executed):
    path, nb, error = executed
    if error is not None:
        pytest.fail(f"{path.name} stopped at a failing cell:\n{error}")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # plots rendered: at least one image output
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot was rendered"


def test_notebook_in_headless_chromium(executed, browser, screenshots):
    """The notebook as nbconvert renders it and a browser shows it: no error or traceback in
    any output, nothing on stderr but a read's one-line summary, every image drawn; a
    screenshot of the whole page is left in the ``screenshots`` folder."""
    from nbconvert import HTMLExporter

    path, nb, _ = executed
    # The saved widget state (progress bars) is drawn by a script from a CDN, which the browser
    # here does not reach; without that state nbconvert shows each widget as its text, the
    # plain-text view of the bar (what a view without the widget renderer shows).
    shown = copy.deepcopy(nb)
    shown.metadata.pop("widgets", None)
    html, _ = HTMLExporter().from_notebook_node(shown)
    page = screenshots / f"{path.stem}.html"
    page.write_text(html, encoding="utf-8")
    browser.open(page.as_uri())
    outputs = browser.evaluate(OUTPUTS_JS)
    broken = browser.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).length")
    png = screenshots / f"{path.stem}.png"
    width, height = browser.screenshot(png)
    print(f"{path.name} in Chromium: {png} ({width} x {height} px)")

    where = f"(the page: {page}; its screenshot: {png})"
    tracebacks = [o for o in outputs if "Traceback" in o["text"]]
    assert not tracebacks, f"a traceback in the cell {tracebacks[0]['cell']!r}: {tracebacks[0]['text']} {where}"
    stderr = [o for o in outputs if o["mime"] == "application/vnd.jupyter.stderr"
              and not READ_SUMMARY.fullmatch(o["text"])]
    assert not stderr, f"stderr in the cell {stderr[0]['cell']!r}: {stderr[0]['text']} {where}"
    assert broken == 0, f"{broken} image(s) not drawn {where}"
    assert len(outputs) >= sum(bool(c.get("outputs")) for c in nb.cells if c.cell_type == "code")


def test_progress_bars_end_in_their_final_state(executed):
    """Each progress bar of the run ends as it finished: 100%, n/n in whole numbers, in the
    saved text of its output (plain-text views) and in the saved widget state (what a rendered
    notebook draws); a bar's first frame (0%) or a stale label (88% 7.00/8.00) fails."""
    path, nb, _ = executed
    texts = [o["data"]["text/plain"] for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    finished = re.compile(r".*: 100%\|[^|]*\| (\d+)/\1 \[.*\]")
    assert [t for t in texts if not finished.fullmatch(t)] == []
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    bars = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
    assert len(bars) == len(texts)
    assert [b for b in bars if (b["value"], b["bar_style"]) != (b["max"], "success")] == []
    labels = [m["state"]["value"] for m in state.values() if m["model_name"] == "HTMLModel"]
    for bar in bars:  # the label right of the bar says n/n, not the count of a frame before
        n = int(bar["max"])
        assert any(re.match(rf"\u2007{n}/{n}\u2007", label) for label in labels), (n, labels)


#: What 04-training-set must find and write on the archive it generates: the cohort (CT,
#: slice thickness <= 2 mm, a liver segment) is the 1 mm axial and the 1.5 mm sagittal series;
#: the 5 mm CT, the "spleen" CT, the CT without a SEG and the MR with a liver SEG are not in it
TRAINING_COHORT = ["CT 1 mm axial", "CT 1.5 mm sagittal"]


def _voxels_in_drawn_liver(*axes: tuple[int, float]) -> int:
    """How many voxels of a grid centred on (0, 0, 0), ``(count, spacing)`` along L, P, S, lie in
    the ellipsoid the notebook draws (its CENTRE and RADII): computed here with numpy alone."""
    centre, radii = np.array([-14.6, 4.3, 0.35]), np.array([22.3, 17.7, 11.9])
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in axes], indexing="ij"), -1)
    return int(((((grid - centre) / radii) ** 2).sum(-1) <= 1).sum())


def test_training_set_nifti_pairs_are_consistent(executed):
    """04-training-set's summary (the cell tagged ``summary``): the SQL cohort is the expected
    series, each NIfTI pair has the same shape and affine (nibabel), its label is binary and
    equals the drawn ellipsoid at each voxel's position, and the label's voxel counts equal
    those of the ellipsoid on each series' grid, counted here independently."""
    path, nb, error = executed
    if path.stem != "04-training-set":
        pytest.skip("only 04-training-set writes NIfTI pairs")
    if error is not None:
        pytest.fail(f"{path.name} stopped at a failing cell:\n{error}")
    tagged = [c for c in nb.cells if "summary" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged 'summary'"
    (shown,) = [o for o in tagged[0].outputs if o.output_type == "execute_result"]
    summary = ast.literal_eval(shown["data"]["text/plain"])
    assert summary.pop("cohort") == TRAINING_COHORT
    # 1 mm axial: 64 x 64 pixels of 1.5 mm in L and P, 32 slices of 1 mm in S; 1.5 mm sagittal:
    # 32 slices of 1.5 mm in L, 64 x 64 pixels of 1.5 mm in P and S
    assert summary.pop("liver_voxels") == [_voxels_in_drawn_liver((64, 1.5), (64, 1.5), (32, 1.0)),
                                           _voxels_in_drawn_liver((32, 1.5), (64, 1.5), (64, 1.5))]
    assert summary == {"pairs": 2, "same_shape": True, "same_affine": True, "binary": True,
                       "matches_drawn_liver": True}


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
