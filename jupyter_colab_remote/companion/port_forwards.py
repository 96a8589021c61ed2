"""More ports through the companion's SSH connection: `--forward` ones and automatic ones.

Every extra forward is a Forwarder whose link is the session's main link aimed at another
remote port (TargetLink), so it heals with the tunnel and keeps its local port meanwhile.
Automatic forwards follow the runtime's `GET /colabremote/api/ports` (ports that its own
kernels and their children listen on), long-polled through the main forward.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
import typing as t
from urllib.parse import quote

import paramiko

from ..protocol.errors import ExitCode
from .errors import CompanionError
from .forwarder import Forwarder, Link
from .ui import UI
from .verify import request

log = logging.getLogger("jupyter_colab_remote.companion")

#: How long one long-poll of the runtime's ports waits for a change (seconds).
LONG_POLL_SECONDS = 20
#: Re-report the local ports this often while there are any: the runtime forgets a companion
#: silent for 90 s (ports_api.REPORT_TTL_SECONDS), so a killed one leaves no stale links.
REPORT_REFRESH_SECONDS = 30.0
#: How many ports above a taken one an automatic forward tries.
NEXT_FREE_TRIES = 50
#: Backoff between failed polls (the link is down, or the runtime restarts).
POLL_BACKOFF_START, POLL_BACKOFF_CAP = 0.5, 5.0


@dataclasses.dataclass(frozen=True)
class ForwardSpec:
    """One `--forward [LOCAL:]REMOTE`."""

    local: int
    remote: int


def _port(text: str, spec: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise CompanionError(
            f"invalid --forward {spec!r}: expected PORT or LOCAL:REMOTE (ports 1-65535)",
            exit_code=ExitCode.USAGE,
        )
    return port


def parse_forward(spec: str | int) -> ForwardSpec:
    """`6006` -> 6006:6006; `16006:6006` -> local 16006, remote 6006."""
    text = str(spec).strip()
    local, sep, remote = text.partition(":")
    if not sep:
        return ForwardSpec(_port(text, text), _port(text, text))
    return ForwardSpec(_port(local, text), _port(remote, text))


def _items(values: t.Any) -> list[str]:
    """Command-line lists, or a profile's list or comma-separated string, as one flat list."""
    if values is None:
        return []
    if isinstance(values, (str, int)):
        values = [values]
    return [part for v in values for part in str(v).replace(",", " ").split()]


def parse_forwards(values: t.Any) -> list[ForwardSpec]:
    """Every --forward (repeatable; a profile may give a list or "6006,8080"), checked."""
    specs = [parse_forward(v) for v in _items(values)]
    for what in ("local", "remote"):
        ports = [getattr(s, what) for s in specs]
        dup = sorted({p for p in ports if ports.count(p) > 1})
        if dup:
            raise CompanionError(
                f"--forward names {what} port {dup[0]} twice", exit_code=ExitCode.USAGE
            )
    return specs


def parse_ignore(values: t.Any) -> list[tuple[int, int]]:
    """`--auto-forward-ignore 8888,9000-9100` as (first, last) ranges."""
    ranges = []
    for item in _items(values):
        first, _, last = item.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            lo = hi = 0
        if not 0 < lo <= hi < 65536:
            raise CompanionError(
                f"invalid --auto-forward-ignore {item!r}: expected PORT or FIRST-LAST",
                exit_code=ExitCode.USAGE,
            )
        ranges.append((lo, hi))
    return ranges


class TargetLink(Link):
    """The session's link aimed at another remote port: it is up, down and healed with it."""

    def __init__(self, main: Link, remote: tuple[str, int]) -> None:
        super().__init__()
        self.main, self.remote = main, remote

    def set(self, transport: paramiko.Transport | None, remote: tuple[str, int] | None) -> None:
        """Not used: the main link is the one the session sets."""
        raise NotImplementedError("set the session's main link instead")

    def wait(self, timeout: float) -> tuple[paramiko.Transport, tuple[str, int]] | None:
        """The main link's live transport, with this forward's target."""
        got = self.main.wait(timeout)
        return None if got is None else (got[0], self.remote)


@dataclasses.dataclass
class Forward:
    """One extra forward: localhost:local_port -> address:remote_port on the host."""

    remote_port: int
    local_port: int
    source: str  # "explicit" or "auto"
    forwarder: Forwarder
    address: str = "127.0.0.1"
    process: str | None = None
    pid: int | None = None
    kernel: str | None = None
    #: In container mode: the host's loopback port the container's remote_port is published on.
    host_port: int | None = None

    @property
    def url(self) -> str:
        """Where the app answers on this machine."""
        return f"http://localhost:{self.local_port}"

    def record(self) -> dict[str, t.Any]:
        """What start --json, status and the state record show."""
        return {
            "local_port": self.local_port,
            "remote_port": self.remote_port,
            "source": self.source,
            "url": self.url,
            "process": self.process,
            "pid": self.pid,
            "kernel": self.kernel,
            "host_port": self.host_port,
        }

    def describe(self) -> str:
        """`tensorboard (kernel python3, pid 4242)`, or `port 6006` for an explicit one."""
        if self.process is None:
            return f"port {self.remote_port}"
        where = ", ".join(
            x for x in (f"kernel {self.kernel}" if self.kernel else "", f"pid {self.pid}") if x
        )
        return f"{self.process} ({where})"


