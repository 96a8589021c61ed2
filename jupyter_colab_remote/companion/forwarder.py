"""The local port forward: 127.0.0.1:PORT -> the runtime, kept listening across reconnects."""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import threading
import time
import typing as t

import paramiko
import psutil

from ..protocol.errors import ExitCode
from .errors import CompanionError

#: 256 KiB reads: 10x less CPU than paramiko's demo (1 KiB), measured here.
READ_SIZE = 256 * 1024
#: How long a new local connection waits for a link that is being re-established.
LINK_WAIT_SECONDS = 30.0

log = logging.getLogger("jupyter_colab_remote.companion")


def port_owner(port: int) -> str:
    """Who listens on a local port, if we can tell (for the error message)."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    with contextlib.suppress(psutil.Error):
                        p = psutil.Process(conn.pid)
                        return f" (by {p.name()}, pid {conn.pid})"
    return ""


def bind_local(port: int, host: str = "127.0.0.1") -> socket.socket:
    """Listen on host:port, with a one-line error naming the fix when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # On Windows SO_REUSEADDR would let another process bind the same port (and take
    # Colab's traffic); exclusive use is the safe counterpart there.
    reuse = getattr(socket, "SO_EXCLUSIVEADDRUSE", socket.SO_REUSEADDR)
    sock.setsockopt(socket.SOL_SOCKET, reuse, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise CompanionError(
                f"local port {port} is already in use{port_owner(port)}; pick another with "
                "--port, or stop what uses it (jupyter colabremote stop HOST)",
                exit_code=ExitCode.PORT_TAKEN,
            ) from e
        raise CompanionError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.listen(128)
    return sock


class Link:
    """The current SSH transport and remote port, swappable when the tunnel heals."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._transport: paramiko.Transport | None = None
        self._remote: tuple[str, int] | None = None

    def set(self, transport: paramiko.Transport | None, remote: tuple[str, int] | None) -> None:
        """Install a new transport (or None while down) and wake waiting connections."""
        with self._cond:
            self._transport, self._remote = transport, remote
            self._cond.notify_all()

    def wait(self, timeout: float) -> tuple[paramiko.Transport, tuple[str, int]] | None:
        """The live transport and target, waiting up to `timeout` while the link heals."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._transport is not None and self._transport.is_active(), timeout
            )
            if not ok or self._remote is None:
                return None
            return t.cast(paramiko.Transport, self._transport), self._remote


class Forwarder:
    """Accepts local connections and relays each over a direct-tcpip channel.

    Each connection is relayed by two threads, one per direction, with blocking reads: no
    select on the channel (paramiko then signals every packet through an extra pipe), and
    half-closes pass through (a client's EOF reaches the runtime while the answer still
    flows back). A connection accepted while the link is down, or whose channel could not
    be opened because the link died meanwhile, waits for the healed link (up to
    LINK_WAIT_SECONDS) instead of failing.
    """

    def __init__(self, port: int, link: Link) -> None:
        self.link = link
        self.listener = bind_local(port)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.active = 0
        self.total = 0
        self._thread = threading.Thread(
            target=self._accept_loop, name="forward-accept", daemon=True
        )

    def start(self) -> Forwarder:
        """Start accepting."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            # shutdown wakes a thread blocked in recv (close alone does not).
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        if self._thread.ident is not None:  # (close() may come before start())
            self._thread.join(5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.listener], [], [], 0.5)
                if not ready:
                    continue
                client, peer = self.listener.accept()
            except OSError:
                if self._stop.is_set():
                    return
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(client)
                self.active += 1
                self.total += 1
            threading.Thread(
                target=self._serve, args=(client, peer), name="forward-conn", daemon=True
            ).start()

    def _open(self, peer: tuple[str, int]) -> paramiko.Channel | None:
        """A channel to the runtime, waiting (bounded) for the link while it heals."""
        deadline = time.monotonic() + LINK_WAIT_SECONDS
        while not self._stop.is_set():
            link = self.link.wait(max(0.0, deadline - time.monotonic()))
            if link is None:
                log.warning("dropping a local connection: the tunnel is down")
                return None
            transport, remote = link
            try:
                return transport.open_channel("direct-tcpip", remote, peer, timeout=10)
            except (paramiko.SSHException, OSError, EOFError) as e:
                if transport.is_active() or time.monotonic() >= deadline:
                    log.warning("cannot open a channel to the runtime: %s", e)
                    return None
                # The link died while opening: wait for the healed one.
        return None

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        chan = None
        try:
            chan = self._open(peer)
            if chan is not None:
                self._relay(client, chan)
        finally:
            if chan is not None:
                chan.close()
            with contextlib.suppress(OSError):
                client.close()
            with self._lock:
                self._conns.discard(client)
                self.active -= 1

    def _relay(self, client: socket.socket, chan: paramiko.Channel) -> None:
        """Relay both ways until both directions ended (or either side failed)."""
        up = threading.Thread(
            target=self._client_to_channel, args=(client, chan), name="forward-up", daemon=True
        )
        up.start()
        try:
            while True:
                data = chan.recv(READ_SIZE)
                if not data:
                    break
                client.sendall(data)
        except (OSError, paramiko.SSHException, EOFError):
            pass
        # The runtime finished sending (EOF) or the channel died: pass the EOF on; if the
        # channel is gone nothing more can flow upward either, so end the other thread.
        how = socket.SHUT_WR if not chan.closed else socket.SHUT_RDWR
        with contextlib.suppress(OSError):
            client.shutdown(how)
        while up.is_alive():
            up.join(1.0)
            if chan.closed and up.is_alive():
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _client_to_channel(client: socket.socket, chan: paramiko.Channel) -> None:
        try:
            while True:
                data = client.recv(READ_SIZE)
                if not data:
                    break
                chan.sendall(data)
        except (OSError, paramiko.SSHException, EOFError):
            return
        with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
            chan.shutdown_write()  # the client's EOF, passed on to the runtime
