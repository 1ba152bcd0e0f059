"""orthanc-pandas: an Orthanc DICOM archive as one pandas DataFrame.

>>> import orthanc_pandas as op
>>> df = op.read_orthanc("http://127.0.0.1:8042")     # doctest: +SKIP
>>> ct = df.orthanc.select(Modality="CT")              # doctest: +SKIP

Importing the package registers the ``df.orthanc`` and ``vol.orthanc`` accessors. The public
names are the ones below, plus the modules :mod:`orthanc_pandas.errors`,
:mod:`orthanc_pandas.testing`, :mod:`orthanc_pandas.dask` and
:mod:`orthanc_pandas.simple_orthanc`; everything under an underscore is internal (see
``docs/architecture.md``).
"""

from orthanc_pandas import _accessors  # noqa: F401  (registers df.orthanc and vol.orthanc)
from orthanc_pandas._http.client import OrthancClient, connect
from orthanc_pandas._imaging.assemble import from_datasets as volume_from_datasets
from orthanc_pandas._ops.files import upload
from orthanc_pandas._ops.gateway import echo, query
from orthanc_pandas._ops.mirror import mirror
from orthanc_pandas._ops.read import read_orthanc
from orthanc_pandas._ops.sql import sql
from orthanc_pandas._version import __version__
from orthanc_pandas.errors import *  # noqa: F403
from orthanc_pandas.errors import __all__ as _errors_all
from orthanc_pandas.simple_orthanc import Orthanc

__all__ = ["__version__", "read_orthanc", "mirror", "upload", "connect", "OrthancClient", "query", "echo",
           "Orthanc", "volume_from_datasets", "sql", *_errors_all]
