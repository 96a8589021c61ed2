"""Kernels outlive disconnects, and the status endpoint says what is running."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import pytest
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from jupyter_server.services.kernels.websocket import KernelWebsocketHandler
from tornado.httpclient import HTTPClientError
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from jupyter_colab_remote.protocol.gateway import GATEWAY_TOKEN_ENV
from tests.harness.kernel_client import execute
from tests.harness.runtime_api import COLAB_ORIGIN

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
        # jupyter_server's own iopub listener, which tracks the state, can join after the first
        # messages of a kernel that was slow to bind (seen with jupyter_client 7.4, the floor):
        # the state stays "starting" until the kernel's next activity. So: execute, then read
        # the status, a bounded number of times.
        for n in range(20):
            await execute(ws, str(n))
            status = json.loads((await jp_fetch("colabremote", "api", "status")).body)
            if status["kernels"] and status["kernels"][0]["execution_state"] != "starting":
                break
            await asyncio.sleep(0.25)
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


async def test_execute_round_trip_has_no_nagle_stall(jp_fetch, jp_ws_fetch):
    """The runtime's kernel WebSocket turns Nagle off: an execute round trip costs a few ms,
    not the ~40 ms a small reply would wait for the client's delayed ACK."""
    kid = await _start_kernel(jp_fetch)
    try:
        ws = await jp_ws_fetch("api", "kernels", kid, "channels", headers={"Origin": COLAB_ORIGIN})
        await execute(ws, "pass")
        samples = []
        for _ in range(30):
            t0 = time.perf_counter()
            await execute(ws, "pass")
            samples.append(time.perf_counter() - t0)
        ws.close()
    finally:
        await jp_fetch("api", "kernels", kid, method="DELETE")
    p50 = sorted(samples)[len(samples) // 2] * 1000
    assert p50 < 30, f"p50 {p50:.1f} ms: the 40 ms delayed-ACK stall is back"


@pytest.fixture
def fresh_gateway_client():
    """GatewayClient is a process-wide singleton: configure it anew for one server only."""
    GatewayClient.clear_instance()
    yield
    GatewayClient.clear_instance()


@pytest.mark.usefixtures("fresh_gateway_client")
class TestPlainServer:
    """A Jupyter server that merely loads the extension (a plain `jupyter lab`, not `serve`)
    keeps jupyter_server's own kernel WebSocket, gateway functions and environment."""

    @pytest.fixture(params=[False, True], ids=["local", "gateway"])
    def gateway_url(self, request):
        """No gateway, or one configured (never contacted here: only start-up is checked)."""
        return "http://127.0.0.1:9" if request.param else ""

    @pytest.fixture
    def jp_server_config(self, gateway_url, monkeypatch):
        """jupyter_server's defaults with the extension enabled, as installing it does."""
        monkeypatch.setenv(GATEWAY_TOKEN_ENV, "gateway-secret")
        return {
            "ServerApp": {"jpserver_extensions": {"jupyter_colab_remote": True}},
            "GatewayClient": {"url": gateway_url},
        }

    @pytest.fixture
    def jp_auth_header(self, jp_serverapp):
        """jupyter_server's own token (the colabremote store is not in use)."""
        return {"Authorization": f"token {jp_serverapp.identity_provider.token}"}

    async def test_jupyter_server_keeps_its_own_kernel_websocket_and_gateway(
        self, jp_serverapp, jp_fetch, jp_base_url, gateway_url
    ):
        from jupyter_server.gateway import gateway_client, managers

        stock = GatewayWebSocketConnection if gateway_url else ZMQChannelsWebsocketConnection
        assert jp_serverapp.kernel_websocket_connection_class is stock
        assert jp_serverapp.web_app.settings["kernel_websocket_connection_class"] is stock
        uri = f"{jp_base_url}api/kernels/{uuid.uuid4()}/channels"
        request = HTTPServerRequest(
            start_line=RequestStartLine("GET", uri, "HTTP/1.1"),
            headers=HTTPHeaders({"Host": "127.0.0.1"}),
        )
        route = jp_serverapp.web_app.find_handler(request)
        assert route.handler_class is KernelWebsocketHandler
        assert managers.gateway_request is gateway_client.gateway_request
        assert os.environ[GATEWAY_TOKEN_ENV] == "gateway-secret"
        assert jp_serverapp.gateway_config.gateway_enabled is bool(gateway_url)
        # Its own routes are there, and say this server is no Colab runtime.
        status = json.loads((await jp_fetch("colabremote", "api", "status")).body)
        assert status["runtime"] is False
