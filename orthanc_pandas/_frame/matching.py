"""DICOM query matching on frame columns: wildcards, ranges, lists. Pure: no HTTP.

:func:`mask` gives the boolean mask of one criterion on one column. The criterion forms
(see ``docs/selection.md`` for examples and the known differences with Orthanc's find):

=========================  ===================================================================
criterion                  matches
=========================  ===================================================================
``"CT"``                   equality; case-insensitive unless ``case_sensitive=True``
``"Doe*"``, ``"C?"``       DICOM wildcards (text tags; dates/numbers are matched on their
                           DICOM text form): ``*`` any run of characters, ``?`` one character
``"CT\\\\MR"``             DICOM list matching: any of the values between backslashes
``""``                     universal matching: every row, missing values too
``"*"``                    every row that has the tag (any value, even empty)
``"20200101-20201231"``    DA/TM/DT range, bounds included; ``"20200101-"``, ``"-20201231"``;
                           on DA also ISO days: ``"2020-01-01"``, ``"2020-01-01-2020-12-31"``
``date``/``datetime``      DA: that day; DT/TM: equality with the DICOM text of the value
``(low, high)``            on DA/TM/DT and numeric tags: an inclusive range, ``None`` = open;
                           DA bounds may be ``"YYYYMMDD"``, ``"YYYY-MM-DD"`` or dates;
                           ``PatientAge`` (AS, in years) takes numbers or ``"063Y"``
``[a, b, ...]``            any of the criteria (a tuple too, except the 2-tuple range above)
``2.5``                    numeric equality (text tags are parsed as numbers for it)
``None``                   the value is missing
``callable``               ``f(column) -> bool mask`` (gets a DataFrame for vector tags)
=========================  ===================================================================

Vector tags (``ImagePositionPatient`` -> columns ``_0``, ``_1``, ``_2``) are matched on the
(n, k) frame of their components: ``"x\\\\y\\\\z"`` or a k-tuple of numbers means equality of
every component, a list of those means any of them.

Criteria can be written to and read from JSON (:func:`encode_criterion`,
:func:`decode_criteria`), which is how ``df.attrs["orthanc"]["criteria"]`` records selections
so that a refresh can apply them again. A callable cannot be recorded: it is kept as
``{"callable": repr}`` and a replay refuses it.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import re
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from orthanc_pandas._frame.schema import AGE_UNITS
from orthanc_pandas.errors import SelectionError

#: VRs on which "A-B" strings and 2-tuples are ranges.
TEXT_RANGE_VRS = frozenset({"DA", "TM", "DT"})


NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "SV", "UV", "FL", "FD"})


# -- helpers --------------------------------------------------------------------------------
def wildcard_regex(pattern: str) -> str:
    """A regular expression (for full matching) from a DICOM wildcard pattern.

    Examples
    --------
    >>> wildcard_regex("Doe*^J?hn")
    '(?s)Doe.*\\\\^J.hn'
    """
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return "(?s)" + "".join(parts)


def _has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


def _as_bool(values, n: int) -> np.ndarray:
    if isinstance(values, pd.DataFrame):
        raise SelectionError("A criterion function must return one boolean per row, not a frame.")
    arr = pd.array(values) if not isinstance(values, np.ndarray) else values
    if len(arr) != n:
        raise SelectionError(f"A criterion function returned {len(arr)} values for {n} rows.")
    if isinstance(arr, np.ndarray) and arr.dtype == bool:
        return arr
    ser = pd.Series(arr)
    if not (pd.api.types.is_bool_dtype(ser.dtype) or ser.isna().all()):
        raise SelectionError(f"A criterion function must return booleans, got dtype {ser.dtype}.")
    return ser.fillna(False).to_numpy(dtype=bool)


def _text_values(column: pd.Series) -> tuple[pd.Series, np.ndarray | None]:
    """The distinct strings to test and how rows map onto them (categoricals test categories)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        cats = pd.Series(column.cat.categories.astype(str), dtype="string[pyarrow]")
        return cats, column.cat.codes.to_numpy()
    return column.astype("string[pyarrow]").reset_index(drop=True), None


def _map_rows(result: np.ndarray, codes: np.ndarray | None) -> np.ndarray:
    if codes is None:
        return result
    ext = np.append(result, False)  # code -1 (missing) -> False
    return ext[codes]


