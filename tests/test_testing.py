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


@pytest.mark.parametrize("fast", [True, False])
def test_stop_fast_or_graceful_ends_the_server_and_removes_its_folders(orthanc_available, fast):
    server = LocalOrthanc().start()
    process, workdir = server.process, server.workdir
    server.stop(fast=fast)
    # killed (SIGKILL) or shut down (exit status 0): either way gone, and its files with it
    assert process.returncode == (-9 if fast else 0)
    assert not workdir.exists() and server.process is None
    with pytest.raises(op.OrthancConnectionError):
        op.OrthancClient(f"http://127.0.0.1:{server.port}", retries=0).system()


def test_fast_stop_still_closes_a_kept_storage_gracefully(orthanc_available, tmp_path):
    server = LocalOrthanc(storage=tmp_path / "store").start()
    process = server.process
    server.stop(fast=True)  # the storage outlives the server: its index is closed cleanly
    assert process.returncode == 0
    assert (tmp_path / "store").is_dir()


def test_a_port_held_by_another_server_is_never_taken_for_ours(orthanc_available):
    """Two servers handed the same free port (the kernel may give a just-closed port to the
    next caller; CI once met it across xdist workers): the second must not take the first's
    answers as its own start, which let a test SIGSTOP a dead process and talk to a stranger."""
    from orthanc_pandas.errors import OrthancPandasError

    with LocalOrthanc(config={"Name": "first"}) as first:
        second = LocalOrthanc(port=first.port, startup_timeout=20, config={"Name": "second"})
        with pytest.raises(OrthancPandasError, match="did not start"):
            second.start()
        assert second.process is None
        assert first.client().system()["Name"] == "first"  # the first is untouched
