"""A kernel whose port was taken before it could bind it comes up after a restart on new ports
(stock jupyter_client 8 restarts it on the same ports, five times, then gives it up)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
import uuid

import pytest
from jupyter_client.connect import LocalPortCache
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
from tornado.websocket import websocket_connect

from jupyter_colab_remote.extension.kernel_ports import PORT_NAMES, ColabKernelManager
from tests.harness.kernel_client import execute, execute_request
from tests.harness.runtime import run_runtime
from tests.harness.runtime_api import rest, wait_for, ws_request

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


#: A kernel whose launch finds its stdin port taken, for as long as it is given that port (a
#: lasting thief, as an outgoing connection that got the port would be). The taken port is
#: held open on an inherited socket by the exec'ed ipykernel itself, so there is no process
#: to clean up: the kernel fails its bind and exits, and the port is free again.
THIEF_LAUNCHER = """
import json, os, socket, sys
connection_file, marker = sys.argv[1], sys.argv[2]
info = json.load(open(connection_file))
taken = int(open(marker).read()) if os.path.exists(marker) else info["stdin_port"]
with open(marker, "a") as f:
    if not f.tell():
        f.write(str(taken))
if taken in [v for k, v in info.items() if k.endswith("_port")]:
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind((info["ip"], taken))
    held.listen(1)
    held.set_inheritable(True)
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", connection_file])
"""


def test_rescued_kernel_is_usable_through_serve(tmp_path):
    """Through a real `serve`, as Colab does it: start a kernel whose stdin port is taken and
    connect its WebSocket at once. The kernel is restarted on new ports; the server must
    follow it there: the execute is answered, REST shows it idle, connections are counted.
    (Without following, the socket gets no reply, the state stays 'starting'.)"""
    marker = tmp_path / "taken-port"
    launcher = tmp_path / "thief_launcher.py"
    launcher.write_text(THIEF_LAUNCHER)
    spec_dir = tmp_path / "data" / "kernels" / "thief"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, str(launcher), "{connection_file}", str(marker)],
        "display_name": "Python (stdin port taken)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with run_runtime(tmp_path) as rt:
        code, _, kernel = rest(rt, "POST", "/api/kernels", {"name": "thief"})
        assert code == 201, kernel
        kid = kernel["id"]

        async def run_twice() -> tuple[list[str], float, dict]:
            t0 = time.monotonic()
            ws = await websocket_connect(ws_request(rt, kid))  # before the rescue, as Colab
            try:
                first = await execute(ws, "6 * 7", timeout=40)
                took = time.monotonic() - t0
                _, _, model = await asyncio.to_thread(rest, rt, "GET", f"/api/kernels/{kid}")
            finally:
                ws.close()
            ws = await websocket_connect(ws_request(rt, kid))  # and one after it
            try:
                second = await execute(ws, "print('again')", timeout=20)
            finally:
                ws.close()
            return [first, second], took, model

        outputs, took, model = asyncio.run(run_twice())
        print(f"first execute answered {took:.1f} s after the kernel start")
        assert outputs == ["42", "again\n"]
        assert model["connections"] == 1
        assert "restarting kernel (1/5), new random ports" in rt.log()
        assert marker.exists()

        def state() -> dict:
            return rest(rt, "GET", f"/api/kernels/{kid}")[2]

        wait_for(
            lambda: (m := state())["execution_state"] == "idle" and m["connections"] == 0,
            deadline=15,
            what="the kernel idle with no connection",
        )


def test_open_websocket_follows_a_restart_on_new_ports(tmp_path):
    """A kernel that dies within its first seconds is restarted on new ports (the restarter
    asks for new ones during start-up, and ColabKernelManager really gives them): a kernel
    WebSocket open meanwhile must keep working without reconnecting, as it does after a
    stock restart on the same ports."""
    # New ports are asked for while the kernel is in its first 10 s: widened, so that a slow
    # machine still crashes the kernel within them.
    with run_runtime(tmp_path, ["--KernelRestarter.stable_start_time=60"]) as rt:
        code, _, kernel = rest(rt, "POST", "/api/kernels", {"name": "python3"})
        assert code == 201, kernel
        kid = kernel["id"]

        connection_file = rt.runtime_dir / f"kernel-{kid}.json"

        def kernel_ports() -> list[int]:
            info = json.loads(connection_file.read_text())
            return [info[name] for name in PORT_NAMES]

        async def crash_then_run() -> str:
            ws = await websocket_connect(ws_request(rt, kid))
            try:
                assert await execute(ws, "6 * 7", timeout=30) == "42"
                before = kernel_ports()
                await ws.write_message(
                    json.dumps(execute_request("import os; os._exit(1)", uuid.uuid4().hex))
                )
                await asyncio.to_thread(
                    wait_for,
                    lambda: "new random ports" in rt.log(),
                    20,
                    "a restart on new ports",
                )
                output = await execute(ws, "print('same socket')", timeout=30)
                assert set(kernel_ports()).isdisjoint(before)
                return output
            finally:
                ws.close()

        assert asyncio.run(crash_then_run()) == "same socket\n"
        wait_for(
            lambda: rest(rt, "GET", f"/api/kernels/{kid}")[2]["execution_state"] == "idle",
            deadline=15,
            what="the kernel idle",
        )
