"""The accessors: ``df.orthanc`` (instance and level frames) and ``vol.orthanc`` (volumes).

Thin and stateless: each method checks its frame and makes one call into ``_ops``.
Importing this package registers them with pandas and xarray.
"""

from orthanc_pandas._accessors import frame, volume  # noqa: F401  (registration)
