"""Progress bars via ``tqdm.auto``: on in terminals and notebooks for long work, else off.

A bar ends in its final state wherever it is looked at: it stays when closed (``leave``:
``100%|...| 8/8`` in green, or red where the work stopped), counts are whole numbers (no
``unit_scale``: tqdm prints 8 as ``8.00`` with it), and in a notebook the bar's output is
redrawn when it closes, so the text a saved notebook or a plain-text view shows is the end,
not the first frame (tqdm's widget output keeps the text of its first frame, ``0%``).
"""

from __future__ import annotations

import functools
import sys
from typing import Any


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(progress: Any, *, total: int | None, desc: str, unit: str = "it",
                 min_total: int = 0):
    """A tqdm bar, or a no-op stand-in.

    ``progress`` is ``None`` (auto: shown when interactive and ``total >= min_total``),
    ``True``/``False``, or a tqdm-like object to update.
    """
    if progress is not None and not isinstance(progress, bool):
        return _Borrowed(progress)
    show = progress if isinstance(progress, bool) else (_interactive() and (total or 0) >= min_total)
    if not show:
        return _NoBar()
    return _bar_class()(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


@functools.cache
def _bar_class():
    """``tqdm.auto``'s bar; in a notebook, one whose output is redrawn when it closes."""
    from tqdm.auto import tqdm

    if not any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__):
        return tqdm
    from IPython.display import display

    class NotebookBar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, display=False, **kwargs)
            # shown here with an id, so close() can replace the output's saved text
            self._output = display(self.container, display_id=True)

        def close(self) -> None:
            if self.disable:  # closed before (tqdm closes again when the bar is collected)
                return
            super().close()
            self._output.update(self.container)  # the widget again, its text the final state

    return NotebookBar


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Borrowed(_NoBar):
    """A caller's bar: updated, never closed."""

    def __init__(self, bar):
        self.bar = bar

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
