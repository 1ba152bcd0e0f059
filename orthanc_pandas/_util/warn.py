"""Warnings that point at the user's line, however deep inside the library they are raised.

A fixed ``stacklevel`` is right for one call path only (``read_orthanc`` and ``refresh`` reach
the same parser at different depths), so the level is found by walking up the stack to the
first frame outside this package, as pandas' ``find_stack_level`` does.
"""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # orthanc_pandas/


def user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside orthanc_pandas, as seen from :func:`warn`."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the user's code.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn("look", UserWarning)
    >>> caught[0].filename.startswith("<doctest")  # the caller's line, not this module's
    True
    """
    warnings.warn(message, category, stacklevel=user_stacklevel())
