"""Kernels on a Jupyter Kernel Gateway or Enterprise Gateway, behind the Colab runtime.

With `--GatewayClient.url=URL` jupyter_server itself delegates kernels and kernelspecs to the
gateway (GatewayMappingKernelManager, GatewayKernelSpecManager, GatewayWebSocketConnection).
The gateway's token comes from the environment (JUPYTER_GATEWAY_AUTH_TOKEN, which the remote
agent sets from its stdin request), never from a command line. This module adds what a Colab
runtime needs on top of that:

- readable errors: when the gateway is down, `/api/kernels` and friends answer a JSON error
  naming the gateway and the cause (connection refused, timeout, token refused), not
  jupyter_server's unformatted "url '%s'" message, a 599 or an "Unhandled error" 500;
- the status document's `gateway` entry (a bounded probe: reachable or not, and why) and its
  kernels, as the gateway reports them (no local pid, so no memory figure);
- a kernel WebSocket relay without the 40 ms trap: the gateway's kernel WebSocket leaves Nagle
  on (stock jupyter_server handlers), so each small message it writes after the first of a
  reply waits for our delayed ACK. Acknowledging at once (TCP_QUICKACK after every message)
  cuts an execute round trip through the gateway from ~50 ms to ~9 ms;
- a client WebSocket that is closed (1011) once jupyter_server gives up reconnecting to the
  gateway, so Colab reconnects instead of waiting forever on a silent socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import time
import typing as t

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ..protocol.gateway import GATEWAY_TOKEN_ENV, public_url
from .kernel_record import kernel_record

#: How long the status endpoint waits for the gateway before calling it unreachable.
PROBE_TIMEOUT = 3.0
#: Reason phrase of the errors answered while the gateway cannot be used.
UNREACHABLE = "Kernel gateway unreachable"
#: Close code sent to a kernel WebSocket client once the gateway connection is given up.
WS_GIVE_UP_CODE = 1011


def gateway_client(serverapp: t.Any = None) -> t.Any:
    """jupyter_server's GatewayClient when kernels are on a gateway, else None."""
    gc = getattr(serverapp, "gateway_config", None) if serverapp is not None else None
    if gc is None:
        from jupyter_server.gateway.gateway_client import GatewayClient

        if not GatewayClient.initialized():
            return None
        gc = GatewayClient.instance()
    return gc if gc.gateway_enabled else None


# -- errors ------------------------------------------------------------------------------------
def _gateway_message(response: t.Any) -> str:
    """The gateway's own error text from a response body (JSON message/reason), shortened."""
    if response is None or not response.body:
        return ""
    body = response.body
    try:
        doc = json.loads(body)
        text = str(doc.get("message") or doc.get("reason") or "") if isinstance(doc, dict) else ""
    except ValueError:
        text = body.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:300]


def describe(error: BaseException) -> tuple[int, str]:
    """(status for our clients, readable cause) of a failed request to the gateway."""
    if isinstance(error, HTTPClientError):
        if error.code == 599:  # no HTTP answer: timeout or connection closed
            return 504, f"no answer from the gateway ({error.message})"
        detail = _gateway_message(error.response)
        said = f"the gateway answered HTTP {error.code} {error.message}"
        # Enterprise Gateway repeats its message as the reason phrase (spacing aside).
        if detail and detail != " ".join(str(error.message).split()):
            said += f": {detail}"
        if error.code == 401:
            return 502, f"{said} (check the gateway token, {GATEWAY_TOKEN_ENV})"
        if error.code == 403:
            return 502, (
                f"{said} (a wrong token, or kernel listing disabled on the gateway: "
                "KG_LIST_KERNELS=True / EG_LIST_KERNELS=True)"
            )
        return error.code, said
    if isinstance(error, ConnectionRefusedError):
        return 503, "connection refused (is the gateway running?)"
    if isinstance(error, socket.gaierror):
        return 503, f"cannot resolve the gateway's host name ({error.strerror or error})"
    if isinstance(error, ssl.SSLError):
        return 502, f"TLS error talking to the gateway ({error.reason or error})"
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return 504, "no answer from the gateway in time"
    if isinstance(error, OSError):
        return 503, f"cannot connect to the gateway ({error.strerror or error})"
    return 502, f"{type(error).__name__}: {error}"


def readable_http_error(error: BaseException, url: str | None) -> web.HTTPError:
    """A web.HTTPError whose JSON body says which gateway failed and why (no format args)."""
    status, why = describe(error)
    if status == 404:
        # Kept as is: jupyter_server maps the gateway's 404 to "no such kernel / kernelspec".
        message = f"Not found on the kernel gateway {public_url(url)}: {why}"
        return web.HTTPError(404, message.replace("%", "pct"))
    reason = UNREACHABLE if status in (502, 503, 504) else None
    # No format arguments: jupyter_server's JSON error shows log_message verbatim, while
    # tornado's log line applies `%` formatting to it, so no `%` may remain either.
    message = f"Kernel gateway {public_url(url)}: {why}".replace("%", "pct")
    return web.HTTPError(status, message, reason=reason)


