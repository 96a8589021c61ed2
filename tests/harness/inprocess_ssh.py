"""An in-process SSH server (paramiko) on loopback, for fast tests of the forwarder.

As sshtunnel's own tests do: a `paramiko.ServerInterface` that accepts any login and opens
`direct-tcpip` channels by connecting to the requested address and relaying bytes. Plus a
threaded TCP echo server as the "runtime". Threads are daemons; everything is closed on exit.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import socketserver
import threading
from collections.abc import Iterator

import paramiko


class _Server(paramiko.ServerInterface):
    """Any user, any password; sessions refused; direct-tcpip allowed (a test's own server)."""

    def __init__(self) -> None:
        #: channel id -> the (host, port) the client asked for
        self.destinations: dict[int, tuple[str, int]] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid: int, origin, destination) -> int:
        self.destinations[chanid] = destination
        return paramiko.OPEN_SUCCEEDED


def _pump(src, dst, shut) -> None:
    """Copy src to dst until EOF, then pass the EOF on with `shut()`."""
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        shut()


class InProcessSSHServer:
    """paramiko SSH servers on 127.0.0.1:port; each `connect()` is a fresh client transport."""

    def __init__(self) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            handler = _Server()
            transport.start_server(server=handler)
            threading.Thread(target=self._channels, args=(transport, handler), daemon=True).start()

    def _channels(self, transport: paramiko.Transport, handler: _Server) -> None:
        """Relay every direct-tcpip channel to its destination."""
        while transport.is_active():
            chan = transport.accept(0.5)
            if chan is None:
                continue
            try:
                upstream = socket.create_connection(handler.destinations[chan.get_id()], 5)
            except OSError:
                chan.close()
                continue
            upstream.settimeout(None)
            half_close = functools.partial(upstream.shutdown, socket.SHUT_WR)
            for args in ((chan, upstream, half_close), (upstream, chan, chan.shutdown_write)):
                threading.Thread(target=_pump, args=args, daemon=True).start()

    def connect(self) -> paramiko.Transport:
        """A logged-in client transport (host key trusted as the one generated here)."""
        transport = paramiko.Transport(socket.create_connection(("127.0.0.1", self.port), 5))
        transport.connect(hostkey=self.host_key, username="test", password="test")
        return transport

    def close(self) -> None:
        """Stop listening and end every server-side transport."""
        with contextlib.suppress(OSError):
            self.listener.close()
        for t in self.transports:
            t.close()


@contextlib.contextmanager
def inprocess_ssh_server() -> Iterator[InProcessSSHServer]:
    """An InProcessSSHServer, closed on exit."""
    server = InProcessSSHServer()
    try:
        yield server
    finally:
        server.close()


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        _pump(self.request, self.request, functools.partial(self.request.shutdown, socket.SHUT_WR))


@contextlib.contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    """A threaded TCP echo server on 127.0.0.1 (it echoes until EOF, then half-closes)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    try:
        yield server.server_address
    finally:
        server.shutdown()
        server.server_close()
