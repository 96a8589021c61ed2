"""A minimal kernel WebSocket client for tests: execute code, return what it printed."""

from __future__ import annotations

import asyncio
import json
import uuid

from tornado.websocket import WebSocketClientConnection

from jupyter_colab_remote.companion.kernel_check import execute_request


async def execute(ws: WebSocketClientConnection, code: str, timeout: float = 30.0) -> str:
    """Run `code` on the kernel behind `ws`; return its result or stream text."""
    msg = execute_request(code, uuid.uuid4().hex)
    await ws.write_message(json.dumps(msg))
    msg_id = msg["header"]["msg_id"]
    output: list[str] = []
    got_reply = got_idle = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (got_reply and got_idle):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(f"no reply to {code!r} within {timeout} s")
        raw = await asyncio.wait_for(ws.read_message(), remaining)
        if raw is None:
            raise ConnectionError("kernel WebSocket closed")
        if isinstance(raw, bytes):
            continue
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = reply["msg_type"]
        content = reply["content"]
        if kind == "execute_result":
            output.append(content["data"]["text/plain"])
        elif kind == "stream":
            output.append(content["text"])
        elif kind == "error":
            output.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "execute_reply":
            got_reply = True
        elif kind == "status" and content["execution_state"] == "idle":
            got_idle = True
    return "".join(output)
