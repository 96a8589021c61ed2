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

jupyter_server, which never sees ports change under a kernel, keeps talking to the old ones
(the kernel stays "starting", kernel WebSockets get no kernel_info reply and close after
60 s), so once the kernel runs on its new ports the server is moved there too: its activity
watcher, a kernel_info request still waiting on the old ports, and the open WebSockets'
channels.
"""

from __future__ import annotations

import typing as t
from asyncio import Future

from jupyter_client.connect import LocalPortCache
from jupyter_client.provisioning import LocalProvisioner
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
STOCK_CLASS = "jupyter_server.services.kernels.kernelmanager.ServerKernelManager"
OUR_CLASS = f"{__name__}.ColabKernelManager"


class ColabKernelManager(ServerKernelManager):
    """jupyter_server's kernel manager, choosing really new ports when a kernel that died
    during start-up is restarted, and moving the server's connections to them."""

    def cleanup_random_ports(self) -> None:
        """Forget the ports (called on a restart with newports=True: the restarter asks for
        it when a kernel dies in its first seconds), including those the port cache handed
        out."""
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

    async def restart_kernel(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Restart as usual; if the kernel came back on other ports, move the server there."""
        before = self.ports
        # Messages clients send meanwhile would go to the old ports: hold them (only where
        # new ports are asked for; a stock restart keeps them, and the messages queue).
        held = [HeldMessages(c) for c in open_connections(self)] if kwargs.get("newports") else []
        moved = False
        try:
            await super().restart_kernel(*args, **kwargs)
            moved = self.ports != before
        finally:
            if moved:
                self.log.info("Kernel restarted on new ports %s (were %s)", self.ports, before)
                follow_new_ports(self, held)
            else:
                for messages in held:
                    messages.release()


def kernel_id_of(km: ServerKernelManager) -> str | None:
    """The id under which the server's MappingKernelManager (km's parent) holds `km`."""
    mkm = km.parent
    if mkm is None or not hasattr(mkm, "list_kernel_ids"):
        return None
    return next((k for k in mkm.list_kernel_ids() if mkm.get_kernel(k) is km), None)


def open_connections(km: ServerKernelManager) -> list[ZMQChannelsWebsocketConnection]:
    """The open kernel WebSockets (ZMQ channel connections) of `km`'s kernel."""
    return [c for c in ZMQChannelsWebsocketConnection._open_sockets if c.kernel_manager is km]


class HeldMessages:
    """A kernel WebSocket's incoming messages, kept back from its channels until released.

    As while the socket opens (tornado calls on_message only once open() has returned):
    a message sent before the channels are connected would be lost, or its reply would be.
    """

    def __init__(self, connection: ZMQChannelsWebsocketConnection) -> None:
        self.connection = connection
        self.messages: list[t.Any] = []
        connection.handle_incoming_message = self.messages.append  # type: ignore[method-assign]

    def release(self) -> None:
        """Hand the held messages to the connection's channels, and later ones directly."""
        vars(self.connection).pop("handle_incoming_message", None)  # the class's own again
        for message in self.messages:
            self.connection.handle_incoming_message(message)
        self.messages = []


def follow_new_ports(km: ServerKernelManager, held: list[HeldMessages]) -> None:
    """Point what jupyter_server keeps connected to a kernel at its current ports; `held`:
    the open WebSockets' messages, released once their new channels are connected."""
    kernel_id = kernel_id_of(km)
    if kernel_id is not None:
        mkm = t.cast(t.Any, km.parent)
        # The activity watcher (execution_state, last_activity): a kernel not yet watched
        # gets one on its current ports when its start completes.
        stream = getattr(km, "_activity_stream", None)
        if stream is not None:
            if not stream.closed():
                stream.close()
            km._activity_stream = None  # type: ignore[attr-defined]
            km.execution_state = "starting"  # a new process; its first status makes it idle
            mkm.start_watching_activity(kernel_id)
    # A kernel_info request sent to the old ports, which kernel WebSockets still opening wait
    # for (they would give up after kernel_info_timeout, 60 s): let them go on, assuming the
    # current protocol as jupyter_server does on that timeout; the next one asks anew.
    pending: Future[t.Any] | None = getattr(km, "_kernel_info_future", None)
    if pending is not None:
        del km._kernel_info_future  # type: ignore[attr-defined]
        if not pending.done():
            pending.set_result({})
    # Kernel WebSockets already open: new channels, connected as jupyter_server's connect()
    # does (nudged until the kernel answers, then relayed to the client).
    for messages in held:
        reconnect_channels(messages)


def reconnect_channels(held: HeldMessages) -> None:
    """Replace a kernel WebSocket's ZMQ channels by ones on the kernel's current ports; its
    held messages go to them once the nudge has seen IOPub connected."""
    connection = held.connection
    if connection not in ZMQChannelsWebsocketConnection._open_sockets:
        # Closed meanwhile; its channels, if buffered for a reconnect, are replaced then
        # (jupyter_server's connect() checks ports_changed).
        held.release()
        return
    for stream in connection.channels.values():
        if not stream.closed():
            stream.close()
    connection.create_stream()

    def relay(_: t.Any) -> None:
        for stream in connection.channels.values():
            if not stream.closed():
                stream.on_recv_stream(connection.handle_outgoing_message)
        held.release()

    connection.nudge().add_done_callback(relay)


def install(app: t.Any) -> None:
    """Use ColabKernelManager for local kernels, unless another class was configured."""
    km = app.serverapp.kernel_manager
    if getattr(km, "kernel_manager_class", None) == STOCK_CLASS:
        km.kernel_manager_class = OUR_CLASS
