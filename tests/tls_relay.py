"""Relays in front of a real Orthanc: a TLS endpoint (as hospitals deploy it behind a reverse
proxy), a relay that cuts answers short or stalls them (a connection dying or hanging mid-header
or mid-file), and one that drops a kept-alive connection when it is used again (the race with
Orthanc's 1 s keep-alive timeout, made certain). They stand for network faults only: the answers
are the real server's. Each counts the connections it accepted.

Debian's Orthanc 1.10.1 crashes (civetweb worker segfault) on the first request when its own
``SslEnabled`` is on, so the TLS tests terminate TLS here, with a certificate made in the
test, and relay the bytes to the plain-HTTP Orthanc. Everything else is the real server.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading


class _Relay:
    """Listen on a free 127.0.0.1 port; each accepted connection goes to ``_handle`` in a thread."""

    scheme = "http"

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0  # accepted so far: one per request sent on a fresh connection
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closed.set()  # stalled connections end too
        with contextlib.suppress(OSError):
            self.sock.close()  # accept() then fails and the serving thread ends

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError


class TLSRelay(_Relay):
    """Listen with TLS on 127.0.0.1:<port> and relay each connection to 127.0.0.1:<target>."""

    scheme = "https"

    def __init__(self, target_port: int, certfile: str, keyfile: str):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        super().__init__(target_port)

    def _handle(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate: that's the test
            conn.close()
            return
        try:
            backend = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            tls.close()
            return
        done = threading.Event()

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()

        threading.Thread(target=pump, args=(backend, tls), daemon=True).start()
        pump(tls, backend)
        done.wait(1)
        for s in (tls, backend):
            with contextlib.suppress(OSError):
                s.close()


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()


class CuttingRelay(_Relay):
    """A plain TCP relay to 127.0.0.1:<target> that drops each connection after ``cut_after``
    bytes of the server's answer: a server (or network) dying in the middle of a file (or of
    the answer's headers, for a small ``cut_after``). With ``stall=True`` the connection stays
    open and silent instead: a server hanging mid-answer."""

    def __init__(self, target_port: int, cut_after: int, *, stall: bool = False):
        self.cut_after = cut_after
        self.stall = stall
        self.cuts = 0
        self._lock = threading.Lock()
        super().__init__(target_port)

    def _handle(self, conn: socket.socket) -> None:
        try:
            backend = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            conn.close()
            return

        def upstream():
            try:
                while data := conn.recv(65536):
                    backend.sendall(data)
            except OSError:
                pass

        threading.Thread(target=upstream, daemon=True).start()
        sent = 0
        try:
            while sent < self.cut_after and (data := backend.recv(65536)):
                data = data[: self.cut_after - sent]
                conn.sendall(data)
                sent += len(data)
        except OSError:
            pass
        if sent >= self.cut_after:
            with self._lock:
                self.cuts += 1
            if self.stall:
                self.closed.wait(60)
        _close(conn, backend)


class KeepAliveDropRelay(_Relay):
    """A plain TCP relay that serves one request per connection and, when the client sends a
    second request on the same kept-alive connection, closes it without an answer: what a
    client sees when Orthanc closed an idle connection just as it was reused."""

    _REQUEST_LINE = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ")

    def __init__(self, target_port: int):
        self.requests = 0  # request lines received
        self.drops = 0  # connections dropped on reuse
        self._lock = threading.Lock()
        super().__init__(target_port)

    def _handle(self, conn: socket.socket) -> None:
        try:
            backend = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            conn.close()
            return

        def downstream():
            try:
                while data := backend.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

        threading.Thread(target=downstream, daemon=True).start()
        seen = 0
        try:
            while data := conn.recv(65536):
                if data.startswith(self._REQUEST_LINE):
                    with self._lock:
                        self.requests += 1
                    seen += 1
                    if seen > 1:
                        with self._lock:
                            self.drops += 1
                        break
                backend.sendall(data)
        except OSError:
            pass
        _close(conn, backend)


class BusyRelay(_Relay):
    """A plain TCP relay whose first ``busy`` connections get ``503 Service Unavailable`` (a
    reverse proxy whose Orthanc is restarting); later ones reach the real server."""

    def __init__(self, target_port: int, busy: int):
        self.busy = busy
        super().__init__(target_port)

    def _handle(self, conn: socket.socket) -> None:
        if self.connections <= self.busy:
            with contextlib.suppress(OSError):
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
            _close(conn)
            return
        try:
            backend = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            conn.close()
            return

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            _close(src, dst)

        threading.Thread(target=pump, args=(backend, conn), daemon=True).start()
        pump(conn, backend)