def _text_test(column: pd.Series, fn: Callable[[pd.Series], object]) -> np.ndarray:
    values, codes = _text_values(column)
    res = fn(values)
    res = pd.Series(res).fillna(False).to_numpy(dtype=bool) if len(values) else np.zeros(0, bool)
    return _map_rows(res, codes)


def is_number(x) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


def is_datelike(x) -> bool:
    return isinstance(x, _dt.date | _dt.time | np.datetime64 | pd.Timestamp)


def dicom_text(value, vr: str) -> str:
    """A bound or value given as a Python object -> its DICOM text form for ``vr``."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, _dt.datetime):
        if vr == "DA":
            return value.strftime("%Y%m%d")
        if vr == "TM":
            return value.strftime("%H%M%S") + (f".{value.microsecond:06d}" if value.microsecond else "")
        return value.strftime("%Y%m%d%H%M%S") + (f".{value.microsecond:06d}" if value.microsecond else "")
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, _dt.time):
        return value.strftime("%H%M%S") + (f".{value.microsecond:06d}" if value.microsecond else "")
    if is_number(value):
        return _number_text(value)
    raise SelectionError(f"Cannot use {value!r} ({type(value).__name__}) as a {vr or 'text'} value.")


def _number_text(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


_DAY = r"\d{8}|\d{4}-\d{2}-\d{2}"


#: a DA range with DICOM or ISO ends: "20200101-20201231", "2020-01-01-2020-12-31", "2020-01-01-"
DA_RANGE = re.compile(rf"^(?P<low>{_DAY})?-(?P<high>{_DAY})?$")


_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


_AGE = re.compile(r"^(\d{3})([DWMY])$")


def _parse_da(text: str, what: str) -> pd.Timestamp:
    text = text.strip()
    try:
        return pd.Timestamp(_dt.datetime.strptime(text, "%Y-%m-%d" if _ISO_DAY.match(text) else "%Y%m%d"))
    except ValueError:
        raise SelectionError(
            f"{what}: {text!r} is not a date (DICOM YYYYMMDD or ISO YYYY-MM-DD). Write ranges as "
            "'20200101-20201231', '20200101-' or '-20201231', or pass datetime.date values."
        ) from None


def _age_years(text: str) -> float | None:
    """A DICOM age string (``063Y``) in years, as the index's AS columns hold it (else None)."""
    m = _AGE.match(text.strip().upper())
    return int(m.group(1)) * AGE_UNITS[m.group(2)] if m else None


def _to_timestamp(value, what: str) -> pd.Timestamp:
    if isinstance(value, str):
        return _parse_da(value, what)
    if isinstance(value, _dt.date | np.datetime64 | pd.Timestamp):
        return pd.Timestamp(value)
    raise SelectionError(f"{what}: {value!r} is not a date; use 'YYYYMMDD' or datetime.date.")


def dicom_date(value, what: str) -> str:
    """A date in any form ``select`` takes -> DICOM DA text, or a :class:`SelectionError`.

    Examples
    --------
    >>> dicom_date("2023-01-31", "StudyDate"), dicom_date("20230131", "StudyDate")
    ('20230131', '20230131')
    >>> import datetime
    >>> dicom_date(datetime.date(2023, 1, 31), "StudyDate")
    '20230131'
    """
    return _to_timestamp(value, what).strftime("%Y%m%d")


def _to_float(value, what: str) -> float:
    if is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
        years = _age_years(value)
        if years is not None:
            return years
    raise SelectionError(f"{what}: {value!r} is not a number.")


def _is_range_tuple(criterion, vr: str, kind: str) -> bool:
    if not (isinstance(criterion, tuple) and len(criterion) == 2):
        return False
    if kind == "vector":
        return False
    ok = all(b is None or is_number(b) or is_datelike(b) or isinstance(b, str) for b in criterion)
    if not ok:
        return False
    if kind in ("datetime", "numeric") or vr in TEXT_RANGE_VRS or vr in NUMERIC_VRS:
        return True
    return False


def _kind(column) -> str:
    if isinstance(column, pd.DataFrame):
        return "vector"
    dtype = column.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_bool_dtype(dtype):
        return "other"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_object_dtype(dtype):
        sample = column.dropna()
        if len(sample) and not all(isinstance(v, str) for v in sample.iloc[:50]):
            return "object"  # sequences (lists of dicts) and other Python objects
        return "text"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        return "text"
    return "other"


