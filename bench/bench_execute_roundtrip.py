"""Execute round-trip latency: stock jupyter_server vs `jupyter colabremote serve`.

Usage: python -m bench.bench_execute_roundtrip [--n 200] [--warmup 20] [--no-client-nodelay]

For each server: start it on a free loopback port, wait (bounded) for an authenticated
GET /api/status, start a python3 kernel over REST, open the kernel WebSocket with tornado's
websocket_connect, warm up, then time N sequential round trips: execute_request for a trivial
statement until the matching execute_reply arrives on the shell channel. After each reply
the kernel's `idle` status is awaited outside the timer, so every sample starts from a
quiet kernel. Prints a table and, as its last line, one JSON object.

The stock server is `python -m jupyter_server` with this project's extension explicitly
disabled on its command line (it is enabled in the environment's config, and would
otherwise install its TCP_NODELAY kernel WebSocket into the "stock" server too); its token
comes from JUPYTER_TOKEN. All server state (HOME, Jupyter config/data/runtime dirs, root
dir, logs) lives in one temporary directory, removed at the end.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # write no __pycache__ into the repository

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import jupyter_server  # noqa: E402
import tornado  # noqa: E402
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest  # noqa: E402
from tornado.websocket import WebSocketClientConnection, websocket_connect  # noqa: E402

from jupyter_colab_remote.companion.kernel_check import execute_request  # noqa: E402
from tests.harness.processes import free_port, stop_process  # noqa: E402
from tests.harness.runtime import run_runtime  # noqa: E402

EXTENSION = "jupyter_colab_remote"
EXTENSION_STATUS_PATH = "/colabremote/api/status"


@dataclass
class Server:
    """A running server to benchmark."""

    label: str
    base: str
    token: str
    log_path: Path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


# -- servers ------------------------------------------------------------------
def isolated_env(tmp: Path) -> dict[str, str]:
    """Environment keeping every file a server or kernel writes inside `tmp`."""
    for d in ("home", "runtime", "data", "config"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "HOME": str(tmp / "home"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@contextlib.contextmanager
def stock_server(tmp: Path) -> Iterator[tuple[subprocess.Popen, Server]]:
    """`python -m jupyter_server` without our extension; stopped by PID afterwards."""
    tmp.mkdir(parents=True, exist_ok=True)
    root = tmp / "root"
    root.mkdir(exist_ok=True)
    token = secrets.token_hex(24)
    env = {**isolated_env(tmp), "JUPYTER_TOKEN": token}  # the token never goes on argv
    port = free_port()
    args = [
        sys.executable, "-m", "jupyter_server",
        f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root}", "--allow-root",
        f'--ServerApp.jpserver_extensions={{"{EXTENSION}": False}}',
    ]  # fmt: skip
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc, Server("stock", f"http://127.0.0.1:{port}", token, log_path)
    finally:
        stop_process(proc, group=True)  # and its kernels


@contextlib.contextmanager
def our_runtime(tmp: Path) -> Iterator[tuple[subprocess.Popen, Server]]:
    """`jupyter colabremote serve`, via the tests' launcher."""
    tmp.mkdir(parents=True, exist_ok=True)
    with run_runtime(tmp, env={"PYTHONDONTWRITEBYTECODE": "1"}) as rt:
        yield rt.proc, Server("ours", rt.base, rt.token, rt.log_path)


async def wait_ready(server: Server, proc: subprocess.Popen, deadline: float) -> None:
    """Poll an authenticated GET /api/status until it answers 200 (bounded)."""
    client = AsyncHTTPClient()
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    last_error = "no attempt"
    while loop.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.label} server exited with code {proc.returncode}")
        try:
            resp = await client.fetch(
                f"{server.base}/api/status", headers=server.headers(),
                connect_timeout=2, request_timeout=2,
            )  # fmt: skip
            if resp.code == 200:
                return
            last_error = f"HTTP {resp.code}"
        except HTTPClientError as e:
            last_error = f"HTTP {e.code}"
        except OSError as e:  # connection refused while the server starts
            last_error = repr(e)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{server.label} not ready within {deadline} s (last: {last_error})")


async def extension_loaded(server: Server) -> bool:
    """True if our extension answers on this server (its status endpoint exists)."""
    resp = await AsyncHTTPClient().fetch(
        f"{server.base}{EXTENSION_STATUS_PATH}", headers=server.headers(),
        raise_error=False, request_timeout=10,
    )  # fmt: skip
    return resp.code == 200


# -- kernel -------------------------------------------------------------------
async def rest(server: Server, method: str, path: str, body: dict | None = None) -> dict:
    resp = await AsyncHTTPClient().fetch(
        f"{server.base}{path}", method=method, headers=server.headers(),
        body=None if body is None else json.dumps(body), request_timeout=60,
    )  # fmt: skip
    return json.loads(resp.body) if resp.body else {}


def set_client_nodelay(ws: WebSocketClientConnection) -> bool:
    """Set TCP_NODELAY on the client's socket; return whether it is now set."""
    sock = ws.protocol.stream.socket  # type: ignore[union-attr]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def client_nodelay_state(ws: WebSocketClientConnection) -> bool:
    sock = ws.protocol.stream.socket  # type: ignore[union-attr]
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


async def read_json(ws: WebSocketClientConnection, end: float) -> dict | None:
    """The next JSON message before loop time `end` (None for a binary message)."""
    remaining = end - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise TimeoutError("no kernel message before the deadline")
    raw = await asyncio.wait_for(ws.read_message(), remaining)
    if raw is None:
        raise ConnectionError("kernel WebSocket closed")
    return None if isinstance(raw, bytes) else json.loads(raw)


