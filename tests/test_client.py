"""The HTTP client against real servers: auth, errors, retries, URL handling."""

from __future__ import annotations

import http.server
import json
import pickle
import threading
import time

import pandas as pd
import pytest

import orthanc_pandas as op
from orthanc_pandas._http.client import (
    OrthancClient,
    _normalize_url,
    get_client,
    json_array_batches,
)
from orthanc_pandas.errors import (
    NotOrthancError,
    OrthancAuthError,
    OrthancConnectionError,
    OrthancHTTPError,
    OrthancNotFoundError,
    OrthancPandasError,
)
from orthanc_pandas.testing._servers import free_port

PASSWORD = "s3cr3t-Pa55word"


@pytest.fixture(scope="module")
def auth_server(orthanc_available):
    from orthanc_pandas.testing import LocalOrthanc
    from orthanc_pandas.testing.synthetic import make_series, to_bytes

    with LocalOrthanc(users={"alice": PASSWORD}) as server:
        server.upload_bytes(to_bytes(d) for d in make_series(3, 8, 8, seed="auth"))
        yield server


@pytest.mark.parametrize("url, expected, creds", [
    ("http://127.0.0.1:8042", "http://127.0.0.1:8042", None),
    ("http://127.0.0.1:8042/", "http://127.0.0.1:8042", None),
    ("https://pacs.example.org/orthanc/", "https://pacs.example.org/orthanc", None),
    ("http://bob:p%40ss@host:1234/x", "http://host:1234/x", ("bob", "p@ss")),
    ("HTTP://Host:80", "http://host:80", None),
])
def test_normalize_url(url, expected, creds):
    assert _normalize_url(url) == (expected, creds)


@pytest.mark.parametrize("bad", ["", "127.0.0.1:8042", "ftp://host", "http://host:notaport", "http://"])
def test_malformed_urls_raise_valueerror_saying_what_to_do(bad):
    with pytest.raises(ValueError, match="URL") as info:
        OrthancClient(bad)
    assert isinstance(info.value, op.InvalidURLError) and isinstance(info.value, OrthancPandasError)


def test_right_credentials_work(auth_server):
    df = op.read_orthanc(auth_server.url, auth=("alice", PASSWORD))
    assert len(df) == 3


