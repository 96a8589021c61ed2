"""`start`: connect, start or re-attach the runtime, forward, verify, then keep it healthy."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import selectors
import socket
import sys
import threading
import time
import typing as t
import webbrowser

import paramiko
import psutil

from .. import __version__
from ..agent import container
from ..tokens import new_secret
from . import state
from .errors import AuthError, CompanionError, HostKeyError
from .forwarder import Forwarder, Link
from .gateway import gateway_warning
from .install import Installer
from .kernel_check import python_kernelspec, verify_kernel
from .prompts import Prompter
from .remote import RemoteAgent, python_command
from .ssh_connect import ConnectOptions, SSHConnection, connect, flatten_hops
from .ssh_target import SSHTarget, resolve
from .ui import UI
from .verify import report_forward, verify_chain

COLAB_URL = "https://colab.research.google.com/"
#: While the link is down, a cheap TCP probe (one SYN) of the first hop every PROBE_INTERVAL
#: notices its return within a fraction of a second; SSH is attempted only once it answers.
#: After PROBE_SLOW_AFTER seconds down, probes are spaced PROBE_INTERVAL_SLOW apart.
PROBE_INTERVAL, PROBE_INTERVAL_SLOW, PROBE_SLOW_AFTER = 0.25, 2.0, 120.0
#: At most this many probes in flight (each keeps retransmitting its SYN until closed).
PROBE_MAX_PENDING = 8
#: Once the host answers, the SSH connection gets a normal timeout: a short one would never
#: succeed over a slow link (handshake plus authentication take several round trips).
RECONNECT_TIMEOUT = 10.0
#: Backoff between failed SSH attempts to a host that answers TCP (sshd down, host booting).
BACKOFF_START, BACKOFF_CAP = 0.5, 5.0
#: How often the supervisor looks at the connection (a dead link itself is noticed by the
#: kernel: TCP_USER_TIMEOUT with SSH keepalives, see ssh_connect).
SUPERVISE_POLL = 0.2
#: How often "still down" is repeated while waiting for the host.
REPORT_EVERY = 30.0
#: Consecutive authentication failures after which reconnecting stops (needs the user).
AUTH_FAILURES_FATAL = 3


@dataclasses.dataclass
class StartOptions:
    """Everything `start` was asked to do."""

    host: str | None = None
    port: int = 9000
    profile: str = "default"
    accept_new_host_key: bool = False
    remote_python: str | None = None
    remote_venv: str | None = None
    remote_conda: str | None = None
    remote_uv: bool = False
    #: The interpreter argv a previous `start` used (from the connection record), when the
    #: command line names none.
    remote_prefix: list[str] | None = None
    install: bool = False
    wheel: str | None = None
    wheelhouse: str | None = None
    workdir: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    git: str | None = None
    git_token: str | None = None
    gateway_url: str | None = None
    gateway_token: str | None = None
    image: str | None = None
    gpus: str | None = None
    engine: str | None = None
    json: bool = False
    open_browser: bool = False
    stop_on_exit: bool = False
    give_up_after: float = 24 * 3600.0


def token_name() -> str:
    """The name this machine's token has in the remote store."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "laptop"
    return f"companion-{host}"


#: `ensure` for a container may pull Colab's image first (several GB).
CONTAINER_ENSURE_TIMEOUT = 3900.0


def container_request(opts: StartOptions) -> dict[str, t.Any]:
    """The ensure request's container fields (`--image`: Colab's image in a container)."""
    if not opts.image:
        return {}
    return {"image": opts.image, "gpus": opts.gpus, "engine": opts.engine}


#: What a record keeps of a container runtime.
CONTAINER_FIELDS = ("container", "image", "engine", "gpus")


def container_record(runtime: dict[str, t.Any]) -> dict[str, t.Any]:
    """What a record keeps of the runtime's mode (a container, or the native `serve`)."""
    if runtime.get("mode") != "container":
        return {"mode": "native", **dict.fromkeys(CONTAINER_FIELDS)}
    return {"mode": "container", **{k: runtime.get(k) for k in CONTAINER_FIELDS}}


#: The interpreter options: when none is given, the remembered interpreter is used.
INTERPRETER_OPTIONS = ("remote_python", "remote_venv", "remote_conda", "remote_uv")


def interpreter(choice: t.Any) -> list[str]:
    """The remote interpreter argv for StartOptions or parsed arguments: the interpreter
    options given, else the one remembered from `start` (`remote_prefix`), else the default."""
    chosen = [getattr(choice, k, None) for k in INTERPRETER_OPTIONS]
    remembered = getattr(choice, "remote_prefix", None)
    if not any(chosen) and remembered:
        return list(remembered)
    return python_command(*chosen)


