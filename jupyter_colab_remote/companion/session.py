"""`start`: start or re-attach the runtime through the agent (over SSH, or a local process
without a host), forward, verify, then keep the SSH link healthy."""

from __future__ import annotations

import re
import socket
import threading
import time
import typing as t

import paramiko
import psutil

from .. import __version__
from ..protocol.errors import ExitCode
from ..protocol.messages import ContainerFields, EnsureRequest, TokenFields
from ..tokens import new_secret
from . import state
from .agents import Agent, LocalAgent, RemoteAgent
from .errors import AuthError, CompanionError, HostKeyError
from .forwarder import Forwarder, Link, bind_local
from .gateway import gateway_warning
from .install import Installer
from .kernel_check import python_kernelspec, verify_kernel
from .liveness import slow_detection_note
from .options import CONTAINER_FIELDS, StartOptions, interpreter, remembered_options
from .port_forwards import PortForwards, parse_forwards, parse_ignore
from .probe import probe_tcp
from .prompts import Prompter
from .remote import python_command
from .ssh_connect import ConnectOptions, SSHConnection, connect, flatten_hops
from .ssh_target import SSHTarget, resolve
from .ui import UI
from .verify import report_forward, verify_chain

#: While the link is down, a cheap TCP probe (one SYN) of the first hop every PROBE_INTERVAL
#: notices its return within a fraction of a second; SSH is attempted only once it answers.
#: After PROBE_SLOW_AFTER seconds down, probes are spaced PROBE_INTERVAL_SLOW apart.
PROBE_INTERVAL, PROBE_INTERVAL_SLOW, PROBE_SLOW_AFTER = 0.25, 2.0, 120.0
#: Once the host answers, the SSH connection gets a normal timeout: a short one would never
#: succeed over a slow link (handshake plus authentication take several round trips).
RECONNECT_TIMEOUT = 10.0
#: Backoff between failed SSH attempts to a host that answers TCP (sshd down, host booting).
BACKOFF_START, BACKOFF_CAP = 0.5, 5.0
#: How often the supervisor looks at the connection (a dead link itself is noticed by the
#: SSH-level liveness check, liveness.py, and by TCP_USER_TIMEOUT where the OS has it).
SUPERVISE_POLL = 0.2
#: How often "still down" is repeated while waiting for the host.
REPORT_EVERY = 30.0
#: Consecutive authentication failures after which reconnecting stops (needs the user).
AUTH_FAILURES_FATAL = 3


def token_name() -> str:
    """The name this machine's token has in the remote store."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "laptop"
    return f"companion-{host}"


#: `ensure` for a container may pull Colab's image first (several GB).
CONTAINER_ENSURE_TIMEOUT = 3900.0


def container_request(opts: StartOptions) -> ContainerFields:
    """The ensure request's container fields (`--image`: Colab's image in a container)."""
    if not opts.image:
        return {}
    publish = [spec.remote for spec in parse_forwards(opts.forward)]
    return {"image": opts.image, "gpus": opts.gpus, "engine": opts.engine, "publish": publish}


#: The port Colab's image serves on inside its container (published by the agent anyway).
CONTAINER_JUPYTER_PORT = 8080


def container_forwards(ports: PortForwards, runtime: dict[str, t.Any], ui: UI) -> None:
    """Aim --forward at the container's published ports; say which ones it lacks."""
    if runtime.get("mode") != "container":
        ports.retarget(None)
        return
    published = {int(p["port"]): int(p["host_port"]) for p in runtime.get("published") or []}
    published[CONTAINER_JUPYTER_PORT] = int(runtime["port"])
    missing = ports.retarget(published)
    if missing:
        listed = ("port " if len(missing) == 1 else "ports ") + ", ".join(map(str, missing))
        ui.info(
            f"the container {runtime.get('container')} does not publish {listed} (ports "
            "are published only when it is created; `stop` then `start` recreates it): "
            f"--forward reaches the host's own {listed} instead"
        )


