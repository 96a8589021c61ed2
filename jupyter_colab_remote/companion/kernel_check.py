"""Prove through the tunnel that the runtime can run Python: kernelspec, kernel, one execute."""

from __future__ import annotations

import asyncio
import json
import typing as t
import uuid

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from ..protocol.errors import ExitCode
from .errors import CompanionError
from .terminal_text import printable
from .verify import request

#: Exit code for a runtime that cannot run Python (like a missing remote package).
NO_KERNEL_EXIT = ExitCode.PACKAGE
#: A cold kernel start on a loaded server takes a few seconds; leave room.
KERNEL_TIMEOUT = 60.0


def python_kernelspec(port: int, token: str, where: str, timeout: float = 15.0) -> str:
    """The name of a Python kernelspec the runtime offers, or a one-line error with advice."""
    auth = {"Authorization": f"token {token}"}
    code, _, body = request(port, "GET", "/api/kernelspecs", auth, timeout)
    try:
        data = json.loads(body) if code == 200 else {}
        specs: dict[str, t.Any] = data.get("kernelspecs") or {}
    except (ValueError, AttributeError):
        specs = {}
    python = [
        name
        for name, spec in specs.items()
        if str((spec.get("spec") or {}).get("language", "")).lower() == "python"
    ]
    if not python:
        raise CompanionError(
            f"the runtime on {where} has no Python kernel ({no_kernel_advice(port, token)})",
            exit_code=NO_KERNEL_EXIT,
        )
    default = data.get("default")
    return default if default in python else python[0]


def no_kernel_advice(port: int, token: str) -> str:
    """What the runtime itself advises (its status API names its environment)."""
    auth = {"Authorization": f"token {token}"}
    try:
        code, _, body = request(port, "GET", "/colabremote/api/status", auth, 10.0)
        status = json.loads(body) if code == 200 else {}
        advice = printable(str((status.get("kernels_available") or {}).get("advice") or ""))
    except (CompanionError, ValueError, AttributeError):
        advice = None
    return advice or (
        "make sure ipykernel is installed for the kernel's Python "
        "(`python -m pip install ipykernel` in the runtime's environment)"
    )


def verify_kernel(port: int, token: str, where: str, timeout: float = KERNEL_TIMEOUT) -> None:
    """Start a Python kernel, run `1+1`, expect 2, shut it down; raise a one-line error."""
    name = python_kernelspec(port, token, where)
    auth = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    code, _, body = request(
        port, "POST", "/api/kernels", auth, timeout, body=json.dumps({"name": name})
    )
    if code != 201:
        raise CompanionError(
            f"the runtime on {where} cannot start a Python kernel: {_message(body, code)}",
            exit_code=NO_KERNEL_EXIT,
        )
    kernel_id = json.loads(body)["id"]
    try:
        result = asyncio.run(_execute(port, token, kernel_id, "1+1", timeout))
    except Exception as e:  # tornado's WebSocket and HTTP errors share no base class here
        raise CompanionError(
            f"the Python kernel on {where} did not answer ({type(e).__name__}: {e}); "
            f"{no_kernel_advice(port, token)}",
            exit_code=NO_KERNEL_EXIT,
        ) from e
    finally:
        try:
            request(port, "DELETE", f"/api/kernels/{kernel_id}", auth, timeout)
        except CompanionError:
            pass  # the check's answer matters more than its clean-up
    if result.strip() != "2":
        raise CompanionError(
            f"the Python kernel on {where} answered {result.strip()[:80]!r} to 1+1",
            exit_code=NO_KERNEL_EXIT,
        )


def _message(body: bytes, code: int) -> str:
    """The server's JSON error message, else its status code."""
    try:
        return printable(str(json.loads(body)["message"])[:300]) or f"HTTP {code}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {code}"


async def _execute(port: int, token: str, kernel_id: str, code: str, timeout: float) -> str:
    """Run code on the kernel's WebSocket; its execute_result / stream / error text."""
    session = uuid.uuid4().hex
    url = f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?session_id={session}"
    req = HTTPRequest(url, headers={"Authorization": f"token {token}", "Host": f"localhost:{port}"})
    ws = await asyncio.wait_for(websocket_connect(req), timeout)
    try:
        msg_id = uuid.uuid4().hex
        await ws.write_message(json.dumps(execute_request(code, session, msg_id)))
        output: list[str] = []
        replied = idle = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (replied and idle):
            raw = await asyncio.wait_for(ws.read_message(), max(0.01, deadline - loop.time()))
            if raw is None:
                raise ConnectionError("the kernel WebSocket closed")
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg.get("msg_type"), msg.get("content", {})
            if kind == "execute_result":
                output.append(content["data"].get("text/plain", ""))
            elif kind == "stream":
                output.append(content.get("text", ""))
            elif kind == "error":
                output.append(f"{content.get('ename')}: {content.get('evalue')}")
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        return "".join(output)
    finally:
        ws.close()


def execute_request(code: str, session: str, msg_id: str | None = None) -> dict[str, t.Any]:
    """An execute_request in the kernel WebSocket's JSON (legacy) format."""
    msg_id = msg_id or uuid.uuid4().hex
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "colabremote",
            "session": session,
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
