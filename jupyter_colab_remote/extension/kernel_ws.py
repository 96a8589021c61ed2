"""The kernel WebSocket with Nagle's algorithm turned off, counting Colab's connections."""

from __future__ import annotations

from jupyter_server.services.kernels.handlers import _kernel_id_regex
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler

from .origins import OriginPolicy


class NoDelayKernelWebsocketHandler(KernelWebsocketHandler):
    """jupyter_server's kernel WebSocket, with TCP_NODELAY set on open.

    Stock jupyter_server leaves Nagle on, so each small execute_reply waits for the
    client's delayed ACK: ~48 ms per execute round trip instead of ~5 ms.
    """

    _counted = False

    def _is_colab(self) -> bool:
        policy: OriginPolicy | None = self.settings.get("colabremote_origin_policy")
        origin = self.request.headers.get("Origin")
        return bool(policy and origin and policy.allows_cross_origin(origin))

    async def open(self, kernel_id: str) -> None:  # type: ignore[override]
        """Turn off Nagle, then connect as usual."""
        self.set_nodelay(True)
        app = self.settings.get("colabremote")
        if app is not None and self._is_colab():
            app.colab_kernel_connections += 1
            self._counted = True
        await super().open(kernel_id)

    def on_close(self) -> None:
        """Count the connection out, then close as usual."""
        if self._counted:
            self.settings["colabremote"].colab_kernel_connections -= 1
            self._counted = False
        super().on_close()


KERNEL_WS_HANDLERS = [
    (rf"/api/kernels/{_kernel_id_regex}/channels", NoDelayKernelWebsocketHandler),
]
