"""The http-over-websocket protocol against an in-process server configured like `serve`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from urllib.parse import urlencode

import pytest
from jupyter_client.session import Session
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketHandler, websocket_connect

from jupyter_colab_remote.companion.kernel_check import execute_request
from jupyter_colab_remote.extension import http_over_ws
from tests.harness.runtime_api import COLAB_ORIGIN

#: Exercises the jupyter_server extension: also run at the lowest dependency versions.
pytestmark = pytest.mark.server

CHUNK = 64 * 1024
TIMEOUT = 60


# -- helpers -------------------------------------------------------------------
class EchoHandler(APIHandler):
    """Test-only endpoint: GET describes the request it got, POST echoes the body's bytes."""

    @web.authenticated
    async def get(self):
        await asyncio.sleep(float(self.get_argument("sleep", "0")))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"uri": self.request.uri, "headers": dict(self.request.headers)}))

    @web.authenticated
    def post(self):
        self.finish(self.request.body, set_content_type="application/octet-stream")


class EchoWebSocket(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """Test-only WebSocket: echoes frames as received; "close <code>" closes with that code."""

    closed_with: list = []

    @ws_authenticated
    async def get(self, *args, **kwargs):
        await super().get(*args, **kwargs)

    def on_message(self, message):
        if isinstance(message, str) and message.startswith("close "):
            self.close(int(message.split()[1]), "upstream bye")
            return
        self.write_message(message, binary=isinstance(message, bytes))

    def on_close(self):
        EchoWebSocket.closed_with.append((self.close_code, self.close_reason))


@pytest.fixture
def echo(jp_serverapp):
    """Mount EchoHandler at <base_url>test-echo; returns the path Colab would send."""
    pattern = url_path_join(jp_serverapp.base_url, "test-echo")
    ws_pattern = url_path_join(jp_serverapp.base_url, "test-echo-ws")
    jp_serverapp.web_app.add_handlers(".*$", [(pattern, EchoHandler), (ws_pattern, EchoWebSocket)])
    EchoWebSocket.closed_with = []
    return "/test-echo"


@pytest.fixture
def ws_connect(http_server, jp_http_port, jp_base_url, token):
    """Open a WebSocket under base_url, authenticated with the test token unless auth=False."""

    async def connect(path="http_over_websocket", params=None, headers=None, auth=True, **kw):
        headers = dict(headers or {})
        if auth:
            headers.setdefault("Authorization", f"token {token}")
        url = f"ws://localhost:{jp_http_port}{jp_base_url}{path}"
        if params:
            url += "?" + urlencode(params)
        return await websocket_connect(HTTPRequest(url, headers=headers), **kw)

    return connect


async def read_json(ws):
    raw = await asyncio.wait_for(ws.read_message(), TIMEOUT)
    assert raw is not None, f"socket closed: {ws.close_code} {ws.close_reason}"
    return json.loads(raw)


async def read_response(ws, message_id):
    """All frames of one response, checking the framing rules on the way."""
    frames = []
    while True:
        frame = await read_json(ws)
        assert frame["message_id"] == message_id
        frames.append(frame)
        if frame["done"]:
            break
    first, rest = frames[0], frames[1:]
    assert {"status", "statusText", "headers"} <= first.keys()
    for frame in rest:
        assert set(frame) == {"message_id", "data", "done"}
    for frame in frames[:-1]:
        assert frame["done"] is False
        assert "data" in frame
    return frames


def body_of(frames):
    return b"".join(base64.b64decode(f["data"]) for f in frames if "data" in f)


async def send_request(ws, method, path, message_id="1", **extra):
    await ws.write_message(
        json.dumps({"message_id": message_id, "method": method, "path": path, **extra})
    )


async def roundtrip(ws, method, path, message_id="1", **extra):
    await send_request(ws, method, path, message_id, **extra)
    return await read_response(ws, message_id)


# -- requests and responses ------------------------------------------------------
async def test_get_kernelspecs(ws_connect):
    ws = await ws_connect()
    frames = await roundtrip(ws, "GET", "/api/kernelspecs", message_id="ks-1")
    assert len(frames) == 1
    (frame,) = frames
    assert frame["status"] == 200
    assert frame["statusText"] == "OK"
    assert frame["headers"]["Content-Type"].startswith("application/json")
    assert frame["done"] is True
    specs = json.loads(body_of(frames))
    assert "python3" in specs["kernelspecs"]
    # An empty body on a GET is accepted, as by the original.
    frames = await roundtrip(ws, "GET", "/api/kernelspecs", message_id="ks-2", body="")
    assert frames[0]["status"] == 200
    ws.close()


async def test_start_and_shut_down_kernel(ws_connect, jp_serverapp):
    ws = await ws_connect()
    frames = await roundtrip(
        ws, "POST", "/api/kernels", message_id="start", body=json.dumps({"name": "python3"})
    )
    assert frames[0]["status"] == 201
    assert frames[0]["statusText"] == "Created"
    kernel_id = json.loads(body_of(frames))["id"]
    assert kernel_id in jp_serverapp.kernel_manager.list_kernel_ids()

    # A POST without a body, as Colab sends for an interrupt.
    frames = await roundtrip(ws, "POST", f"/api/kernels/{kernel_id}/interrupt", message_id="int")
    assert frames[0]["status"] == 204

    frames = await roundtrip(ws, "DELETE", f"/api/kernels/{kernel_id}", message_id="stop")
    # No body: a single frame with metadata and no "data".
    assert len(frames) == 1
    assert frames[0]["status"] == 204
    assert frames[0]["done"] is True
    assert "data" not in frames[0]
    assert kernel_id not in jp_serverapp.kernel_manager.list_kernel_ids()
    ws.close()


async def test_large_body_is_chunked(ws_connect, jp_root_dir):
    text = "".join(f"line {i:06d} {uuid.uuid4().hex}\n" for i in range(8000))  # ~370 KB
    model = {"type": "file", "format": "text", "content": text}
    ws = await ws_connect()
    frames = await roundtrip(ws, "PUT", "/api/contents/big.txt", body=json.dumps(model))
    assert frames[0]["status"] == 201
    assert (jp_root_dir / "big.txt").read_text() == text

    frames = await roundtrip(ws, "GET", "/api/contents/big.txt?content=1", message_id="get")
    assert frames[0]["status"] == 200
    assert len(frames) >= 6
    sizes = [len(base64.b64decode(f["data"])) for f in frames]
    assert all(0 < size <= CHUNK for size in sizes)
    assert [f["done"] for f in frames] == [False] * (len(frames) - 1) + [True]
    assert json.loads(body_of(frames))["content"] == text

    # The raw file, straight from /files/.
    frames = await roundtrip(ws, "GET", "/files/big.txt", message_id="raw")
    assert frames[0]["status"] == 200
    assert len(frames) >= 6
    assert body_of(frames) == text.encode()
    ws.close()


async def test_binary_body_round_trips_byte_exact(ws_connect, echo, jp_root_dir):
    # Not valid UTF-8: the original decoded body_base64 as UTF-8 and broke on these.
    blob = bytes(range(256)) * 600 + os.urandom(5000)
    ws = await ws_connect()
    frames = await roundtrip(
        ws, "POST", echo, body_base64=base64.b64encode(blob).decode(), message_id="echo"
    )
    assert frames[0]["status"] == 200
    assert frames[0]["headers"]["Content-Type"] == "application/octet-stream"
    assert body_of(frames) == blob

    # A binary upload through the contents API (itself JSON, sent as body_base64), then
    # the raw bytes back from /files/.
    model = {"type": "file", "format": "base64", "content": base64.b64encode(blob).decode()}
    encoded_model = base64.b64encode(json.dumps(model).encode()).decode()
    frames = await roundtrip(ws, "PUT", "/api/contents/blob.bin", body_base64=encoded_model)
    assert frames[0]["status"] == 201
    assert (jp_root_dir / "blob.bin").read_bytes() == blob
    frames = await roundtrip(ws, "GET", "/files/blob.bin", message_id="download")
    assert body_of(frames) == blob
    ws.close()


async def test_http_errors_pass_through(ws_connect):
    ws = await ws_connect()
    frames = await roundtrip(ws, "GET", f"/api/kernels/{uuid.uuid4()}", message_id="missing")
    assert frames[0]["status"] == 404
    assert frames[0]["statusText"] == "Not Found"
    assert frames[-1]["done"] is True
    assert "message" in json.loads(body_of(frames))

    frames = await roundtrip(ws, "GET", "/no/such/page", message_id="page")
    assert frames[0]["status"] == 404
    ws.close()


async def test_proxied_request_carries_token_and_origin_not_cookies(ws_connect, echo, token):
    ws = await ws_connect(
        headers={"Origin": COLAB_ORIGIN, "Cookie": "_xsrf=abc; other=1"},
        params={"min_version": "0.0.7"},
    )
    frames = await roundtrip(ws, "GET", f"{echo}?a=1&b=%20x")
    seen = json.loads(body_of(frames))
    # base_url is added to a root-relative path; the query is kept as sent, no "?_xsrf=".
    assert seen["uri"] == "/a%40b/test-echo?a=1&b=%20x"
    assert seen["headers"]["Authorization"] == f"token {token}"
    # The page's origin goes along, so its origin rules apply to what it asks through us.
    assert seen["headers"]["Origin"] == COLAB_ORIGIN
    assert "Cookie" not in seen["headers"]

    # A path that already carries base_url is used as is.
    frames = await roundtrip(ws, "GET", "/a%40b/test-echo?c=2", message_id="2")
    assert json.loads(body_of(frames))["uri"] == "/a%40b/test-echo?c=2"
    ws.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/terminals"),
        ("GET", "/colabremote/api/tokens"),
        ("PUT", "/colabremote/api/forward"),
    ],
)
async def test_colab_page_gets_no_shell_or_token_api_through_the_tunnel(ws_connect, method, path):
    """The least-privilege rule (no terminals, tokens or forwards for Colab's origin) holds for
    requests Colab tunnels through http-over-ws, which the server makes to itself."""
    ws = await ws_connect(headers={"Origin": COLAB_ORIGIN})
    body = '{"local_port": 9000}' if method == "PUT" else "{}" if method == "POST" else None
    extra = {"body": body} if body is not None else {}
    frames = await roundtrip(ws, method, path, **extra)
    assert frames[0]["status"] == 403
    frames = await roundtrip(ws, "GET", "/api/kernelspecs", message_id="2")
    assert frames[0]["status"] == 200
    ws.close()


