"""The kernel WebSocket with Nagle's algorithm turned off, counting Colab's connections.

Done through jupyter_server's own extension point, the kernel WebSocket connection class
(`ServerApp.kernel_websocket_connection_class`): the route and its handler stay jupyter_server's.
"""

from __future__ import annotations

import typing as t

from jupyter_server.services.kernels.connection.base import BaseKernelWebsocketConnection

if t.TYPE_CHECKING:
    from .app import ColabRemoteApp


class ColabClientConnection:
    """Mixin for a kernel WebSocket connection class: TCP_NODELAY on the client's socket, and
    Colab's connections counted for the status API.

    Stock jupyter_server leaves Nagle on, so each small execute_reply waits for the client's
    delayed ACK: ~48 ms per execute round trip instead of ~5 ms.
    """

    #: The extension whose counter this class keeps (bound by `connection_class`).
    extension_app: ColabRemoteApp
    websocket_handler: t.Any
    _counted = False

    def _is_colab(self) -> bool:
        policy = self.extension_app.origin_policy
        origin = self.websocket_handler.request.headers.get("Origin")
        return bool(policy and origin and policy.allows_cross_origin(origin))

    def connect(self) -> t.Any:
        """Turn off Nagle (the handshake is done), count a Colab client, connect as usual."""
        self.websocket_handler.set_nodelay(True)
        if self._is_colab():
            self.extension_app.colab_kernel_connections += 1
            self._counted = True
        return super().connect()  # type: ignore[misc]

    def disconnect(self) -> t.Any:
        """Count the connection out (once), then disconnect as usual."""
        if self._counted:
            self.extension_app.colab_kernel_connections -= 1
            self._counted = False
        return super().disconnect()  # type: ignore[misc]


def connection_class(
    base: type[BaseKernelWebsocketConnection], app: ColabRemoteApp
) -> type[BaseKernelWebsocketConnection]:
    """`base` with ColabClientConnection mixed in, counting into `app`."""
    return type(f"Colab{base.__name__}", (ColabClientConnection, base), {"extension_app": app})


def install(app: ColabRemoteApp, base: type[BaseKernelWebsocketConnection] | None = None) -> None:
    """Make the server's kernel WebSockets ColabClientConnections (from initialize_settings).

    `base`: the class to extend (the gateway relay's own subclass), else the configured one.
    """
    configured = app.serverapp.kernel_websocket_connection_class
    cls = connection_class(base or configured, app)
    app.serverapp.kernel_websocket_connection_class = cls  # what ServerApp closes at shutdown
    # The web app's settings were built from the trait already; the extension's settings are
    # merged into them after initialize_settings.
    app.settings["kernel_websocket_connection_class"] = cls
