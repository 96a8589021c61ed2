"""Kernels that survive a port collision at start-up (many kernels starting at once).

jupyter_client picks a kernel's five TCP ports by binding port 0 and closing the socket; the
kernel binds them a moment later. Ports come from the ephemeral range, so an outgoing
connection made meanwhile (the server's own ZMQ connections to other kernels, sshd's
forwarded channels) can take one first: the kernel dies with "Address already in use". The
restarter then restarts it "with new random ports", but jupyter_client (8.x) keeps the ports
its LocalPortCache handed out (the provisioner is reused with `ports_cached` set), so all five
restarts hit the same taken port and the kernel is declared dead. Measured here: about one
kernel in a hundred when 50 start through a companion tunnel.

ColabKernelManager makes "new random ports" mean new ports: on such a restart it hands the
old ports back and lets the provisioner choose new ones, and writes a new connection file.
"""

from __future__ import annotations

import typing as t

from jupyter_client.connect import LocalPortCache
from jupyter_client.provisioning import LocalProvisioner
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
STOCK_CLASS = "jupyter_server.services.kernels.kernelmanager.ServerKernelManager"
OUR_CLASS = f"{__name__}.ColabKernelManager"


class ColabKernelManager(ServerKernelManager):
    """jupyter_server's kernel manager, choosing really new ports when a kernel that died
    during start-up is restarted."""

    def cleanup_random_ports(self) -> None:
        """Forget the ports (called on a restart with newports=True, i.e. before the kernel
        has ever come up), including those the port cache handed out."""
        super().cleanup_random_ports()
        provisioner = self.provisioner
        if not isinstance(provisioner, LocalProvisioner) or not provisioner.ports_cached:
            return
        cache = LocalPortCache.instance()
        for name in PORT_NAMES:
            port = getattr(self, name)
            if port:
                cache.return_port(port)
            setattr(self, name, 0)
        provisioner.ports_cached = False
        self.cleanup_connection_file()  # the next start writes one with the new ports


def install(app: t.Any) -> None:
    """Use ColabKernelManager for local kernels, unless another class was configured."""
    km = app.serverapp.kernel_manager
    if getattr(km, "kernel_manager_class", None) == STOCK_CLASS:
        km.kernel_manager_class = OUR_CLASS
