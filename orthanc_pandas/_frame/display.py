"""Frames a person can read: the compact view ``df.orthanc.show()`` gives. Pure (no HTTP).

A frame of this library has four 44-character Orthanc ids in its index and ~60 columns, so
pandas' own display wraps every id over several lines, shows a handful of columns and puts
the aggregates far to the right. :func:`compact_view` makes a :class:`FrameView` instead:

* **short ids**: the index shows only the row's own id (``series`` for a series frame,
  ``instance`` for an instance frame), its first :data:`ID_CHARS` characters; the full ids
  stay in ``df.index``.
* **the human columns first** (:data:`HUMAN_COLUMNS`, per level): who, when, what, how many,
  and for series whether they make a volume and why not. Columns are taken by
  :data:`PRIORITY` until the line is full (``width`` characters), then shown in the level's
  order; a header longer than its values goes on two lines (``Series`` / ``Number``). Other
  columns are named by ``columns=``.
* **a bounded number of rows**: the first and last ``max_rows // 2``, with a ``…`` row between.
* **values as a person reads them**: dates ``2020-01-31``; times (VR TM, stored as DICOM text
  such as ``165447.788280``) ``16:54:47``; numbers without trailing zeros; booleans ``yes`` /
  ``no``; UIDs inside text shortened (``1.2.826…``); long text cut with ``…``; an affine (16
  numbers) as its voxel size and origin. Every missing value (NaN, ``<NA>``, NaT, None, empty
  text) is :data:`MISSING`.

Only the rows shown are formatted, so a view of 1,000,000 rows costs what 20 rows cost plus
one look per candidate column for whether it holds any value. Nothing here changes the frame
or its dtypes.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orthanc_pandas._frame.schema import tag_vr

__all__ = ["MISSING", "ID_CHARS", "HUMAN_COLUMNS", "FrameView", "compact_view", "format_value",
           "format_time", "short_uids", "summarize_affine", "series_labels"]

#: How every missing value looks (NaN, <NA>, NaT, None, empty text).
MISSING = "—"

#: Characters of an Orthanc id shown (8 hex digits: unique among ~10^4-10^5 resources in practice).
ID_CHARS = 8

#: The columns a person looks for first, per level, in display order. ``ImagePositionPatient``
#: stands for its three components, shown as one ``(x, y, z)`` value.
HUMAN_COLUMNS: dict[str, tuple[str, ...]] = {
    "instance": ("PatientName", "PatientID", "StudyDate", "StudyTime", "Modality", "SeriesNumber",
                 "SeriesDescription", "InstanceNumber", "ImagePositionPatient", "SOPInstanceUID"),
    "series": ("PatientName", "PatientID", "StudyDate", "StudyTime", "Modality", "SeriesNumber",
               "SeriesDescription", "instance_count", "slice_count", "slice_spacing",
               "orientation", "volume_ok", "volume_problem"),
    "study": ("PatientName", "PatientID", "StudyDate", "StudyTime", "StudyDescription",
              "modalities", "series_count", "instance_count", "AccessionNumber"),
    "patient": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "study_count",
                "series_count", "instance_count"),
}

#: Which human columns go first when the line is too short for all (lower first); others 9.
PRIORITY: dict[str, int] = {
    "PatientID": 1, "StudyDate": 1, "Modality": 1, "SeriesDescription": 1, "volume_ok": 1,
    "StudyDescription": 1, "PatientName": 2, "volume_problem": 2, "instance_count": 2,
    "series_count": 2, "study_count": 2, "modalities": 2, "PatientBirthDate": 2,
    "SeriesNumber": 3, "InstanceNumber": 3, "StudyTime": 4, "PatientSex": 3,
    "slice_count": 5, "slice_spacing": 5, "ImagePositionPatient": 5, "orientation": 6,
    "AccessionNumber": 6, "SOPInstanceUID": 8,
}

#: Text cells are cut to this many characters (``…`` marks the cut), except the flexible column.
MAX_CELL = 18

#: The one column that takes the rest of the line, per level (its cells are long by nature).
FLEXIBLE = {"series": "volume_problem"}

#: Characters the flexible column keeps at least, when its values are that long: enough for
#: the reason of a ``volume_problem`` ("2 pair(s) of slices share a position along…").
FLEXIBLE_MIN = 36

#: Characters between two columns of the text view.
GAP = 2

#: The HTML view is fitted to ``HTML_WIDTH_PX`` (a 1400 px window less the notebook's
#: margins) with an estimate of each column's width: ``HTML_CHAR_PX`` per character plus
#: ``HTML_CELL_PX`` of padding. DejaVu Sans, the sans-serif Linux browsers fall back to, averages
#: under 8 px a character at 13 px (JupyterLab's tables use 12 px); the tests render the view in
#: headless Chromium and measure it.
HTML_CHAR_PX, HTML_CELL_PX, HTML_WIDTH_PX = 8.0, 16.0, 1300

_UID_IN_TEXT = re.compile(r"(?<![\w.])(\d+\.\d+\.\d+(?:\.\d+)+)(?![\w.])")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|_")
_TIME = re.compile(r"^\s*(\d{2})(?::?(\d{2})(?::?(\d{2}))?)?(\.\d*)?\s*$")
_POSITION = [f"ImagePositionPatient_{i}" for i in range(3)]


# --------------------------------------------------------------------------- values


def format_time(value) -> str:
    """A DICOM time (VR TM) as ``HH:MM:SS``, fractions of a second dropped.

    ``HHMMSS.FFFFFF``, ``HHMM``, ``HH`` and the old ``HH:MM:SS`` form are read; anything else
    is returned as it is, a missing value as :data:`MISSING`.

    Examples
    --------
    >>> format_time("165447.788280"), format_time("0930"), format_time("07"), format_time(None)
    ('16:54:47', '09:30', '07', '—')
    """
    if _missing(value):
        return MISSING
    m = _TIME.match(str(value))
    if not m:
        return str(value).strip()
    return ":".join(p for p in m.groups()[:3] if p is not None)


def short_uids(text: str, keep: int = 8) -> str:
    """``text`` with each DICOM UID inside it cut to its first ``keep`` characters and ``…``.

    Examples
    --------
    >>> short_uids("Instance 1.2.826.0.1.3680043.8.498.6661 has no Rows")
    'Instance 1.2.826.… has no Rows'
    """
    return _UID_IN_TEXT.sub(lambda m: m.group(1) if len(m.group(1)) <= keep + 1
                            else m.group(1)[:keep] + "…", text)


def summarize_affine(values) -> str | None:
    """A 4x4 affine (16 numbers, row-major) as its voxel size and origin; None if not one.

    Examples
    --------
    >>> summarize_affine([0, 0, 0.8, -100, 0, 0.7, 0, -110, 2.5, 0, 0, 0, 0, 0, 0, 1])
    'affine: voxel 2.5×0.7×0.8 mm, origin (-100, -110, 0)'
    """
    try:
        a = np.asarray(values, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        return None
    voxel = "×".join(_number(v) for v in np.linalg.norm(a[:3, :3], axis=0))
    origin = ", ".join(_number(v) for v in a[:3, 3])
    return f"affine: voxel {voxel} mm, origin ({origin})"


def _missing(value) -> bool:
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    if isinstance(value, np.datetime64) and np.isnat(value):
        return True
    return isinstance(value, str) and not value.strip()


def _number(value: float) -> str:
    if not np.isfinite(value):
        return str(value)
    return np.format_float_positional(float(value), precision=3, trim="-")


def format_value(value, vr: str = "") -> str:
    """One value as the view shows it (see the module documentation).

    Examples
    --------
    >>> [format_value(v) for v in (2.50, 7, True, None, float("nan"), pd.NaT, "Doe^John")]
    ['2.5', '7', 'yes', '—', '—', '—', 'Doe^John']
    >>> format_value(pd.Timestamp("2020-01-31")), format_value("165447.78", vr="TM")
    ('2020-01-31', '16:54:47')
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) == 16:
            summary = summarize_affine(value)
            if summary:
                return summary
        if len(value) and all(isinstance(v, (int, float, np.number)) for v in value):
            return "(" + ", ".join(_number(v) for v in value) + ")"
        return f"[{len(value)} item{'s' if len(value) != 1 else ''}]"
    if isinstance(value, dict):
        return f"{{{len(value)} key{'s' if len(value) != 1 else ''}}}"
    if _missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        ts = pd.Timestamp(value)
        return ts.strftime("%Y-%m-%d" if ts == ts.normalize() else "%Y-%m-%d %H:%M:%S")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _number(value)
    text = " ".join(str(value).split())
    if vr == "TM":
        return format_time(text)
    if vr == "DA" and re.fullmatch(r"\d{8}", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return short_uids(text) if vr != "UI" else _cut(text, 12)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


# --------------------------------------------------------------------------- the view


def _header_lines(name: str, width: int) -> tuple[str, str]:
    """``name`` on one line, or split at a word boundary (camelCase, ``_``) into the two
    lines whose longer one is shortest, when ``name`` is wider than ``width``.

    Examples
    --------
    >>> _header_lines("SeriesNumber", 4), _header_lines("instance_count", 3)
    (('Series', 'Number'), ('instance', 'count'))
    >>> _header_lines("Modality", 2)   # one word: one line
    ('Modality', '')
    """
    if len(name) <= width:
        return name, ""
    best = None
    for m in _CAMEL.finditer(name):
        top, bottom = name[:m.start()], name[m.start():].lstrip("_")
        if top and bottom and (best is None or max(len(top), len(bottom)) < best[0]):
            best = (max(len(top), len(bottom)), top, bottom)
    return (best[1], best[2]) if best else (name, "")


@dataclass(frozen=True)
class FrameView:
    """A compact view of an Orthanc frame for people: what ``df.orthanc.show()`` returns.

    Shows as text (``repr``: every line at most ``width`` characters) and, in a notebook, as
    an HTML table fitted to :data:`HTML_WIDTH_PX` (cut cells show their whole text on
    hover). Read-only: the frame itself is unchanged. ``view.frame`` is the text view as a
    DataFrame of strings (e.g. for ``to_markdown()``).

    Attributes
    ----------
    cells : dict of str to list of str
        Every candidate column's cells, formatted and not cut, in display order.
    ids : list of str
        The short ids of the rows shown (``"…"`` where rows are left out).
    index_name : str
        The index level whose ids are shown: the frame's own level (``"instance"``,
        ``"series"``, ``"study"`` or ``"patient"``), or the deepest one with ids (a query
        answer's).
    numeric : dict of str to bool
        Columns aligned to the right.
    rows : int
        Rows of the frame.
    total_columns : int
        Columns of the frame.
    explicit : bool
        The columns were named by the caller: all shown, even past the width.
    flexible : str or None
        The column that takes the rest of the line.
    width : int
        Characters per line of the text view.
    level : str
        What one row stands for (the frame's ``orthanc.level``).
    """

    cells: dict[str, list[str]]
    ids: list[str]
    index_name: str
    numeric: dict[str, bool]
    rows: int
    total_columns: int
    explicit: bool = False
    flexible: str | None = None
    width: int = 120
    level: str = ""

    # -- layout
    def _natural(self, col: str) -> tuple[int, tuple[str, str]]:
        """The width a column asks for (its values up to the cap, its header on 1-2 lines)."""
        values = max((len(v) for v in self.cells[col]), default=0)
        if col != self.flexible:
            values = min(values, MAX_CELL)
        head = _header_lines(col, max(values, 1))
        return max(values, len(head[0]), len(head[1])), head

    def layout(self, budget: float, cost) -> list[tuple[str, int, tuple[str, str]]]:
        """``(column, characters, header lines)`` of the columns that fit ``budget``.

        ``cost(characters)`` is what one column of that many characters takes of the budget
        (the index too). Columns are taken by :data:`PRIORITY` (then display order); the
        flexible column keeps room for :data:`FLEXIBLE_MIN` characters and gets the rest.
        """
        natural = {c: self._natural(c) for c in self.cells}
        used = cost(max([len(self.index_name)] + [len(i) for i in self.ids]))
        flex = self.flexible if self.flexible in self.cells else None
        reserve = cost(min(FLEXIBLE_MIN, natural[flex][0])) if flex else 0.0
        order = list(self.cells)
        chosen = set()
        for c in sorted((c for c in order if c != flex),
                        key=lambda c: (PRIORITY.get(c, 9), order.index(c))):
            if self.explicit or used + cost(natural[c][0]) + reserve <= budget:
                chosen.add(c)
                used += cost(natural[c][0])
        out = []
        for c in order:
            if c == flex:
                chars = natural[c][0]
                floor = min(FLEXIBLE_MIN, natural[c][0])
                while chars > floor and used + cost(chars) > budget:
                    chars -= 1
                if self.explicit or used + cost(chars) <= budget:
                    head = _header_lines(c, chars)
                    out.append((c, max(chars, len(head[0]), len(head[1])), head))
            elif c in chosen:
                out.append((c, *natural[c]))
        return out

    def _text_layout(self):
        return self.layout(self.width, lambda w: w + GAP)

    def _html_layout(self):
        return self.layout(HTML_WIDTH_PX, lambda w: w * HTML_CHAR_PX + HTML_CELL_PX)

    def _note(self, shown: list[str]) -> str:
        parts = [f"{self.level or self.index_name} frame: {self.rows:,} "
                 f"row{'s' if self.rows != 1 else ''}"]
        shown_rows = sum(i != "…" for i in self.ids)
        if shown_rows < self.rows:
            parts[0] += f", {shown_rows:,} shown"
        left = [c for c in self.cells if c not in shown]
        parts.append(f"{len(shown)} of {self.total_columns} columns"
                     + (f" (no room for {', '.join(left)})" if left else ""))
        parts.append(f"ids: the first {ID_CHARS} characters")
        return "; ".join(parts) + ". Other columns: show(columns=[...])."

    @property
    def frame(self) -> pd.DataFrame:
        """The text view's cells as a DataFrame of strings, indexed by the short ids."""
        lay = self._text_layout()
        data = {c: [_cut(v, w) for v in self.cells[c]] for c, w, _ in lay}
        return pd.DataFrame(data, index=pd.Index(self.ids, name=self.index_name),
                            columns=[c for c, _, _ in lay], dtype=object)

    # -- text
    def to_string(self) -> str:
        """The view as text: one or two header lines, one line per row, then a note."""
        lay = self._text_layout()
        iw = max([len(self.index_name)] + [len(i) for i in self.ids])
        two = any(head[1] for _, _, head in lay)

        def line(first: str, texts, cut: bool = False) -> str:
            cells = [first.ljust(iw)]
            for (c, w, _), t in zip(lay, texts, strict=True):
                t = _cut(t, w) if cut else t
                cells.append(t.rjust(w) if self.numeric.get(c) else t.ljust(w))
            return (" " * GAP).join(cells).rstrip()

        lines = []
        if two:  # the first part of two-line headers above, every last part above the values
            lines.append(line("", [head[0] if head[1] else "" for _, _, head in lay]))
        lines.append(line(self.index_name, [head[1] or head[0] for _, _, head in lay]))
        for k, rid in enumerate(self.ids):
            lines.append(line(rid, [self.cells[c][k] for c, _, _ in lay], cut=True))
        lines += textwrap.wrap(self._note([c for c, _, _ in lay]), self.width)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.to_string()

    # -- HTML
    def _repr_html_(self) -> str:
        lay = self._html_layout()
        esc = html.escape

        def td(c: str, text: str, w: int, tag: str = "td") -> str:
            shown = _cut(text, w)
            title = f' title="{esc(text)}"' if shown != text else ""
            align = "right" if self.numeric.get(c) else "left"
            return f'<{tag} style="text-align:{align}"{title}>{esc(shown)}</{tag}>'

        head = "".join(f'<th style="text-align:{"right" if self.numeric.get(c) else "left"}">'
                       f"{esc(top)}" + (f"<br>{esc(bottom)}" if bottom else "") + "</th>"
                       for c, _, (top, bottom) in lay)
        body = "".join(f"<tr><th>{esc(rid)}</th>"
                       + "".join(td(c, self.cells[c][k], w) for c, w, _ in lay) + "</tr>"
                       for k, rid in enumerate(self.ids))
        return ('<div class="orthanc-view"><style>.orthanc-view table{border-collapse:collapse;'
                "margin:0}.orthanc-view th,.orthanc-view td{white-space:nowrap;padding:2px 8px;"
                "vertical-align:bottom;font-variant-numeric:tabular-nums}"
                ".orthanc-view tbody tr:nth-child(odd){background:rgba(127,127,127,0.08)}"
                ".orthanc-view p{margin:4px 0;font-size:90%;opacity:0.8}</style>"
                f'<table class="dataframe"><thead><tr><th style="text-align:left">'
                f"{esc(self.index_name)}</th>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>{esc(self._note([c for c, _, _ in lay]))}</p></div>")


def _display_columns(df: pd.DataFrame, level: str, columns) -> list[str]:
    has_position = all(c in df.columns for c in _POSITION)
    if columns is not None:
        names = [columns] if isinstance(columns, str) else list(columns)
        unknown = [c for c in names if c not in df.columns
                   and not (c == "ImagePositionPatient" and has_position)]
        if unknown:
            raise KeyError(f"show(columns=...) names columns this frame does not have: {unknown}.")
        return names
    out = []
    for c in HUMAN_COLUMNS[level]:
        if c == "ImagePositionPatient":
            if has_position and df[_POSITION[2]].notna().any():
                out.append(c)
        elif c in df.columns and _has_value(df[c]):
            out.append(c)
    return out


def _has_value(col: pd.Series) -> bool:
    """Whether any value of the column is present (empty text counts as missing)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = np.asarray(pd.Index(col.cat.categories).astype(str).str.strip() != "")
        codes = np.asarray(col.cat.codes)
        return bool(cats[codes[codes >= 0]].any())
    if col.dtype == object or isinstance(col.dtype, pd.StringDtype):
        present = col[col.notna()]
        for part in (present.iloc[:1000], present):  # a value near the top answers it at once
            if len(part) and bool((part.astype("string").str.strip() != "").any()):
                return True
        return False
    return bool(col.notna().any())


def _cells(part: pd.DataFrame, col: str) -> list[str]:
    if col == "ImagePositionPatient":
        values = part[_POSITION].to_numpy(dtype=np.float64, na_value=np.nan)
        return [format_value(tuple(v)) if np.isfinite(v).all() else MISSING for v in values]
    vr = tag_vr(col)
    return [format_value(v, vr) for v in part[col].astype(object).tolist()]


def _is_numeric(df: pd.DataFrame, col: str) -> bool:
    if col not in df.columns:
        return False
    dtype = df[col].dtype
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def compact_view(df: pd.DataFrame, level: str, *, max_rows: int = 20,
                 columns: str | Sequence[str] | None = None, width: int = 120) -> FrameView:
    """The :class:`FrameView` of an Orthanc frame (see the module documentation).

    Parameters
    ----------
    df : pandas.DataFrame
        An instance frame or a series, study or patient frame.
    level : {"instance", "series", "study", "patient"}
        What one row stands for (``df.orthanc.level``).
    max_rows : int, default 20
        Rows shown at most: the first and last half, with a ``…`` row between.
    columns : str or list of str, optional
        Exactly these columns, in this order, all shown even past ``width`` (default: the
        level's :data:`HUMAN_COLUMNS` that hold a value, as many as fit).
        ``"ImagePositionPatient"`` shows its three components as one.
    width : int, default 120
        Characters per line of the text view.

    Returns
    -------
    FrameView

    Examples
    --------
    >>> idx = pd.Index(["0b9c4e1a-5f1e0b32-9f6a0c1d-2e3f4a5b-6c7d8e9f"], name="patient")
    >>> df = pd.DataFrame({"PatientName": ["Doe^John"], "PatientID": ["P1"],
    ...                    "study_count": pd.array([2], dtype="Int64")}, index=idx)
    >>> print(compact_view(df, "patient"))
              Patient   Patient  study
    patient   Name      ID       count
    0b9c4e1a  Doe^John  P1           2
    patient frame: 1 row; 3 of 3 columns; ids: the first 8 characters. Other columns: show(columns=[...]).
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1; got {max_rows}.")
    n = len(df)
    head, tail = (max_rows - max_rows // 2, max_rows // 2) if n > max_rows else (n, 0)
    part = pd.concat([df.iloc[:head], df.iloc[n - tail:]]) if tail else df.iloc[:head]
    name = level if level in df.index.names else str(df.index.names[-1])
    names = list(df.index.names)
    for candidate in reversed(names[:names.index(name) + 1]):  # a query answer's deepest id
        if pd.Index(part.index.get_level_values(candidate)).notna().any():
            name = candidate
            break
    ids = [MISSING if pd.isna(i) else str(i)[:ID_CHARS]
           for i in part.index.get_level_values(name)]
    wanted = _display_columns(df, level, columns)
    cells = {c: _cells(part, c) for c in wanted}
    if tail:
        ids.insert(head, "…")
        for c in wanted:
            cells[c].insert(head, "…")
    return FrameView(cells=cells, ids=ids, index_name=name,
                     numeric={c: _is_numeric(df, c) for c in wanted}, rows=n,
                     total_columns=len(df.columns), explicit=columns is not None,
                     flexible=FLEXIBLE.get(level), width=width, level=level)


# --------------------------------------------------------------------------- thumbnail labels


def _value(row: dict, col: str) -> str:
    return format_value(row.get(col), tag_vr(col)) if col in row else MISSING


def series_labels(frame: pd.DataFrame) -> list[tuple[str, str, bool | None]]:
    """``(title, status, volume_ok)`` per row of a series frame, for its thumbnail.

    The title says what identifies the series: the patient (PatientID, else PatientName) and
    study date, then ``#SeriesNumber``, the modality and the series description. The status
    says whether it makes a volume when the frame has ``volume_ok`` (``series(geometry=True)``),
    with the reason (``volume_problem``, UIDs shortened) when it does not; else its slice count.

    Examples
    --------
    >>> s = pd.DataFrame({"PatientID": ["P1"], "StudyDate": [pd.Timestamp("2020-01-31")],
    ...                   "SeriesNumber": [3], "Modality": ["CT"], "SeriesDescription": ["Chest"],
    ...                   "slice_count": [120], "volume_ok": [False],
    ...                   "volume_problem": ["The slice spacing is not uniform (typical 2 mm)"]})
    >>> series_labels(s)  # doctest: +NORMALIZE_WHITESPACE
    [('P1 · 2020-01-31\\n#3 CT · Chest',
      'no volume: The slice spacing is not uniform (typical 2 mm)', False)]
    """
    out = []
    for row in frame.to_dict("records"):
        patient = _value(row, "PatientID")
        if patient == MISSING:
            patient = _value(row, "PatientName")
        number = _value(row, "SeriesNumber")
        head = " ".join(v for v in (("#" + number) if number != MISSING else "",
                                    _value(row, "Modality")) if v and v != MISSING)
        what = " · ".join(v for v in (head, _value(row, "SeriesDescription"))
                          if v and v != MISSING) or MISSING
        title = f"{patient} · {_value(row, 'StudyDate')}\n{what}"
        slices = _value(row, "slice_count")
        count = f"{slices} slice{'s' if slices != '1' else ''}" if slices != MISSING else ""
        ok = row.get("volume_ok") if "volume_ok" in row else None
        if ok is None or _missing(ok):
            out.append((title, count, None))
        elif ok:
            out.append((title, "volume" + (f" of {count}" if count else ""), True))
        else:
            problem = _value(row, "volume_problem")
            out.append((title, "no volume" + (f": {problem}" if problem != MISSING else ""),
                        False))
    return out
