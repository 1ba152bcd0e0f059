"""Real Orthanc servers for the test suite.

Every server is a real Orthanc process (Debian's ``orthanc`` package) on a free 127.0.0.1 port
with temporary storage. Under ``CI=true`` a missing Orthanc is a failure, never a skip.
"""

from __future__ import annotations

import functools
import os
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from hypothesis import settings

import orthanc_pandas as op
from orthanc_pandas.errors import ParseWarning
from orthanc_pandas.testing import (
    LocalOrthanc,
    OrthancNotInstalledError,
    find_orthanc_binary,
    orthanc_root,
)
from orthanc_pandas.testing._servers import DEFAULT_BINARY

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests draw new examples on every run where a developer looks at them, and the same
# examples in CI, where a red run stops everything from landing: what a new draw finds is
# found on a developer's machine, fixed, and added to the documented differences.
settings.register_profile("ci", derandomize=True, database=None)
if IN_CI:
    settings.load_profile("ci")

# Servers here hold throw-away data: kill them at teardown instead of a graceful shutdown
# (~2.5 s each, and the suite starts dozens). Servers with a storage= folder still shut down.
LocalOrthanc.fast_stop = True


#: The Orthanc under test: this machine's (1.10.1 on bookworm), or the one in $ORTHANC_ROOT
#: (Debian sid's 1.13, see orthanc_pandas.testing.install_debian_orthanc)
ORTHANC_ROOT = os.environ.get("ORTHANC_ROOT") or None


def pytest_report_header(config):
    where = f"the root {ORTHANC_ROOT}" if ORTHANC_ROOT else "this machine"
    try:
        binary = find_orthanc_binary(root=ORTHANC_ROOT)
    except OrthancNotInstalledError as exc:
        return f"orthanc: none found in {where} ({exc})"
    version = ".".join(map(str, orthanc_version() or ())) or "?"
    return f"orthanc: {binary} {version} from {where}"


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.strip().split(".") if x.isdigit())


@functools.cache
def orthanc_version() -> tuple[int, ...] | None:
    """Version of the Orthanc under test (``Orthanc --version``, no server started), or None."""
    try:
        binary = find_orthanc_binary(root=ORTHANC_ROOT)
    except OrthancNotInstalledError:
        return None
    cmd = [binary, "--version"] if ORTHANC_ROOT is None else ["chroot", ORTHANC_ROOT, binary, "--version"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        return _parse_version(out.split("\n", 1)[0].split()[-1])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def pytest_collection_modifyitems(config, items):
    """Skip the tests of other versions' branches; each run on another server covers them."""
    marked = [i for i in items if i.get_closest_marker("orthanc_min") or i.get_closest_marker("orthanc_before")]
    if not marked:
        return
    version = orthanc_version()
    if version is None:  # no server: the server fixtures fail (CI) or skip
        return
    shown = ".".join(map(str, version))
    for item in marked:
        for m in item.iter_markers("orthanc_min"):
            if version < _parse_version(m.args[0]):
                item.add_marker(pytest.mark.skip(reason=f"needs Orthanc >= {m.args[0]}; this run's is {shown}"))
        for m in item.iter_markers("orthanc_before"):
            if version >= _parse_version(m.args[0]):
                item.add_marker(pytest.mark.skip(reason=f"for Orthanc < {m.args[0]}; this run's is {shown}"))


def _require_orthanc() -> None:
    try:
        find_orthanc_binary(root=ORTHANC_ROOT)
    except OrthancNotInstalledError as exc:
        if IN_CI:
            pytest.fail(f"CI needs a real Orthanc: {exc}")
        pytest.skip(str(exc))


def corpus_paths() -> list[Path]:
    """Every file of pydicom's own test data (DICOM or not), in a stable order."""
    return sorted(Path(p) for p in pydicom.data.get_testdata_files() if os.path.isfile(p))


@dataclass
class Corpus:
    """A server loaded with pydicom's test files, and what happened to each file."""

    server: LocalOrthanc
    results: dict[str, dict]  # path -> Orthanc's answer (Status Success/AlreadyStored/Error)
    stored: dict[str, Path] = field(default_factory=dict)  # instance id -> the file that created it
    order: list[str] = field(default_factory=list)  # instance ids in upload order

    @property
    def url(self) -> str:
        return self.server.url

    def dataset(self, instance_id: str, **kw) -> pydicom.Dataset:
        # some corpus files have no File Meta header; Orthanc accepts them, so must we
        return pydicom.dcmread(self.stored[instance_id], force=True, **kw)


@pytest.fixture(scope="session")
def orthanc_available() -> None:
    _require_orthanc()


@pytest.fixture(scope="session")
def corpus(orthanc_available) -> Corpus:
    """One Orthanc (with DICOMweb) holding every pydicom test file it accepts."""
    with LocalOrthanc(dicomweb=True, name="corpus") as server:
        results = server.upload(corpus_paths())
        c = Corpus(server, results)
        for path, ans in results.items():
            if ans.get("Status") == "Success":
                c.stored[ans["ID"]] = Path(path)
                c.order.append(ans["ID"])
        yield c


@pytest.fixture(scope="session")
def corpus_frame(corpus):
    """The index frame of the corpus server (some corpus files hold invalid values on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        return op.read_orthanc(corpus.url)


@pytest.fixture
def orthanc_factory(orthanc_available):
    """Start servers with any options; all are stopped at the end of the test."""
    started: list[LocalOrthanc] = []

    def make(**kwargs) -> LocalOrthanc:
        server = LocalOrthanc(**kwargs).start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def empty_server(orthanc_factory) -> LocalOrthanc:
    """A fresh, empty Orthanc for tests that write."""
    return orthanc_factory()


@pytest.fixture(scope="session")
def current_root(orthanc_available) -> Path:
    """The root of the current Orthanc (1.13, with extended find): $ORTHANC_ROOT, else the
    cached sid root. Absent: skipped, except under CI, where it is a failure (setup.sh installs
    it before the first run)."""
    root = ORTHANC_ROOT or orthanc_root("sid")
    try:
        find_orthanc_binary(root=root)
    except OrthancNotInstalledError as exc:
        if IN_CI:
            pytest.fail(f"CI needs the current Orthanc (sid's root): {exc}")
        pytest.skip(str(exc))
    return Path(root)


@pytest.fixture(scope="session")
def two_versions(current_root) -> dict[str, dict]:
    """``LocalOrthanc`` arguments for this machine's Orthanc (1.10.1) and the current one
    (:func:`current_root`), for tests that compare the two. Under CI both must exist."""
    try:
        find_orthanc_binary(DEFAULT_BINARY)
    except OrthancNotInstalledError as exc:
        if IN_CI:
            pytest.fail(f"CI needs both Orthanc versions: {exc}")
        pytest.skip(str(exc))
    return {"system": {"binary": DEFAULT_BINARY}, "current": {"root": current_root}}