async def test_colab_page_gets_no_terminal_through_proxied_ws(ws_connect, jp_fetch):
    """A terminal WebSocket relayed by `proxied_ws` for Colab's page is refused."""
    name = json.loads((await jp_fetch("api", "terminals", method="POST", body="{}")).body)["name"]
    with pytest.raises(HTTPClientError) as e:
        await ws_connect(
            f"http_over_websocket/proxied_ws/terminals/websocket/{name}",
            headers={"Origin": COLAB_ORIGIN},
        )
    assert e.value.code == 403


async def test_concurrent_requests_on_one_socket(ws_connect, echo):
    ws = await ws_connect()
    await send_request(ws, "GET", f"{echo}?sleep=1.5", message_id="slow")
    await send_request(ws, "GET", "/api/kernelspecs", message_id="fast")
    first = await read_json(ws)
    assert first["message_id"] == "fast"
    assert first["done"] is True
    slow = await read_json(ws)
    assert slow["message_id"] == "slow"
    assert slow["status"] == 200
    ws.close()


# -- protocol errors -------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "status", "text", "message_id"),
    [
        ("not json", 400, "JSON input is required.", None),
        ("[1, 2]", 400, "JSON input is required", None),
        ('{"path": "/api/kernelspecs", "method": "GET"}', 400, "body must contain", None),
        ('{"message_id": "m", "path": "/api/kernelspecs"}', 400, "body must contain", "m"),
        ('{"message_id": "m", "method": "GET", "path": "@evil.example/"}', 400, "path", "m"),
        ('{"message_id": "m", "method": "GET", "path": "//evil.example/"}', 400, "path", "m"),
        ('{"message_id": "m", "method": "G T", "path": "/api"}', 400, "method", "m"),
        (
            '{"message_id": 7, "method": "POST", "path": "/api", "body_base64": "%%%"}',
            400,
            "base64",
            7,
        ),
        ('{"message_id": "m", "method": "POST", "path": "/api", "body": {}}', 400, "body", "m"),
    ],
)
async def test_protocol_errors_keep_socket_open(ws_connect, frame, status, text, message_id):
    ws = await ws_connect()
    await ws.write_message(frame)
    reply = await read_json(ws)
    assert reply["done"] is True
    assert reply["status"] == status
    assert text in reply["statusText"]
    assert reply.get("message_id") == message_id
    if message_id is None:
        assert "message_id" not in reply
    # The socket survives a malformed frame.
    frames = await roundtrip(ws, "GET", "/api/kernelspecs", message_id="after")
    assert frames[0]["status"] == 200
    ws.close()


