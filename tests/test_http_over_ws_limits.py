"""http-over-websocket under hostile or slow clients, against a real `jupyter colabremote serve`:
a client that asks for a large file and stops reading must not grow the server by the file's
size (backpressure), yet gets every byte once it reads; one that never reads is aborted after
the idle timeout, freeing its request slot; a deeply nested JSON frame and a 9 MB path get
error frames on a socket that stays usable, and the log lines stay short; one token holds at
most 64 sockets open."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time

import psutil
import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from jupyter_colab_remote.extension.http_over_ws import MAX_DIAGNOSE_SOCKETS
from jupyter_colab_remote.tokens import TokenStore
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


#: The idle timeout the abort test configures (the default, 60 s, is too long to wait for).
SHORT_IDLE_TIMEOUT = 2.0


@pytest.fixture
def rt(request, tmp_path):
    """A real `serve` whose root holds `big.bin`: sparse, with random marks along it.
    Indirect parameters: extra `serve` arguments."""
    with run_runtime(tmp_path, getattr(request, "param", None)) as runtime:
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


async def connect(rt: Runtime, token: str | None = None) -> WebSocketClientConnection:
    """Colab's socket: the token (the runtime's unless given) inside the auth URL, as Colab
    sends it."""
    url = (
        f"ws://127.0.0.1:{rt.port}/http_over_websocket?min_version=0.0.7"
        "&jupyter_http_over_ws_auth_url="
        f"http%3A%2F%2F127.0.0.1%3A{rt.port}%2F%3Ftoken%3D{token or rt.token}"
    )
    # tornado's client reads a frame only when asked (a queue of one): a client that stops
    # reading stops reading its socket too.
    return await websocket_connect(HTTPRequest(url, connect_timeout=15, request_timeout=30))


async def request(ws, message_id: str, path: str, method: str = "GET") -> None:
    await ws.write_message(json.dumps({"message_id": message_id, "method": method, "path": path}))


async def open_after_a_close(open_socket) -> WebSocketClientConnection:
    """Open a socket right after closing one at the cap: the server notices the close within
    a few ms, so the handshake is retried a bounded number of times."""
    for _ in range(50):
        try:
            return await open_socket()
        except HTTPClientError:
            await asyncio.sleep(0.1)
    raise AssertionError("no new socket after one closed")


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


def established(rt: Runtime) -> int:
    """The server's established TCP connections (a proxied request holds both ends of one)."""
    server = psutil.Process(rt.proc.pid)
    return sum(1 for c in net_connections(server) if c.status == psutil.CONN_ESTABLISHED)