# -- the mask -------------------------------------------------------------------------------
def _all_missing(column) -> bool:
    if isinstance(column, pd.DataFrame):
        return all(_all_missing(column[c]) for c in column.columns)
    dtype = column.dtype
    return (isinstance(dtype, pd.ArrowDtype) and dtype.pyarrow_dtype == pa.null()) or \
        bool(len(column)) and bool(column.isna().all()) and dtype == np.dtype(object)


def mask(column: pd.Series | pd.DataFrame, criterion, vr: str = "", case_sensitive: bool = False,
         *, name: str | None = None) -> np.ndarray:
    """The rows of ``column`` that match a DICOM-style criterion.

    Parameters
    ----------
    column : pandas.Series or pandas.DataFrame
        A frame column (category, string, datetime, Int32/Int64/Float64, object for sequences), or
        the (n, k) components of a vector tag (``df[["ImagePositionPatient_0", ...]]``).
    criterion : str, number, date, datetime, tuple, list, None or callable
        See the module documentation for every form.
    vr : str, optional
        The DICOM VR of the tag (``"DA"``, ``"TM"``, ``"DT"``, ``"PN"``, ``"DS"``, ...): it
        decides whether ``"A-B"`` and 2-tuples are ranges.
    case_sensitive : bool, default False
        Text comparison (equality and wildcards) is case-insensitive by default.
    name : str, optional
        The tag name, for error messages.

    Returns
    -------
    numpy.ndarray of bool
        One value per row; missing values never match (except for ``None`` and ``""``).

    Raises
    ------
    SelectionError
        (a ``ValueError``) when the criterion does not fit the column, e.g. a malformed date.

    Examples
    --------
    >>> s = pd.Series(["DOE^JOHN", "Roe^Jane", None], dtype="string")
    >>> mask(s, "doe*", "PN").tolist()
    [True, False, False]
    >>> mask(s, "doe*", "PN", case_sensitive=True).tolist()
    [False, False, False]
    >>> mask(s, ["Roe^Jane", "Nobody"], "PN").tolist()
    [False, True, False]
    >>> dates = pd.Series(pd.to_datetime(["2019-06-01", "2020-03-04", None]))
    >>> mask(dates, "20200101-20201231", "DA").tolist()
    [False, True, False]
    >>> import datetime
    >>> mask(dates, (datetime.date(2019, 1, 1), None), "DA").tolist()
    [True, True, False]
    >>> thick = pd.Series([0.5, 2.0, 5.0, None], dtype="Float64")
    >>> mask(thick, (0, 2), "DS").tolist()
    [True, True, False, False]
    >>> mask(thick, lambda c: c > 1).tolist()
    [False, True, True, False]
    """
    what = name or getattr(column, "name", None) or "criterion"
    n = len(column)
    kind = _kind(column)
    if callable(criterion) and not isinstance(criterion, type):
        return _as_bool(criterion(column), n)
    if criterion is None:
        if kind == "vector":
            return column.isna().all(axis=1).to_numpy()
        return column.isna().to_numpy(dtype=bool)
    if isinstance(criterion, str) and criterion == "":
        return np.ones(n, dtype=bool)  # DICOM universal matching (Orthanc's find ignores it)
    if _all_missing(column):
        # no row has the tag (e.g. a null[pyarrow] column): no value can match, whatever the
        # criterion's form; there is no dtype to check it against
        return np.zeros(n, dtype=bool)
    if isinstance(criterion, list | tuple | set | frozenset) and not _is_range_tuple(criterion, vr, kind):
        if kind == "vector" and isinstance(criterion, tuple) and criterion and all(
                is_number(x) for x in criterion):
            return _vector_equal(column, [float(x) for x in criterion], what)
        out = np.zeros(n, dtype=bool)
        for item in criterion:
            out |= mask(column, item, vr, case_sensitive, name=what)
        return out
    if kind == "vector":
        return _vector_mask(column, criterion, what)
    if kind == "object":
        raise SelectionError(
            f"{what} holds sequences (lists of items): only a function (e.g. lambda s: "
            "s.map(len) > 1) or None can select on it.")
    if isinstance(criterion, tuple):  # the (low, high) range
        return _range(column, kind, vr, criterion[0], criterion[1], what)
    if isinstance(criterion, str):
        if "\\" in criterion:  # DICOM list matching, as Orthanc's find
            out = np.zeros(n, dtype=bool)
            for item in criterion.split("\\"):
                out |= mask(column, item, vr, case_sensitive, name=what)
            return out
        if (vr == "DA" or kind == "datetime") and _ISO_DAY.match(criterion.strip()):
            return _string(column, kind, vr, criterion, case_sensitive, what)  # one ISO day
        if (vr in TEXT_RANGE_VRS or kind == "datetime") and "-" in criterion:
            day_range = DA_RANGE.match(criterion.strip()) if (vr == "DA" or kind == "datetime") else None
            if day_range:
                low, high = day_range["low"], day_range["high"]
            else:
                low, _, high = criterion.partition("-")
            return _range(column, kind, vr, low or None, high or None,
                          f"{what} range {criterion!r}")  # name the whole range in errors
        return _string(column, kind, vr, criterion, case_sensitive, what)
    if is_datelike(criterion):
        if kind == "datetime":
            day = _to_timestamp(criterion, what)  # a datetime.time is refused, not crashed on
            if vr == "DA" or not isinstance(criterion, _dt.datetime | pd.Timestamp | np.datetime64):
                day = day.normalize()
                col = column.dt.normalize()
            else:
                col = column
            return (col == day).fillna(False).to_numpy(dtype=bool)
        return _string(column, kind, vr, dicom_text(criterion, vr or "DA"), True, what)
    if is_number(criterion):
        if isinstance(criterion, float) and math.isnan(criterion):
            return column.isna().to_numpy(dtype=bool)
        return _numeric(column, kind, what).eq(float(criterion)).fillna(False).to_numpy(dtype=bool)
    raise SelectionError(
        f"{what}: unsupported criterion {criterion!r} ({type(criterion).__name__}); use a string, "
        "number, date, (low, high) tuple, list of values, None or a function.")