def _wrap_gateway_request(original: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    async def gateway_request(endpoint: str, **kwargs: t.Any) -> t.Any:
        """jupyter_server's gateway_request, with errors our clients can read."""
        from jupyter_server.gateway.gateway_client import GatewayClient

        url = GatewayClient.instance().url
        try:
            return await original(endpoint, **kwargs)
        except web.HTTPError as e:
            cause = e.__cause__
            if cause is None:
                raise
            raise readable_http_error(cause, url) from cause
        except Exception as e:  # re-raised raw by jupyter_server: would be a bare 500
            raise readable_http_error(e, url) from e

    gateway_request.colabremote_wrapped = True  # type: ignore[attr-defined]
    return gateway_request


def install_readable_errors() -> None:
    """Route the gateway managers' requests through the readable-error wrapper (once)."""
    from jupyter_server.gateway import managers

    if not getattr(managers.gateway_request, "colabremote_wrapped", False):
        managers.gateway_request = _wrap_gateway_request(managers.gateway_request)


# -- the kernel WebSocket relay ----------------------------------------------------------------
def _connection_class() -> type:
    from jupyter_server.gateway.connections import GatewayWebSocketConnection
    from jupyter_server.gateway.gateway_client import GatewayClient

    class ColabGatewayWebSocketConnection(GatewayWebSocketConnection):
        """The gateway relay, acknowledging the gateway's messages at once (no 40 ms stalls)
        and closing the client's WebSocket when the gateway stays unreachable."""

        def _gateway_socket(self) -> socket.socket | None:
            ws = self.ws
            stream = getattr(getattr(ws, "protocol", None), "stream", None)
            return getattr(stream, "socket", None)

        def _quickack(self) -> None:
            sock = self._gateway_socket()
            if sock is not None:
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

        def _connection_done(self, fut: t.Any) -> None:
            super()._connection_done(fut)
            sock = self._gateway_socket() if self.ws is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._quickack()

        def handle_outgoing_message(self, incoming_msg: str, *args: t.Any) -> None:
            # Linux drops back to delayed ACKs by itself: re-arm before the next segment.
            self._quickack()
            super().handle_outgoing_message(incoming_msg, *args)

        async def _read_messages(self) -> None:
            # The retry count only changes between connection attempts, so this tells whether
            # jupyter_server will try again once this attempt's read loop ends.
            exhausted = self.retry >= GatewayClient.instance().gateway_retry_max
            await super()._read_messages()
            if exhausted and not self.disconnected:
                self.log.warning(
                    "colabremote: kernel %s: gateway %s unreachable after %d attempts; "
                    "closing the client's WebSocket so it reconnects",
                    self.kernel_id,
                    public_url(GatewayClient.instance().url),
                    self.retry,
                )
                with contextlib.suppress(Exception):
                    self.websocket_handler.close(WS_GIVE_UP_CODE, UNREACHABLE)

    return ColabGatewayWebSocketConnection


def install(app: t.Any) -> type | None:
    """Set up a runtime whose kernels are on a gateway (under `serve` only: it patches
    jupyter_server's gateway_request and edits this process's environment).

    Returns the relay connection class to use, or None (no gateway, or another class
    configured)."""
    gc = gateway_client(app.serverapp)
    if gc is None:
        return None
    # Read the token into the client now, then drop it from the environment, so that
    # processes this server starts (terminals) do not inherit it.
    _ = gc.auth_token
    os.environ.pop(GATEWAY_TOKEN_ENV, None)
    install_readable_errors()
    app.log.info(
        "colabremote: kernels run on the gateway %s (token %s)",
        public_url(gc.url),
        "set" if gc.auth_token else "not set",
    )
    from jupyter_server.gateway.connections import GatewayWebSocketConnection

    if app.serverapp.kernel_websocket_connection_class is GatewayWebSocketConnection:
        return _connection_class()
    return None


# -- status ------------------------------------------------------------------------------------
async def probe(gc: t.Any, timeout: float = PROBE_TIMEOUT) -> dict[str, t.Any]:
    """One authenticated GET of the gateway's kernelspecs, bounded by `timeout`."""
    from jupyter_server.utils import url_path_join

    url = url_path_join(gc.url, gc.kernelspecs_endpoint)
    kwargs = gc.load_connection_args(method="GET")
    kwargs.update(connect_timeout=timeout, request_timeout=timeout)
    start = time.perf_counter()
    result: dict[str, t.Any] = {"url": public_url(gc.url), "reachable": False, "error": None}
    try:
        await asyncio.wait_for(AsyncHTTPClient().fetch(url, **kwargs), timeout + 1)
    except Exception as e:
        result["error"] = describe(e)[1]
    else:
        result["reachable"] = True
    result["latency_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return result


async def status(serverapp: t.Any) -> dict[str, t.Any] | None:
    """The status document's `gateway` entry, with the kernels under "kernels"; None without
    a gateway. While the gateway is unreachable the kernels are the last known ones, in
    execution state "unknown"."""
    gc = gateway_client(serverapp)
    if gc is None:
        return None
    km = serverapp.kernel_manager
    result = await probe(gc)
    result["kernels_error"] = None
    models: list[dict[str, t.Any]] | None = None
    if result["reachable"]:
        try:
            models = await asyncio.wait_for(km.list_kernels(), PROBE_TIMEOUT * 2)
        except web.HTTPError as e:
            result["kernels_error"] = e.log_message
        except Exception as e:
            result["kernels_error"] = describe(e)[1]
    if models is None:
        models = []
        for kernel_id in list(km.list_kernel_ids()):
            with contextlib.suppress(KeyError):
                cached = dict(km.get_kernel(kernel_id).kernel or {"id": kernel_id})
                cached["execution_state"] = "unknown"
                models.append(cached)
    result["kernels"] = [kernel_record(m) for m in models]
    return result
