"""The suite's warning filters (pyproject.toml) make pandas', pyarrow's and xarray's
deprecations errors, wherever the library attributes them.

Each library attributes its warnings to the caller's module, not its own (pandas'
``find_stack_level``, xarray's ``emit_user_level_warning``, pyarrow's ``stacklevel``), so a
filter on the module ``pandas`` never sees them. These tests plant one real deprecation of each
library, show where it is attributed, and check that the suite's filters raise it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xarray as xr


def _attributed_to(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w.filename for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]


PLANTED = {
    # pandas 3: Pandas4Warning, a DeprecationWarning
    "pandas": lambda: pd.concat([pd.DataFrame({"a": [1]})] * 2, copy=False),
    # pyarrow: a FutureWarning
    "pyarrow": lambda: pa.chunked_array([[1]]).data,
    # xarray: a FutureWarning
    "xarray": lambda: xr.Dataset({"v": ("x", np.arange(2))}).drop("v"),
}


@pytest.mark.parametrize("library", sorted(PLANTED))
def test_a_deprecation_is_attributed_to_the_caller_and_is_an_error(library):
    assert _attributed_to(PLANTED[library]) == [__file__]  # not to the library's own module
    with pytest.raises((FutureWarning, DeprecationWarning)):
        PLANTED[library]()


def test_pandas_deprecation_inside_a_third_party_call_is_an_error():
    """Attributed to a module outside this package and the tests: pandas' class still matches."""
    with pytest.raises(pd.errors.Pandas4Warning):
        exec(compile("pd.concat([pd.DataFrame({'a': [1]})] * 2, copy=False)", "elsewhere.py", "exec"),
             {"pd": pd, "__name__": "some_other_library"})
