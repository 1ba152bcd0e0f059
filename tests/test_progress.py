"""Progress bars end in their final state, with whole counts (terminal bars here; notebook bars
in tests/test_notebooks.py, which runs notebooks that show some)."""

from __future__ import annotations

from orthanc_pandas._util import progress
from orthanc_pandas._util.progress import progress_bar


def _last_frame(stderr: str) -> str:
    return [f for f in stderr.replace("\n", "\r").split("\r") if f.strip()][-1]


def test_a_finished_bar_stays_at_100_percent_with_whole_counts(capsys):
    bar = progress_bar(True, total=8, desc="C-MOVE", unit="job")
    for _ in range(8):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "C-MOVE: 100%" in _last_frame(err) and " 8/8 " in _last_frame(err), err
    assert ".00" not in err  # tqdm's unit_scale prints 8 as 8.00


def test_a_stopped_bar_stays_where_it_stopped(capsys):
    with progress_bar(True, total=9, desc="C-FIND", unit="query") as bar:
        bar.update(4)
    assert " 4/9 " in _last_frame(capsys.readouterr().err)


def test_no_bar_unless_asked_or_interactive(capsys, monkeypatch):
    # not a terminal, no kernel (another test module may have imported ipykernel here)
    monkeypatch.setattr(progress, "_interactive", lambda: False)
    bar = progress_bar(None, total=10**6, desc="quiet", unit="res")
    bar.update(5)
    bar.close()
    assert capsys.readouterr().err == ""
