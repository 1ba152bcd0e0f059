"""Progress bars via ``tqdm.auto``: on in terminals and notebooks for long work, else off."""

from __future__ import annotations

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
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, leave=False)


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
