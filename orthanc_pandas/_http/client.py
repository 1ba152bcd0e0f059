"""The only module that speaks HTTP to Orthanc.

:class:`OrthancClient` wraps one :class:`requests.Session` with what an Orthanc archive needs:

* ``Accept-Encoding: identity``. Orthanc 1.10 gzips every answer on the fly when asked (and
  requests asks by default), which makes DICOM files and ``.npy`` answers ~10-40x slower on a
  fast network. JSON is sent uncompressed too unless ``compress_json=True`` (measured in
  ``benchmarks/compression.py``: on loopback gzip only costs time).
* Finite timeouts, TLS verification on by default, a bounded connection pool.
* One road for every byte: :meth:`OrthancClient.stream` sends a request and hands out its answer
  (``read(n)``, iteration, early close); :meth:`~OrthancClient.request`, the JSON and byte
  helpers and :meth:`~OrthancClient.get_file` are built on it.
* One retry policy (:class:`_Attempts`): idempotent requests are sent again when a connection
  dropped before any byte of the answer reached the caller (Orthanc's keep-alive timeout is
  1 s) and on 502/503/504; ``retries=0`` sends exactly one request.

  Why not ``urllib3.util.Retry`` mounted on the adapter (it stays at ``max_retries=0``):
  Retry cannot express this policy. (1) It files a reset kept-alive connection
  (``ProtocolError``: "Connection aborted", ``RemoteDisconnected``) and a read timeout
  (``ReadTimeoutError``) under the same ``read`` counter, and "connection refused"
  (``NewConnectionError``) under ``connect`` with connect timeouts; the policy retries the
  first of each pair and never the second (a second wait only doubles the wait;
  ``tests/test_client.py::test_retry_policy``). (2) The budget is one for the whole answer, headers
  and body: a drop mid-body before any byte reached the caller is retried from the same
  budget as a drop before the headers or a 503 (two retries are used up by one drop plus
  one 504), while Retry only sees the request up to its headers. (3)
  Between attempts the fan-out stop flag is checked (:func:`checkpoint`), so Ctrl-C is not
  held up by a retry's back-off.
* Every request (and every chunk of a streamed answer) first calls
  :func:`~orthanc_pandas._util.fanout.checkpoint`: work running in a stopped fan-out (Ctrl-C,
  another item's error) sends nothing more.
* One place maps exceptions (:meth:`OrthancClient._map_exceptions`): every requests, urllib3 or
  socket failure, while connecting or in the middle of an answer, becomes one of
  :mod:`orthanc_pandas.errors`, with the method, the URL (never credentials), the HTTP status
  and Orthanc's own message.

Credentials come from, in this order: the ``auth`` argument, ``user:password@`` in the URL
(removed from the stored URL), ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD``, ``~/.netrc``.
They live only in this process's memory: never in ``repr``, logs, exceptions or ``df.attrs``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import requests
import requests.adapters
import requests.auth
import requests.utils
import urllib3.exceptions

from orthanc_pandas._http.capabilities import Capabilities
from orthanc_pandas._http.changes import CONTENT_TYPES_FILTER, is_content_change
from orthanc_pandas._util.fanout import checkpoint
from orthanc_pandas.errors import (
    InvalidURLError,
    NotOrthancError,
    OrthancAuthError,
    OrthancConnectionError,
    OrthancHTTPError,
    OrthancNotFoundError,
    OrthancPandasError,
    OrthancTimeoutError,
    OrthancTLSError,
)

log = logging.getLogger(__name__)


#: (connect, read) seconds. Reading a large archive page or a big file can take a while.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 120.0)


_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


_RETRY_STATUS = frozenset({502, 503, 504})


_CHUNK = 1 << 20


_TIMEOUTS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


_CONNECT_TIMEOUTS = (requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)


_TLS = (requests.exceptions.SSLError, urllib3.exceptions.SSLError, ssl.SSLError)


_BROKEN = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
           http.client.HTTPException, OSError)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (requests wraps urllib3, which wraps socket errors)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 16:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(a for a in (*getattr(e, "args", ()), getattr(e, "reason", None),
                                e.__cause__, e.__context__) if isinstance(a, BaseException))


class _Attempts:
    """The retry policy - the only one.

    An idempotent request is sent up to ``1 + retries`` times: again when the connection
    failed before any byte of the answer reached the caller (a kept-alive connection the server
    closed: Orthanc's keep-alive timeout is 1 s) and on 502/503/504. Timeouts and TLS failures
    are never retried (a second wait would only double the wait), nor is anything that is not
    idempotent. ``retries=0`` sends exactly one request.
    """

    def __init__(self, retries: int, idempotent: bool):
        self.left = max(0, int(retries)) if idempotent else 0
        self.done = 0

    def again(self, failure: OrthancPandasError | int) -> bool:
        """Whether to send the request again after ``failure`` (an error or an HTTP status)."""
        if isinstance(failure, int):
            retry, pause = failure in _RETRY_STATUS, 0.2
        else:
            retry, pause = type(failure) is OrthancConnectionError, 0.05
        if not retry or self.left <= 0:
            return False
        self.left -= 1
        self.done += 1
        log.debug("sending again (%d) after %s", self.done, failure if isinstance(failure, int)
                  else type(failure).__name__)
        time.sleep(pause * self.done)
        return True


def _normalize_url(url: str) -> tuple[str, tuple[str, str] | None]:
    """Return ``(url without credentials and trailing slash, credentials from the URL)``."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidURLError(f"An Orthanc URL must be a non-empty string like 'http://127.0.0.1:8042', got {url!r}.")
    raw = url.strip()
    if "://" not in raw:
        shown = _redact(raw)
        raise InvalidURLError(
            f"Malformed Orthanc URL {shown!r}: it needs a scheme, e.g. 'http://{shown}' or 'https://{shown}'."
        )
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https"):
        raise InvalidURLError(f"Malformed Orthanc URL: scheme {parts.scheme!r} is not http or https.")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # e.g. a non-numeric port
        raise InvalidURLError(f"Malformed Orthanc URL ({exc}); expected 'http[s]://host[:port][/prefix]'.") from None
    if not host:
        raise InvalidURLError("Malformed Orthanc URL: no host name; expected 'http[s]://host[:port][/prefix]'.")
    creds = None
    if parts.username is not None:
        creds = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc += f":{port}"
    path = parts.path.rstrip("/")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", "")), creds


def _redact(raw: str) -> str:
    """``raw`` with the password of a ``user:password@`` part replaced by ``***`` (for messages)."""
    start = raw.find("://") + 3 if "://" in raw else 0
    end = len(raw)
    for sep in "/?#":
        k = raw.find(sep, start)
        if k != -1:
            end = min(end, k)
    at = raw.rfind("@", start, end)
    if at == -1:
        return raw
    if ":" not in raw[start:at]:
        return raw
    user = raw[start:at].split(":", 1)[0]
    return f"{raw[:start]}{user}:***{raw[at:]}"


def _resolve_auth(url: str, auth: Any, url_creds: tuple[str, str] | None):
    if auth is not None:
        if isinstance(auth, tuple | list):
            if len(auth) != 2:
                raise ValueError("auth must be a (username, password) pair or a requests auth object.")
            return requests.auth.HTTPBasicAuth(str(auth[0]), str(auth[1]))
        return auth
    if url_creds is not None:
        return requests.auth.HTTPBasicAuth(*url_creds)
    user = os.environ.get("ORTHANC_USERNAME")
    if user:
        return requests.auth.HTTPBasicAuth(user, os.environ.get("ORTHANC_PASSWORD", ""))
    netrc = requests.utils.get_netrc_auth(url)
    if netrc:
        return requests.auth.HTTPBasicAuth(*netrc)
    return None


def _auth_user(auth) -> str | None:
    return getattr(auth, "username", None) if auth is not None else None


class OrthancClient:
    """A fast, safe connection to one Orthanc server.

    Parameters
    ----------
    url : str
        ``http[s]://host[:port][/prefix]``. ``user:password@`` in it is used as credentials
        and removed from :attr:`url`.
    auth : (str, str) or requests.auth.AuthBase, optional
        Credentials. Defaults to the URL, then ``ORTHANC_USERNAME``/``ORTHANC_PASSWORD``,
        then ``~/.netrc``.
    verify : bool or str, default True
        TLS verification: ``True``, ``False``, or the path of a CA bundle.
    timeout : float or (float, float), default (5, 120)
        Connect and read timeouts in seconds.
    retries : int, default 2
        How often an idempotent request is sent again after its connection dropped before any
        byte of the answer was handed out, or after a 502/503/504. ``0``: each request is sent
        exactly once.
    pool_size : int, default 8
        Connections kept open; bounds the concurrency of bulk transfers.
    compress_json : bool, default False
        Let the server gzip JSON answers (helps on slow links; costs time on fast ones).
        Binary answers are never compressed.

    Examples
    --------
    >>> client = OrthancClient("http://127.0.0.1:8042")            # doctest: +SKIP
    >>> client.version                                              # doctest: +SKIP
    '1.10.1'
    """

    def __init__(self, url: str, *, auth=None, verify: bool | str = True,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, retries: int = 2,
                 pool_size: int = 8, compress_json: bool = False):
        self.url, url_creds = _normalize_url(url)
        self.timeout = timeout
        self.retries = int(retries)
        self.pool_size = int(pool_size)
        self.compress_json = bool(compress_json)
        self.verify = verify
        self._auth = _resolve_auth(self.url, auth, url_creds)
        self._system: dict | None = None
        self._capabilities: Capabilities | None = None
        self._lock = threading.Lock()
        # get_client() registers a client it creates only once the server has accepted it,
        # so a failed login never replaces the working client of that URL.
        self._register_on_success = False

    # -- sessions -------------------------------------------------------------------------
    @property
    def session(self) -> requests.Session:
        """The shared session (thread-safe for the way this client uses it)."""
        s = getattr(self, "_session", None)
        if s is None:
            with self._lock:
                s = getattr(self, "_session", None)
                if s is None:
                    s = self._session = self._new_session()
        return s

    def _new_session(self) -> requests.Session:
        s = requests.Session()
        # Never let requests look up ~/.netrc on its own: credentials are resolved once above.
        s.trust_env = False
        s.proxies = requests.utils.get_environ_proxies(self.url)
        s.auth = self._auth
        s.verify = self.verify
        s.headers["Accept-Encoding"] = "identity"
        s.headers["User-Agent"] = "orthanc-pandas"
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=self.pool_size,
                                                max_retries=0, pool_block=True)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        return s

    def close(self) -> None:
        """Close the pooled connections."""
        s = getattr(self, "_session", None)
        if s is not None:
            s.close()
            self._session = None

    def __enter__(self) -> OrthancClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        user = _auth_user(self._auth)
        who = f", user={user!r}" if user else ""
        return f"OrthancClient({self.url!r}{who})"

    def __reduce__(self):
        # A client crossing a process boundary (Dask workers) carries no credentials: the
        # receiving process resolves them again from its environment or ~/.netrc.
        return (_rebuild_client, (self.url, self.verify, self.timeout, self.retries,
                                  self.pool_size, self.compress_json))

    @property
    def has_credentials(self) -> bool:
        """Whether this client sends credentials."""
        return self._auth is not None

    @property
    def username(self) -> str | None:
        """The user name sent to the server, if any (the password is never exposed)."""
        return _auth_user(self._auth)

    # -- requests -------------------------------------------------------------------------
    def _full(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.url + "/" + path.lstrip("/")

    def request(self, method: str, path: str, *, params=None, data=None, json_body=None,
                headers: Mapping[str, str] | None = None, idempotent: bool | None = None,
                timeout=None, expect_json: bool = False) -> requests.Response:
        """Send one request and read its whole answer; retry when safe; raise the library's
        errors on failure.

        ``idempotent=None`` means "idempotent if the HTTP method is". Uploads of DICOM files
        pass ``idempotent=True``: storing the same file twice is harmless in Orthanc.
        """
        with self.stream(method, path, params=params, data=data, json_body=json_body,
                         headers=headers, idempotent=idempotent, timeout=timeout,
                         expect_json=expect_json) as answer:
            body = answer.read()
        resp = answer.response
        resp._content, resp._content_consumed = body, True  # read through the one road above
        return resp

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, params=None, data=None, json_body=None,
               headers: Mapping[str, str] | None = None, idempotent: bool | None = None,
               timeout=None, expect_json: bool = False) -> Iterator[Stream]:
        """Send one request and hand out its answer as it arrives: the only road to the server.

        Yields a :class:`Stream` (``read(n)``, iteration over chunks, ``headers``); leaving the
        block closes it, also early (the rest of the answer is then dropped with its
        connection). Idempotent requests are sent again (:class:`_Attempts`) when the
        connection breaks before any byte reached the caller; every failure, while connecting
        or in the middle of the answer, is one of :mod:`orthanc_pandas.errors`.

        Examples
        --------
        >>> with client.stream("GET", "/instances/ID/file") as answer:     # doctest: +SKIP
        ...     first = answer.read(1024)
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in _IDEMPOTENT
        hdrs = dict(headers or {})
        if expect_json and self.compress_json:
            hdrs["Accept-Encoding"] = "gzip, deflate"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        answer = Stream(self, method, self._full(path), _Attempts(self.retries, idempotent),
                        dict(params=params, data=data, headers=hdrs,
                             timeout=timeout or self.timeout))
        if hasattr(data, "seek") and hasattr(data, "tell"):
            answer._rewind_to = data.tell()  # a streamed body (an upload): sent again from here
        try:
            answer._open()
            yield answer
        finally:
            answer.close()

    def get_file(self, instance_id: str) -> contextlib.AbstractContextManager[Stream]:
        """The stored DICOM file of an instance, exactly as stored, streamed (:meth:`stream`).

        The one way ``/instances/{id}/file`` is fetched (headers, pixels, downloads).

        Examples
        --------
        >>> with client.get_file("19a8e1b3-...") as f:                   # doctest: +SKIP
        ...     data = f.read()
        """
        return self.stream("GET", f"/instances/{instance_id}/file")

    @contextlib.contextmanager
    def _map_exceptions(self, method: str, url: str, *, timeout=None,
                        reading: int | None = None) -> Iterator[None]:
        """Turn every requests/urllib3/socket exception raised inside into the library's own.

        The one place where foreign exceptions are mapped. ``reading`` is the number of bytes of
        the answer already read (``None`` while the request is sent and its headers awaited).
        """
        try:
            yield
        except OrthancPandasError:
            raise
        except requests.exceptions.InvalidURL as exc:
            raise InvalidURLError(f"Malformed Orthanc URL {url!r}: {exc}") from None
        except _BROKEN as exc:
            raise self._mapped(exc, method, url, timeout or self.timeout, reading) from None

    def _mapped(self, exc: BaseException, method: str, url: str, timeout,
                reading: int | None) -> OrthancConnectionError:
        causes = list(_causes(exc))
        where = ("" if reading is None else f" after {reading} bytes of the answer" if reading
                 else " while reading the answer")
        # urllib3 2 derives "connection refused" (NewConnectionError) from ConnectTimeoutError
        if any(isinstance(e, _TIMEOUTS) and not isinstance(e, urllib3.exceptions.NewConnectionError)
               for e in causes):
            kind = "connect" if any(isinstance(e, _CONNECT_TIMEOUTS) for e in causes) else "read"
            return OrthancTimeoutError(
                f"{method} {url} timed out ({kind} timeout, timeout={timeout!r}){where}. The server "
                "may be overloaded or unreachable; raise timeout= if it is just slow.")
        if reading is not None:  # a TLS error mid-answer is a broken connection, not a certificate
            return OrthancConnectionError(
                f"{method} {url}: the connection broke{where} ({_short(exc)}); the server or the "
                "network stopped mid-answer.")
        if any(isinstance(e, _TLS) for e in causes):
            if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version number" in str(exc):
                return OrthancTLSError(
                    f"TLS handshake failed for {method} {url}: the server does not speak TLS "
                    "on this port. Use an http:// URL for a server without SslEnabled.")
            return OrthancTLSError(
                f"TLS verification failed for {method} {url}: {_short(exc)}. If the server uses "
                "a self-signed or private certificate, pass verify='/path/to/ca.pem' (its CA "
                "bundle); verify=False turns checking off (not recommended).")
        text = str(exc)
        if any(k in text for k in ("Connection aborted", "RemoteDisconnected", "BadStatusLine")):
            hint = (" Something listens there but did not answer in HTTP: the server "
                    "stopped mid-request, or this port is not Orthanc's REST API (its "
                    "DICOM port, 4242 by default, is not its HTTP port, 8042).")
        else:
            hint = (" Check that the server is running and the URL (scheme, host, port, "
                    "prefix) is right.")
        return OrthancConnectionError(
            f"Could not reach Orthanc: {method} {url} failed ({_short(exc)})." + hint)

    def _http_error(self, method: str, url: str, resp: requests.Response) -> OrthancHTTPError:
        status = resp.status_code
        try:
            body = resp.json()
        except (ValueError, *_BROKEN):  # no JSON, or the error body itself broke off
            body = None
        finally:
            resp.close()
        om = oe = None
        if isinstance(body, dict):
            om = body.get("Message")
            if body.get("Details"):
                om = f"{om}: {body['Details']}" if om else body["Details"]
            oe = body.get("OrthancError")
        base = f"{method} {url} -> HTTP {status} {resp.reason or ''}".rstrip()
        detail = f" Orthanc says: {om}." if om else ""
        if status in (401, 403):
            if self._auth is None:
                hint = (" The server requires credentials and none were given: register them once "
                        f"with orthanc_pandas.connect({self.url!r}, auth=(user, password)) (frames "
                        "of that server, also read back from parquet, then use them), or pass "
                        "auth= to read_orthanc, or set ORTHANC_USERNAME and ORTHANC_PASSWORD, or "
                        "add the host to ~/.netrc.")
            else:
                hint = (f" The server rejected the credentials of user {self.username!r}: check "
                        "the user name and password.")
            return OrthancAuthError(base + "." + hint + detail, status=status, method=method, url=url,
                                    orthanc_message=om, orthanc_error=oe)
        if status == 404 and method == "GET":
            return OrthancNotFoundError(
                base + ": no such resource (it may have been deleted, or the URL prefix is wrong)." + detail,
                status=status, method=method, url=url, orthanc_message=om, orthanc_error=oe)
        return OrthancHTTPError(base + "." + detail, status=status, method=method, url=url,
                                orthanc_message=om, orthanc_error=oe)

    def get_json(self, path: str, params=None, **kw) -> Any:
        """GET a JSON answer."""
        resp = self.request("GET", path, params=params, expect_json=True, **kw)
        return _decode_json(resp, "GET", self._full(path))

    def get_bytes(self, path: str, params=None, **kw) -> bytes:
        """GET a binary answer, uncompressed on the wire, read in one go.

        (``Response.content`` iterates in 10 kB chunks: ~50 Python round trips per CT slice.)
        """
        with self.stream("GET", path, params=params, **kw) as answer:
            return answer.read()

    def post_json(self, path: str, body=None, *, data=None, headers=None, idempotent=None) -> Any:
        """POST a JSON body (or raw ``data``) and decode the JSON answer."""
        resp = self.request("POST", path, json_body=body, data=data, headers=headers,
                            idempotent=idempotent, expect_json=True)
        return _decode_json(resp, "POST", self._full(path))

    def delete(self, path: str) -> Any:
        """DELETE a resource; returns Orthanc's JSON answer."""
        resp = self.request("DELETE", path, expect_json=True)
        return _decode_json(resp, "DELETE", self._full(path)) if resp.content else None

    # -- server facts ---------------------------------------------------------------------
    def system(self, refresh: bool = False) -> dict:
        """``GET /system``, checked to come from Orthanc (cached)."""
        if self._system is None or refresh:
            try:
                info = self.get_json("/system")
            except OrthancNotFoundError:
                raise NotOrthancError(
                    f"{self.url} answered, but has no /system route: it is not an Orthanc REST API "
                    "(wrong port, or a missing URL prefix?)."
                ) from None
            if not isinstance(info, dict) or "Version" not in info:
                raise NotOrthancError(f"{self.url}/system did not answer like Orthanc: is this the right port?")
            self._system = info
            self._capabilities = None
        return self._system

    @property
    def version(self) -> str:
        """The server's Orthanc version string, e.g. ``'1.10.1'``."""
        return str(self.system()["Version"])

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """The version as integers, ``(1, 10, 1)``; ``(9999,)`` for development builds."""
        return _version_tuple(self.version)

    def statistics(self) -> dict:
        """``GET /statistics``: resource counts."""
        return self.get_json("/statistics")

    def last_change(self) -> int:
        """The current sequence number of ``/changes``."""
        return int(self.get_json("/changes", params={"last": ""})["Last"])

    def changes(self, since: int, limit: int = 1000, *, types: str | None = None) -> dict:
        """``GET /changes?since=&limit=`` (``type=`` where the server has extended changes).

        The ``;`` between types is sent literally: 1.12.7 refuses ``%3B`` (1.13 takes both).
        """
        query = f"since={int(since)}&limit={int(limit)}"
        if types and self.capabilities().extended_changes:
            query += f"&type={types}"
        return self.get_json("/changes", params=query)

    def iter_changes(self, since: int, until: int | None = None, *,
                     content_only: bool = False) -> Iterator[dict]:
        """The ``/changes`` entries after ``since`` (up to ``until``), page after page.

        ``content_only`` keeps only what can alter an index frame
        (:func:`~orthanc_pandas._http.changes.is_content_change`); servers with extended changes
        filter by type on their side, so churn like DICOMweb's cache writes is not even sent.
        """
        seq = int(since)
        types = CONTENT_TYPES_FILTER if content_only else None
        while until is None or seq < until:
            page = self.changes(seq, limit=1000, types=types)
            for ch in page.get("Changes") or ():
                if until is not None and int(ch["Seq"]) > until:
                    return
                if not content_only or is_content_change(ch):
                    yield ch
            last = int(page.get("Last", seq))
            if page.get("Done", True) or last <= seq:
                return
            seq = last

    def capabilities(self) -> Capabilities:
        """What the server offers (from ``/system``, read once): see :mod:`orthanc_pandas._http.capabilities`."""
        if self._capabilities is None:
            self._capabilities = Capabilities.from_system(self.system())
        return self._capabilities

    def count_resources(self, level: str) -> int:
        """How many resources of ``level`` (``"Instance"``...) the server holds (extended find only)."""
        return int(self.post_json("/tools/count-resources", {"Level": level, "Query": {}})["Count"])

    def iter_find(self, level: str, response_content: list[str], *, page_size: int = 5000,
                  total: int | None = None, start: int = 0, batch: int | None = None,
                  **body) -> Iterator[list[dict]]:
        """Yield the resources of ``level`` from extended ``/tools/find``, one page at a time.

        Pages with ``Limit``/``Since`` (Orthanc >= 1.12.5 with an index that has extended
        find), rows ``start`` to ``total`` (default: the server's count). A server may answer
        fewer rows per call than asked (``LimitFindInstances`` / ``LimitFindResults``): paging
        goes on until ``total`` or an empty page, so such limits never truncate the result.
        ``batch`` yields each page in lists of up to that many resources, decoded one list at
        a time (see :func:`json_array_batches`).
        """
        if total is None:
            total = self.count_resources(level)
        since = int(start)
        while since < total:
            resp = self.request("POST", "/tools/find", expect_json=True, json_body={
                "Level": level, "Query": {}, "Since": since, "Limit": min(page_size, total - since),
                "ResponseContent": response_content, **body})
            got = 0
            for items in _json_batches(resp, "POST", self._full("/tools/find"), batch):
                got += len(items)
                yield items
            if not got:
                return
            since += got

    def list_ids(self, level: str) -> list[str]:
        """All Orthanc ids of a level (``patients``, ``studies``, ``series``, ``instances``)."""
        return self.get_json(f"/{level}")

    def iter_pages(self, level: str, page_size: int = 5000, *, start: int = 0,
                   stop: int | None = None, batch: int | None = None) -> Iterator[list[dict]]:
        """Yield the expanded resources of a level, one page at a time.

        Uses ``GET /{level}?expand&since=&limit=`` (both parameters together, as Orthanc
        before 1.12.5 requires), from offset ``start`` up to ``stop`` (default: the end).
        Pages are offsets in an unordered list, so callers that need a consistent snapshot
        must check the change sequence around the read. ``batch`` yields each page in lists
        of up to that many resources, decoded one list at a time (see
        :func:`json_array_batches`).
        """
        since = int(start)
        while stop is None or since < stop:
            limit = page_size if stop is None else min(page_size, stop - since)
            resp = self.request("GET", f"/{level}", expect_json=True,
                                params={"expand": "", "since": since, "limit": limit})
            got = 0
            for items in _json_batches(resp, "GET", self._full(f"/{level}"), batch):
                got += len(items)
                yield items
            if got < limit:
                return
            since += got