#: What a connection record keeps of `start`'s options (never secrets: no env, no tokens);
#: the container's image, engine and GPUs come with container_record().
REMEMBERED = ("workdir", "git", "gateway_url", "image", "gpus", "engine")


def remembered_options(opts: StartOptions, prefix: list[str] | None) -> dict[str, t.Any]:
    """How the runtime was started, as the connection record keeps it."""
    return {
        "host": opts.host,
        "profile": opts.profile,
        "python": prefix,
        **{k: getattr(opts, k) for k in REMEMBERED if k not in CONTAINER_FIELDS},
    }


def colab_url(port: int, token: str) -> str:
    """The URL Colab's local-runtime dialog accepts."""
    return f"http://localhost:{port}/?token={token}"


#: Where `--git` looks for a token: these variables, in the environment or a local .env file.
GIT_TOKEN_VARIABLES = ("GIT_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN")


def git_token_from_environment(env_file: str = ".env") -> str | None:
    """A git token from the local environment, else from a .env file (never printed)."""
    for name in GIT_TOKEN_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    if os.path.exists(env_file):
        values = parse_env_file(env_file)
        for name in GIT_TOKEN_VARIABLES:
            if values.get(name):
                return values[name]
    return None


def parse_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (comments, blank lines and `export ` allowed), as python-dotenv reads."""
    env = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise CompanionError(f"cannot read env file {path}: {e.strerror}") from e
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise CompanionError(f"{path}:{n}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


class Session:
    """One `start` run against a remote host."""

    def __init__(self, opts: StartOptions, ui: UI) -> None:
        assert opts.host
        self.opts = opts
        self.ui = ui
        self.target: SSHTarget = resolve(opts.host)
        self.prompter = Prompter()
        self.link = Link()
        self.conn: SSHConnection | None = None
        self.forwarder: Forwarder | None = None
        self.stop_event = threading.Event()
        record = state.load(opts.host, opts.profile) or {}
        self.token: str = record.get("token") or new_secret()
        self.token_name: str = record.get("token_name") or token_name()
        #: Whether this host accepted our token before (then a refusal means it was rotated).
        self.token_known = bool(record.get("token_known"))
        self.runtime: dict[str, t.Any] = {}
        self.installed_prefix: list[str] | None = None

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
        start): `ensure` alone re-attaches, and restarts the runtime if it is gone.
        """
        ui = UI(quiet=True) if quiet else self.ui
        options = ConnectOptions(
            accept_new_host_key=self.opts.accept_new_host_key,
            prompter=self.prompter,
            timeout=RECONNECT_TIMEOUT if quiet else 10.0,
        )
        with ui.step(f"connecting to {self.target.describe()}"):
            conn = connect(self.target, options)
        try:
            agent = RemoteAgent(conn, self.python_prefix())
            if check_version:
                missing = False
                with ui.step("checking the remote package"):
                    try:
                        agent.check_version()
                    except CompanionError as e:
                        if e.exit_code != 7 or not self.opts.install:
                            raise
                        missing = True
                if missing:
                    with ui.step(
                        f"installing jupyter-colab-remote {__version__} on {conn.target.alias}"
                    ):
                        # From now on (reconnects, stop) use the interpreter installed into.
                        self.installed_prefix = self.installer(conn).install()
                    agent.prefix = self.installed_prefix
                    agent.check_version()
            request = {
                "profile": self.opts.profile,
                **self.token_request(),
                "workdir": self.opts.workdir,
                "env": self.opts.env,
                "git": self.opts.git,
                "git_token": self.opts.git_token,
                "gateway_url": self.opts.gateway_url,
                "gateway_token": self.opts.gateway_token,
                **container_request(self.opts),
            }
            with ui.step("starting or re-attaching the runtime"):
                # A container may first need its image pulled: show the pull as it goes.
                timeout = CONTAINER_ENSURE_TIMEOUT if self.opts.image else 90.0
                runtime = agent.call("ensure", request, progress=ui.info, timeout=timeout)
        except BaseException:
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
        self.link.set(conn.transport, ("127.0.0.1", int(runtime["port"])))
        return runtime

    def token_request(self) -> dict[str, t.Any]:
        """The ensure request's token fields (see agent.main.register_token)."""
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
        state.update(
            self.opts.host or "local",
            self.opts.profile,
            **remembered_options(self.opts, self.python_prefix()),
            token=self.token,
            token_name=self.token_name,
            token_known=self.token_known,
            remote_port=runtime["port"],
            remote_pid=runtime["pid"],
            stopped=False,
            **container_record(runtime),
        )

    # -- the whole run -------------------------------------------------
    def start(self) -> dict[str, t.Any]:
        """Bind the local port, attach, verify; save state; return the record printed."""
        # Bind first: a taken port fails fast, before anything happens on the remote.
        self.forwarder = Forwarder(self.opts.port, self.link)
        try:
            runtime = self.attach()
            with self.ui.step(f"forwarding localhost:{self.forwarder.port}"):
                self.forwarder.start()
            with self.ui.step("verifying (status, CORS preflight, probe)"):
                mode = runtime.get("mode", "native")
                status = verify_chain(self.forwarder.port, self.token, mode=mode)
                if mode == "native":
                    report_forward(self.forwarder.port, self.token, self.token_name)
            check_python(
                self.forwarder.port, self.token, self.target.alias, runtime, status, self.ui
            )
        except BaseException:
            self.close()
            raise
        warning = gateway_warning(status)
        if warning:
            self.ui.info(warning)
        me = psutil.Process()
        record = state.update(
            self.opts.host or "local",
            self.opts.profile,
            local_port=self.forwarder.port,
            companion_pid=me.pid,
            companion_started=me.create_time(),
        )
        return {
            "url": colab_url(self.forwarder.port, self.token),
            "host": self.opts.host,
            "profile": self.opts.profile,
            "local_port": self.forwarder.port,
            "remote_port": runtime["port"],
            "remote_pid": runtime["pid"],
            "reattached": runtime.get("reattached", False),
            "workspace": {k: runtime[k] for k in ("git", "head") if k in runtime} or None,
            "gateway_url": runtime.get("gateway_url"),
            **container_record(runtime),
            "state_file": str(state.path_for(record["host"], self.opts.profile)),
        }

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
        self.ui.event(f"connection to {self.target.describe()} lost; reconnecting")
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
        if self.conn is None or not self.conn.is_active():
            self.attach(quiet=True)
        assert self.conn is not None
        RemoteAgent(self.conn, self.python_prefix()).call("stop", {"profile": self.opts.profile})

    def close(self) -> None:
        """Close the forward and the SSH connection; the remote runtime keeps running."""
        if self.forwarder is not None:
            self.forwarder.close()
        self.link.set(None, None)
        if self.conn is not None:
            self.conn.close()


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


