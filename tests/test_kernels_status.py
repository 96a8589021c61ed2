"""Kernels outlive disconnects, and the status endpoint says what is running."""

from __future__ import annotations

import json

import pytest
from conftest import COLAB_ORIGIN
from kernel_client import execute
from tornado.httpclient import HTTPClientError

#: Exercises the jupyter_server extension: also run at the lowest dependency versions.
pytestmark = pytest.mark.server


async def _start_kernel(jp_fetch) -> str:
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    return json.loads(r.body)["id"]


async def test_kernel_survives_websocket_disconnect(jp_fetch, jp_ws_fetch):
    """Close the browser's connection mid-session: variables are still there on reconnect."""
    kid = await _start_kernel(jp_fetch)
    try:
        ws = await jp_ws_fetch("api", "kernels", kid, "channels", headers={"Origin": COLAB_ORIGIN})
        assert await execute(ws, "x = 41; x") == "41"
        ws.close()  # the network went away
        ws = await jp_ws_fetch("api", "kernels", kid, "channels", headers={"Origin": COLAB_ORIGIN})
        assert await execute(ws, "x + 1") == "42"
        ws.close()
        r = await jp_fetch("api", "kernels", kid)
        assert json.loads(r.body)["id"] == kid
    finally:
        await jp_fetch("api", "kernels", kid, method="DELETE")


async def test_no_culling_by_default(jp_serverapp):
    """Idle kernels are kept unless the user configures culling."""
    assert jp_serverapp.kernel_manager.cull_idle_timeout == 0


async def test_status_reports_kernels_connections_and_resources(jp_fetch, jp_ws_fetch):
    """The status document lists each kernel with its state, connections and memory."""
    kid = await _start_kernel(jp_fetch)
    try:
        ws = await jp_ws_fetch("api", "kernels", kid, "channels")
        await execute(ws, "1")
        # jupyter_server's own iopub listener, which tracks the state, can join after the first
        # messages of a kernel that was slow to bind (seen with jupyter_client 7.4, the floor).
        await execute(ws, "2")
        status = json.loads((await jp_fetch("colabremote", "api", "status")).body)
        ws.close()
    finally:
        await jp_fetch("api", "kernels", kid, method="DELETE")
    from jupyter_colab_remote import __version__

    assert status["version"] == __version__
    assert status["uptime_seconds"] >= 0
    (kernel,) = status["kernels"]
    assert kernel["id"] == kid and kernel["name"] == "python3"
    assert kernel["execution_state"] in ("idle", "busy")
    assert kernel["connections"] == 1
    assert kernel["memory_bytes"] > 2**20
    assert kernel["last_activity"]
    assert status["connections"]["kernel_websockets"] == 1
    assert status["resources"]["memory"]["totalBytes"] > 0


async def test_status_needs_a_token(jp_fetch):
    """The status endpoint is authenticated."""
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("colabremote", "api", "status", headers={"Authorization": ""})
    assert e.value.code == 403


class TestCulling:
    """Culling options given as ColabRemoteApp traits."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config):
        """The production settings plus culling options."""
        return {
            **jp_server_config,
            "ColabRemoteApp": {
                **jp_server_config["ColabRemoteApp"],
                "cull_idle_timeout": 3600,
                "cull_interval": 60,
                "cull_busy": True,
            },
        }

    async def test_culling_options_are_forwarded(self, jp_serverapp):
        """`--ColabRemoteApp.cull_idle_timeout=3600` configures the kernel manager."""
        km = jp_serverapp.kernel_manager
        assert (km.cull_idle_timeout, km.cull_interval, km.cull_busy) == (3600, 60, True)
