"""The jupyter_server extension: `ColabRemoteApp`, and `jupyter colabremote serve`."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
import typing as t
from urllib.parse import urlsplit

import psutil
from jupyter_server.extension.application import ExtensionApp
from tornado.netutil import bind_sockets
from traitlets import Bool, Float, Integer, List, Unicode, default

from .. import __version__
from ..errors import StartError
from ..protocol.runtime_file import remove_runtime_file, write_runtime_file
from ..tokens import TokenError, TokenStore, default_token_file
from . import gateway, kernel_ports, kernel_ws, log_scrub, ports_api
from .colab_handlers import COLAB_HANDLERS
from .http_over_ws import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SOCKETS
from .identity import TokenStoreIdentityProvider
from .kernel_check import KERNEL_CHECK_HANDLERS
from .landing import LANDING_HANDLERS, LANDING_PATH, jupyterlab_loaded
from .origins import COLAB_ORIGIN_PATTERN, OriginPolicy, make_cors_transform
from .socket_guard import SocketGuard
from .status import StatusHandler
from .token_handlers import TOKEN_HANDLERS, live_forwards

#: Server settings that make a server acceptable to Colab. Applied by `serve` (as the
#: extension's serverapp_config) rather than by a global config file, so other Jupyter
#: servers in the same environment keep their own settings.
COLAB_SERVER_CONFIG: dict[str, t.Any] = {
    "identity_provider_class": TokenStoreIdentityProvider,
    "allow_origin_pat": COLAB_ORIGIN_PATTERN,
    "allow_credentials": True,
    "port_retries": 0,
    "open_browser": False,
    # GPU servers and Colab's own image commonly run as root; the runtime never opens a
    # browser, binds loopback only and requires a 256-bit token, so root is not refused.
    "allow_root": True,
}


def os_assigned_port(ip: str) -> int:
    """A port the OS hands out as free on `ip` now (what jupyter_server >= 2.20 does for
    --port=0; older versions listen on such a port but report port 0)."""
    sockets = bind_sockets(0, ip or None)
    try:
        return int(sockets[0].getsockname()[1])
    finally:
        for s in sockets:
            s.close()


def is_loopback(ip: str) -> bool:
    """True for localhost and loopback addresses, the only binds allowed by default."""
    if ip in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(ip.strip("[]")).is_loopback
    except ValueError:
        return False


def configured_token(serverapp: t.Any) -> bool:
    """Whether the user set a Jupyter token in config, on the command line or in the
    environment (the runtime ignores it; its value is never read here)."""
    config = serverapp.config
    return bool(
        config.get("IdentityProvider", {}).get("token")
        or config.get("ServerApp", {}).get("token")
        or os.environ.get("JUPYTER_TOKEN")
    )


class ColabRemoteApp(ExtensionApp):
    """Makes a Jupyter server a Google Colab local runtime: CORS, tokens, Colab endpoints."""

    name = "colabremote"
    description = "Serve this machine as a Google Colab local runtime."
    extension_url = LANDING_PATH

    @default("default_url")
    def _default_default_url(self) -> str:
        # Opening the runtime's URL in a browser lands in JupyterLab when it is there,
        # else on a page that explains the runtime (never on raw JSON).
        return "/lab" if jupyterlab_loaded(getattr(self, "serverapp", None)) else LANDING_PATH

    load_other_extensions = True
    serverapp_config = COLAB_SERVER_CONFIG

    token_file = Unicode(
        config=True,
        help="The token store (JSON, mode 0600, tokens kept hashed). "
        "Default: <jupyter data dir>/colabremote/tokens.json.",
    )

    @default("token_file")
    def _default_token_file(self) -> str:
        return str(default_token_file())

    profile = Unicode(
        "default",
        config=True,
        help="Name of this runtime, so one user can keep several (the companion re-attaches "
        "to the runtime of the profile it asks for).",
    )
    allowed_origin_pattern = Unicode(
        COLAB_ORIGIN_PATTERN,
        config=True,
        help="Regular expression (matched in full) for browser origins allowed to use the "
        "runtime. Requests carrying any other Origin are refused, even with a valid token.",
    )
    extra_allowed_origins = List(
        Unicode(),
        config=True,
        help="Further exact origins allowed besides the pattern, e.g. https://example.org.",
    )
    allow_remote_bind = Bool(
        False,
        config=True,
        help="Allow listening on a non-loopback address. Off by default: reach the runtime "
        "through an SSH forward instead.",
    )
    initial_token_name = Unicode(
        "default",
        config=True,
        help="Name of the token created (and shown once) when the store has no live token.",
    )
    nvidia_smi = Unicode(
        "nvidia-smi",
        config=True,
        help="The nvidia-smi executable queried for GPU figures (1 s deadline).",
    )
    disk_path_override = Unicode(
        "",
        config=True,
        help="The path whose disk is reported; default: the server's root directory.",
    )
    cull_idle_timeout = Integer(
        0,
        config=True,
        help="Shut down kernels idle for this many seconds. 0 (the default) keeps kernels "
        "running through any disconnect until they are shut down explicitly.",
    )
    cull_interval = Integer(300, config=True, help="Seconds between checks for idle kernels.")
    cull_connected = Bool(
        False, config=True, help="Also cull idle kernels that still have a connection."
    )
    cull_busy = Bool(False, config=True, help="Also cull busy kernels.")
    http_over_ws_idle_timeout = Float(
        DEFAULT_IDLE_TIMEOUT,
        config=True,
        help="Seconds an http-over-websocket response may wait for a client that reads "
        "nothing of it before it is aborted (an error frame) and its request slot freed.",
    )
    http_over_ws_max_sockets = Integer(
        DEFAULT_MAX_SOCKETS,
        config=True,
        help="http-over-websocket sockets (requests and proxied WebSockets) one token may "
        "hold open at once; further handshakes get HTTP 429. 0: no limit.",
    )

    def __init__(self, **kwargs: t.Any) -> None:
        super().__init__(**kwargs)
        self.started_at = time.time()
        self.http_over_ws_connections = 0
        self.colab_kernel_connections = 0
        #: Local ports that companions forward to this runtime, by client name.
        self.forwards: dict[str, dict[str, t.Any]] = {}
        self.token_store: TokenStore | None = None
        #: The allowed browser origins; None where Colab access is not enabled.
        self.origin_policy: OriginPolicy | None = None
        #: Closes WebSockets of revoked tokens; None where Colab access is not enabled.
        self.socket_guard: SocketGuard | None = None
        #: Bounds http-over-websocket requests in flight over all sockets (made on first use).
        self.http_over_ws_slots: asyncio.Semaphore | None = None
        #: Open http-over-websocket sockets by credential digest (the per-token cap).
        self.http_over_ws_sockets: dict[str, int] = {}
        #: The ports kernels listen on (ports_api), on a Colab runtime only.
        self.ports_state: ports_api.PortsState | None = None

    # -- set-up --------------------------------------------------------
    @property
    def is_runtime(self) -> bool:
        """True under `jupyter colabremote serve` (this extension started the server)."""
        return self.serverapp.starter_app is self

    def disk_path(self) -> str:
        """Where disk usage is measured."""
        return self.disk_path_override or self.serverapp.root_dir

    def colab_policy_active(self) -> bool:
        """True when this server authenticates with the token store (as under `serve`)."""
        return isinstance(self.serverapp.identity_provider, TokenStoreIdentityProvider)

    def initialize_settings(self) -> None:
        """Open the token store; on a Colab runtime also install the log scrubber, the origin
        policy, the kernel WebSocket connection class and the gateway set-up; configure culling.

        A server that merely loads the extension (a plain `jupyter lab`) gets the routes and
        nothing else: its kernel WebSockets, gateway functions and environment stay as they are.
        """
        self.token_store = TokenStore(self.token_file)
        active = self.colab_policy_active()
        if active:
            # Tornado's error logs print raw request URIs, token included: mask it everywhere.
            log_scrub.install(self.serverapp.log, self.log)
            kernel_ports.install(self)  # kernels that survive a port collision at start-up
            ports_api.install(self)  # the ports kernels listen on, for automatic forwards
            self.origin_policy = OriginPolicy(
                self.allowed_origin_pattern, list(self.extra_allowed_origins)
            )
            identity = self.serverapp.identity_provider
            identity.token_store, identity.origin_policy = self.token_store, self.origin_policy
            self.socket_guard = SocketGuard(self.token_store, self.log)
            identity.socket_guard = self.socket_guard
            self.serverapp.web_app.transforms.append(make_cors_transform(self.origin_policy))
            if configured_token(self.serverapp):
                self.log.warning(
                    "colabremote: the configured Jupyter token (IdentityProvider.token, "
                    "ServerApp.token or JUPYTER_TOKEN) is not used by this runtime: it accepts "
                    "only tokens of its store, which rotate and revoke without a restart. "
                    "Create one with: jupyter colabremote token new NAME"
                )
        else:
            self.log.info(
                "colabremote: Colab endpoints added; Colab access itself is enabled only "
                "under `jupyter colabremote serve`."
            )
        # Kernels on a Jupyter gateway (--GatewayClient.url): readable errors, fast relay.
        relay = gateway.install(self) if self.is_runtime else None
        if active or relay is not None:
            kernel_ws.install(self, relay)
        km = self.serverapp.kernel_manager
        if self.cull_idle_timeout > 0:
            km.cull_idle_timeout = self.cull_idle_timeout
            km.cull_interval = self.cull_interval
            km.cull_connected = self.cull_connected
            km.cull_busy = self.cull_busy

    def initialize_handlers(self) -> None:
        """Colab's endpoints, checked kernel starts, http-over-websocket, our token and status
        API and the landing page."""
        from .http_over_ws import HTTP_OVER_WS_HANDLERS

        self.handlers.extend(COLAB_HANDLERS)
        self.handlers.extend(KERNEL_CHECK_HANDLERS)
        self.handlers.extend(HTTP_OVER_WS_HANDLERS)
        self.handlers.extend(TOKEN_HANDLERS)
        self.handlers.extend(ports_api.PORTS_HANDLERS)
        self.handlers.append((r"/colabremote/api/status", StatusHandler))
        self.handlers.extend(LANDING_HANDLERS)

    # -- runtime -------------------------------------------------------
    def local_url(self) -> str:
        """The server's URL as reached on this host, without a token: its connection URL,
        naming a loopback bind `localhost` as Colab's dialog documents it."""
        sa = self.serverapp
        url = urlsplit(sa.connection_url)
        if sa.ip in ("", "localhost", "127.0.0.1", "::1"):
            url = url._replace(netloc=f"localhost:{sa.port}")
        return url.geturl()

    def colab_port(self) -> int:
        """The port Colab reaches: the newest companion forward, else the server's own."""
        forwards = live_forwards(self.forwards)
        if forwards:
            return int(list(forwards.values())[-1]["local_port"])
        return int(self.serverapp.port)

    def colab_url(self, token: str) -> str:
        """The URL to paste into Colab for a token."""
        return f"http://localhost:{self.colab_port()}{self.serverapp.base_url}?token={token}"

    def runtime_info(self) -> dict[str, t.Any]:
        """What the runtime file records (never a token)."""
        sa = self.serverapp
        return {
            "pid": os.getpid(),
            # With the uid, what proves later that this pid is still this runtime (runtime_file).
            "create_time": psutil.Process().create_time(),
            "uid": os.getuid(),
            "profile": self.profile,
            "version": __version__,
            "ip": sa.ip,
            "port": sa.port,
            "base_url": sa.base_url,
            "url": self.local_url(),
            "root_dir": sa.root_dir,
            "token_file": self.token_file,
            "started": self.started_at,
            "gateway_url": gateway.public_url(getattr(sa.gateway_config, "url", None)),
        }

    def ensure_token(self) -> str | None:
        """Create the first token if the store has no live one; return it (to show once)."""
        assert self.token_store is not None
        if any(not r.expired() for r in self.token_store.records()):
            return None
        name = self.initial_token_name
        if self.token_store.get(name) is not None:
            # Expired: a new token of that name, without the old expiry.
            self.token_store.revoke(name)
        return self.token_store.create(name)

    def announce(self) -> None:
        """Once listening under `serve`: print the URL, then write the runtime file."""
        token = self.ensure_token()
        url = self.local_url()
        # The URL goes to the terminal (stdout), never through the logger.
        if token:
            print(
                "\n  Paste this URL into Colab's 'Connect to a local runtime' dialog:\n\n"
                f"    {url}?token={token}\n\n"
                "  It is shown once; the token is stored only as a hash.\n",
                flush=True,
            )
        else:
            print(
                f"\n  Colab runtime at {url} (tokens in {self.token_file}).\n"
                "  For a URL with a fresh token: jupyter colabremote token rotate "
                f"{self.initial_token_name}\n",
                flush=True,
            )
        # Last: the runtime file says "ready", so the token and the URL must exist by then.
        write_runtime_file(self.runtime_info())

    async def stop_extension(self) -> None:
        """Record last-use times, stop the socket guard and port watcher, drop the runtime file."""
        if self.socket_guard is not None:
            self.socket_guard.stop()
        if self.ports_state is not None:
            self.ports_state.stop()
        if self.token_store is not None:
            try:
                self.token_store.flush_last_use()
            except (OSError, TokenError) as e:
                self.log.warning("colabremote: could not save token last-use times: %s", e)
        if self.is_runtime:
            remove_runtime_file()

    @classmethod
    def initialize_server(
        cls, argv: list[str] | None = None, load_other_extensions: bool = True, **kwargs: t.Any
    ) -> t.Any:
        """`jupyter colabremote serve` (through ExtensionApp.launch_instance): set up the
        server, refusing a non-loopback bind, and announce the runtime once it listens."""
        serverapp = super().initialize_server(argv, load_other_extensions, **kwargs)
        app = serverapp.starter_app
        # The extension's settings reach the web app only once initialize_settings succeeded.
        if serverapp.web_app.settings.get(cls.name) is not app:
            # jupyter_server logs and skips an extension that fails to load; a runtime
            # without its token store would refuse every request, so stop here instead.
            serverapp.http_server.stop()
            raise StartError("the colabremote extension failed to load (see the log above)")
        if not is_loopback(serverapp.ip) and not app.allow_remote_bind:
            serverapp.http_server.stop()
            raise StartError(
                f"refusing to listen on {serverapp.ip or 'all interfaces'}: Colab reaches the "
                "runtime through localhost (use an SSH forward), or pass "
                "--ColabRemoteApp.allow_remote_bind=True"
            )
        if serverapp.port == 0:
            # --port=0 (the companion's agent): choose the port before the server binds it,
            # so the printed URL and the runtime file name the port it listens on.
            serverapp.port = os_assigned_port(serverapp.ip)
        # The server binds its port in a callback queued on its IOLoop during initialize;
        # queued after it, `announce` runs once the server listens. (Not the extension start
        # hook: jupyter_server < 2.15 has none and would never announce the runtime.)
        serverapp.io_loop.add_callback(app.announce)
        return serverapp
