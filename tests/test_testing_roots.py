"""LocalOrthanc(root=...): a current Orthanc from its own root file system (Debian sid's 1.13)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orthanc_pandas.testing import (
    LocalOrthanc,
    OrthancNotInstalledError,
    find_orthanc_binary,
    install_debian_orthanc,
)


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(path))]


def test_root_server_runs_its_own_version_and_leaves_nothing_mounted(two_versions, tmp_path):
    root = Path(two_versions["current"]["root"])
    before = _mounts_under(root)
    storage = tmp_path / "kept"  # a storage folder outside /tmp's work folder is bound in too
    with LocalOrthanc(root=root, dicomweb=True, storage=storage) as server:
        client = server.client()
        assert client.version_tuple >= (1, 12)
        assert client.capabilities().labels
        # its plugins come from inside the root (the machine's DICOMweb plugin is 1.7)
        plugins = client.get_json("/plugins")
        assert "dicom-web" in plugins
        assert client.get_json("/plugins/dicom-web")["Version"] != "1.7"
        assert _mounts_under(root) == before  # the bind mounts live in the server's namespace
    assert _mounts_under(root) == before
    assert any(storage.iterdir())  # the server wrote where the host sees it
    # the machine's own Orthanc is untouched and still the default without root=
    with LocalOrthanc(binary=two_versions["system"]["binary"]) as old:
        assert old.client().version_tuple < (1, 11)


def test_install_reuses_an_existing_root(tmp_path, monkeypatch):
    root = tmp_path / "sid"
    binary = root / "usr/sbin/Orthanc"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **kw: ran.append(a))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # would refuse to build: not root
    assert install_debian_orthanc("sid", root) == root
    assert ran == [] and sorted(p.name for p in tmp_path.iterdir()) == ["sid"]  # no debootstrap


def test_a_root_without_orthanc_says_how_to_build_it(tmp_path):
    with pytest.raises(OrthancNotInstalledError, match="install-orthanc --suite sid"):
        find_orthanc_binary(root=tmp_path)
    with pytest.raises(OrthancNotInstalledError, match="install-orthanc"):
        LocalOrthanc(root=tmp_path)


def test_orthanc_binary_wins_over_orthanc_root(monkeypatch, two_versions):
    monkeypatch.setenv("ORTHANC_ROOT", str(two_versions["current"]["root"]))
    monkeypatch.setenv("ORTHANC_BINARY", two_versions["system"]["binary"])
    server = LocalOrthanc()
    assert server.root is None
    monkeypatch.delenv("ORTHANC_BINARY")
    assert LocalOrthanc().root == Path(os.environ["ORTHANC_ROOT"])