async def roundtrip(
    ws: WebSocketClientConnection, code: str, session: str, timeout: float
) -> float:
    """One execute round trip in seconds (to execute_reply); then wait for idle, untimed."""
    msg = execute_request(code, session)
    msg_id = msg["header"]["msg_id"]
    payload = json.dumps(msg)
    end = asyncio.get_running_loop().time() + timeout
    got_idle = False
    t0 = time.perf_counter()
    await ws.write_message(payload)
    while True:
        reply = await read_json(ws, end)
        if reply is None or reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if reply["msg_type"] == "execute_reply" and reply.get("channel") == "shell":
            elapsed = time.perf_counter() - t0
            if reply["content"].get("status") != "ok":
                raise RuntimeError(f"execute failed: {reply['content']}")
            break
        if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
            got_idle = True
    while not got_idle:
        reply = await read_json(ws, end)
        if (
            reply is not None
            and reply.get("parent_header", {}).get("msg_id") == msg_id
            and reply["msg_type"] == "status"
            and reply["content"]["execution_state"] == "idle"
        ):
            got_idle = True
    return elapsed


def summarize(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49], 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


async def bench_server(
    server: Server, proc: subprocess.Popen, args: argparse.Namespace
) -> dict[str, object]:
    """Readiness, kernel, WebSocket, warm-up and N timed round trips against one server."""
    await wait_ready(server, proc, args.start_deadline)
    result: dict[str, object] = {"extension_loaded": await extension_loaded(server)}
    kernel = await rest(server, "POST", "/api/kernels", {"name": "python3"})
    kernel_id = kernel["id"]
    try:
        session = uuid.uuid4().hex
        ws_url = server.base.replace("http://", "ws://", 1)
        request = HTTPRequest(
            f"{ws_url}/api/kernels/{kernel_id}/channels?session_id={session}",
            headers=server.headers(), connect_timeout=10, request_timeout=30,
        )  # fmt: skip
        ws = await websocket_connect(request)
        try:
            result["client_nodelay"] = (
                set_client_nodelay(ws) if args.client_nodelay else client_nodelay_state(ws)
            )
            # The first execute also waits for the kernel to come up.
            await roundtrip(ws, args.code, session, args.start_deadline)
            for _ in range(args.warmup):
                await roundtrip(ws, args.code, session, args.timeout)
            samples = [await roundtrip(ws, args.code, session, args.timeout) for _ in range(args.n)]
        finally:
            ws.close()
    finally:
        with contextlib.suppress(Exception):
            await rest(server, "DELETE", f"/api/kernels/{kernel_id}")
    result.update(summarize(samples))
    result["n"] = len(samples)
    return result


def run_one(label: str, tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    starter = stock_server if label == "stock" else our_runtime
    with starter(tmp / label) as (proc, server):
        try:
            return asyncio.run(bench_server(server, proc, args))
        except BaseException:
            tail = server.log_path.read_text(errors="replace")[-3000:]
            print(f"--- {label} server log (tail) ---\n{tail}", file=sys.stderr)
            raise


# -- output -------------------------------------------------------------------
def print_table(results: dict[str, dict[str, object]], ratio: dict[str, float]) -> None:
    cols = ["p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"]
    print(f"{'server':<8} {'n':>5} " + " ".join(f"{c:>9}" for c in cols) + "  ext  client_nodelay")
    for label, r in results.items():
        print(
            f"{label:<8} {r['n']:>5} "
            + " ".join(f"{r[c]:>9.2f}" for c in cols)
            + f"  {'yes' if r['extension_loaded'] else 'no':<4} {r['client_nodelay']}"
        )
    print(f"{'stock/ours':<14} " + " ".join(f"{ratio[c]:>8.1f}x" for c in cols if c in ratio))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="timed round trips per server")
    parser.add_argument("--warmup", type=int, default=20, help="untimed round trips first")
    parser.add_argument("--code", default="pass", help="the statement executed")
    parser.add_argument(
        "--client-nodelay", action=argparse.BooleanOptionalAction, default=True,
        help="set TCP_NODELAY on the client's WebSocket socket (default: on)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=30.0, help="per round trip, seconds")
    parser.add_argument("--start-deadline", type=float, default=90.0, help="server start, s")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error("--n must be at least 2")

    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-execute-roundtrip-") as tmp:
        for label in ("stock", "ours"):
            results[label] = run_one(label, Path(tmp), args)

    if results["stock"]["extension_loaded"] or not results["ours"]["extension_loaded"]:
        msg = "error: the stock server must run without our extension, ours with it"
        print(msg, file=sys.stderr)
        return 1
    ratio = {
        k: round(float(results["stock"][k]) / float(results["ours"][k]), 2)  # type: ignore[arg-type]
        for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")
    }
    print(
        f"execute round trip ({args.code!r}, n={args.n}, warm-up={args.warmup}); "
        f"tornado {tornado.version}, jupyter_server {jupyter_server.__version__}, "
        f"Python {platform.python_version()}"
    )
    print_table(results, ratio)
    print(
        json.dumps(
            {
                "bench": "execute_roundtrip",
                "code": args.code,
                "n": args.n,
                "warmup": args.warmup,
                "client_nodelay_requested": args.client_nodelay,
                "tornado": tornado.version,
                "jupyter_server": jupyter_server.__version__,
                "python": platform.python_version(),
                "stock": results["stock"],
                "ours": results["ours"],
                "ratio_stock_over_ours": ratio,
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
