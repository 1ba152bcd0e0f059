"""The command line, run as a user would: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pandas as pd

import orthanc_pandas as op
from orthanc_pandas.errors import ParseWarning


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "orthanc_pandas._cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})}, **kw)


def test_index_writes_parquet_equal_to_read_orthanc(corpus, tmp_path):
    out = tmp_path / "index.parquet"
    res = run_cli("index", corpus.url, "-o", str(out))
    assert res.returncode == 0, res.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParseWarning)
        expected = op.read_orthanc(corpus.url)
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, expected, check_flags=False)
    # same provenance, but for the time and change sequence (stability events may follow)
    moment = ("read_at", "last_change")
    assert {k: v for k, v in back.attrs["orthanc"].items() if k not in moment} == \
        {k: v for k, v in expected.attrs["orthanc"].items() if k not in moment}
    stats = corpus.server.client().statistics()
    assert f"{stats['CountPatients']} patients" in res.stdout
    assert f"{stats['CountInstances']} instances" in res.stdout


def test_password_from_environment_never_printed(orthanc_factory, tmp_path):
    server = orthanc_factory(users={"bob": "hunter2-xyz"})
    out = tmp_path / "i.parquet"
    ok = run_cli("index", server.url, "-o", str(out), "--user", "bob",
                 env={"ORTHANC_PASSWORD": "hunter2-xyz"}, stdin=subprocess.DEVNULL)
    assert ok.returncode == 0, ok.stderr
    assert "hunter2-xyz" not in ok.stdout + ok.stderr
    assert b"hunter2-xyz" not in out.read_bytes()
    bad = run_cli("index", server.url, "-o", str(out), "--user", "bob",
                  env={"ORTHANC_PASSWORD": "wrong-pw-123"}, stdin=subprocess.DEVNULL)
    assert bad.returncode == 1
    assert "rejected the credentials of user 'bob'" in bad.stderr
    assert "wrong-pw-123" not in bad.stdout + bad.stderr
    noterm = run_cli("index", server.url, "--user", "bob", env={"ORTHANC_PASSWORD": ""},
                     stdin=subprocess.DEVNULL)
    assert noterm.returncode == 1  # an empty password is still a password: rejected


def test_bad_url_is_a_clear_error():
    res = run_cli("index", "localhost:8042")
    assert res.returncode == 1
    assert "needs a scheme" in res.stderr


def test_demo_samples_report_files_that_are_not_dicom_as_such(orthanc_factory):
    from orthanc_pandas.testing.samples import load_samples, sample_files

    server = orthanc_factory()
    status = load_samples(server, phantom_slices=2, size=8)
    assert status["not DICOM"] >= 1 and "Error" not in status, status
    assert status["phantom instances"] == 4
    files = sum(v for k, v in status.items() if k != "phantom instances")
    assert files == len(sample_files())