async def test_uncaught_error_gives_500(ws_connect, monkeypatch):
    # Point the proxy at a closed port: the request itself fails, not the server.
    monkeypatch.setattr(http_over_ws, "loopback_base", lambda serverapp: ("http", "127.0.0.1:1"))
    ws = await ws_connect()
    await send_request(ws, "GET", "/api/kernelspecs", message_id="boom")
    reply = await read_json(ws)
    assert reply == {
        "done": True,
        "status": 500,
        "statusText": http_over_ws.UNCAUGHT_ERROR_TEXT,
        "message_id": "boom",
    }
    ws.close()


@pytest.mark.parametrize(
    ("min_version", "reason"),
    [
        ("abc", 'Invalid "min_version" provided: abc'),
        ("9.0.0", "Please upgrade"),
        ("0.0.8", "Please upgrade"),
        ("0.0.7.1", "Invalid"),
        ("\u0661.0" + "\u00e9" * 200, "Invalid"),  # non-ASCII digits; a reason kept short
    ],
)
async def test_bad_min_version_closes_with_valid_code(ws_connect, min_version, reason):
    ws = await ws_connect(params={"min_version": min_version})
    assert await asyncio.wait_for(ws.read_message(), TIMEOUT) is None
    assert ws.close_code == http_over_ws.CLOSE_BAD_VERSION
    assert 4000 <= ws.close_code <= 4999
    assert reason in ws.close_reason