def _has_gui_browser() -> bool:
    """Whether a browser can open without taking over this terminal: $BROWSER is set, or not
    Linux/BSD, or there is a display (webbrowser would otherwise start lynx or w3m here)."""
    if os.environ.get("BROWSER") or not sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_colab(ui: UI) -> None:
    """Open Colab in the browser (--open); say so when no browser could be started."""
    opened = False
    if _has_gui_browser():
        try:
            opened = webbrowser.open(COLAB_URL)
        except (webbrowser.Error, OSError):
            pass
    if not opened:
        ui.info(f"could not open a browser here; open {COLAB_URL} yourself")


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


def start_local(opts: StartOptions, ui: UI) -> dict[str, t.Any]:
    """`start` without a host: this machine becomes the runtime (detached, re-attachable)."""
    from ..agent import main as remote_agent

    record = state.load("local", opts.profile) or {}
    token = record.get("token") or new_secret()
    name = record.get("token_name") or token_name()
    fallback = new_secret()
    request = {
        "profile": opts.profile,
        "token": token,
        "token_name": name,
        "token_known": bool(record.get("token_known")),
        "fallback_token": fallback,
        "workdir": opts.workdir,
        "env": opts.env,
        "git": opts.git,
        "git_token": opts.git_token,
        "gateway_url": opts.gateway_url,
        "gateway_token": opts.gateway_token,
        "port": opts.port,
        **container_request(opts),
    }
    container.progress_sink = ui.info
    with ui.step("starting or re-attaching the runtime"):
        try:
            runtime = remote_agent.ensure(request)
        except (remote_agent.AgentError, container.ContainerError) as e:
            raise CompanionError(str(e), exit_code=getattr(e, "exit_code", None)) from e
    port = int(runtime["port"])
    mode = runtime.get("mode", "native")
    if mode == "container":
        token = runtime["token"]
    elif runtime.get("token_reissued"):
        token = fallback
        ui.info("this runtime's saved token was rotated or revoked; a new token was issued")
    state.update(
        "local",
        opts.profile,
        **remembered_options(opts, None),
        token=token,
        token_name=runtime.get("token_name") or name,
        token_known=True,
        local_port=port,
        remote_port=port,
        remote_pid=runtime["pid"],
        stopped=False,
        **container_record(runtime),
    )
    with ui.step("verifying (status, CORS preflight, probe)"):
        status = verify_chain(port, token, mode=mode)
    check_python(port, token, "this machine", runtime, status, ui)
    warning = gateway_warning(status)
    if warning:
        ui.info(warning)
    return {
        "url": colab_url(port, token),
        "host": None,
        "profile": opts.profile,
        "local_port": port,
        "remote_port": port,
        "remote_pid": runtime["pid"],
        "reattached": runtime.get("reattached", False),
        **container_record(runtime),
        "state_file": str(state.path_for("local", opts.profile)),
    }