def container_record(runtime: dict[str, t.Any]) -> dict[str, t.Any]:
    """What a record keeps of the runtime's mode (a container, or the native `serve`)."""
    if runtime.get("mode") != "container":
        return {"mode": "native", **dict.fromkeys(CONTAINER_FIELDS)}
    return {"mode": "container", **{k: runtime.get(k) for k in CONTAINER_FIELDS}}


def colab_url(port: int, token: str) -> str:
    """The URL Colab's local-runtime dialog accepts."""
    return f"http://localhost:{port}/?token={token}"


class Session:
    """One `start` run: against a remote host over SSH, or (no host) this machine."""

    def __init__(self, opts: StartOptions, ui: UI) -> None:
        self.opts = opts
        self.ui = ui
        #: The connection record's key: the host, or `local` for this machine.
        self.key = opts.host or "local"
        self.target: SSHTarget | None = resolve(opts.host) if opts.host else None
        self.prompter = Prompter()
        self.link = Link()
        self.conn: SSHConnection | None = None
        self.forwarder: Forwarder | None = None
        #: --forward ports and the automatic ones, through the same link.
        self.ports = PortForwards(
            self.link,
            parse_forwards(opts.forward),
            ui,
            parse_ignore(opts.auto_forward_ignore),
            on_change=lambda records: state.update(self.key, opts.profile, forwards=records),
        )
        self.stop_event = threading.Event()
        record = state.load(self.key, opts.profile) or {}
        self.token: str = record.get("token") or new_secret()
        self.token_name: str = record.get("token_name") or token_name()
        #: Whether this host accepted our token before (then a refusal means it was rotated).
        self.token_known = bool(record.get("token_known"))
        self.runtime: dict[str, t.Any] = {}
        self.installed_prefix: list[str] | None = None

    @property
    def where(self) -> str:
        """The host, for messages."""
        return self.target.alias if self.target else "this machine"

    def python_prefix(self) -> list[str]:
        """The remote interpreter: the one --install made, else the one the user chose."""
        if self.installed_prefix:
            return self.installed_prefix
        return interpreter(self.opts)

    def installer(self, conn: SSHConnection) -> Installer:
        """What `--install` runs: into the environment the interpreter options name."""
        base = None
        if self.opts.remote_conda or self.opts.remote_uv:
            base = python_command(None, None, self.opts.remote_conda, self.opts.remote_uv)
        return Installer(
            conn,
            remote_python=self.opts.remote_python,
            remote_venv=self.opts.remote_venv,
            base=base,
            wheel=self.opts.wheel,
            wheelhouse=self.opts.wheelhouse,
        )

    # -- one attach ----------------------------------------------------
    def attach(self, quiet: bool = False, check_version: bool = True) -> dict[str, t.Any]:
        """Connect, check the remote package, start or re-attach; point the forward at it.

        Reconnects skip the version check (done at start; it costs a remote interpreter
        start): `ensure` alone re-attaches, and restarts the runtime if it is gone. Without a
        host the agent runs as a local process: nothing to connect, check or forward.
        """
        ui = UI(quiet=True) if quiet else self.ui
        conn = self.connect(ui, quiet) if self.target else None
        try:
            agent: Agent = LocalAgent()
            if conn is not None:
                agent = self.remote_agent(conn, ui, check_version)
            request = self.ensure_request()
            with ui.step("starting or re-attaching the runtime"):
                # A container may first need its image pulled: show the pull as it goes.
                timeout = CONTAINER_ENSURE_TIMEOUT if self.opts.image else 90.0
                runtime = agent.call("ensure", request, progress=ui.info, timeout=timeout)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        old, self.conn = self.conn, conn
        if old is not None:
            old.close()
        self.runtime = runtime
        if runtime.get("mode") == "container":
            self.token = runtime["token"]  # the image's own token (it cannot be chosen)
        else:
            self.accept_token(runtime, request["fallback_token"])
        self.remember(runtime)
        if conn is not None:
            container_forwards(self.ports, runtime, ui)
            self.link.set(conn.transport, ("127.0.0.1", int(runtime["port"])))
        return runtime

    def connect(self, ui: UI, quiet: bool) -> SSHConnection:
        """An SSH connection to the host."""
        assert self.target is not None
        options = ConnectOptions(
            accept_new_host_key=self.opts.accept_new_host_key,
            prompter=self.prompter,
            timeout=RECONNECT_TIMEOUT if quiet else 10.0,
            server_alive_interval=self.opts.server_alive_interval,
            server_alive_count_max=self.opts.server_alive_count_max,
        )
        with ui.step(f"connecting to {self.target.describe()}"):
            conn = connect(self.target, options)
        if not quiet:
            # TCP_USER_TIMEOUT applies to a socket of ours, not to a ProxyCommand's pipe.
            os_backup = hasattr(socket, "TCP_USER_TIMEOUT") and not (
                flatten_hops(self.target)[0].proxy_command
            )
            note = slow_detection_note(*options.liveness_for(self.target), os_backup)
            if note:
                ui.info(note)
        return conn

    def remote_agent(self, conn: SSHConnection, ui: UI, check_version: bool) -> RemoteAgent:
        """The agent on the host; checks its version (installing it with --install)."""
        agent = RemoteAgent(conn, self.python_prefix())
        if not check_version:
            return agent
        missing = False
        with ui.step("checking the remote package"):
            try:
                agent.check_version()
            except CompanionError as e:
                if e.exit_code != ExitCode.PACKAGE or not self.opts.install:
                    raise
                missing = True
        if missing:
            with ui.step(f"installing jupyter-colab-remote {__version__} on {conn.target.alias}"):
                # From now on (reconnects, stop) use the interpreter installed into.
                self.installed_prefix = self.installer(conn).install()
            agent.prefix = self.installed_prefix
            agent.check_version()
        return agent

    def ensure_request(self) -> EnsureRequest:
        """What `ensure` is asked: the profile, the token, the workspace, gateway, container."""
        request = EnsureRequest(
            profile=self.opts.profile,
            **self.token_request(),
            workdir=self.opts.workdir,
            env=self.opts.env,
            git=self.opts.git,
            git_token=self.opts.git_token,
            gateway_url=self.opts.gateway_url,
            gateway_token=self.opts.gateway_token,
            **container_request(self.opts),
        )
        if self.target is None:  # this machine: the runtime serves on the local port itself
            request["port"] = self.opts.port
        return request

    def token_request(self) -> TokenFields:
        """The ensure request's token fields (see agent.actions.register_token)."""
        return {
            "token": self.token,
            "token_name": self.token_name,
            "token_known": self.token_known,
            "fallback_token": new_secret(),
        }

    def accept_token(self, runtime: dict[str, t.Any], fallback: str) -> None:
        """Adopt what the host made of our token: kept, or reissued after a rotation there."""
        if runtime.get("token_reissued"):
            self.token = fallback
            self.ui.event(
                "this connection's token was rotated or revoked on the server; the old URL "
                f"stays dead and a new token ({runtime['token_name']}) was issued"
                + ("" if self.forwarder is None else "; `jupyter colabremote url` prints the URL")
            )
        self.token_name = runtime.get("token_name") or self.token_name
        self.token_known = True

    def remember(self, runtime: dict[str, t.Any]) -> None:
        """Save the token and how the runtime was started, once the host has accepted them.

        Saved before verification, so a failed check never loses a registered token; `url`,
        `status`, `doctor` and `stop` read these instead of asking for the options again.
        """
        here = {} if self.target else {"local_port": runtime["port"]}  # serves on it itself
        state.update(
            self.key,
            self.opts.profile,
            **remembered_options(self.opts, self.python_prefix() if self.target else None),
            token=self.token,
            token_name=self.token_name,
            token_known=self.token_known,
            remote_port=runtime["port"],
            remote_pid=runtime["pid"],
            stopped=False,
            **here,
            **container_record(runtime),
        )

    # -- the whole run -------------------------------------------------
    def start(self) -> dict[str, t.Any]:
        """Bind the local port, attach, verify; save state; return the record printed."""
        # Bind first: a taken port fails fast, before anything happens on the remote.
        if self.target is not None:
            self.forwarder = Forwarder(self.opts.port, self.link)
            self.ports.bind_explicit()
        else:
            self.check_local_port()
        try:
            runtime = self.attach()
            port = int(runtime["port"])
            if self.forwarder is not None:
                with self.ui.step(f"forwarding localhost:{self.forwarder.port}"):
                    self.forwarder.start()
                    self.ports.start_explicit()
                port = self.forwarder.port
            mode = runtime.get("mode", "native")
            with self.ui.step("verifying (status, CORS preflight, probe)"):
                status = verify_chain(port, self.token, mode=mode)
                if mode == "native" and self.forwarder is not None:
                    report_forward(port, self.token, self.token_name)
                    self.report_ports(port)
            check_python(port, self.token, self.where, runtime, status, self.ui)
        except BaseException:
            self.close()
            raise
        warning = gateway_warning(status)
        if warning:
            self.ui.info(warning)
        companion = {}
        if self.forwarder is not None:  # this process holds the tunnel (`stop` ends it)
            me = psutil.Process()
            companion = {"companion_pid": me.pid, "companion_started": me.create_time()}
        forwards = self.ports.records()
        state.update(self.key, self.opts.profile, local_port=port, forwards=forwards, **companion)
        if self.opts.auto_forward and self.forwarder is not None and mode == "native":
            # After the record is written: the watcher updates its `forwards` from now on.
            self.ports.start_watching()
        return {
            "url": colab_url(port, self.token),
            "host": self.opts.host,
            "profile": self.opts.profile,
            "local_port": port,
            "remote_port": runtime["port"],
            "remote_pid": runtime["pid"],
            "reattached": runtime.get("reattached", False),
            "workspace": {k: runtime[k] for k in ("git", "head") if k in runtime} or None,
            "gateway_url": runtime.get("gateway_url"),
            "forwards": forwards,
            **container_record(runtime),
            "state_file": str(state.path_for(self.key, self.opts.profile)),
        }

    def report_ports(self, port: int) -> None:
        """Tell the runtime where the --forward ports are (a native runtime only: Colab's
        image has no ports API); the panel shows them as links."""
        self.ports.attach(port, self.token, self.token_name)
        if self.ports.forwards:
            try:
                self.ports.report()
            except CompanionError as e:  # the panel's links only; the forwards work anyway
                self.ui.info(f"could not report the forwarded ports to the runtime: {e}")

    def check_local_port(self) -> None:
        """Without a host: a taken --port fails at once with the fix (exit 6), as with a host,
        unless this profile's runtime is already running (it is re-attached, whatever its port)."""
        try:
            bind_local(self.opts.port).close()
        except CompanionError as e:
            if e.exit_code != ExitCode.PORT_TAKEN:
                raise
            running = LocalAgent().call("status")
            profile = self.opts.profile
            mine = [r for r in running["runtimes"] if r.get("profile", "default") == profile]
            if self.opts.image:
                mine += [
                    c
                    for c in running["containers"]
                    if c.get("profile") == profile and c.get("running")
                ]
            if not mine:
                raise

    def supervise(self) -> None:
        """Keep the tunnel up until stopped: notice a dead link and heal it."""
        while not self.stop_event.wait(SUPERVISE_POLL):
            if self.conn is not None and self.conn.is_active():
                continue
            self._heal()

    def _heal(self) -> None:
        """Reconnect until the runtime answers through the local port again.

        The local port keeps listening throughout; connections accepted meanwhile wait for
        the new link (see Forwarder). Each round: wait until the first hop answers TCP
        (probes, no SSH traffic into a dead network), connect, re-attach to the runtime
        (or start it again if the host rebooted), then verify through the forward as Colab
        will use it.
        """
        lost = time.monotonic()
        why = f" ({self.conn.lost_reason})" if self.conn and self.conn.lost_reason else ""
        self.ui.event(f"connection to {self.target.describe()} lost{why}; reconnecting")
        self.link.set(None, None)
        if self.conn is not None:
            self.conn.close()
        delay = BACKOFF_START
        attempt = auth_failures = 0
        while not self.stop_event.is_set():
            if not self._wait_reachable(lost):
                return  # stopped
            attempt += 1
            try:
                token = self.token
                self.attach(quiet=True, check_version=False)
                port = self.opts.port if self.forwarder is None else self.forwarder.port
                mode = self.runtime.get("mode", "native")
                verify_chain(port, self.token, mode=mode)
                if mode == "native":
                    # A restarted runtime has forgotten the forward; tell it again.
                    report_forward(port, self.token, self.token_name)
                    self.ports.attach(port, self.token, self.token_name)
                elif self.token != token:
                    self.ui.event("the container printed a new token; `url` shows the new URL")
            except HostKeyError:
                raise  # a changed host key needs the user, never a retry
            except (CompanionError, paramiko.SSHException, OSError, EOFError) as e:
                # A link that drops again during authentication surfaces as an AuthError
                # too: only a repeated refusal is taken as a credential problem.
                auth_failures = auth_failures + 1 if isinstance(e, AuthError) else 0
                if auth_failures >= AUTH_FAILURES_FATAL:
                    raise
                self._check_give_up(lost, e)
                if attempt == 1 or attempt % 10 == 0:
                    self.ui.event(f"still down (attempt {attempt}): {e}")
                self.link.set(None, None)
                self.stop_event.wait(delay)
                delay = min(delay * 2, BACKOFF_CAP)
                continue
            self.ui.event(
                f"reconnected after {time.monotonic() - lost:.1f} s "
                f"({'same runtime' if self.runtime.get('reattached') else 'runtime restarted'})"
            )
            return

    def _check_give_up(self, lost: float, cause: Exception | None = None) -> None:
        if time.monotonic() - lost > self.opts.give_up_after:
            raise CompanionError(
                f"gave up after {self.opts.give_up_after:.0f} s without a connection"
            ) from cause

    def _wait_reachable(self, lost: float) -> bool:
        """Block until the first hop answers TCP again; False if stopped meanwhile."""
        hop = flatten_hops(self.target)[0]
        if hop.proxy_command:
            return not self.stop_event.is_set()  # nothing to probe: rely on the backoff
        reported = time.monotonic()
        while not self.stop_event.is_set():
            self._check_give_up(lost)
            down = time.monotonic() - lost
            interval = PROBE_INTERVAL if down < PROBE_SLOW_AFTER else PROBE_INTERVAL_SLOW
            if probe_tcp(hop.hostname, hop.port, self.stop_event, interval, REPORT_EVERY):
                return not self.stop_event.is_set()
            if time.monotonic() - reported >= REPORT_EVERY:
                reported = time.monotonic()
                self.ui.event(
                    f"still down after {time.monotonic() - lost:.0f} s: "
                    f"{hop.hostname} port {hop.port} does not answer"
                )
        return False

    def stop_remote(self) -> None:
        """Stop the remote runtime and its kernels (--stop-on-exit)."""
        if self.target is None:
            LocalAgent().call("stop", {"profile": self.opts.profile})
            return
        if self.conn is None or not self.conn.is_active():
            self.attach(quiet=True)
        assert self.conn is not None
        RemoteAgent(self.conn, self.python_prefix()).call("stop", {"profile": self.opts.profile})

    def close(self) -> None:
        """Close the forward and the SSH connection; the remote runtime keeps running."""
        self.ports.close()
        if self.forwarder is not None:
            self.forwarder.close()
        self.link.set(None, None)
        if self.conn is not None:
            self.conn.close()


def check_python(
    port: int,
    token: str,
    where: str,
    runtime: dict[str, t.Any],
    status: dict[str, t.Any],
    ui: UI,
) -> None:
    """Prove the runtime can run Python before its URL is printed.

    A new native runtime starts a kernel and runs `1+1`; a re-attached one or a container is
    checked for a Python kernelspec. Kernels on a gateway that is unreachable now are not
    tried: the runtime is fine and the gateway warning says what is wrong.
    """
    if gateway_warning(status):
        return
    if runtime.get("mode", "native") == "native" and not runtime.get("reattached"):
        with ui.step("running a Python kernel (1+1)"):
            verify_kernel(port, token, where)
    else:
        python_kernelspec(port, token, where)