@pytest.mark.parametrize("min_version", ["0.0.7", "0.0.1a0", "0.0.7b1", "0.0.1"])
async def test_acceptable_min_version(ws_connect, min_version):
    ws = await ws_connect(params={"min_version": min_version})
    frames = await roundtrip(ws, "GET", "/api/kernelspecs")
    assert frames[0]["status"] == 200
    ws.close()


def test_parse_version_orders_like_strict_version():
    pv = http_over_ws.parse_version
    assert pv("0.0.1a2") < pv("0.0.1b1") < pv("0.0.1") < pv("0.0.7") < pv("0.1")
    assert pv("1.0") == pv("1.0.0")
    for bad in ("abc", "1", "1.0.0.0", "1.0c1", "v1.0", "1.0 ", ""):
        assert pv(bad) is None


# -- authentication and origins ----------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "http_over_websocket",
        "http_over_websocket/proxied_ws/api/kernels/00000000-0000-0000-0000-000000000000/channels",
    ],
)
async def test_unauthenticated_websocket_refused(ws_connect, path):
    with pytest.raises(HTTPClientError) as e:
        await ws_connect(path, auth=False)
    assert e.value.code == 403
    with pytest.raises(HTTPClientError) as e:
        await ws_connect(path, headers={"Authorization": "token not-a-token"})
    assert e.value.code == 403


