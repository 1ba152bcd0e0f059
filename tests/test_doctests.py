"""The Examples sections of the docstrings run, so they stay true.

Every module of the package is run through :mod:`doctest`; examples that need a server are
marked ``# doctest: +SKIP`` where they are written.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import orthanc_pandas
from orthanc_pandas.errors import OrthancPandasWarning

#: module -> why its examples are not run here (fix the example, then remove it from here)
NOT_RUN: dict[str, str] = {}
#: pure modules whose examples are their documentation: each must have some that run
PURE = ["_frame.schema", "_frame.matching", "_frame.levels", "_frame.tags", "_frame.annotations",
        "_frame.protocol", "_http.capabilities",
        "_http.changes", "_imaging.geometry", "_imaging.assemble", "_imaging.decode", "_imaging.seg",
        "_imaging.json_header",
        "testing.synthetic", "_util.fanout"]
MODULES = sorted(m.name for m in pkgutil.walk_packages(orthanc_pandas.__path__, "orthanc_pandas.")
                 if not m.ispkg or m.name == "orthanc_pandas.testing")


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.skip(reason=NOT_RUN[m]))
                                  if m in NOT_RUN else m for m in MODULES])
def test_examples_run(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        # examples show values; the ParseWarning some of them cause is tested elsewhere
        warnings.simplefilter("ignore", OrthancPandasWarning)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                 report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"
    if name.removeprefix("orthanc_pandas.") in PURE:
        assert result.attempted > 0, f"{name} has no example that runs without a server"
