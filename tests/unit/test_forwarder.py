"""The forwarder (Forwarder + Link) against an in-process paramiko SSH server on loopback.

The SSH server is paramiko's, in this process (as sshtunnel's tests do), not OpenSSH: this
layer checks the relay logic in a second; tests/test_companion_outage.py runs it end to end.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from jupyter_colab_remote.companion.errors import CompanionError
from jupyter_colab_remote.companion.forwarder import Forwarder, Link, bind_local
from tests.harness.inprocess_ssh import echo_server, inprocess_ssh_server
from tests.harness.processes import port_is_free


@pytest.fixture
def ssh():
    """An in-process SSH server (direct-tcpip relays to the requested address)."""
    with inprocess_ssh_server() as server:
        yield server


@pytest.fixture
def echo():
    """The "runtime": a TCP echo server on loopback."""
    with echo_server() as address:
        yield address


@pytest.fixture
def forwarder():
    """A started Forwarder on a free port with an empty Link; closed after the test."""
    fwd = Forwarder(0, Link()).start()
    yield fwd
    fwd.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """n bytes from sock (its timeout bounds each read)."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


def test_bytes_flow_both_ways_and_eof_passes_through(ssh, echo, forwarder):
    """1 MiB sent through the local port comes back unchanged; the client's EOF reaches the
    runtime, whose EOF comes back (a half-close passes both ways)."""
    forwarder.link.set(ssh.connect(), echo)
    payload = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", forwarder.port), timeout=10) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        assert recv_exactly(c, len(payload)) == payload
        assert c.recv(1) == b""  # the echo server's EOF after ours
    assert forwarder.total == 1


def test_connection_waits_for_the_link_then_resumes(ssh, echo, forwarder):
    """While the link is down a new connection is held open (nothing comes back); once a new
    transport is set, the same connection works."""
    first = ssh.connect()
    forwarder.link.set(first, echo)
    first.close()
    forwarder.link.set(None, None)  # the tunnel is down (the session notices a dead link)
    with socket.create_connection(("127.0.0.1", forwarder.port), timeout=10) as c:
        c.sendall(b"hello")
        c.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.recv(5)  # waiting, neither answered nor closed
        c.settimeout(10)
        time.sleep(0.1)
        forwarder.link.set(ssh.connect(), echo)  # healed
        assert recv_exactly(c, 5) == b"hello"
        c.sendall(b" again")
        assert recv_exactly(c, 6) == b" again"


def test_inactive_transport_counts_as_down(ssh, echo, forwarder):
    """A transport that died but was not replaced yet is waited out like a missing one."""
    dead = ssh.connect()
    dead.close()
    forwarder.link.set(dead, echo)
    assert forwarder.link.wait(0.2) is None
    forwarder.link.set(ssh.connect(), echo)
    assert forwarder.link.wait(0.2) is not None


def test_close_frees_the_port(ssh, echo):
    """close() stops listening, ends relayed connections, and the port can be bound again."""
    fwd = Forwarder(0, Link()).start()
    fwd.link.set(ssh.connect(), echo)
    c = socket.create_connection(("127.0.0.1", fwd.port), timeout=10)
    c.sendall(b"x")
    assert recv_exactly(c, 1) == b"x"
    fwd.close()
    assert c.recv(1) == b""  # the relayed connection was ended
    c.close()
    assert port_is_free(fwd.port)


def test_port_in_use_is_a_one_line_error():
    """Binding a taken port names the fix and exits with code 6."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(CompanionError) as e:
            bind_local(port)
    assert f"local port {port} is already in use" in str(e.value)
    assert "--port" in str(e.value) and e.value.exit_code == 6
