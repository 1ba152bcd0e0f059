"""The password never leaves memory: the whole API is run with one, and everything it produces
is scanned (attrs, parquet files, reprs, every log record at DEBUG including urllib3's, printed
output, exception texts with their chains, pickles)."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import traceback
import urllib.parse
import warnings

import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas import _cli as cli
from orthanc_pandas.errors import OrthancPandasError
from orthanc_pandas.testing import LocalOrthanc
from orthanc_pandas.testing._servers import free_port
from orthanc_pandas.testing.synthetic import make_series, to_bytes

USER = "alice"
PASSWORD = "Pw-7f3kQ9zX-secret"
WRONG = "Wr0ng-9dJ2vB-guess"


def secret_forms(password: str) -> list[str]:
    basic = base64.b64encode(f"{USER}:{password}".encode()).decode()
    return [password, urllib.parse.quote(password, safe=""), basic]


def exception_text(exc: BaseException) -> str:
    """Everything a user could see of an exception: str, repr, traceback with its chain."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    ctx = exc.__context__
    while ctx is not None:
        parts += [str(ctx), repr(ctx)]
        ctx = ctx.__context__
    return "\n".join(parts)


@pytest.fixture
def server(orthanc_factory):
    s = orthanc_factory(users={USER: PASSWORD}, name="secrets")
    blobs = [to_bytes(d) for d in make_series(4, 16, 16, seed="sec-a", patient_id="SA")]
    blobs += [to_bytes(d) for d in make_series(3, 16, 16, seed="sec-b", patient_id="SB")]
    s.upload_bytes(blobs)
    return s


