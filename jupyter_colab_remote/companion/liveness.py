"""SSH-level liveness, as OpenSSH's ServerAliveInterval / ServerAliveCountMax do it.

A dead link is noticed on every OS, not only where the kernel has TCP_USER_TIMEOUT (Linux):
after `interval` seconds without a byte from the server, a `keepalive@openssh.com` global
request that expects a reply is sent (sshd answers it, with a failure reply, which proves
liveness as well as a success would); every further `interval` of silence sends another.
Once nothing at all has arrived for `interval * count_max` seconds the link is declared
dead and the connection closed, which the supervisor sees at once (OpenSSH: "Timeout, server
not responding"). Any data from the server counts as an answer, as in OpenSSH, so a long
transfer that keeps replies queued behind it is never mistaken for an outage.

Defaults: interval 1 s, count 4: an outage is declared 4 s (plus at most one 0.25 s tick)
after the last byte received, inside the ~5 s the companion promises; a healthy idle link
gets a reply within about one round trip of each request, so it would need 3 s of extra
delay to be taken for dead. ~/.ssh/config's ServerAliveInterval / ServerAliveCountMax and
the command line (`--server-alive-interval`, `--server-alive-count-max`) change them; an
interval of 0 turns the check off (then only TCP_USER_TIMEOUT, where present, notices).
"""

from __future__ import annotations

import threading
import time
import typing as t
from collections.abc import Callable

import paramiko

DEFAULT_INTERVAL = 1.0
DEFAULT_COUNT_MAX = 4
#: The request OpenSSH's client sends; servers that do not know it still answer (failure).
KEEPALIVE_REQUEST = "keepalive@openssh.com"
#: Slower detection than this is worth a line at start (a `ServerAliveInterval 60` kept in
#: ~/.ssh/config for NAT keepalive is common).
SLOW_DETECTION_SECONDS = 10.0


def slow_detection_note(interval: float, count_max: int, os_backup: bool) -> str | None:
    """One line when these settings let a dead link go unnoticed for long, with the option
    that restores ~5 s; None when detection is quick, or when the OS's TCP_USER_TIMEOUT
    (os_backup: Linux, with the companion's 1 s keepalive packets) notices it anyway."""
    if os_backup:
        return None
    if interval > 0 and interval * count_max <= SLOW_DETECTION_SECONDS:
        return None
    what = (
        "the SSH liveness check is off (ServerAliveInterval 0)"
        if interval <= 0
        else f"ServerAliveInterval {interval:g} x ServerAliveCountMax {count_max}"
    )
    when = "only when the OS gives up" if interval <= 0 else f"after {interval * count_max:g} s"
    return (
        f"note: a dead link is noticed {when}: {what}; --server-alive-interval 1 notices it in ~5 s"
    )


class ReceiveClock:
    """A socket-like object (socket, jump-host channel, ProxyCommand) that notes when bytes
    last arrived; paramiko's transport reads through it."""

    def __init__(self, sock: t.Any) -> None:
        self._sock = sock
        self.last_received = time.monotonic()

    def recv(self, n: int) -> bytes:
        """Read from the wrapped socket, noting the time if anything arrived."""
        data = self._sock.recv(n)
        if data:
            self.last_received = time.monotonic()
        return data

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._sock, name)


class Liveness:
    """Watches one transport (the one to the target: its traffic crosses every hop) and
    calls `on_dead` once the server has been silent for interval * count_max seconds."""

    def __init__(
        self,
        transport: paramiko.Transport,
        clock: ReceiveClock,
        interval: float,
        count_max: int,
        on_dead: Callable[[], None],
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.interval = interval
        self.count_max = count_max
        self.on_dead = on_dead
        #: Why the link was declared dead (None while it is alive).
        self.reason: str | None = None
        self._stop = threading.Event()
        self._want_request = threading.Event()
        self._last_request = 0.0

    @property
    def deadline(self) -> float:
        """Seconds of silence after which the link is declared dead."""
        return self.interval * self.count_max

    def start(self) -> Liveness:
        """Start the watcher and the request sender (daemon threads)."""
        # The sender is apart: a send can block on a dead link with a full buffer, and the
        # deadline must hold regardless.
        threading.Thread(target=self._watch, name="ssh-liveness", daemon=True).start()
        threading.Thread(target=self._send, name="ssh-liveness-send", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop watching (the connection is being closed on purpose)."""
        self._stop.set()
        self._want_request.set()

    def _watch(self) -> None:
        tick = min(max(self.interval / 4, 0.05), 0.25)
        while not self._stop.wait(tick):
            if not self.transport.is_active():
                return
            now = time.monotonic()
            silent = now - self.clock.last_received
            if silent >= self.deadline:
                self.reason = (
                    f"no answer from the server for {silent:.1f} s, ServerAliveInterval "
                    f"{self.interval:g} x ServerAliveCountMax {self.count_max}"
                )
                self._stop.set()
                self._want_request.set()
                self.on_dead()
                return
            if silent >= self.interval and now - self._last_request >= self.interval:
                self._last_request = now
                self._want_request.set()

    def _send(self) -> None:
        while True:
            self._want_request.wait()
            self._want_request.clear()
            if self._stop.is_set():
                return
            try:
                # Returns on the reply (success or failure: either proves liveness) or once
                # the transport is closed; only this thread sends global requests.
                self.transport.global_request(KEEPALIVE_REQUEST, wait=True)
            except (paramiko.SSHException, OSError, EOFError):
                return