async def test_disallowed_origin_refused(ws_connect):
    with pytest.raises(HTTPClientError) as e:
        await ws_connect(headers={"Origin": "https://evil.example"})
    assert e.value.code == 403
    # Colab's origin is fine.
    ws = await ws_connect(headers={"Origin": COLAB_ORIGIN})
    frames = await roundtrip(ws, "GET", "/api/kernelspecs")
    assert frames[0]["status"] == 200
    ws.close()


async def test_token_in_websocket_url(ws_connect, token):
    ws = await ws_connect(params={"token": token}, auth=False)
    frames = await roundtrip(ws, "GET", "/api/kernelspecs")
    assert frames[0]["status"] == 200
    ws.close()


async def test_auth_url_token_behind_forwarded_port(ws_connect, token, echo, jp_root_dir):
    # Colab talks to localhost:9000, which an SSH tunnel forwards to this server's port.
    auth_url = f"http://localhost:9000/?token={token}"
    ws = await ws_connect(
        params={"min_version": "0.0.7", "jupyter_http_over_ws_auth_url": auth_url},
        headers={"Host": "localhost:9000", "Origin": COLAB_ORIGIN},
        auth=False,
    )
    frames = await roundtrip(ws, "GET", "/api/kernelspecs")
    assert frames[0]["status"] == 200
    # A state-changing request works too: token-authenticated, so no XSRF dance.
    frames = await roundtrip(
        ws, "POST", "/api/contents", message_id="new", body=json.dumps({"type": "file"})
    )
    assert frames[0]["status"] == 201
    created = json.loads(body_of(frames))["path"]
    assert (jp_root_dir / created).exists()
    seen = json.loads(body_of(await roundtrip(ws, "GET", echo, message_id="echo")))
    assert seen["headers"]["Authorization"] == f"token {token}"
    assert seen["headers"]["Host"] == "localhost:9000"
    ws.close()


async def test_auth_url_with_bad_token_or_scheme_refused(ws_connect, token):
    for auth_url in ("http://localhost:9000/?token=wrong", f"file:///tmp/?token={token}"):
        with pytest.raises(HTTPClientError) as e:
            await ws_connect(params={"jupyter_http_over_ws_auth_url": auth_url}, auth=False)
        assert e.value.code == 403


async def test_login_cookie_authenticates_without_token(
    ws_connect, jp_fetch, jp_root_dir, jp_http_port
):
    # A browser that logged in earlier holds a login cookie and an _xsrf cookie, no token.
    r = await jp_fetch("login", headers={"Authorization": ""})
    xsrf = r.headers["Set-Cookie"].split("_xsrf=", 1)[1].split(";", 1)[0]
    r = await jp_fetch("api", "kernelspecs")
    login = next(c for c in r.headers.get_list("Set-Cookie") if c.startswith("username-"))
    cookie = f"{login.split(';', 1)[0]}; _xsrf={xsrf}"
    # The cookie's name is tied to the host it was set for (jp_fetch uses 127.0.0.1).
    host = f"127.0.0.1:{jp_http_port}"
    ws = await ws_connect(headers={"Cookie": cookie, "Host": host}, auth=False)
    assert (await roundtrip(ws, "GET", "/api/kernelspecs"))[0]["status"] == 200
    # A POST needs the XSRF pair, which the cookie fallback forwards.
    frames = await roundtrip(ws, "POST", "/api/contents", body=json.dumps({"type": "file"}))
    assert frames[0]["status"] == 201
    assert (jp_root_dir / json.loads(body_of(frames))["path"]).exists()
    ws.close()


