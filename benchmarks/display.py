"""The compact view (``df.orthanc.show()``) of the 20,000-instance archive: time and width.

Per level (the instance frame, ``series(geometry=True)``, ``studies()``, ``patients()``): the
time of ``show()`` and of its text and HTML (best of 5), the longest text line (characters;
fitted to 120) and the table's width in a 1400 px page rendered by headless Chromium (when
installed; the page and its fonts as ``tests/test_display.py`` renders them), against the
pandas default (``repr(df)`` with ``display.width = 120``, and the HTML table's width). And
``show()`` of a 1,000,000-row frame (the instance frame 50 times over, in memory).

Run: ``PYTHONPATH=. python benchmarks/display.py`` (the cached archive of
``_common.archive_server``; ``ORTHANC_PANDAS_BENCH_CACHE``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd
from _common import archive_server, best_of, table

import orthanc_pandas as op

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_display import table_widths  # noqa: E402  (the same page and measurement)


def main() -> None:
    with archive_server("20k") as server:
        df = op.read_orthanc(server.url)
        frames = {"instance": df, "series (geometry=True)": df.orthanc.series(geometry=True),
                  "study": df.orthanc.studies(), "patient": df.orthanc.patients()}
    big = pd.concat([df] * 50)  # 1,000,000 rows in memory (ids repeat: show() does not mind)
    big.attrs = df.attrs
    rows, views, plain = [], [], []
    for name, f in frames.items():
        best, _, view = best_of(lambda f=f: f.orthanc.show(), repeat=5)
        text_t, _, text = best_of(lambda view=view: repr(view), repeat=5)
        html_t, _, page = best_of(lambda view=view: view._repr_html_(), repeat=5)
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            pandas_text = repr(f)
            plain.append(f.head(10).to_html(classes="orthanc-view", max_cols=20).replace(
                '<table border="1" class="dataframe orthanc-view">',
                '<div class="orthanc-view"><table>') + "</div>")
        views.append(page)
        rows.append([name, f"{len(f):,} x {len(f.columns)}", f"{best * 1000:.1f} ms",
                     f"{(text_t + html_t) * 1000:.1f} ms", len(view.frame.columns),
                     max(map(len, text.splitlines())), max(map(len, pandas_text.splitlines()))])
    with tempfile.TemporaryDirectory() as tmp:
        widths = table_widths(views, Path(tmp))
        pandas_widths = table_widths(plain, Path(tmp))
    for row, w, pw in zip(rows, widths or [None] * len(rows), pandas_widths or [None] * len(rows),
                          strict=True):
        row += [f"{w} px" if w else "(no chromium)", f"{pw} px" if pw else "(no chromium)"]
    best, _, view = best_of(lambda: big.orthanc.show(), repeat=3)
    rows.append(["instance x 50 (in memory)", f"{len(big):,} x {len(big.columns)}",
                 f"{best * 1000:.1f} ms", "", len(view.frame.columns),
                 max(map(len, repr(view).splitlines())), "", "", ""])
    print(table(rows, ("frame", "rows x columns", "show()", "text + HTML", "columns shown",
                       "longest text line", "pandas text line (width 120)", "HTML table",
                       "pandas HTML (20 cols)")))
    print()
    print(repr(frames["series (geometry=True)"].orthanc.show(max_rows=8)))


if __name__ == "__main__":
    main()
