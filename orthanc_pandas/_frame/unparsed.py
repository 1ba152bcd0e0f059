"""Values that did not parse: counted where they are parsed, told once per frame built.

The parsers of :mod:`.schema` note each column's values that are not valid for its type (they
become missing); the outermost :func:`one_warning` around building a frame turns the notes into
ONE :class:`~orthanc_pandas.errors.ParseWarning` at the user's line, one short line naming the
columns, how many values and an example of each, and how to see them as stored. Without an
enclosing :func:`one_warning` (a parser called alone) each note warns at once.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from orthanc_pandas._util.warn import warn
from orthanc_pandas.errors import ParseWarning

#: where a read's frame keeps the stored text of every tag
READ_RAW = "typed=False keeps the stored text"

_notes: ContextVar[list[Unparsed] | None] = ContextVar("orthanc_pandas_unparsed", default=None)


@dataclass(frozen=True)
class Unparsed:
    """``count`` values of ``column`` are not ``expected`` (``"an integer"``); one is ``example``."""

    column: str
    count: int
    example: str
    expected: str


def note(column: str, bad: pa.Array, values: pa.Array, expected: str) -> None:
    """Note the ``values`` (strings) where ``bad`` is true as not parsed: ``expected`` says
    what a value should be (``"an integer"``)."""
    count = int(pc.sum(pc.cast(bad, pa.int64())).as_py() or 0)
    if not count:
        return
    found = Unparsed(column, count, str(pc.filter(values, bad)[0].as_py()), expected)
    notes = _notes.get()
    if notes is None:
        warn_unparsed([found])
    else:
        notes.append(found)


class one_warning:
    """Gather the notes made inside into one warning, given when the block ends without an
    error (a frame that is built again after an error warns once). Nested: the outer one warns.
    Also a decorator. (A class, not ``contextlib.contextmanager``: the warning's stack level
    is the first frame outside this package, and contextlib's frames are outside it.)

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     with one_warning():
    ...         note("StudyDate", pa.array([True, True]), pa.array(["2020-13-45", "x"]), "a date YYYYMMDD")
    ...         note("NumberOfFrames", pa.array([False, True]), pa.array(["1", "1A"]), "an integer")
    >>> print(caught[0].message)
    3 values did not parse (now missing): StudyDate '2020-13-45' and 1 more, not a date YYYYMMDD; NumberOfFrames '1A', not an integer. typed=False keeps the stored text.
    """

    def __init__(self, hint: str = READ_RAW):
        self.hint = hint
        self._token = None

    def __enter__(self) -> None:
        if _notes.get() is None:  # else an outer block gathers
            self._token = _notes.set([])

    def __exit__(self, exc_type, *_) -> None:
        if self._token is None:
            return
        notes = _notes.get()
        _notes.reset(self._token)
        self._token = None
        if exc_type is None and notes:
            warn_unparsed(notes, self.hint)

    def __call__(self, fn):
        @functools.wraps(fn)
        def gathered(*args, **kwargs):
            with one_warning(self.hint):
                return fn(*args, **kwargs)
        return gathered


def warn_unparsed(notes: list[Unparsed], hint: str = READ_RAW) -> None:
    """One :class:`ParseWarning` for ``notes``, at the user's line."""
    by_column: dict[str, Unparsed] = {}
    for n in notes:  # a column noted twice (several levels of one tag): counts add up
        seen = by_column.get(n.column)
        by_column[n.column] = n if seen is None else Unparsed(
            n.column, seen.count + n.count, seen.example, seen.expected)
    total = sum(n.count for n in by_column.values())
    shown, rest = list(by_column.values())[:3], list(by_column)[3:]
    items = [f"{n.column} {_short(n.example)}{f' and {n.count - 1} more' if n.count > 1 else ''}, "
             f"not {n.expected}" for n in shown]
    if rest:
        items.append("also " + ", ".join(rest))
    message = f"{total} value{'s' if total > 1 else ''} did not parse (now missing): {'; '.join(items)}. {hint}."
    warn(ParseWarning(message, {n.column: n.count for n in by_column.values()}), ParseWarning)


def _short(text: str, width: int = 24) -> str:
    return repr(text if len(text) <= width else text[:width - 1] + "\u2026")