def _numeric(column: pd.Series, kind: str, what: str) -> pd.Series:
    if kind == "numeric":
        return column.astype("Float64").reset_index(drop=True)
    if kind == "datetime":
        raise SelectionError(f"{what} holds dates: compare it with dates or 'YYYYMMDD' strings.")
    if isinstance(column.dtype, pd.CategoricalDtype):
        cats = pd.to_numeric(pd.Series(column.cat.categories.astype(str)).str.strip(),
                             errors="coerce").astype("Float64")
        codes = column.cat.codes.to_numpy()
        vals = np.append(cats.to_numpy(dtype=float, na_value=np.nan), np.nan)[codes]
        return pd.Series(vals, dtype="Float64")
    text = column.astype("string[pyarrow]").str.strip().reset_index(drop=True)
    return pd.to_numeric(text, errors="coerce").astype("Float64")


def _string(column: pd.Series, kind: str, vr: str, text: str, case_sensitive: bool,
            what: str) -> np.ndarray:
    if kind == "numeric":
        if _has_wildcard(text):
            return _text_test(_numeric_as_text(column), lambda v: v.str.fullmatch(
                wildcard_regex(text), case=case_sensitive))
        return _numeric(column, kind, what).eq(_to_float(text, what)).fillna(False).to_numpy(dtype=bool)
    if kind == "datetime":
        as_text = column.dt.strftime("%Y%m%d").astype("string[pyarrow]")
        if _has_wildcard(text):
            return _text_test(as_text, lambda v: v.str.fullmatch(wildcard_regex(text)))
        day = _parse_da(text, what)
        return (column.dt.normalize() == day).fillna(False).to_numpy(dtype=bool)
    if kind not in ("text",):
        raise SelectionError(f"{what}: cannot match text {text!r} on a column of dtype {column.dtype}.")
    if _has_wildcard(text):
        regex = wildcard_regex(text)
        return _text_test(column, lambda v: v.str.fullmatch(regex, case=case_sensitive))
    if case_sensitive:
        return _text_test(column, lambda v: v == text)
    folded = text.casefold()
    return _text_test(column, lambda v: v.str.casefold() == folded)


def _numeric_as_text(column: pd.Series) -> pd.Series:
    vals = column.astype("Float64")
    return pd.Series([None if pd.isna(v) else _number_text(v) for v in vals], dtype="string[pyarrow]")