class Stream:
    """An answer on its way: ``headers``, ``status_code``, ``read(n)`` and iteration over chunks.

    Made by :meth:`OrthancClient.stream`, which closes it. Reads are mapped to the exception
    family; a connection that breaks before any byte was handed out is opened again under the
    request's retry policy; an answer shorter than its ``Content-Length`` is an
    :class:`~orthanc_pandas.errors.OrthancConnectionError`, never a short result.
    """

    def __init__(self, client: OrthancClient, method: str, url: str, attempts: _Attempts,
                 send: dict):
        self._client, self.method, self.url = client, method, url
        self._attempts, self._send = attempts, send
        self.response: requests.Response | None = None
        self.delivered = 0  # bytes handed to the caller
        self._rewind_to: int | None = None  # where a file-like body starts, to send it again
        self._sent = False

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    @property
    def status_code(self) -> int:
        return self.response.status_code

    def __repr__(self) -> str:
        return f"<Stream {self.method} {self.url} ({self.delivered} bytes read)>"

    def _open(self) -> None:
        client = self._client
        while True:
            self.close()
            checkpoint()  # a stopped fan-out (Ctrl-C, another item's error) sends nothing more
            if self._sent and self._rewind_to is not None:
                self._send["data"].seek(self._rewind_to)  # a retry sends the whole body again
            self._sent = True
            try:
                with client._map_exceptions(self.method, self.url, timeout=self._send["timeout"]):
                    resp = client.session.request(self.method, self.url, stream=True, **self._send)
                self._check_headers(resp)
            except OrthancPandasError as exc:
                if self._attempts.again(exc):
                    continue
                raise
            if resp.status_code in _RETRY_STATUS and self._attempts.again(resp.status_code):
                resp.close()
                continue
            if resp.status_code >= 400:
                raise client._http_error(self.method, self.url, resp)
            self.response = resp
            if client._register_on_success:
                client._register_on_success = False
                _register(client)
            return

    def _check_headers(self, resp: requests.Response) -> None:
        """Raise when the answer's headers broke off: http.client then takes what came for a
        complete answer without length, whose body is "whatever arrives until the close"."""
        raw = getattr(resp.raw, "_original_response", None)
        broken = bool(getattr(getattr(raw, "msg", None), "defects", None))  # cut mid-line
        unframed = (getattr(resp.raw, "version", 10) >= 11 and self.method != "HEAD"
                    and resp.status_code >= 200 and resp.status_code not in (204, 304)
                    and "Content-Length" not in resp.headers
                    and "Transfer-Encoding" not in resp.headers
                    and resp.headers.get("Connection", "").lower() != "close")
        if broken or unframed:  # Orthanc frames every HTTP/1.1 answer
            resp.close()
            raise OrthancConnectionError(
                f"{self.method} {self.url}: the connection broke in the headers of the answer; "
                "the server or the network stopped mid-answer.")

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the answer); all the rest when ``n < 0``."""
        while True:
            try:
                with self._client._map_exceptions(self.method, self.url, timeout=self._send["timeout"],
                                                  reading=self.delivered):
                    data = self.response.raw.read(None if n < 0 else n, decode_content=True)
                if n < 0 or len(data) < n:
                    self._check_complete(self.delivered + len(data))
            except OrthancPandasError as exc:
                if self.delivered == 0 and self._attempts.again(exc):
                    self._open()  # nothing reached the caller: start the answer again
                    continue
                raise
            self.delivered += len(data)
            return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(_CHUNK):
            yield chunk
            checkpoint()  # a big file stops between chunks too

    def _check_complete(self, got: int) -> None:
        expected = self.response.headers.get("Content-Length")
        if expected is not None and self.response.headers.get("Content-Encoding", "identity") \
                == "identity" and self.method != "HEAD" and int(expected) != got:
            raise OrthancConnectionError(
                f"{self.method} {self.url} ended after {got} of {expected} bytes: the server "
                "stopped mid-answer.")

    def close(self) -> None:
        """Drop the rest of the answer (with its connection, when it was not read to the end)."""
        if self.response is not None:
            with contextlib.suppress(Exception):
                self.response.close()


#: an array as Orthanc writes it: each object on its own lines, indented
_ARRAY_START = re.compile(rb"\[[ \t\r]*\n([ \t]+)\{")
_ITEM_SEPARATOR = re.compile(rb"[ \t\r\n]*,[ \t\r\n]*(?=\{)")
_ARRAY_END = re.compile(rb"[ \t\r\n]*\][ \t\r\n]*\Z")


def json_array_batches(body: bytes, batch: int) -> Iterator[list]:
    r"""The items of the JSON array ``body`` in lists of up to ``batch``, one list decoded at a
    time.

    A page of 5,000 expanded instances is 2.8 MB of JSON and 5.5 MB of Python objects once
    decoded whole; decoded 1,000 at a time, each list can be turned into columns before the
    next is decoded. Orthanc writes an array of objects one per indented block, so an item
    ends at the first line indented as deep as its opening that closes it (JSON text holds no
    raw line break, so such a line is never inside a string). An array in any other layout
    is decoded whole, then handed out in lists all the same.

    Raises ``ValueError`` (``json.JSONDecodeError``) when ``body`` is not JSON.

    Examples
    --------
    >>> body = b'[\n   {\n      "ID" : "a",\n      "T" : {\n         "x" : "}"\n      }\n   },\n   {\n      "ID" : "b"\n   }\n]'
    >>> [[item["ID"] for item in items] for items in json_array_batches(body, 1)]
    [['a'], ['b']]
    >>> list(json_array_batches(b'[{"ID": "a"}, {"ID": "b"}]', 1))
    [[{'ID': 'a'}], [{'ID': 'b'}]]
    """
    batch = max(1, int(batch))
    found = _ARRAY_START.match(body)
    start = found.end() - 1 if found else -1
    closing = b"\n" + found.group(1) + b"}" if found else b""
    while start >= 0:
        cut, count = start, 0
        while count < batch and (hit := body.find(closing, cut)) >= 0:
            cut, count = hit + len(closing), count + 1
        after = _ITEM_SEPARATOR.match(body, cut)
        if count == 0 or (after is None and _ARRAY_END.match(body, cut) is None):
            if start != found.end() - 1:  # lists were handed out: the JSON is broken
                raise json.JSONDecodeError("not an array of objects", body.decode(errors="replace"), cut)
            break  # another layout
        yield json.loads(b"[" + body[start:cut] + b"]")
        if after is None:
            return
        start = after.end()
    items = json.loads(body)
    for i in range(0, len(items), batch):
        yield items[i:i + batch]


def _json_batches(resp: requests.Response, method: str, url: str, batch: int | None) -> Iterator[list]:
    """The items of a JSON-array answer: the whole list, or lists of up to ``batch``."""
    body = resp.content
    resp._content = None  # the answer's bytes are held here only, freed with the generator
    try:
        if batch is None:
            items = json.loads(body)
            if items:
                yield items
            return
        yield from json_array_batches(body, batch)
    except ValueError:
        ctype = resp.headers.get("Content-Type", "?")
        raise NotOrthancError(
            f"{method} {url} answered {ctype!s}, not JSON: is this URL an Orthanc server?"
        ) from None


def _decode_json(resp: requests.Response, method: str, url: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        ctype = resp.headers.get("Content-Type", "?")
        raise NotOrthancError(
            f"{method} {url} answered {ctype!s}, not JSON: is this URL an Orthanc server?"
        ) from None


def _short(exc: BaseException) -> str:
    text = str(exc)
    # urllib3 messages repeat the pool and URL; keep the cause readable
    for marker in ("Caused by ", "Failed to establish a new connection: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:300]


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (9999,)  # "mainline" builds are newer than any release


def _rebuild_client(url, verify, timeout, retries, pool_size, compress_json):
    with _registry_lock:
        found = _registry.get(url)
    if found is not None:
        return found
    return get_client(url, verify=verify, timeout=timeout, retries=retries, pool_size=pool_size,
                      compress_json=compress_json)


# -- the process-wide registry: how a DataFrame finds its client -----------------------------
_registry: dict[str, OrthancClient] = {}


_registry_lock = threading.Lock()


def connect(url: str | OrthancClient, *, auth=None, **kwargs) -> OrthancClient:
    """Create a client and remember it for this process.

    Frames read from ``url`` (or loaded from parquet files that name it) then find this
    client, with its credentials, through ``df.orthanc``. Credentials stay in memory.

    Parameters
    ----------
    url : str or OrthancClient
        Server URL; a client is registered as it is.
    auth, **kwargs
        See :class:`OrthancClient`.

    Examples
    --------
    >>> import orthanc_pandas as op
    >>> client = op.connect("https://pacs.example.org/orthanc", auth=("alice", "s3cret"))  # doctest: +SKIP
    >>> df = pd.read_parquet("cohort.parquet")                                             # doctest: +SKIP
    >>> df.orthanc.headers()         # uses alice's credentials                            # doctest: +SKIP
    """
    client = url if isinstance(url, OrthancClient) else OrthancClient(url, auth=auth, **kwargs)
    _register(client)
    return client


def _register(client: OrthancClient) -> None:
    with _registry_lock:
        _registry[client.url] = client


def get_client(url: str | OrthancClient, *, auth=None, **kwargs) -> OrthancClient:
    """The registered client for ``url``, or a new one with credentials from the environment.

    An explicit ``auth`` or other settings always give a new client, registered once the
    server has answered it (so wrong credentials never replace a working client).
    """
    if isinstance(url, OrthancClient):
        return url
    norm, url_creds = _normalize_url(url)
    if auth is None and url_creds is None and not kwargs:
        with _registry_lock:
            found = _registry.get(norm)
        if found is not None:
            return found
    client = OrthancClient(url, auth=auth, **kwargs)
    client._register_on_success = True
    return client
