"""http-over-websocket under hostile or slow clients, against a real `jupyter colabremote serve`:
a client that asks for a large file and stops reading must not grow the server by the file's
size (backpressure), yet gets every byte once it reads; a deeply nested JSON frame and a
9 MB path get error frames on a socket that stays usable, and the log lines stay short."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time

import psutil
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from tests.harness.processes import net_connections
from tests.harness.runtime import Runtime, run_runtime
from tests.harness.runtime_api import wait_for

#: Exercises the jupyter_server extension: also run at the lowest dependency versions.
pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]

BIG_FILE_BYTES = 300 * 1024**2
#: What the server may grow by while its client reads nothing (without backpressure it grows
#: by about 1.4x the file: the body, base64-encoded, queued for the socket).
MAX_GROWTH = 64 * 1024**2
STALL_SECONDS = 4.0
#: The longest log line accepted (a 9 MB path once made a 9 MB line).
MAX_LOG_LINE = 2000


@pytest.fixture
def rt(tmp_path):
    """A real `serve` whose root holds `big.bin`: sparse, with random marks along it."""
    with run_runtime(tmp_path) as runtime:
        path = tmp_path / "root" / "big.bin"
        with open(path, "wb") as f:
            f.truncate(BIG_FILE_BYTES)
            for offset in range(0, BIG_FILE_BYTES - 4096, BIG_FILE_BYTES // 7):
                f.seek(offset)
                f.write(os.urandom(4096))
        yield runtime


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


async def connect(rt: Runtime) -> WebSocketClientConnection:
    """Colab's socket: the token inside the auth URL, as Colab sends it."""
    url = (
        f"ws://127.0.0.1:{rt.port}/http_over_websocket?min_version=0.0.7"
        f"&jupyter_http_over_ws_auth_url=http%3A%2F%2F127.0.0.1%3A{rt.port}%2F%3Ftoken%3D{rt.token}"
    )
    # tornado's client reads a frame only when asked (a queue of one): a client that stops
    # reading stops reading its socket too.
    return await websocket_connect(HTTPRequest(url, connect_timeout=15, request_timeout=30))


async def request(ws, message_id: str, path: str, method: str = "GET") -> None:
    await ws.write_message(json.dumps({"message_id": message_id, "method": method, "path": path}))


async def next_frame(ws, timeout: float = 30.0) -> dict:
    raw = await asyncio.wait_for(ws.read_message(), timeout)
    assert raw is not None, f"socket closed: {ws.close_code} {ws.close_reason}"
    return json.loads(raw)


async def read_body(ws, message_id: str, deadline: float) -> tuple[int, int, str]:
    """(status, size, sha256) of one response, read to its last frame."""
    h, status, size = hashlib.sha256(), None, 0
    loop = asyncio.get_running_loop()
    while True:
        frame = await next_frame(ws, max(0.1, deadline - loop.time()))
        assert frame.get("message_id") == message_id, frame
        status = frame.get("status", status)
        data = base64.b64decode(frame.get("data", ""))
        h.update(data)
        size += len(data)
        if frame["done"]:
            return status, size, h.hexdigest()


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def growth_while_unread(pid: int, base: int) -> int:
    """How far the server's RSS rose above `base` during STALL_SECONDS (sampled)."""
    peak, end = base, time.monotonic() + STALL_SECONDS
    while time.monotonic() < end:
        await asyncio.sleep(0.1)
        peak = max(peak, rss(pid))
    return peak - base


def test_unread_download_is_paused_not_buffered(rt):
    """The client asks for 300 MB and reads nothing for a few seconds: the server's memory
    stays within MAX_GROWTH; then it reads everything and gets the file intact."""
    expected = file_digest(rt.home.parent / "root" / "big.bin")

    async def go():
        ws = await connect(rt)
        try:
            # Warm up the path (first request, imports, buffers) before the baseline.
            await request(ws, "warm", "/api/contents/big.bin?content=0")
            frame = await next_frame(ws)
            assert (frame["status"], frame["done"]) == (200, True)
            base = rss(rt.proc.pid)
            await request(ws, "big", "/files/big.bin")
            grown = await growth_while_unread(rt.proc.pid, base)
            print(f"server grew by {grown / 2**20:.1f} MiB while the client did not read")
            assert grown < MAX_GROWTH, f"grew by {grown / 2**20:.0f} MiB"
            t0 = time.monotonic()
            status, size, digest = await read_body(
                ws, "big", asyncio.get_running_loop().time() + 120
            )
            took = time.monotonic() - t0
            print(f"then read {size / 2**20:.0f} MiB in {took:.1f} s")
            assert (status, size, digest) == (200, BIG_FILE_BYTES, expected)
            # The socket still serves requests.
            await request(ws, "after", "/api/contents/big.bin?content=0")
            assert (await next_frame(ws))["status"] == 200
        finally:
            ws.close()

    asyncio.run(go())