def test_password_in_no_output_of_the_whole_api(server, tmp_path, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)  # every logger, root included
    for name in ("urllib3", "urllib3.connectionpool", "requests", "orthanc_pandas"):
        caplog.set_level(logging.DEBUG, logger=name)
    monkeypatch.delenv("ORTHANC_USERNAME", raising=False)
    monkeypatch.delenv("ORTHANC_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    texts: list[str] = []  # everything shown to a user
    blobs: list[bytes] = []  # everything written or sent elsewhere
    errors: list[BaseException] = []

    def keep(exc_type, fn):
        with pytest.raises(exc_type) as info:
            fn()
        errors.append(info.value)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = op.connect(server.url, auth=(USER, PASSWORD))
        texts += [repr(client), str(client.__dict__.get("url"))]
        blobs.append(pickle.dumps(client))
        df = op.read_orthanc(server.url, auth=(USER, PASSWORD))
        sel = df.orthanc.select(PatientID="SA")
        wt = sel.orthanc.with_tags("SliceThickness", "PixelSpacing")
        hdrs = sel.orthanc.headers()
        paths = df.orthanc.download(tmp_path / "dl")
        upload_report = op.upload(list(paths), server.url)
        plan = df.orthanc.delete(level="patient")  # a dry run
        refreshed = df.orthanc.refresh()
        vol = sel.orthanc.volume()
        seg_rows = vol.orthanc.to_seg(vol.values > vol.values.mean(), "body", upload=True)
        zipped = sel.orthanc.to_zip(tmp_path / "sel.zip")
        for frame in (df, sel, wt, refreshed, upload_report, plan):
            texts += [repr(frame), frame.to_string(), json.dumps(frame.attrs, default=str)]
            if frame is not upload_report and frame is not plan:
                texts.append(repr(frame.orthanc))
        for k, frame in enumerate((df, sel, wt, refreshed)):
            path = tmp_path / f"f{k}.parquet"
            frame.to_parquet(path)
            blobs.append(path.read_bytes())
            back = pd.read_parquet(path)
            texts.append(json.dumps(back.attrs))
        texts += [repr(vol), json.dumps(vol.attrs, default=str), repr(hdrs.iloc[0])]
        texts += [repr(seg_rows), seg_rows.to_string(), json.dumps(seg_rows.attrs, default=str)]
        blobs.append(zipped.read_bytes())

        # the simple-orthanc facade
        facade = op.Orthanc(url=server.url, username=USER, password=PASSWORD)
        facade.select(PatientID="SB")
        texts += [repr(facade), repr(facade.df.attrs), str(facade.SeriesDescriptions)]
        arr = facade.get_array()
        assert arr.shape[0] == 3
        texts.append(str(facade.get_headers(0)))

        # the CLI, with the password from the environment (never from argv)
        monkeypatch.setenv("ORTHANC_USERNAME", USER)
        monkeypatch.setenv("ORTHANC_PASSWORD", PASSWORD)
        out = tmp_path / "cli.parquet"
        assert cli.main(["index", server.url, "-o", str(out), "-q"]) == 0
        blobs.append(out.read_bytes())
        monkeypatch.setenv("ORTHANC_PASSWORD", WRONG)
        assert cli.main(["index", server.url, "-o", str(tmp_path / "no.parquet"), "-q"]) == 1
        monkeypatch.delenv("ORTHANC_USERNAME")
        monkeypatch.delenv("ORTHANC_PASSWORD")

        # errors provoked on purpose, credentials given in every form
        host = server.url.split("://", 1)[1]
        keep(op.OrthancAuthError, lambda: op.read_orthanc(server.url, auth=(USER, WRONG)))
        keep(op.OrthancAuthError, lambda: op.read_orthanc(f"http://{USER}:{WRONG}@{host}"))
        keep(op.OrthancAuthError, lambda: op.Orthanc(url=server.url, username=USER, password=WRONG))
        keep(ValueError, lambda: op.OrthancClient(f"{USER}:{PASSWORD}@{host}"))  # no scheme
        keep(ValueError, lambda: op.OrthancClient(f"http://{USER}:{PASSWORD}@127.0.0.1:notaport"))
        keep(ValueError, lambda: op.OrthancClient(f"ftp://{USER}:{PASSWORD}@{host}"))
        keep(op.OrthancConnectionError,
             lambda: op.read_orthanc(f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}", timeout=2))
        keep(op.OrthancNotFoundError, lambda: client.get_json("/instances/no-such-instance"))
        keep(op.OrthancHTTPError, lambda: client.post_json("/tools/find", {"Level": "Nope", "Query": {}}))
        keep(op.SelectionError, lambda: df.orthanc.volume())
        keep(op.SelectionError, lambda: df.orthanc.header())
        keep(op.UnknownTagError, lambda: df.orthanc.select(NoSuchTag="x"))
        keep(op.ServerMismatchError, lambda: df.orthanc.refresh(client=op.OrthancClient(
            f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}")))
        op.connect(client)  # the failed logins above registered their (wrong) clients
        gone = op.read_orthanc(client).iloc[[0]]
        gone.orthanc.delete(confirm=True)
        keep(op.OrthancNotFoundError, lambda: gone.orthanc.header())
        keep(op.OrthancNotFoundError, lambda: gone.orthanc.download(tmp_path / "gone"))
        server.kill()  # and a server that is gone
        keep(op.OrthancConnectionError, lambda: sel.orthanc.volume(client=client))
        keep(op.OrthancConnectionError, lambda: op.read_orthanc(client))
        down = op.upload(list(paths)[:2], client, errors="report")
        texts += [down.to_string()]
        assert set(down.status.astype(str)) == {"Error"}

    texts += [exception_text(e) for e in errors]
    texts += [str(w.message) for w in caught]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    assert "rejected the credentials of user 'alice'" in captured.err
    records = caplog.records
    assert any(r.name.startswith("urllib3") for r in records), "urllib3 debug logs not captured"
    texts += [caplog.text] + [r.getMessage() for r in records] + [repr(r.args) for r in records]
    texts += [repr(r.__dict__) for r in records]

    for secret in secret_forms(PASSWORD) + secret_forms(WRONG):
        for t in texts:
            assert secret not in t, f"secret found in: {t[:300]}"
        for b in blobs:
            assert secret.encode() not in b
    assert len(errors) == 17 and all(isinstance(e, OrthancPandasError | ValueError) for e in errors)


def test_client_pickled_for_workers_carries_no_credentials(orthanc_available, monkeypatch):
    monkeypatch.delenv("ORTHANC_USERNAME", raising=False)
    with LocalOrthanc(users={USER: PASSWORD}) as s:
        c = op.OrthancClient(f"http://{USER}:{PASSWORD}@{s.url.split('://')[1]}")
        data = pickle.dumps(c)
        for secret in secret_forms(PASSWORD):
            assert secret.encode() not in data
        assert c.statistics()["CountInstances"] == 0  # credentials from the URL were used


def test_frame_from_parquet_without_credentials_says_how_to_give_them(server, tmp_path):
    """The advice in the error works: op.connect(url, auth=...) and then the frame's calls."""
    from orthanc_pandas._http.client import _registry, _registry_lock

    df = op.read_orthanc(server.url, auth=(USER, PASSWORD))
    df.to_parquet(tmp_path / "f.parquet")
    back = pd.read_parquet(tmp_path / "f.parquet")
    with _registry_lock:
        saved = _registry.pop(server.url, None)
    try:
        with pytest.raises(op.OrthancAuthError, match=r"orthanc_pandas\.connect\(") as info:
            back.orthanc.headers()
        assert PASSWORD not in str(info.value)
        op.connect(server.url, auth=(USER, PASSWORD))  # what the message says to do
        assert len(back.orthanc.headers()) == len(back)
    finally:
        with _registry_lock:
            if saved is not None:
                _registry[server.url] = saved
