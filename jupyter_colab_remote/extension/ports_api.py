"""`/colabremote/api/ports`: the ports the kernels listen on, and where companions forward them.

`GET ?since=VERSION&wait=SECONDS` answers at once when the ports changed since VERSION, else
when they change or after `wait` (a long poll: the companion follows the ports without
polling). `PUT {"client": NAME, "forwards": [{"remote_port", "local_port", "source"}]}` is
the companion's report of its local ports, which the panel shows as links. The watcher runs
only while someone asked within INTEREST_SECONDS (a companion or the panel), so a runtime
nobody watches pays nothing.
"""

from __future__ import annotations

import json
import logging
import time
import typing as t

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.ioloop import PeriodicCallback

from .listening_ports import WATCH_INTERVAL, PortWatcher
from .token_handlers import ColabRemoteAPIHandler, session_is_guest

#: The watcher stops this long after the last request that needs it.
INTEREST_SECONDS = 60.0
#: Longest accepted long-poll wait.
MAX_WAIT_SECONDS = 30.0
#: Most forwards one report may name.
MAX_REPORTED = 256
#: A companion re-reports at least every 30 s while it has forwards; one silent this long was
#: killed (kill -9, a closed laptop) and its links leave the panel.
REPORT_TTL_SECONDS = 90.0


class PortsState:
    """The watcher, its schedule, and the companions' reports."""

    def __init__(self, kernel_manager: t.Any) -> None:
        self.watcher = PortWatcher(kernel_manager)
        #: client name -> {"forwards": [...], "reported": time}
        self.reports: dict[str, dict[str, t.Any]] = {}
        self._interest = -INTEREST_SECONDS - 1.0
        self._callback: PeriodicCallback | None = None

    def start(self) -> None:
        """Run the rounds (on the server's IOLoop)."""
        if self._callback is None:
            self._callback = PeriodicCallback(self._tick, WATCH_INTERVAL * 1000)
            self._callback.start()

    def wanted(self) -> None:
        """Someone needs current ports: scan now if the watcher was idle, keep it running."""
        idle = time.monotonic() - self._interest > INTEREST_SECONDS
        self._interest = time.monotonic()
        if idle:
            self.watcher.scan()
        self.start()

    def _tick(self) -> None:
        try:
            # Unwatched, only new kernels are looked at (to learn their own ports).
            if time.monotonic() - self._interest > INTEREST_SECONDS:
                if self.watcher.needs_baseline():
                    self.watcher.scan()
                return
            self.watcher.scan()
        except Exception:  # noqa: BLE001 - a /proc oddity must not stop the next rounds
            logging.getLogger("ServerApp").exception("colabremote: port watch round failed")

    def stop(self) -> None:
        """Stop the periodic scan."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def drop_stale_reports(self, now: float | None = None) -> None:
        """Forget companions that have not reported for REPORT_TTL_SECONDS."""
        now = time.time() if now is None else now
        for client in [
            c for c, r in self.reports.items() if now - r["reported"] > REPORT_TTL_SECONDS
        ]:
            del self.reports[client]

    def document(self) -> dict[str, t.Any]:
        """Ports with the local ports companions forward them to, plus explicit forwards of
        ports no kernel of ours listens on (a server started another way)."""
        by_port: dict[int, list[dict[str, t.Any]]] = {}
        explicit: set[int] = set()
        self.drop_stale_reports()
        for client, report in self.reports.items():
            for f in report["forwards"]:
                by_port.setdefault(f["remote_port"], []).append(
                    {"client": client, "local_port": f["local_port"]}
                )
                if f["source"] == "explicit":
                    explicit.add(f["remote_port"])
        ports = [
            {**p, "source": "kernel", "forwards": by_port.get(p["port"], [])}
            for p in self.watcher.ports
        ]
        watched = {p["port"] for p in ports}
        for port in sorted(explicit - watched):
            ports.append(
                {"port": port, "address": None, "pid": None, "process": None, "kernel_id": None,
                 "kernel_name": None, "source": "explicit", "forwards": by_port[port]}
            )  # fmt: skip
        return {"version": self.watcher.version, "ports": ports, "clients": sorted(self.reports)}


def parse_report(body: t.Any) -> tuple[str, list[dict[str, t.Any]]]:
    """A companion's report, checked; ValueError when malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("forwards"), list):
        raise ValueError("expected an object with forwards")
    client = str(body.get("client", "companion"))[:64]
    forwards = []
    for f in body["forwards"][:MAX_REPORTED]:
        remote, local = int(f["remote_port"]), int(f["local_port"])
        if not (0 < remote < 65536 and 0 < local < 65536):
            raise ValueError("port out of range")
        source = "explicit" if f.get("source") == "explicit" else "auto"
        forwards.append({"remote_port": remote, "local_port": local, "source": source})
    return client, forwards


class PortsHandler(ColabRemoteAPIHandler):
    """`GET` (long-poll) and `PUT` `/colabremote/api/ports`."""

    @property
    def ports(self) -> PortsState:
        """The runtime's port state (see install)."""
        state = getattr(self.app, "ports_state", None)
        if state is None:
            raise web.HTTPError(404, "port watching is enabled only on a Colab runtime")
        return t.cast(PortsState, state)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The ports document, once it differs from `since` (or after `wait` seconds)."""
        state = self.ports
        state.wanted()
        since = self.get_argument("since", "")
        try:
            wait = min(max(float(self.get_argument("wait", "0")), 0.0), MAX_WAIT_SECONDS)
        except ValueError as e:
            raise web.HTTPError(400, "wait must be a number of seconds") from e
        if since and wait:
            await state.watcher.wait_change(since, wait)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(state.document()))

    @web.authenticated
    @authorized
    def put(self) -> None:
        """Record a companion's forwards (an empty list withdraws them); owner tokens only,
        as for `/colabremote/api/forward`: the reports decide the links the panel shows."""
        if session_is_guest(self):
            raise web.HTTPError(403, "a token with an expiry (a guest token) cannot report ports")
        try:
            client, forwards = parse_report(self.get_json_body())
        except (web.HTTPError, ValueError, KeyError, TypeError) as e:
            raise web.HTTPError(
                400, 'expected {"client": NAME, "forwards": [{"remote_port", "local_port"}]}'
            ) from e
        reports = self.ports.reports
        if forwards:
            reports[client] = {"forwards": forwards, "reported": time.time()}
        else:
            reports.pop(client, None)
        self.set_status(204)
        self.finish()


PORTS_HANDLERS = [(r"/colabremote/api/ports", PortsHandler)]


def install(app: t.Any) -> None:
    """Give a Colab runtime its port state and start its rounds (cheap until asked)."""
    app.ports_state = PortsState(app.serverapp.kernel_manager)
    app.serverapp.io_loop.add_callback(app.ports_state.start)


def status_ports(app: t.Any) -> list[dict[str, t.Any]]:
    """The ports for the status document (and the panel); [] where nothing is watched."""
    state: PortsState | None = getattr(app, "ports_state", None)
    if state is None:
        return []
    state.wanted()
    return t.cast("list[dict[str, t.Any]]", state.document()["ports"])
