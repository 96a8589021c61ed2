"""REST and kernel WebSocket helpers for tests that drive a running `jupyter colabremote serve`
(a `runtime.Runtime`): requests with its token, the status document, code execution
and interrupts over the kernel WebSocket. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import psutil
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from .kernel_client import execute, execute_request
from .runtime import Runtime

#: The origin Colab's page sends.
COLAB_ORIGIN = "https://colab.research.google.com"


def rest(rt: Runtime, method: str, path: str, body: dict | None = None, origin: str | None = None):
    """A request to the runtime with its token: (status, headers, parsed JSON or text)."""
    headers = {"Authorization": f"token {rt.token}", "Content-Type": "application/json"}
    if origin:
        headers["Origin"] = origin
    req = urllib.request.Request(
        rt.base + path,
        method=method,
        headers=headers,
        data=None if body is None else json.dumps(body).encode(),
    )
    try:
        with urllib.request.urlopen(req, timeout=90) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(raw) if raw else None
    except ValueError:
        return status, hdrs, raw.decode(errors="replace")


def status_doc(rt: Runtime) -> dict:
    """GET /colabremote/api/status (asserting 200)."""
    code, _, doc = rest(rt, "GET", "/colabremote/api/status")
    assert code == 200, doc
    return doc


def wait_for(
    pred: Callable[[], Any], deadline: float = 30.0, what: str = "condition", poll: float = 0.1
):
    """Poll pred() until truthy (bounded); its value."""
    end = time.monotonic() + deadline
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} (waited {deadline} s)")
        time.sleep(poll)


def local_kernels(pid: int) -> list[str]:
    """Command lines of kernel processes under `pid` (other helpers, such as jupyterlab's
    npm probe, may come and go and are not the point)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "ipykernel" in cmd or "kernel-" in cmd:
            found.append(cmd)
    return found


def ws_request(rt: Runtime, kernel_id: str) -> HTTPRequest:
    """The kernel's WebSocket request on the runtime, with its token and a fresh session."""
    return HTTPRequest(
        f"ws://127.0.0.1:{rt.port}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}",
        headers={"Authorization": f"token {rt.token}"},
        connect_timeout=15,
        request_timeout=30,
    )


async def run_interrupted(rt: Runtime, kernel_id: str) -> tuple[str, float]:
    """Start `time.sleep(60)`, interrupt it over REST once the kernel is busy with it; the
    error the kernel reports, and seconds from the interrupt to the reply."""
    ws = await websocket_connect(ws_request(rt, kernel_id))
    try:
        msg = execute_request("import time; time.sleep(60)", uuid.uuid4().hex)
        await ws.write_message(json.dumps(msg))
        msg_id = msg["header"]["msg_id"]
        ename, t_interrupt = "", None
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        while True:
            raw = await asyncio.wait_for(ws.read_message(), max(0.1, end - loop.time()))
            assert raw is not None, "kernel WebSocket closed"
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = reply["msg_type"]
            if kind == "execute_input" and t_interrupt is None:
                await asyncio.sleep(0.3)  # inside time.sleep by now
                t_interrupt = time.monotonic()
                code, _, body = await asyncio.to_thread(
                    rest, rt, "POST", f"/api/kernels/{kernel_id}/interrupt", {}
                )
                assert code == 204, body
            elif kind == "error":
                ename = reply["content"]["ename"]
            elif kind == "execute_reply":
                assert t_interrupt is not None
                return ename, time.monotonic() - t_interrupt
    finally:
        ws.close()


async def run_on(rt: Runtime, kernel_id: str, *codes: str, timeout: float = 60) -> list[str]:
    """Run each code on the kernel over one WebSocket; what each printed or returned."""
    ws = await websocket_connect(ws_request(rt, kernel_id))
    try:
        return [await execute(ws, code, timeout) for code in codes]
    finally:
        ws.close()