def test_wrong_and_missing_credentials_are_distinct_auth_errors(auth_server, monkeypatch, tmp_path):
    monkeypatch.delenv("ORTHANC_USERNAME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    with pytest.raises(OrthancAuthError) as wrong:
        op.read_orthanc(auth_server.url, auth=("alice", "not-" + PASSWORD))
    assert wrong.value.status == 401
    assert "rejected the credentials of user 'alice'" in str(wrong.value)
    with pytest.raises(OrthancAuthError) as missing:
        OrthancClient(auth_server.url).system()
    assert "requires credentials and none were given" in str(missing.value)
    for exc in (wrong.value, missing.value):
        assert PASSWORD not in str(exc) and PASSWORD not in repr(exc)
        assert isinstance(exc, PermissionError) and isinstance(exc, OrthancPandasError)


def test_failed_login_never_replaces_the_working_client(auth_server, monkeypatch, tmp_path):
    monkeypatch.delenv("ORTHANC_USERNAME", raising=False)
    monkeypatch.delenv("ORTHANC_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    df = op.read_orthanc(auth_server.url, auth=("alice", PASSWORD))
    good = df.orthanc.client()
    with pytest.raises(OrthancAuthError):
        op.read_orthanc(auth_server.url, auth=("alice", "typo-" + PASSWORD))
    with pytest.raises(OrthancAuthError):
        op.Orthanc(url=auth_server.url, username="alice", password="typo")
    # the frame read with the right password still finds its (working) client
    assert df.orthanc.client() is good
    assert len(df.orthanc.headers()) == len(df)


def test_password_never_in_repr_attrs_or_parquet(auth_server, tmp_path):
    client = op.connect(auth_server.url, auth=("alice", PASSWORD))
    assert PASSWORD not in repr(client) and "alice" in repr(client)
    df = op.read_orthanc(auth_server.url, auth=("alice", PASSWORD))
    assert PASSWORD not in repr(df.attrs) and PASSWORD not in repr(df.orthanc)
    path = tmp_path / "x.parquet"
    df.to_parquet(path)
    assert PASSWORD.encode() not in path.read_bytes()
    # a pickled client (as sent to Dask workers) carries no credentials
    assert PASSWORD.encode() not in pickle.dumps(client)
    # ... but this process still finds the credentials for the frame read back
    back = pd.read_parquet(path)
    assert back.orthanc.client().has_credentials


def test_credentials_from_url_environment_and_netrc(auth_server, monkeypatch, tmp_path):
    host_url = auth_server.url
    in_url = host_url.replace("http://", f"http://alice:{PASSWORD}@")
    c = OrthancClient(in_url)
    assert c.url == host_url and PASSWORD not in repr(c)
    assert c.system()["Version"]
    monkeypatch.setenv("ORTHANC_USERNAME", "alice")
    monkeypatch.setenv("ORTHANC_PASSWORD", PASSWORD)
    assert OrthancClient(host_url).statistics()["CountInstances"] == 3
    monkeypatch.delenv("ORTHANC_USERNAME")
    monkeypatch.delenv("ORTHANC_PASSWORD")
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login alice password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert OrthancClient(host_url).statistics()["CountInstances"] == 3


def test_http_errors_carry_status_message_method_url(corpus):
    client = corpus.server.client()
    with pytest.raises(OrthancNotFoundError) as nf:
        client.get_json("/instances/0000-does-not-exist")
    e = nf.value
    assert (e.status, e.method) == (404, "GET")
    assert e.url == corpus.url + "/instances/0000-does-not-exist"
    assert isinstance(e, LookupError)
    with pytest.raises(OrthancHTTPError) as bad:
        client.post_json("/tools/find", {"Level": "NoSuchLevel", "Query": {}})
    assert bad.value.status == 400 and bad.value.orthanc_message
    assert "Orthanc says:" in str(bad.value)


def test_survives_server_closing_keepalive_connections(corpus):
    client = OrthancClient(corpus.url)
    for _ in range(3):
        assert client.statistics()["CountInstances"] > 0
        time.sleep(1.3)  # Orthanc 1.10 closes idle connections after 1 s


# -- the one retry policy, counted at a relay in front of a real Orthanc ----------------------
def test_retries_0_sends_exactly_one_request(corpus):
    from tls_relay import CuttingRelay, KeepAliveDropRelay

    with CuttingRelay(corpus.server.port, cut_after=0) as relay:  # every connection dropped unanswered
        for retries in (0, 2):
            before = relay.connections
            with pytest.raises(OrthancConnectionError) as info:
                OrthancClient(relay.url, retries=retries).get_json("/statistics")
            assert type(info.value) is OrthancConnectionError
            assert relay.connections - before == 1 + retries
    with KeepAliveDropRelay(corpus.server.port) as relay:  # the kept-alive connection drops on reuse
        client = OrthancClient(relay.url, retries=0)
        assert client.statistics()["CountInstances"] > 0
        with pytest.raises(OrthancConnectionError, match="Could not reach Orthanc"):
            client.statistics()
        assert (relay.connections, relay.requests) == (1, 2)
    with KeepAliveDropRelay(corpus.server.port) as relay:  # not idempotent: never sent twice
        client = OrthancClient(relay.url, retries=2)
        client.statistics()
        with pytest.raises(OrthancConnectionError):
            client.post_json("/tools/lookup", data=b"1.2.3")
        assert (relay.connections, relay.requests) == (1, 2)


def test_retries_2_survives_dropped_keepalive_connections(corpus):
    from tls_relay import KeepAliveDropRelay

    iid = next(iter(corpus.stored))
    with KeepAliveDropRelay(corpus.server.port) as relay:
        client = OrthancClient(relay.url, retries=2)
        for _ in range(3):
            assert client.statistics()["CountInstances"] > 0
            with client.get_file(iid) as answer:
                assert answer.read() == corpus.stored[iid].read_bytes()
        assert relay.drops >= 5  # every call but the first reused a connection, and was sent again
        assert relay.requests == 6 + relay.drops


def test_503_from_a_proxy_is_retried_within_the_budget(corpus):
    from tls_relay import BusyRelay

    for busy, retries, ok in ((2, 2, True), (1, 0, False), (5, 2, False)):
        with BusyRelay(corpus.server.port, busy=busy) as relay:
            client = OrthancClient(relay.url, retries=retries)
            if ok:
                assert client.statistics()["CountInstances"] > 0
            else:
                with pytest.raises(OrthancHTTPError) as info:
                    client.statistics()
                assert info.value.status == 503
            assert relay.connections == min(busy, retries) + 1


def test_retry_policy():
    from orthanc_pandas._http.client import _Attempts
    from orthanc_pandas.errors import OrthancTimeoutError, OrthancTLSError

    dropped = OrthancConnectionError("dropped")
    assert not _Attempts(0, True).again(dropped) and not _Attempts(0, True).again(503)
    assert not _Attempts(2, False).again(dropped)  # not idempotent
    two = _Attempts(2, True)
    assert two.again(dropped) and two.again(504) and not two.again(dropped)
    for never in (OrthancTimeoutError("slow"), OrthancTLSError("cert"), 500, 404):
        assert not _Attempts(2, True).again(never)


def test_unreachable_server_is_a_connection_error():
    port = free_port()
    with pytest.raises(OrthancConnectionError, match="Check that the server is running"):
        op.read_orthanc(f"http://127.0.0.1:{port}", timeout=2)


class _NotOrthanc(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # a web server that is not Orthanc
        body = b"<html>hello</html>"
        self.send_response(200 if self.path == "/" else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_port_that_is_not_orthanc():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotOrthanc)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        with pytest.raises(NotOrthancError, match="not an Orthanc"):
            op.read_orthanc(f"http://127.0.0.1:{srv.server_address[1]}")
    finally:
        srv.shutdown()


def test_binary_routes_are_not_gzipped(corpus):
    client = corpus.server.client()
    iid = next(iter(corpus.stored))
    resp = client.request("GET", f"/instances/{iid}/file")
    assert resp.headers.get("Content-Encoding") in (None, "identity")
    assert resp.content == corpus.stored[iid].read_bytes()


def test_registry_gives_the_same_client_for_a_url(corpus):
    c = op.connect(corpus.url)
    assert get_client(corpus.url) is c
    assert get_client(corpus.url + "/") is c
    assert get_client(c) is c


def test_version(corpus):
    client = corpus.server.client()
    assert client.version == client.get_json("/system")["Version"]
    assert client.version_tuple >= (1, 10)


# -- TLS, with a self-signed certificate made here -------------------------------------------
@pytest.fixture(scope="module")
def tls_server(orthanc_available, tmp_path_factory):
    import shutil
    import subprocess

    from orthanc_pandas.testing import LocalOrthanc

    if not shutil.which("openssl"):
        pytest.fail("the TLS tests need the openssl command (Debian package openssl)")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    from tls_relay import TLSRelay

    with LocalOrthanc(users={"tls": PASSWORD}) as server, \
            TLSRelay(server.port, str(cert), str(key)) as relay:
        yield relay, cert


def test_tls_default_verification_fails_with_how_to_fix(tls_server):
    server, _ = tls_server
    assert server.url.startswith("https://")
    from orthanc_pandas.errors import OrthancTLSError

    with pytest.raises(OrthancTLSError, match="verify='/path/to/ca.pem'"):
        OrthancClient(server.url, auth=("tls", PASSWORD)).system()


def test_tls_with_ca_bundle_works_and_auth_errors_stay_distinct(tls_server):
    server, cert = tls_server
    assert len(op.read_orthanc(server.url, auth=("tls", PASSWORD), verify=str(cert))) == 0
    with pytest.raises(OrthancAuthError, match="rejected"):
        OrthancClient(server.url, auth=("tls", "nope"), verify=str(cert)).system()
    with pytest.raises(OrthancAuthError, match="none were given"):
        OrthancClient(server.url, verify=str(cert)).system()


# -- a server that hangs ---------------------------------------------------------------------
def test_stalled_server_times_out_with_a_clear_message(orthanc_factory):
    import os
    import signal

    from orthanc_pandas.errors import OrthancTimeoutError

    server = orthanc_factory()
    client = OrthancClient(server.url, timeout=(1, 1.5), retries=0)
    assert client.system()
    os.kill(server.process.pid, signal.SIGSTOP)  # the process is alive but answers nothing
    try:
        with pytest.raises(OrthancTimeoutError, match=r"timed out \(read timeout, timeout=\(1, 1\.5\)\)") as info:
            client.statistics()  # the client's own read timeout ends the wait, nothing else
        assert isinstance(info.value, TimeoutError)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert client.statistics()["CountInstances"] == 0  # and it recovers


@pytest.mark.slow
def test_orthanc_own_sslenabled(orthanc_available, tmp_path):
    """Orthanc's own TLS (SslEnabled, certificate made here). Debian's 1.10.1 segfaults on the
    first HTTPS request (civetweb + OpenSSL 3), which is why the TLS tests above use a TLS
    endpoint in front of Orthanc. Either way the client must give a clear error, never hang."""
    import shutil
    import subprocess

    from orthanc_pandas.errors import OrthancTLSError
    from orthanc_pandas.testing import LocalOrthanc

    if not shutil.which("openssl"):
        pytest.fail("the TLS tests need the openssl command (Debian package openssl)")
    key, cert, both = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "both.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    both.write_text(cert.read_text() + key.read_text())
    server = LocalOrthanc(users={"tls": PASSWORD}, startup_timeout=10,
                          config={"SslEnabled": True, "SslCertificate": str(both)})
    try:
        server.start()
    except OrthancPandasError as exc:  # the known crash: Orthanc says HTTPS is on, then dies
        assert "HTTPS encryption is enabled" in str(exc) and server.process is None
        return
    try:  # a fixed Orthanc: the same checks as through the TLS endpoint
        assert server.url.startswith("https://")
        with pytest.raises(OrthancTLSError, match="verify='/path/to/ca.pem'"):
            OrthancClient(server.url, auth=("tls", PASSWORD)).system()
        assert OrthancClient(server.url, auth=("tls", PASSWORD), verify=str(cert)).system()
        with pytest.raises(OrthancAuthError, match="rejected"):
            OrthancClient(server.url, auth=("tls", "nope"), verify=str(cert)).system()
    finally:
        server.stop()


# -- JSON arrays decoded a list at a time ------------------------------------------------------
ORTHANC_LAYOUT = (b'[\n   {\n      "ID" : "a",\n      "MainDicomTags" : \n      {\n'
                  b'         "StudyDescription" : "}\\n   },\\n   {",\n         "X" : [ 1, 2 ]\n'
                  b'      }\n   },\n   {\n      "ID" : "b",\n      "Labels" : [ "\xc3\xa9" ]\n   },\n'
                  b'   {\n      "ID" : "c"\n   }\n]\n')


@pytest.mark.parametrize("body", [
    ORTHANC_LAYOUT,                                            # Orthanc's (JsonCpp's) layout
    ORTHANC_LAYOUT.replace(b"\n", b"\r\n"),                    # CRLF
    json.dumps(json.loads(ORTHANC_LAYOUT)).encode(),           # compact: decoded whole
    json.dumps(json.loads(ORTHANC_LAYOUT), indent=2).encode(),  # another indentation
    b"[]", b"[\n]", b"[\n   {\n   }\n]",
    json.dumps([{"a": 1}, [1, 2], "x"], indent=3).encode(),    # not objects only: decoded whole
])
@pytest.mark.parametrize("batch", [1, 2, 1000])
def test_json_array_batches_give_the_items_of_the_array(body, batch):
    lists = list(json_array_batches(body, batch))
    assert [item for items in lists for item in items] == json.loads(body)
    assert all(0 < len(items) <= batch for items in lists)


def test_json_array_batches_of_a_real_page_and_broken_json(corpus):
    resp = corpus.server.client().request("GET", "/instances", params={"expand": "", "since": 0, "limit": 50},
                                   expect_json=True)
    assert resp.content.startswith(b"[\n   {")  # the layout the cuts rely on
    lists = list(json_array_batches(resp.content, 7))
    assert [len(x) for x in lists] == [7] * 7 + [1]
    assert [i for x in lists for i in x] == json.loads(resp.content)
    with pytest.raises(ValueError):  # cut short: decoding fails, never a short list
        list(json_array_batches(resp.content[:-40], 7))
    with pytest.raises(ValueError):
        list(json_array_batches(b"<html>not json</html>", 7))


def test_pages_in_batches_equal_whole_pages(corpus):
    client = corpus.server.client()
    whole = [i for page in client.iter_pages("instances", page_size=20) for i in page]
    batched = list(client.iter_pages("instances", page_size=20, batch=3))
    assert all(len(b) <= 3 for b in batched) and [i for b in batched for i in b] == whole
