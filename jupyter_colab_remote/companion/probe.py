"""Notice a host's return: TCP handshakes (SYNs only) to the first hop while the link is down."""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
import typing as t

#: At most this many probes in flight (each keeps retransmitting its SYN until closed).
PROBE_MAX_PENDING = 8

#: connect_ex results meaning "handshake under way" (POSIX, and Windows' WSAEWOULDBLOCK).
_IN_PROGRESS = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, 10035}


def probe_tcp(
    host: str, port: int, stop: threading.Event, interval: float, duration: float
) -> bool:
    """True as soon as host:port completes a TCP handshake or refuses (the host is back).

    A new non-blocking connect starts every `interval` seconds while earlier ones are still
    pending (a lost SYN is otherwise retried only after 1, 3, 7... s), so the moment the
    network returns is noticed within about `interval`. False after `duration` seconds or
    when `stop` is set. Sends nothing but SYNs; every probe socket is closed on return.
    """
    end = time.monotonic() + duration
    try:
        addrs = [
            (family, addr)
            for family, _, _, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        ]
    except (socket.gaierror, UnicodeError):
        stop.wait(interval)  # no DNS while the network is down: try again later
        return False
    pending: list[socket.socket] = []
    selector = selectors.DefaultSelector()  # (select.select fails on descriptors >= 1024)
    next_probe = 0.0
    n = 0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                return False
            if now >= next_probe:
                next_probe = now + interval
                family, addr = addrs[n % len(addrs)]
                n += 1
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
                err = sock.connect_ex(addr)
                if err in (0, errno.ECONNREFUSED):
                    sock.close()
                    return True
                if err in _IN_PROGRESS:
                    pending.append(sock)
                    selector.register(sock, selectors.EVENT_WRITE)
                    if len(pending) > PROBE_MAX_PENDING:
                        oldest = pending.pop(0)
                        selector.unregister(oldest)
                        oldest.close()
                else:
                    sock.close()  # no route (yet): the next probe will tell
            wait = max(0.0, min(next_probe, end) - time.monotonic())
            if not pending:
                stop.wait(wait)
                continue
            for key, _ in selector.select(wait):
                sock = t.cast(socket.socket, key.fileobj)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err in (0, errno.ECONNREFUSED):
                    return True
                pending.remove(sock)
                selector.unregister(sock)
                sock.close()
        return False
    finally:
        selector.close()
        for sock in pending:
            sock.close()
