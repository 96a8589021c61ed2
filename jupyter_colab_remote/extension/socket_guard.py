"""Close open WebSockets whose token was revoked, rotated or expired, within a second.

A token check happens once, at the WebSocket handshake; a kernel or terminal socket opened
with a token would otherwise keep running code after the token is gone. Every socket is
noted with the token (and rotation) that authenticated it, and a periodic sweep closes those
whose token is no longer current. The sweep costs one stat() of the token file per token in
use, so changes made by another process (`jupyter colabremote token revoke`) are noticed too.
"""

from __future__ import annotations

import logging
import typing as t
import weakref

from tornado.ioloop import PeriodicCallback

from ..tokens import TokenError, TokenStore

#: How often open sockets are checked (ms): well inside the promised second.
SWEEP_INTERVAL_MS = 250
#: WebSocket close code "policy violation": the credentials behind the socket are gone.
CLOSE_POLICY_VIOLATION = 1008


class SocketGuard:
    """Open WebSockets by the token that authenticated them; closes those of dead tokens."""

    def __init__(self, store: TokenStore, log: logging.Logger | None = None) -> None:
        self.store = store
        self.log = log or logging.getLogger(__name__)
        # Weak: a handler that is closed and dropped by tornado leaves the registry by itself.
        self._sockets: weakref.WeakKeyDictionary[t.Any, tuple[str, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._timer: PeriodicCallback | None = None
        self._store_broken = False

    def watch(self, handler: t.Any, name: str, generation: str) -> None:
        """Note a WebSocket handler authenticated by token `name` at rotation `generation`."""
        self._sockets[handler] = (name, generation)
        if self._timer is None:
            # Started on first use, from a request: on the server's running IOLoop.
            self._timer = PeriodicCallback(self.sweep, SWEEP_INTERVAL_MS)
            self._timer.start()

    def _why_dead(self, name: str, generation: str) -> str | None:
        record = self.store.get(name)
        if record is None:
            return f"token {name!r} was revoked"
        if record.generation != generation:
            return f"token {name!r} was rotated"
        if record.expired():
            return f"token {name!r} expired"
        return None

    def sweep(self) -> int:
        """Close every open socket whose token is no longer current; return how many."""
        if not self._sockets:
            return 0
        verdicts: dict[tuple[str, str], str | None] = {}
        closed = 0
        for handler, key in list(self._sockets.items()):
            if handler.ws_connection is None:
                continue  # handshake still under way, or closed already
            if key not in verdicts:
                try:
                    verdicts[key] = self._why_dead(*key)
                except TokenError as e:
                    # An unreadable store refuses new requests; open sockets wait for a fix.
                    if not self._store_broken:
                        self.log.warning("colabremote: cannot check open sockets: %s", e)
                    self._store_broken = True
                    return closed
                self._store_broken = False
            reason = verdicts[key]
            if reason is None:
                continue
            self._sockets.pop(handler, None)
            self.log.info("colabremote: closing %s: %s", handler.request.path, reason)
            handler.close(CLOSE_POLICY_VIOLATION, reason[:120])
            closed += 1
        return closed

    def stop(self) -> None:
        """Stop the periodic sweep (server shutdown)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
