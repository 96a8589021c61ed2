"""A kernel whose port was taken before it could bind it comes up after a restart on new ports
(stock jupyter_client 8 restarts it on the same ports, five times, then gives it up)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from jupyter_client.connect import LocalPortCache
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

from jupyter_colab_remote.extension.kernel_ports import PORT_NAMES, ColabKernelManager

# server: also run at the lowest dependency versions (tests/run.sh).
pytestmark = [pytest.mark.timeout(120), pytest.mark.server]


def ports(km) -> dict[str, int]:
    return {name: getattr(km, name) for name in PORT_NAMES}


async def start_with_stolen_port(cls, tmp_path) -> tuple[object, socket.socket, dict[str, int]]:
    """Start a kernel, then play the race: kill it, let another socket take its stdin port
    (as an outgoing connection's ephemeral port would), and restart as the restarter does
    for a kernel that died during start-up."""
    km = cls(kernel_name="python3", connection_file=str(tmp_path / "kernel.json"))
    await km.start_kernel()
    first = ports(km)
    await km.shutdown_kernel(now=True, restart=True)
    thief = socket.socket()
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    thief.bind(("127.0.0.1", first["stdin_port"]))
    thief.listen(1)
    # restart_kernel shuts down (already done: a no-op) and starts again.
    await km.restart_kernel(now=True, newports=True)
    return km, thief, first


async def alive_after(km, seconds: float = 4.0) -> bool:
    """The kernel process still runs after `seconds` (a bind failure kills it in ~1 s)."""
    await asyncio.sleep(seconds)
    return await km.is_alive()


async def dies_within(km, seconds: float = 30.0) -> bool:
    """The kernel process exits within `seconds` (polled: an older, slower-starting ipykernel
    under load takes several seconds to fail its bind, and the restarter starts it again)."""
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        if not await km.is_alive():
            return True
        await asyncio.sleep(0.05)
    return False


def test_restart_with_newports_really_chooses_new_ports(tmp_path):
    async def go():
        km, thief, first = await start_with_stolen_port(ColabKernelManager, tmp_path)
        try:
            second = ports(km)
            assert all(second.values()) and second["stdin_port"] != first["stdin_port"]
            assert set(second.values()).isdisjoint(first.values())
            assert await alive_after(km)
            client = km.client()
            client.start_channels()
            try:
                reply = await client.kernel_info(reply=True, timeout=30)
                assert reply["content"]["status"] == "ok"
            finally:
                client.stop_channels()
            # The old ports went back to the cache; the new ones are held.
            cache = LocalPortCache.instance().currently_used_ports
            assert set(second.values()) <= cache and not set(first.values()) & cache
        finally:
            thief.close()
            with contextlib.suppress(Exception):
                await km.shutdown_kernel(now=True)

    asyncio.run(go())


def test_stock_kernel_manager_keeps_the_taken_port(tmp_path):
    """What ColabKernelManager fixes (if jupyter_client fixes it, this test says so)."""

    async def go():
        km, thief, first = await start_with_stolen_port(ServerKernelManager, tmp_path)
        try:
            assert ports(km) == first
            assert await dies_within(km)  # Address already in use
        finally:
            thief.close()
            with contextlib.suppress(Exception):
                await km.shutdown_kernel(now=True)

    asyncio.run(go())


def test_runtime_uses_it_for_local_kernels(jp_serverapp, colab_app):
    """Under the runtime's settings (the conftest's serve-like config)."""
    km = jp_serverapp.kernel_manager
    expected = "jupyter_colab_remote.extension.kernel_ports.ColabKernelManager"
    assert km.kernel_manager_class == expected