def target_address(address: str) -> str:
    """Where sshd connects for a port listening on `address`: loopback for a wildcard."""
    if address in ("", "0.0.0.0", "127.0.0.1"):
        return "127.0.0.1"
    if address in ("::", "::1"):
        return "::1"
    return address


def in_ranges(port: int, ranges: list[tuple[int, int]]) -> bool:
    """True if the port is in one of the (first, last) ranges."""
    return any(lo <= port <= hi for lo, hi in ranges)


class PortForwards:
    """The extra forwards of one `start`: explicit ones, and automatic ones while watching."""

    def __init__(
        self,
        link: Link,
        specs: list[ForwardSpec],
        ui: UI,
        ignore: list[tuple[int, int]] | None = None,
        on_change: t.Callable[[list[dict[str, t.Any]]], None] | None = None,
    ) -> None:
        self.link, self.specs, self.ui = link, specs, ui
        self.ignore = ignore or []
        self.on_change = on_change
        self.forwards: dict[int, Forward] = {}  # by remote port
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._main_port = 0
        self._token = ""
        self._client = "companion"
        self._reported_at = 0.0  # time.monotonic() of the last accepted report

    # -- explicit ------------------------------------------------------
    def bind_explicit(self) -> None:
        """Listen on every --forward's local port now (a taken one fails before anything
        happens on the host, like --port)."""
        try:
            for spec in self.specs:
                link = TargetLink(self.link, ("127.0.0.1", spec.remote))
                forwarder = Forwarder(spec.local, link)
                fwd = Forward(spec.remote, forwarder.port, "explicit", forwarder)
                self.forwards[spec.remote] = fwd
        except CompanionError as e:
            self.close()
            raise CompanionError(f"--forward: {e}", exit_code=e.exit_code) from e

    def start_explicit(self) -> None:
        """Start accepting on the explicit forwards."""
        for fwd in self.forwards.values():
            fwd.forwarder.start()

    def retarget(self, published: dict[int, int] | None) -> list[int]:
        """Aim the explicit forwards at a container's published ports ({container port: host
        port}; None: a native runtime, the host's own ports). The container ports that were
        asked for but are not published come back (those forwards reach the host's port)."""
        missing = []
        for fwd in self.forwards.values():
            if fwd.source != "explicit":
                continue
            fwd.host_port = (published or {}).get(fwd.remote_port)
            if published is not None and fwd.host_port is None:
                missing.append(fwd.remote_port)
            link = fwd.forwarder.link
            if isinstance(link, TargetLink):
                link.remote = (link.remote[0], fwd.host_port or fwd.remote_port)
        return sorted(missing)

    def records(self) -> list[dict[str, t.Any]]:
        """Every forward, by local port."""
        with self._lock:
            forwards = list(self.forwards.values())
        return [f.record() for f in sorted(forwards, key=lambda f: f.local_port)]

    # -- automatic -----------------------------------------------------
    def attach(self, main_port: int, token: str, client: str) -> None:
        """Where the runtime's API answers (the main forward) and as whom to report."""
        self._main_port, self._token, self._client = main_port, token, client

    def start_watching(self) -> None:
        """Follow the runtime's listening ports in a thread until close()."""
        self._thread = threading.Thread(target=self._watch, name="port-watch", daemon=True)
        self._thread.start()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self._token}"}

    def fetch(self, since: str, wait: float) -> dict[str, t.Any] | None:
        """The runtime's ports document, once it differs from `since` (or after `wait`);
        None if the runtime has no ports API (an older version)."""
        path = f"/colabremote/api/ports?since={quote(since)}&wait={wait:g}"
        code, _, body = request(self._main_port, "GET", path, self._auth(), wait + 15)
        if code == 404:
            return None
        if code != 200:
            raise CompanionError(f"the runtime's ports API answered HTTP {code}")
        doc = json.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("ports"), list):
            raise CompanionError("the runtime's ports API answered something unexpected")
        return doc

    def report(self) -> None:
        """Tell the runtime which local port each forward uses (the panel shows the links)."""
        body = json.dumps(
            {
                "client": self._client,
                "forwards": [
                    {"remote_port": r["remote_port"], "local_port": r["local_port"],
                     "source": r["source"]}
                    for r in self.records()
                ],
            }
        )  # fmt: skip
        headers = {**self._auth(), "Content-Type": "application/json"}
        code, _, _ = request(self._main_port, "PUT", "/colabremote/api/ports", headers, 10, body)
        if code not in (200, 204, 404):
            log.warning("the runtime refused the port report (HTTP %s)", code)
        else:
            self._reported_at = time.monotonic()

    def _watch(self) -> None:
        since = ""
        delay = POLL_BACKOFF_START
        while not self._stop.is_set():
            try:
                doc = self.fetch(since, LONG_POLL_SECONDS)
                if doc is None:
                    self.ui.event(
                        "the runtime does not report its ports (an older version): no "
                        "automatic forwarding"
                    )
                    return
                since = str(doc.get("version", ""))
                changed = self.reconcile(doc["ports"])
                stale = time.monotonic() - self._reported_at > REPORT_REFRESH_SECONDS
                if (
                    changed
                    or self._client not in doc.get("clients", [self._client])
                    or (stale and self.records())
                ):
                    self.report()
            except (CompanionError, OSError, ValueError, KeyError, TypeError) as e:
                # The link is down (the session heals it) or the runtime restarts: retry.
                log.debug("port watch: %s", e)
                self._stop.wait(delay)
                delay = min(delay * 2, POLL_BACKOFF_CAP)
                continue
            except Exception:  # noqa: BLE001 - never let automatic forwarding die silently
                log.exception("port watch failed; retrying")
                self._stop.wait(POLL_BACKOFF_CAP)
                continue
            delay = POLL_BACKOFF_START

    def reconcile(self, ports: list[dict[str, t.Any]]) -> bool:
        """Open forwards for new ports, close those whose process stopped listening;
        True if anything changed."""
        wanted: dict[int, dict[str, t.Any]] = {}
        for p in ports:
            if p.get("source", "kernel") != "kernel":
                continue  # another companion's --forward, not a kernel's listener
            port = int(p["port"])
            if port in self.forwards and self.forwards[port].source == "explicit":
                continue
            if in_ranges(port, self.ignore):
                continue
            wanted.setdefault(port, p)
        changed = False
        for port, fwd in list(self.forwards.items()):
            if fwd.source == "auto" and port not in wanted:
                with self._lock:
                    del self.forwards[port]
                fwd.forwarder.close()
                self.ui.event(f"{fwd.describe()} stopped listening: closed {fwd.url}")
                changed = True
        for port, p in wanted.items():
            if port in self.forwards or self._stop.is_set():
                continue
            fwd = self._open_auto(port, p)
            if fwd is not None:
                changed = True
        if changed and self.on_change is not None:
            self.on_change(self.records())
        return changed

    def _open_auto(self, port: int, p: dict[str, t.Any]) -> Forward | None:
        """A forward for a new port: the same local port, else the next free one (said)."""
        link = TargetLink(self.link, (target_address(str(p.get("address", ""))), port))
        forwarder = None
        for candidate in range(port, min(port + NEXT_FREE_TRIES, 65536)):
            with contextlib.suppress(CompanionError):
                forwarder = Forwarder(candidate, link)
                break
        if forwarder is None:
            self.ui.event(f"cannot forward port {port}: it and the next ports are in use here")
            return None
        fwd = Forward(
            port,
            forwarder.port,
            "auto",
            forwarder,
            address=link.remote[0],
            process=str(p.get("process") or "a process"),
            pid=p.get("pid"),
            kernel=p.get("kernel_name"),
        )
        with self._lock:
            if self._stop.is_set():  # closing meanwhile: never leave a port open
                forwarder.close()
                return None
            self.forwards[port] = fwd
        forwarder.start()
        note = "" if fwd.local_port == port else f" (port {port} is in use here)"
        self.ui.event(f"{fwd.describe()} -> {fwd.url}{note}")
        return fwd

    def close(self) -> None:
        """Stop watching, withdraw the report (the panel's links) and close every forward."""
        self._stop.set()
        if self._main_port and self.forwards:
            with contextlib.suppress(CompanionError, OSError):
                headers = {**self._auth(), "Content-Type": "application/json"}
                body = json.dumps({"client": self._client, "forwards": []})
                request(self._main_port, "PUT", "/colabremote/api/ports", headers, 3, body)
        with self._lock:
            forwards = list(self.forwards.values())
            self.forwards.clear()
        for fwd in forwards:
            fwd.forwarder.close()


def forward_lines(records: list[dict[str, t.Any]] | None) -> list[str]:
    """`forward http://localhost:6006 -> port 6006 (--forward)`, one line per forward."""
    lines = []
    for r in records or []:
        if r.get("source") == "explicit":
            why = "--forward"
            if r.get("host_port"):
                where = f"in the container (host port {r['host_port']})"
                lines.append(f"forward {r['url']} -> port {r['remote_port']} {where} ({why})")
                continue
        else:
            where = ", ".join(
                x for x in (f"kernel {r['kernel']}" if r.get("kernel") else "",
                            f"pid {r['pid']}" if r.get("pid") else "") if x
            )  # fmt: skip
            why = f"{r.get('process') or 'auto'}" + (f", {where}" if where else "")
        lines.append(f"forward {r['url']} -> port {r['remote_port']} on the host ({why})")
    return lines
