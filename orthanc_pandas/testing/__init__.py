"""A throw-away local Orthanc server, for tests, demos and benchmarks.

:class:`LocalOrthanc` starts Debian's (or any) ``Orthanc`` binary on a free 127.0.0.1 port
with its storage in a temporary folder, waits until it answers, and removes everything when
it stops. Use it in your own test suites::

    from orthanc_pandas.testing import LocalOrthanc

    def test_my_pipeline():
        with LocalOrthanc() as server:
            server.upload(["a.dcm", "b.dcm"])
            df = orthanc_pandas.read_orthanc(server.url)
            ...

A server whose Python process dies without stopping it (a notebook kernel restarted or
killed) is stopped, and its temporary folder removed, by a small watchdog process started
beside it (``LocalOrthanc.watchdog = False`` turns that off).

:class:`LocalPostgres` does the same for a PostgreSQL server, so that an Orthanc can keep its
index there (the way production servers scale past ~50k instances)::

    with LocalPostgres() as pg, LocalOrthanc(postgres=pg) as server:
        ...

Current Orthanc on an older Debian
----------------------------------
Debian bookworm ships Orthanc 1.10.1; archives in the field run 1.12/1.13, which need a newer
glibc. :func:`install_debian_orthanc` puts Debian sid's (or trixie's) Orthanc with its
DICOMweb and PostgreSQL plugins into a separate root file system in a cache folder (once,
about a minute), and ``LocalOrthanc(root=...)`` runs the server from there, in a private mount
namespace with its folders bound in. The machine's own packages and apt sources are never
touched. ``$ORTHANC_ROOT`` makes that root the default for every ``LocalOrthanc``::

    root = install_debian_orthanc("sid")          # ~/.cache/orthanc-pandas/roots/sid
    with LocalOrthanc(root=root) as server:       # Orthanc 1.13
        ...

Synthetic DICOM series for tests and demos are in :mod:`orthanc_pandas.testing.synthetic`;
:func:`assert_index_frame_equal` compares two frames the way a test of this package should.
"""

from __future__ import annotations

import pandas as pd

from orthanc_pandas.testing._servers import (
    DICOMWEB_PLUGIN,
    POSTGRESQL_INDEX_PLUGIN,
    LocalOrthanc,
    LocalPostgres,
    OrthancNotInstalledError,
    PostgresNotInstalledError,
    find_orthanc_binary,
    find_postgres_bindir,
    install_debian_orthanc,
    link,
    orthanc_root,
)

__all__ = ["LocalOrthanc", "LocalPostgres", "OrthancNotInstalledError", "PostgresNotInstalledError",
           "find_orthanc_binary", "find_postgres_bindir", "install_debian_orthanc", "orthanc_root",
           "link", "assert_index_frame_equal", "DICOMWEB_PLUGIN", "POSTGRESQL_INDEX_PLUGIN"]

#: provenance keys that say when or how a frame was read, not what it holds
READ_KEYS = ("read_at", "route", "read_seconds", "requests")


def assert_index_frame_equal(left: pd.DataFrame, right: pd.DataFrame, *,
                             ignore_attrs: tuple[str, ...] = READ_KEYS, **kwargs) -> None:
    """Assert that two Orthanc frames hold the same rows, values, dtypes, order and provenance.

    :func:`pandas.testing.assert_frame_equal` on the frames (``kwargs`` go to it), then the
    ``attrs["orthanc"]`` of both compared apart from the keys in ``ignore_attrs`` (by default
    those that say when and how the frame was read).

    Examples
    --------
    >>> import orthanc_pandas as op
    >>> a = op.read_orthanc(server.url)                           # doctest: +SKIP
    >>> assert_index_frame_equal(a, a.orthanc.refresh())          # doctest: +SKIP
    """
    pd.testing.assert_frame_equal(left, right, **kwargs)
    a = {k: v for k, v in (left.attrs.get("orthanc") or {}).items() if k not in ignore_attrs}
    b = {k: v for k, v in (right.attrs.get("orthanc") or {}).items() if k not in ignore_attrs}
    if a != b:
        keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        raise AssertionError(f"attrs['orthanc'] differ in {keys}: "
                             f"{ {k: a.get(k) for k in keys} } != { {k: b.get(k) for k in keys} }")
