"""LocalOrthanc, the public throw-away server."""

from __future__ import annotations

import pytest

import orthanc_pandas as op
from orthanc_pandas.testing import LocalOrthanc, OrthancNotInstalledError
from orthanc_pandas.testing.synthetic import make_series, to_bytes


def test_missing_binary_says_how_to_install(monkeypatch):
    monkeypatch.setenv("ORTHANC_BINARY", "/nonexistent/Orthanc")
    with pytest.raises(OrthancNotInstalledError, match="apt-get install -y orthanc"):
        LocalOrthanc()


def test_start_upload_restart_stop_cleans_up(orthanc_available):
    server = LocalOrthanc(config={"Name": "custom-name"})
    with server:
        assert server.client().system()["Name"] == "custom-name"
        answers = server.upload_bytes(to_bytes(d) for d in make_series(4, 8, 8, seed="t"))
        assert [a["Status"] for a in answers] == ["Success"] * 4
        workdir = server.workdir
        port = server.port
        server.restart()  # same port, same storage
        assert server.port == port
        assert len(op.read_orthanc(server.url)) == 4
    assert not workdir.exists()
    assert server.process is None and "stopped" in repr(server)


def test_kill_then_restart_keeps_data(orthanc_available):
    with LocalOrthanc() as server:
        server.upload_bytes(to_bytes(d) for d in make_series(2, 8, 8, seed="k"))
        server.kill()
        with pytest.raises(op.OrthancConnectionError):
            op.OrthancClient(server.url, retries=0).system()
        server.restart()
        assert server.client().statistics()["CountInstances"] == 2


def test_users_and_dicomweb(orthanc_available):
    with LocalOrthanc(users={"u": "p"}, dicomweb=True) as server:
        client = server.client()
        assert client.has_credentials
        assert client.get_json("/dicom-web/studies") == []


def test_persistent_storage_survives_stop(orthanc_available, tmp_path):
    with LocalOrthanc(storage=tmp_path / "store") as server:
        server.upload_bytes(to_bytes(d) for d in make_series(3, 8, 8, seed="p"))
    with LocalOrthanc(storage=tmp_path / "store") as server:
        assert server.client().statistics()["CountInstances"] == 3