def test_many_unread_downloads_then_the_client_leaves(rt):
    """Sixteen downloads of the file on one socket, none read: the server stays within
    MAX_GROWTH; when the client goes away, the proxied requests end (their loopback
    connections close) without an error in the log, and a new socket is served."""

    async def go():
        ws = await connect(rt)
        await request(ws, "warm", "/api/contents/big.bin?content=0")
        await next_frame(ws)
        idle_connections = established(rt)
        base = rss(rt.proc.pid)
        for i in range(16):
            await request(ws, f"big-{i}", "/files/big.bin")
        grown = await growth_while_unread(rt.proc.pid, base)
        print(f"server grew by {grown / 2**20:.1f} MiB with 16 unread downloads")
        assert grown < MAX_GROWTH, f"grew by {grown / 2**20:.0f} MiB"
        assert established(rt) >= idle_connections + 2 * 16  # both ends of each
        ws.close()
        await asyncio.to_thread(
            wait_for,
            lambda: established(rt) < idle_connections,
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
    # Abandoned quietly: no "Uncaught exception" from tornado, no proxying errors.
    log = rt.log()
    assert "Traceback" not in log and "Error when proxying" not in log, log[-3000:]


@pytest.mark.parametrize(
    "rt", [[f"--ColabRemoteApp.http_over_ws_idle_timeout={SHORT_IDLE_TIMEOUT}"]], indirect=True
)
def test_a_client_that_never_reads_is_aborted_and_its_slot_freed(rt):
    """A download whose client reads nothing is aborted once the client has taken nothing
    for the idle timeout: its proxied request ends (the loopback connection closes, the slot
    is free) while the client still reads nothing; reading, the client gets what was sent,
    then a 408 error frame for that message_id; the socket serves again."""

    async def go():
        ws = await connect(rt)
        try:
            await request(ws, "warm", "/api/contents/big.bin?content=0")
            await next_frame(ws)
            idle = established(rt)
            t0 = time.monotonic()
            await request(ws, "big", "/files/big.bin")
            await asyncio.to_thread(
                wait_for, lambda: established(rt) >= idle + 2, 15, "the proxied request"
            )
            await asyncio.to_thread(
                wait_for,
                lambda: established(rt) <= idle,
                SHORT_IDLE_TIMEOUT + 15,
                "the stalled request aborted",
                0.05,
            )
            aborted = time.monotonic() - t0
            print(f"aborted {aborted:.2f} s after the request (idle timeout {SHORT_IDLE_TIMEOUT})")
            assert aborted >= SHORT_IDLE_TIMEOUT
            size = 0
            while True:
                frame = await next_frame(ws)
                assert frame["message_id"] == "big", frame
                size += len(base64.b64decode(frame.get("data", "")))
                if frame["done"]:
                    break
            assert frame["status"] == 408, frame
            assert "took nothing for 2 s" in frame["statusText"], frame
            assert 0 < size < BIG_FILE_BYTES
            await request(ws, "after", "/api/contents/big.bin?content=0")
            frame = await next_frame(ws)
            assert (frame["message_id"], frame["status"]) == ("after", 200)
        finally:
            ws.close()

    asyncio.run(go())
    log = rt.log()
    assert "aborted GET /files/big.bin: the client took nothing for 2 s" in log
    assert "Traceback" not in log, log[-3000:]


def test_one_token_holds_at_most_64_sockets(rt):
    """The default cap: a token's 65th open socket (http-over-websocket or proxied) is refused
    with HTTP 429 and a reason naming the cap, while another token is served; once one of the
    64 closes, the token opens another."""

    async def go():
        sockets = [await connect(rt) for _ in range(64)]
        try:
            with pytest.raises(HTTPClientError) as refused:
                await connect(rt)
            assert refused.value.code == 429
            assert "sockets open with this token (64)" in str(refused.value), refused.value
            proxied = (
                f"ws://127.0.0.1:{rt.port}/http_over_websocket/proxied_ws/api/events/subscribe"
                f"?token={rt.token}"
            )
            with pytest.raises(HTTPClientError) as refused:
                await websocket_connect(HTTPRequest(proxied, connect_timeout=15))
            assert refused.value.code == 429
            other = await connect(rt, TokenStore(rt.token_file).create("other"))
            await request(other, "o", "/api/contents?content=0")
            assert (await next_frame(other))["status"] == 200
            other.close()
            sockets.pop().close()
            sockets.append(await open_after_a_close(lambda: connect(rt)))
            await request(sockets[-1], "n", "/api/contents?content=0")
            assert (await next_frame(sockets[-1]))["status"] == 200
        finally:
            for ws in sockets:
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


def test_diagnose_sockets_are_capped_for_everyone(rt):
    """/diagnose needs no token, so any local account may open it: at most
    MAX_DIAGNOSE_SOCKETS are open at once (429 beyond), a closed one frees its place, and a
    token holder's http-over-websocket socket is served meanwhile."""
    url = f"ws://127.0.0.1:{rt.port}/http_over_websocket/diagnose?min_version=0.0.7"

    async def open_diagnose():
        return await websocket_connect(HTTPRequest(url, connect_timeout=15, request_timeout=30))

    async def go():
        sockets = [await open_diagnose() for _ in range(MAX_DIAGNOSE_SOCKETS)]
        try:
            with pytest.raises(HTTPClientError) as refused:
                await open_diagnose()
            assert refused.value.code == 429
            assert f"for diagnose ({MAX_DIAGNOSE_SOCKETS})" in str(refused.value)
            colab = await connect(rt)
            await request(colab, "c", "/api/contents?content=0")
            assert (await next_frame(colab))["status"] == 200
            colab.close()
            sockets.pop().close()
            sockets.append(await open_after_a_close(open_diagnose))
            await sockets[-1].write_message("m")
            assert (await next_frame(sockets[-1]))["message_id"] == "m"
        finally:
            for ws in sockets:
                ws.close()

    asyncio.run(go())
