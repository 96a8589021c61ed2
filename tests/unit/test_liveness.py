"""SSH-level liveness (companion/liveness.py) against a real paramiko server in this process,
and where its interval and count come from (command line, ~/.ssh/config, defaults).

The dead link is simulated on the client's side of a real TCP connection: once `frozen`,
the socket drops what is sent and receives nothing, as a cut cable does (the netns test,
tests/test_companion_outage.py, cuts a real link end to end).
"""

from __future__ import annotations

import socket
import threading
import time

import paramiko
import pytest

from jupyter_colab_remote.companion.errors import CompanionError
from jupyter_colab_remote.companion.liveness import (
    DEFAULT_COUNT_MAX,
    DEFAULT_INTERVAL,
    Liveness,
    ReceiveClock,
    slow_detection_note,
)
from jupyter_colab_remote.companion.ssh_connect import ConnectOptions
from jupyter_colab_remote.companion.ssh_target import resolve
from tests.harness.inprocess_ssh import inprocess_ssh_server


class CuttableSocket:
    """A connected socket that, once `frozen`, behaves like a link that was cut."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frozen = False

    def recv(self, n: int) -> bytes:
        """Nothing arrives while frozen (paramiko sees its periodic timeout)."""
        if self.frozen:
            time.sleep(0.1)
            raise TimeoutError
        return self.sock.recv(n)

    def send(self, data: bytes) -> int:
        """What is sent while frozen is lost."""
        return len(data) if self.frozen else self.sock.send(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


def test_silent_server_declared_dead_idle_link_kept():
    """An idle, healthy link stays up (the server answers each request); once nothing comes
    back, the link is declared dead interval x count after the last byte, and closed."""
    interval, count = 0.2, 3
    with inprocess_ssh_server() as server:
        sock = CuttableSocket(socket.create_connection(("127.0.0.1", server.port), 5))
        clock = ReceiveClock(sock)
        transport = paramiko.Transport(clock)
        transport.connect(hostkey=server.host_key, username="test", password="test")
        dead = threading.Event()

        def on_dead() -> None:
            transport.close()
            dead.set()

        live = Liveness(transport, clock, interval, count, on_dead).start()
        try:
            # Ten intervals without any channel traffic: the requests' replies keep it alive.
            assert not dead.wait(10 * interval)
            assert transport.is_active() and live.reason is None
            assert time.monotonic() - clock.last_received < 2 * interval

            sock.frozen = True
            cut = time.monotonic()
            assert dead.wait(5.0), "a silent link was never declared dead"
            detected = time.monotonic() - cut
            silence = time.monotonic() - clock.last_received
        finally:
            live.stop()
            transport.close()
        assert not transport.is_active()
        assert "ServerAliveInterval 0.2 x ServerAliveCountMax 3" in (live.reason or "")
        # Declared once the silence reached the deadline, not long after.
        assert interval * count <= silence <= interval * count + 0.3
        assert detected <= interval * count + 0.3


CONFIG = """
Host tuned
    HostName 10.0.0.7
    ServerAliveInterval 5
    ServerAliveCountMax 2

Host off
    ServerAliveInterval 0

Host bad
    ServerAliveCountMax many

Host plain
    HostName 10.0.0.8
"""


def config() -> paramiko.SSHConfig:
    """The test's ssh_config."""
    return paramiko.SSHConfig.from_text(CONFIG)


def test_interval_and_count_from_ssh_config_then_options():
    """~/.ssh/config's ServerAlive* apply; command-line options win; else the defaults."""
    tuned = resolve("tuned", config())
    assert (tuned.server_alive_interval, tuned.server_alive_count_max) == (5.0, 2)
    assert ConnectOptions().liveness_for(tuned) == (5.0, 2)
    given = ConnectOptions(server_alive_interval=2, server_alive_count_max=3)
    assert given.liveness_for(tuned) == (2, 3)
    assert ConnectOptions().liveness_for(resolve("off", config()))[0] == 0
    plain = resolve("plain", config())
    assert ConnectOptions().liveness_for(plain) == (DEFAULT_INTERVAL, DEFAULT_COUNT_MAX)
    # The defaults keep the promise: an outage is declared within 5 s.
    assert DEFAULT_INTERVAL * DEFAULT_COUNT_MAX <= 5


def test_bad_values_are_one_line_errors():
    """A bad ssh_config value or option is a usage error naming it."""
    with pytest.raises(CompanionError, match="ServerAliveCountMax 'many'"):
        resolve("bad", config())
    plain = resolve("plain", config())
    with pytest.raises(CompanionError, match="--server-alive-interval"):
        ConnectOptions(server_alive_interval=-1).liveness_for(plain)
    with pytest.raises(CompanionError, match="--server-alive-count-max"):
        ConnectOptions(server_alive_count_max=0).liveness_for(plain)


def test_slow_detection_is_said_at_start():
    """A long ServerAliveInterval (kept in ~/.ssh/config for NAT keepalive) or a check turned
    off is said in one line naming the fix, unless the OS's TCP_USER_TIMEOUT notices anyway;
    the defaults and other quick settings say nothing."""
    assert slow_detection_note(1, 4, os_backup=False) is None
    assert slow_detection_note(2, 5, os_backup=False) is None
    slow = slow_detection_note(60, 3, os_backup=False)
    assert slow is not None and "after 180 s" in slow and "ServerAliveInterval 60" in slow
    assert "--server-alive-interval 1" in slow
    off = slow_detection_note(0, 4, os_backup=False)
    assert off is not None and "off" in off
    assert slow_detection_note(60, 3, os_backup=True) is None