async def test_revoked_token_stops_proxied_requests(ws_connect, token_store):
    ws = await ws_connect()
    assert (await roundtrip(ws, "GET", "/api/kernelspecs"))[0]["status"] == 200
    # Each proxied request is authenticated afresh: revocation applies at once.
    token_store.revoke("test")
    frames = await roundtrip(ws, "GET", "/api/kernelspecs", message_id="after")
    assert frames[0]["status"] == 403
    assert frames[-1]["done"] is True
    ws.close()


async def test_connection_count(ws_connect, colab_app, jp_fetch):
    assert colab_app.http_over_ws_connections == 0
    ws = await ws_connect()
    await roundtrip(ws, "GET", "/api/kernelspecs")
    assert colab_app.http_over_ws_connections == 1
    status = json.loads((await jp_fetch("colabremote", "api", "status")).body)
    assert status["connections"]["http_over_websocket"] == 1
    ws.close()
    for _ in range(100):
        if colab_app.http_over_ws_connections == 0:
            break
        await asyncio.sleep(0.05)
    assert colab_app.http_over_ws_connections == 0


# -- diagnose --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("min_version", "cookie", "outdated", "has_cookie"),
    [("0.0.7", "_xsrf=abc", False, True), (None, None, False, False), ("0.0.8", None, True, False)],
)
async def test_diagnose(ws_connect, min_version, cookie, outdated, has_cookie):
    headers = {"Origin": COLAB_ORIGIN}
    if cookie:
        headers["Cookie"] = cookie
    params = {"min_version": min_version} if min_version else None
    # Unauthenticated, as in the original: Colab uses it to explain a failed connection.
    ws = await ws_connect(
        "http_over_websocket/diagnose", params=params, headers=headers, auth=False
    )
    for message in ("1", "second"):
        await ws.write_message(message)
        assert await read_json(ws) == {
            "message_id": message,
            "extension_version": "0.0.7",
            "has_authentication_cookie": has_cookie,
            "is_outdated_extension": outdated,
        }
    ws.close()


async def test_diagnose_refuses_disallowed_origin(ws_connect):
    with pytest.raises(HTTPClientError) as e:
        await ws_connect("http_over_websocket/diagnose", headers={"Origin": "https://evil.example"})
    assert e.value.code == 403


# -- proxied WebSockets ----------------------------------------------------------
@pytest.fixture
def kernel_id(jp_fetch, jp_asyncio_loop):
    """A running python3 kernel, shut down at the end of the test."""

    async def start():
        r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
        return json.loads(r.body)["id"]

    async def stop(kid):
        try:
            await jp_fetch("api", "kernels", kid, method="DELETE")
        except HTTPClientError as e:
            if e.code != 404:  # the test may have shut it down itself
                raise

    kid = jp_asyncio_loop.run_until_complete(start())
    yield kid
    jp_asyncio_loop.run_until_complete(stop(kid))


async def read_execute_result(receive, msg_id):
    """Kernel messages until the execute_result answering msg_id; its text/plain."""
    while True:
        channel, msg = await asyncio.wait_for(receive(), TIMEOUT)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            raise AssertionError(msg["content"])
        if msg["msg_type"] == "execute_result":
            assert channel == "iopub"
            return msg["content"]["data"]["text/plain"]


async def test_proxied_kernel_websocket_json(ws_connect, kernel_id, colab_app):
    session = Session()
    ws = await ws_connect(
        f"http_over_websocket/proxied_ws/api/kernels/{kernel_id}/channels",
        params={"session_id": session.session},
        headers={"Origin": COLAB_ORIGIN},
    )
    assert colab_app.http_over_ws_connections == 1
    msg = execute_request("1+1", session.session)
    await ws.write_message(json.dumps(msg))

    async def receive():
        raw = await ws.read_message()
        assert isinstance(raw, str), "the legacy protocol sends JSON text"
        m = json.loads(raw)
        return m["channel"], m

    assert await read_execute_result(receive, msg["header"]["msg_id"]) == "2"
    ws.close()