def _range(column: pd.Series, kind: str, vr: str, low, high, what: str) -> np.ndarray:
    if low is None and high is None:
        return column.notna().to_numpy(dtype=bool)
    if kind == "datetime":
        lo = None if low is None else _to_timestamp(low, what)
        hi = None if high is None else _to_timestamp(high, what)
        if hi is not None and vr == "DA":
            hi = hi.normalize()  # a DA column holds midnights: the high day is included
        col = column.dt.normalize() if vr == "DA" else column
        ok = col.notna()
        if lo is not None:
            ok &= col >= lo
        if hi is not None:
            ok &= col <= hi
        return ok.fillna(False).to_numpy(dtype=bool)
    if kind == "numeric" or (vr in NUMERIC_VRS and kind == "text") or (
            kind == "text" and vr not in TEXT_RANGE_VRS and (is_number(low) or is_number(high))):
        col = _numeric(column, kind, what)
        ok = col.notna()
        if low is not None:
            ok &= col >= _to_float(low, what)
        if high is not None:
            ok &= col <= _to_float(high, what)
        return ok.fillna(False).to_numpy(dtype=bool)
    if kind == "text":
        # DICOM strings of one VR compare in time order as text, which is what Orthanc does
        lo = None if low is None else dicom_text(low, vr)
        hi = None if high is None else dicom_text(high, vr)

        def test(v: pd.Series):
            ok = v.notna()
            if lo is not None:
                ok &= v >= lo
            if hi is not None:
                ok &= v <= hi
            return ok

        return _text_test(column, test)
    raise SelectionError(f"{what}: a (low, high) range needs a date, time or numeric tag.")


def _vector_equal(frame: pd.DataFrame, target: list[float], what: str) -> np.ndarray:
    if len(target) != frame.shape[1]:
        raise SelectionError(f"{what} has {frame.shape[1]} components; the criterion has {len(target)}.")
    ok = np.ones(len(frame), dtype=bool)
    for i, t in enumerate(target):
        ok &= frame.iloc[:, i].astype("Float64").eq(t).fillna(False).to_numpy(dtype=bool)
    return ok


def _vector_mask(frame: pd.DataFrame, criterion, what: str) -> np.ndarray:
    if isinstance(criterion, str):
        parts = [p for p in criterion.split("\\")]
        return _vector_equal(frame, [_to_float(p, what) for p in parts], what)
    raise SelectionError(
        f"{what} is a vector tag: select on it with 'x\\\\y\\\\z', a tuple of numbers, a list of "
        f"those, a function of its components, or on one component such as {what}_0=(low, high).")


# -- JSON -----------------------------------------------------------------------------------
def encode_criterion(criterion):
    """A JSON-able form of one criterion (see :func:`decode_criterion`).

    Examples
    --------
    >>> import datetime
    >>> encode_criterion((datetime.date(2020, 1, 1), None))
    {'tuple': [{'date': '2020-01-01'}, None]}
    >>> encode_criterion(["CT", "MR"])
    {'any': ['CT', 'MR']}
    """
    if criterion is None or isinstance(criterion, str | bool):
        return criterion
    if isinstance(criterion, np.generic):
        criterion = criterion.item()
    if is_number(criterion):
        if isinstance(criterion, float) and not math.isfinite(criterion):
            return {"float": repr(criterion)}
        return criterion
    if isinstance(criterion, pd.Timestamp | np.datetime64):
        criterion = pd.Timestamp(criterion).to_pydatetime()
    if isinstance(criterion, _dt.datetime):
        return {"datetime": criterion.isoformat()}
    if isinstance(criterion, _dt.date):
        return {"date": criterion.isoformat()}
    if isinstance(criterion, _dt.time):
        return {"time": criterion.isoformat()}
    if isinstance(criterion, tuple):  # a 2-tuple may be a range: decided when matching
        return {"tuple": [encode_criterion(c) for c in criterion]}
    if isinstance(criterion, list | set | frozenset):
        return {"any": [encode_criterion(c) for c in criterion]}
    if callable(criterion):
        return {"callable": repr(criterion)}
    raise SelectionError(f"Cannot record criterion {criterion!r} ({type(criterion).__name__}).")


