"""The thread-read ProxyCommand (companion/proxy_command.py) with real commands: what paramiko
needs of it (send, recv with a timeout, EOF, close). End to end, with OpenSSH as the
command, it runs in tests/test_companion.py (test_proxyjump_through_bastion)."""

from __future__ import annotations

import sys
import time

import pytest
from paramiko.ssh_exception import ProxyCommandFailure

from jupyter_colab_remote.companion.proxy_command import ProxyCommand


def test_bytes_both_ways_timeout_and_close():
    """What is sent comes back through `cat`; recv waits at most its timeout; close ends it."""
    proxy = ProxyCommand("cat")
    try:
        proxy.settimeout(0.1)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            proxy.recv(10)
        assert 0.09 <= time.monotonic() - t0 < 1.0
        assert proxy.send(b"hello world") == 11
        proxy.settimeout(5.0)
        got = b""
        while len(got) < 11:
            got += proxy.recv(4)
        assert got == b"hello world"
    finally:
        proxy.close()
    assert proxy._closed and proxy.process.poll() is not None


def test_end_of_output_and_a_missing_command():
    """A command that ends gives b"" (EOF) after its output; one that cannot start fails as
    paramiko's ProxyCommand does."""
    code = "import sys; sys.stdout.write('bye'); sys.stderr.write('why\\n')"
    proxy = ProxyCommand(f'{sys.executable} -c "{code}"')
    try:
        proxy.settimeout(5.0)
        assert proxy.recv(100) == b"bye"
        assert proxy.recv(100) == b""
    finally:
        proxy.close()
    with pytest.raises(ProxyCommandFailure):
        ProxyCommand("/nonexistent/proxy-command %h")