def test_many_unread_downloads_then_the_client_leaves(rt):
    """Sixteen downloads of the file on one socket, none read: the server stays within
    MAX_GROWTH; when the client goes away, the proxied requests end (their loopback
    connections close) and a new socket is served."""
    server = psutil.Process(rt.proc.pid)

    def loopback_connections() -> int:
        return sum(1 for c in net_connections(server) if c.status == psutil.CONN_ESTABLISHED)

    async def go():
        ws = await connect(rt)
        await request(ws, "warm", "/api/contents/big.bin?content=0")
        await next_frame(ws)
        idle_connections = loopback_connections()
        base = rss(rt.proc.pid)
        for i in range(16):
            await request(ws, f"big-{i}", "/files/big.bin")
        grown = await growth_while_unread(rt.proc.pid, base)
        print(f"server grew by {grown / 2**20:.1f} MiB with 16 unread downloads")
        assert grown < MAX_GROWTH, f"grew by {grown / 2**20:.0f} MiB"
        assert loopback_connections() >= idle_connections + 2 * 16  # both ends of each
        ws.close()
        await asyncio.to_thread(
            wait_for,
            lambda: loopback_connections() < idle_connections,
            15,
            "the proxied requests' connections closed",
        )
        ws = await connect(rt)
        try:
            await request(ws, "after", "/api/contents/big.bin?content=0")
            assert (await next_frame(ws))["status"] == 200
        finally:
            ws.close()

    asyncio.run(go())


def test_nested_json_and_huge_path_get_error_frames(rt):
    """'[' * 100000 (deeper than the JSON parser's stack) gets a 400 frame; a 9 MB path gets
    a 414 answer for its message_id; the socket keeps serving, the log stays short."""
    log_before = len(rt.log())

    async def go():
        ws = await connect(rt)
        try:
            await ws.write_message("[" * 100_000)
            frame = await next_frame(ws, 10)
            assert (frame["status"], frame["done"]) == (400, True), frame
            assert "message_id" not in frame
            await request(ws, "huge", "/api/contents/" + "a" * 9_000_000)
            frame = await next_frame(ws, 30)
            assert (frame.get("message_id"), frame["status"], frame["done"]) == ("huge", 414, True)
            assert len(json.dumps(frame)) < MAX_LOG_LINE
            await request(ws, "after", "/api/contents")
            frame = await next_frame(ws)
            assert (frame["message_id"], frame["status"]) == ("after", 200)
        finally:
            ws.close()

    asyncio.run(go())
    time.sleep(0.5)  # let the server write what it logs about it
    written = rt.log()[log_before:]
    assert "Traceback" not in written and "RecursionError" not in written, written[-3000:]
    longest = max((len(line) for line in written.splitlines()), default=0)
    assert longest < MAX_LOG_LINE, f"a log line of {longest} characters"


def test_diagnose_answers_wait_for_the_client(rt):
    """/diagnose needs no token and echoes each message: a client that sends thousands and
    reads nothing must not make the server queue the echoes (it stops reading instead); a
    message far larger than a message id closes the socket (1009)."""
    url = f"ws://127.0.0.1:{rt.port}/http_over_websocket/diagnose?min_version=0.0.7"

    async def go():
        ws = await websocket_connect(HTTPRequest(url, connect_timeout=15, request_timeout=30))
        base = rss(rt.proc.pid)
        payload = "x" * (60 * 1024)
        for i in range(2000):  # 120 MB, written without waiting for the server
            ws.write_message(f"{i}:{payload}")
        grown = await growth_while_unread(rt.proc.pid, base)
        print(f"server grew by {grown / 2**20:.1f} MiB with 2000 unread diagnose answers")
        assert grown < MAX_GROWTH, f"grew by {grown / 2**20:.0f} MiB"
        first = await next_frame(ws)
        assert (first["message_id"], first["extension_version"]) == (f"0:{payload}", "0.0.7")
        ws.close()
        ws = await websocket_connect(HTTPRequest(url, connect_timeout=15, request_timeout=30))
        await ws.write_message("x" * (1 << 20))
        assert await asyncio.wait_for(ws.read_message(), 30) is None
        assert ws.close_code == 1009

    asyncio.run(go())