def decode_criterion(data):
    """The criterion that :func:`encode_criterion` recorded.

    Raises
    ------
    SelectionError
        For a recorded callable: functions cannot be stored, so they cannot be re-applied.

    Examples
    --------
    >>> decode_criterion({'tuple': [{'date': '2020-01-01'}, None]})
    (datetime.date(2020, 1, 1), None)
    """
    if not isinstance(data, dict):
        if isinstance(data, list):  # tolerate hand-written JSON lists
            return [decode_criterion(d) for d in data]
        return data
    if "date" in data:
        return _dt.date.fromisoformat(data["date"])
    if "datetime" in data:
        return _dt.datetime.fromisoformat(data["datetime"])
    if "time" in data:
        return _dt.time.fromisoformat(data["time"])
    if "float" in data:
        return float(data["float"])
    if "tuple" in data:
        return tuple(decode_criterion(d) for d in data["tuple"])
    if "range" in data:
        return tuple(decode_criterion(d) for d in data["range"])
    if "any" in data:
        return [decode_criterion(d) for d in data["any"]]
    if "callable" in data:
        raise SelectionError(
            f"This selection used a function ({data['callable']}), which cannot be recorded: "
            "it cannot be re-applied. Select again with the function on the new frame.")
    raise SelectionError(f"Unrecognised recorded criterion {data!r}.")


def encode_criteria(criteria: Mapping, case_sensitive: bool = False) -> dict:
    """The ``df.attrs["orthanc"]["criteria"]`` entry of one ``select`` call.

    Examples
    --------
    >>> encode_criteria({"Modality": ["CT", "MR"]})
    {'select': {'Modality': {'any': ['CT', 'MR']}}, 'case_sensitive': False}
    """
    return {"select": {str(k): encode_criterion(v) for k, v in criteria.items()},
            "case_sensitive": bool(case_sensitive)}


def decode_criteria(entry: Mapping, *, callables: str = "raise") -> tuple[dict, bool]:
    """``(criteria, case_sensitive)`` to replay one recorded ``select`` call.

    Parameters
    ----------
    entry : dict
        One item of ``df.attrs["orthanc"]["criteria"]``.
    callables : {"raise", "skip"}, default "raise"
        A recorded function cannot be re-applied: raise :class:`SelectionError`, or leave that
        criterion out (the replay then selects more rows than the original).

    Examples
    --------
    >>> entry = encode_criteria({"Modality": "CT", "StudyDate": "2020*"}, case_sensitive=True)
    >>> criteria, cs = decode_criteria(entry)
    >>> # frame.orthanc.select(**criteria, case_sensitive=cs)
    >>> criteria, cs
    ({'Modality': 'CT', 'StudyDate': '2020*'}, True)
    """
    if callables not in ("raise", "skip"):
        raise ValueError("callables must be 'raise' or 'skip'.")
    out = {}
    for k, v in dict(entry.get("select") or {}).items():
        if callables == "skip" and isinstance(v, dict) and "callable" in v:
            continue
        out[k] = decode_criterion(v)
    return out, bool(entry.get("case_sensitive", False))


def merge_criteria(criteria: Mapping | None, criteria_kwargs: Mapping) -> dict:
    """One dict of ``select`` criteria from the positional dict and the keyword arguments.

    Examples
    --------
    >>> merge_criteria({"0008,0060": "CT"}, {"StudyDate": "2020-"})
    {'0008,0060': 'CT', 'StudyDate': '2020-'}
    >>> merge_criteria(True, {"Modality": "CT"})
    Traceback (most recent call last):
    ...
    TypeError: select() takes at most one positional argument, a dict of criteria ({tag: criterion}); got True (bool). Did you mean case_sensitive=True?
    """
    if criteria is None:
        return dict(criteria_kwargs)
    if not isinstance(criteria, Mapping):
        hint = (f" Did you mean case_sensitive={criteria!r}?" if isinstance(criteria, bool) else
                " Give criteria as keywords (Modality='CT') or as one dict ({'0008,0060': 'CT'}).")
        raise TypeError("select() takes at most one positional argument, a dict of criteria "
                        f"({{tag: criterion}}); got {criteria!r} ({type(criteria).__name__})." + hint)
    both = [k for k in criteria if k in criteria_kwargs]
    if both:
        raise TypeError(f"select() got {both[0]!r} both in the criteria dict and as a keyword; "
                        "give each tag once.")
    return {**criteria, **criteria_kwargs}
