"""orthanc-pandas: an Orthanc DICOM archive as one pandas DataFrame.

>>> import orthanc_pandas as op
>>> df = op.read_orthanc("http://127.0.0.1:8042")     # doctest: +SKIP
>>> ct = df.orthanc.select(Modality="CT")              # doctest: +SKIP

Importing the package registers the ``df.orthanc`` accessor.
"""

from . import accessor as _accessor  # noqa: E402,F401  (registers df.orthanc)
from . import xarray_accessor as _xarray_accessor  # noqa: E402,F401  (registers vol.orthanc)
from ._version import __version__  # noqa: E402
from .client import OrthancClient, connect  # noqa: E402
from .compat import Orthanc  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from .errors import __all__ as _errors_all  # noqa: E402
from .gateway import echo, query  # noqa: E402
from .read import read_orthanc  # noqa: E402
from .transfer import upload  # noqa: E402

__all__ = ["__version__", "read_orthanc", "upload", "connect", "OrthancClient", "query", "echo", "Orthanc", *_errors_all]
