"""`GET /colabremote/api/status`: what the runtime is doing, for the companion and the panel."""

from __future__ import annotations

import json
import os
import time
import typing as t

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import __version__
from . import gateway as gateway_mod
from .kernel_check import availability
from .kernel_record import kernel_record
from .ports_api import status_ports
from .resources import kernel_memory, resource_stats
from .token_handlers import ColabRemoteAPIHandler, live_forwards


def kernel_records(kernel_manager: t.Any) -> list[dict[str, t.Any]]:
    """One record per kernel: id, name, state, last activity, connections, memory."""
    memory = kernel_memory(kernel_manager)
    records = []
    for kernel_id in kernel_manager.list_kernel_ids():
        try:
            model = kernel_manager.kernel_model(kernel_id)
        except KeyError:  # shut down while we were listing
            continue
        records.append(kernel_record({**model, "id": kernel_id}, memory.get(kernel_id)))
    return records


class StatusHandler(ColabRemoteAPIHandler):
    """The runtime's status document."""

    async def kernels_available(self, gateway: dict[str, t.Any] | None) -> dict[str, t.Any]:
        """Whether a Python kernel can start; with a gateway, as far as it is reachable."""
        default = self.kernel_manager.default_kernel_name
        if gateway is not None and not gateway["reachable"]:
            advice = f"the kernel gateway is unreachable: {gateway['error']}"
            return {"python": None, "kernelspecs": [], "default": default, "advice": advice}
        return await availability(self.kernel_spec_manager, default, local=gateway is None)

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Return version, uptime, kernels, open connections and resources."""
        app = self.app
        # With kernels on a gateway: its reachability, and the kernels as it reports them.
        gateway = await gateway_mod.status(self.serverapp)
        kernels = gateway.pop("kernels") if gateway else kernel_records(self.kernel_manager)
        km = self.kernel_manager
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "version": __version__,
                    # False on a Jupyter server that merely loads the extension (plain
                    # `jupyter lab`): Colab cannot use it, and the panel says so.
                    "runtime": app.is_runtime,
                    "started": app.started_at,
                    "uptime_seconds": round(time.time() - app.started_at, 3),
                    "pid": os.getpid(),
                    "kernels": kernels,
                    "kernels_available": await self.kernels_available(gateway),
                    "gateway": gateway,
                    "colab_port": app.colab_port(),
                    "forwards": live_forwards(app.forwards),
                    "ports": status_ports(app),
                    "connections": {
                        "colab_kernel_websockets": app.colab_kernel_connections,
                        "kernel_websockets": sum(k["connections"] for k in kernels),
                        "http_over_websocket": app.http_over_ws_connections,
                    },
                    "resources": await resource_stats(km, app.disk_path(), app.nvidia_smi),
                },
                default=str,
            )
        )