async def test_proxied_kernel_websocket_binary_v1(ws_connect, kernel_id):
    protocol = "v1.kernel.websocket.jupyter.org"
    session = Session()
    ws = await ws_connect(
        f"http_over_websocket/proxied_ws/api/kernels/{kernel_id}/channels",
        params={"session_id": session.session},
        subprotocols=[protocol],
    )
    assert ws.selected_subprotocol == protocol
    msg = execute_request("1+1", session.session)
    await ws.write_message(serialize_msg_to_ws_v1(msg, "shell", session.pack), binary=True)

    async def receive():
        raw = await ws.read_message()
        assert isinstance(raw, bytes), "the v1 protocol sends binary frames"
        channel, parts = deserialize_msg_from_ws_v1(raw)
        header, parent, metadata, content = (json.loads(p) for p in parts[:4])
        return channel, {
            "msg_type": header["msg_type"],
            "parent_header": parent,
            "content": content,
        }

    assert await read_execute_result(receive, msg["header"]["msg_id"]) == "2"
    ws.close()


async def test_proxied_websocket_relays_frames_and_close_codes(ws_connect, echo, colab_app):
    path = "http_over_websocket/proxied_ws/test-echo-ws"
    ws = await ws_connect(path, params={"session_id": "s"})
    await ws.write_message("hello")
    assert await asyncio.wait_for(ws.read_message(), TIMEOUT) == "hello"
    blob = bytes(range(256)) * 10
    await ws.write_message(blob, binary=True)
    assert await asyncio.wait_for(ws.read_message(), TIMEOUT) == blob
    # The upstream closes: we close with its code and reason.
    await ws.write_message("close 4321")
    assert await asyncio.wait_for(ws.read_message(), TIMEOUT) is None
    assert (ws.close_code, ws.close_reason) == (4321, "upstream bye")

    # The client closes: the upstream sees the client's code.
    ws = await ws_connect(path)
    await ws.write_message("ping")
    assert await asyncio.wait_for(ws.read_message(), TIMEOUT) == "ping"
    ws.close(4002, "client bye")
    for _ in range(100):
        if len(EchoWebSocket.closed_with) == 2:
            break
        await asyncio.sleep(0.05)
    # (tornado's reply to a close frame echoes only the code, hence no reason in the first.)
    assert [code for code, _ in EchoWebSocket.closed_with] == [4321, 4002]
    assert EchoWebSocket.closed_with[1] == (4002, "client bye")
    for _ in range(100):
        if colab_app.http_over_ws_connections == 0:
            break
        await asyncio.sleep(0.05)
    assert colab_app.http_over_ws_connections == 0


async def test_proxied_websocket_to_unknown_kernel(ws_connect):
    with pytest.raises(HTTPClientError) as e:
        await ws_connect(f"http_over_websocket/proxied_ws/api/kernels/{uuid.uuid4()}/channels")
    assert e.value.code == 404


async def test_proxied_websocket_auth_url_token(ws_connect, kernel_id, token):
    session = Session()
    ws = await ws_connect(
        f"http_over_websocket/proxied_ws/api/kernels/{kernel_id}/channels",
        params={
            "session_id": session.session,
            "jupyter_http_over_ws_auth_url": f"http://localhost:9000/?token={token}",
        },
        headers={"Host": "localhost:9000", "Origin": COLAB_ORIGIN},
        auth=False,
    )
    msg = execute_request("6*7", session.session)
    await ws.write_message(json.dumps(msg))

    async def receive():
        m = json.loads(await ws.read_message())
        return m["channel"], m

    assert await read_execute_result(receive, msg["header"]["msg_id"]) == "42"
    ws.close()
