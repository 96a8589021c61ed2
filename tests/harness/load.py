"""Many kernels, each driven by its own WebSocket client, through ONE companion tunnel.

Used by tests/test_load.py (bounded) and bench/bench_load.py (50 kernels x 100 executes).
A real sshd on loopback (harness/sshd.py), the companion (`start ALIAS --port P --json`) as a
user runs it, its runtime on the "remote" side; optionally the kernels on a local Jupyter
Kernel Gateway (harness/gateway.py). Measures the execute round trip (execute_request
-> execute_reply) of one client alone and of all clients at once, and the file descriptors
and resident memory of the runtime and of the companion: at a baseline (after one warm-up
kernel came and went), at their peak under load, and once the clients left and the kernels
were shut down. Every process is stopped by PID; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import typing as t
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from .processes import free_port, stop_process
from .ssh_client import SSHClientFiles
from .sshd import run_sshd

ALIAS = "load-box"
#: Threads allowed above the baseline once the load is gone: none for the companion (its
#: relay threads must all end); for the runtime, asyncio's default executor, which keeps up
#: to min(32, CPUs + 4) idle workers (name resolution for its gateway requests), a pool that
#: does not grow with connections.
THREAD_SLACK = {"companion": 0, "runtime": min(32, (os.cpu_count() or 1) + 4)}


# -- the tunnel ----------------------------------------------------------------------------------
@dataclass
class Tunnel:
    """A running companion and what its record says."""

    proc: subprocess.Popen
    record: dict
    env: dict[str, str]
    sshd_pid: int
    runtime_log: Path
    stderr_lines: list[str] = field(default_factory=list)

    def count_in_log(self, needle: str) -> int:
        """Lines of the runtime's log containing `needle`."""
        try:
            return self.runtime_log.read_text(errors="replace").count(needle)
        except OSError:
            return 0

    def log_problems(self, limit: int = 40) -> list[str]:
        """Warning and error lines of the runtime's log (which never holds a token)."""
        try:
            lines = self.runtime_log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        keys = ("[W ", "[E ", "[C ", "Traceback", "died", "restart")
        return [line for line in lines if any(k in line for k in keys)][-limit:]

    @property
    def port(self) -> int:
        return int(self.record["local_port"])

    @property
    def token(self) -> str:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.record["url"]).query)["token"][0]

    @property
    def runtime_pid(self) -> int:
        return int(self.record["remote_pid"])

    @property
    def companion_pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def companion_tunnel(
    tmp: Path, gateway_url: str | None = None, gateway_token: str | None = None
) -> Iterator[Tunnel]:
    """sshd on loopback, a fake HOME that knows it, and `start ALIAS --json` running."""
    files = SSHClientFiles(tmp / "client")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JUPYTER_", "SSH_")) and k != "DISPLAY"
    }
    env.update(
        HOME=str(tmp / "home"),
        JUPYTER_DATA_DIR=str(tmp / "local" / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "local" / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "local" / "config"),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if gateway_token:
        env["COLABREMOTE_GATEWAY_TOKEN"] = gateway_token
    try:
        with run_sshd(tmp, name="sshd") as server:
            files.add_host(ALIAS, server)
            files.make_home(tmp / "home")
            argv = [sys.executable, "-m", "jupyter_colab_remote", "start", ALIAS]
            argv += ["--port", str(free_port()), "--json"]
            if gateway_url:
                argv += ["--gateway-url", gateway_url]
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
            )  # fmt: skip
            lines: list[str] = []
            out: queue.Queue[str | None] = queue.Queue()

            def pump(stream, sink) -> None:
                for line in stream:
                    sink(line.rstrip("\n"))
                if sink is not lines.append:
                    out.put(None)

            threading.Thread(target=pump, args=(proc.stdout, out.put), daemon=True).start()
            threading.Thread(target=pump, args=(proc.stderr, lines.append), daemon=True).start()
            try:
                record = None
                end = time.monotonic() + 120
                while record is None:
                    line = out.get(timeout=max(0.1, end - time.monotonic()))
                    if line is None:
                        raise RuntimeError("start exited without a record:\n" + "\n".join(lines))
                    if line.startswith("{"):
                        record = json.loads(line)
                log = Path(server.remote_env["JUPYTER_RUNTIME_DIR"]) / "colabremote-default.log"
                yield Tunnel(proc, record, env, server.pid, log, lines)
            finally:
                stop_process(proc)
                subprocess.run(
                    [sys.executable, "-m", "jupyter_colab_remote", "stop", ALIAS], env=env,
                    capture_output=True, timeout=60,
                )  # fmt: skip
    finally:
        files.close()


# -- REST through the tunnel ------------------------------------------------------------------
def rest(tunnel: Tunnel, method: str, path: str, body: dict | None = None, timeout: float = 120):
    req = urllib.request.Request(
        f"http://127.0.0.1:{tunnel.port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {tunnel.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return r.status, json.loads(raw) if raw else None


def start_kernels(tunnel: Tunnel, n: int, batch: int, deadline: float) -> list[str]:
    """n kernels, at most `batch` starting at once, all within `deadline` seconds."""
    end = time.monotonic() + deadline

    def one(_: int) -> str:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("kernel start deadline passed")
        code, model = rest(tunnel, "POST", "/api/kernels", {"name": "python3"}, timeout=left)
        assert code == 201, (code, model)
        return model["id"]

    with concurrent.futures.ThreadPoolExecutor(batch) as pool:
        return list(pool.map(one, range(n)))


def shutdown_kernels(tunnel: Tunnel, ids: list[str], batch: int) -> None:
    def one(kid: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):
            rest(tunnel, "DELETE", f"/api/kernels/{kid}", timeout=60)

    with concurrent.futures.ThreadPoolExecutor(batch) as pool:
        list(pool.map(one, ids))


# -- the clients -----------------------------------------------------------------------------
def _execute_request(session: str) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    msg = {
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "load",
                   "session": session, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": "pass", "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }  # fmt: skip
    return msg_id, json.dumps(msg)


async def roundtrip(ws: WebSocketClientConnection, session: str, timeout: float) -> float:
    """Seconds from execute_request to its execute_reply; its idle status is awaited too
    (untimed), so the next request starts from a quiet kernel."""
    msg_id, payload = _execute_request(session)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    elapsed: float | None = None
    idle = False
    t0 = time.perf_counter()
    await ws.write_message(payload)
    seen: list[str] = []  # this request's message types, for the error if one never comes
    while elapsed is None or not idle:
        try:
            raw = await asyncio.wait_for(ws.read_message(), max(0.01, end - loop.time()))
        except asyncio.TimeoutError:
            waiting = "execute_reply" if elapsed is None else "idle status"
            raise TimeoutError(
                f"no {waiting} within {timeout:g} s for {msg_id} (its messages so far: {seen})"
            ) from None
        if raw is None:
            raise ConnectionError("kernel WebSocket closed")
        if isinstance(raw, bytes):
            continue
        msg = json.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        seen.append(msg["msg_type"])
        if msg["msg_type"] == "execute_reply":
            elapsed = time.perf_counter() - t0
            if msg["content"].get("status") != "ok":
                raise RuntimeError(f"execute failed: {msg['content']}")
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    return elapsed


class Gate:
    """Opens once every client has connected and warmed up (or failed), so that the timed
    round trips of all clients run together, against kernels that are all ready."""

    def __init__(self, n: int, on_open: t.Callable[[], None] | None = None) -> None:
        self.left = n
        self.event = asyncio.Event()
        self.opened_at: float | None = None
        self.on_open = on_open

    def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0 and not self.event.is_set():
            self.opened_at = time.monotonic()
            if self.on_open:
                self.on_open()
            self.event.set()


async def client(
    port: int, token: str, kernel_id: str, executes: int, warmup: int, timeout: float, gate: Gate
) -> list[float]:
    """One client: connect through the tunnel, warm up, wait for the others, then time
    `executes` round trips; close and wait (bounded) until the server has closed too."""
    session = uuid.uuid4().hex
    request = HTTPRequest(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?session_id={session}",
        headers={"Authorization": f"token {token}"}, connect_timeout=120, request_timeout=120,
    )  # fmt: skip
    ws = None
    try:
        ws = await websocket_connect(request)
        for _ in range(max(1, warmup)):  # the first one waits for the kernel to be ready
            await roundtrip(ws, session, 120.0)
    finally:
        gate.arrive()
    try:
        await asyncio.wait_for(gate.event.wait(), 600)
        return [await roundtrip(ws, session, timeout) for _ in range(executes)]
    finally:
        ws.close()
        with contextlib.suppress(Exception):
            while await asyncio.wait_for(ws.read_message(), 5) is not None:
                pass


async def drive(
    tunnel: Tunnel,
    ids: list[str],
    executes: int,
    warmup: int,
    timeout: float = 60.0,
    on_ready: t.Callable[[], None] | None = None,
) -> tuple[list[list[float]], list[str], float, float]:
    """All clients at once: per-client samples, errors of clients that failed, seconds until
    every kernel answered (connect + warm-up), and seconds of the timed phase."""
    t0 = time.monotonic()
    gate = Gate(len(ids), on_ready)
    results = await asyncio.gather(
        *(client(tunnel.port, tunnel.token, k, executes, warmup, timeout, gate) for k in ids),
        return_exceptions=True,
    )
    end = time.monotonic()
    opened = gate.opened_at or end
    samples = [r for r in results if isinstance(r, list)]
    errors = [
        f"kernel {kid}: {type(r).__name__}: {r}"
        for kid, r in zip(ids, results, strict=True)
        if isinstance(r, BaseException)
    ]
    return samples, errors, opened - t0, end - opened


# -- resources ---------------------------------------------------------------------------------
def usage(pid: int) -> dict[str, int]:
    """Open file descriptors, resident memory and threads of one process (not its children)."""
    p = psutil.Process(pid)
    with p.oneshot():
        return {"fds": p.num_fds(), "rss": p.memory_info().rss, "threads": p.num_threads()}


class PeakSampler:
    """Samples usage() of some processes every `interval` s in a thread; keeps the maxima."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.pids = pids
        self.interval = interval
        self.peak: dict[str, dict[str, int]] = {k: {} for k in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(psutil.Error):
                for key, value in usage(pid).items():
                    self.peak[name][key] = max(self.peak[name].get(key, 0), value)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


def settle(
    pids: dict[str, int], baseline: dict[str, dict[str, int]], fd_slack: int, deadline: float
) -> dict[str, dict[str, int]]:
    """Poll (bounded) until every process is back within fd_slack descriptors of baseline
    and within THREAD_SLACK threads (a relay thread may take a moment to end)."""
    end = time.monotonic() + deadline
    while True:
        now = {name: usage(pid) for name, pid in pids.items()}
        back = all(
            now[n]["fds"] <= baseline[n]["fds"] + fd_slack
            and now[n]["threads"] <= baseline[n]["threads"] + THREAD_SLACK[n]
            for n in pids
        )
        if back or time.monotonic() > end:
            return now
        time.sleep(0.25)


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _children(pid: int, name_prefix: str = "") -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in kids if not name_prefix or p.name().startswith(name_prefix)]


class CpuMeter:
    """CPU seconds used over an interval by the runtime, the kernels, the gateway (if any),
    sshd's connection processes, the companion and this process (the clients)."""

    def __init__(self, tunnel: Tunnel, gateway_pid: int | None = None) -> None:
        kernel_parent = gateway_pid or tunnel.runtime_pid
        self.groups = {
            "runtime": [psutil.Process(tunnel.runtime_pid)],
            "kernels": _children(kernel_parent),
            "companion": [psutil.Process(tunnel.companion_pid)],
            "sshd": _children(tunnel.sshd_pid, "sshd"),
            "clients": [psutil.Process()],
        }
        if gateway_pid:
            self.groups["gateway"] = [psutil.Process(gateway_pid)]
        self.start = {k: _cpu(v) for k, v in self.groups.items()}
        self.t0 = time.monotonic()

    def percent(self) -> dict[str, float]:
        """Per group: CPU used since start, in % of one core."""
        wall = time.monotonic() - self.t0
        return {k: round(100 * (_cpu(v) - self.start[k]) / wall, 1) for k, v in self.groups.items()}


def summarize(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "n": len(ms),
        "p50_ms": round(q[49], 2),
        "p90_ms": round(q[89], 2),
        "p99_ms": round(q[98], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(ms[-1], 2),
    }


# -- the whole run -----------------------------------------------------------------------------
def run_load(
    tunnel: Tunnel,
    kernels: int,
    executes: int,
    warmup: int = 5,
    batch: int = 5,
    start_deadline: float = 600.0,
    fd_slack: int = 8,
    settle_deadline: float = 30.0,
    solo_executes: int | None = None,
    rounds: int = 1,
    gateway_pid: int | None = None,
) -> dict:
    """One client alone, then `kernels` clients at once; resources before, at peak, after."""
    pids = {"runtime": tunnel.runtime_pid, "companion": tunnel.companion_pid}
    result: dict = {"kernels": kernels, "executes": executes}

    # 1. one client alone (also warms up everything loaded lazily on first use).
    (solo_kernel,) = start_kernels(tunnel, 1, 1, 120)
    solo, errors, _, _ = asyncio.run(
        drive(tunnel, [solo_kernel], solo_executes or executes, warmup)
    )
    assert not errors, errors
    shutdown_kernels(tunnel, [solo_kernel], 1)
    result["solo"] = summarize(solo[0])
    time.sleep(1.0)
    baseline = {name: usage(pid) for name, pid in pids.items()}
    result["baseline"] = baseline

    # 2. all kernels, started concurrently in batches, then all clients at once; again for
    #    each round (a leak grows from round to round, a high-water mark does not).
    result["rounds"] = []
    for _ in range(rounds):
        result["rounds"].append(
            _one_round(tunnel, pids, baseline, kernels, executes, warmup, batch, start_deadline,
                       fd_slack, settle_deadline, gateway_pid)
        )  # fmt: skip
    result.update(result["rounds"][0])
    result["after"] = result["rounds"][-1]["after"]
    return result


def _one_round(
    tunnel: Tunnel,
    pids: dict[str, int],
    baseline: dict[str, dict[str, int]],
    kernels: int,
    executes: int,
    warmup: int,
    batch: int,
    start_deadline: float,
    fd_slack: int,
    settle_deadline: float,
    gateway_pid: int | None,
) -> dict:
    result: dict = {}
    cpu = (tunnel, gateway_pid)
    with PeakSampler(pids) as sampler:
        t0 = time.monotonic()
        ids = start_kernels(tunnel, kernels, batch, start_deadline)
        result["start_s"] = round(time.monotonic() - t0, 1)
        meter: list[CpuMeter] = []
        samples, errors, ready_s, drive_s = asyncio.run(
            drive(tunnel, ids, executes, warmup, on_ready=lambda: meter.append(CpuMeter(*cpu)))
        )
        result["cpu_percent"] = meter[0].percent() if meter else {}
        result["ready_s"] = round(result["start_s"] + ready_s, 1)
        result["drive_s"] = round(drive_s, 1)
        # Clients gone, kernels still running.
        result["clients_gone"] = {name: usage(pid) for name, pid in pids.items()}
        result["replies"] = sum(len(s) for s in samples)
        result["expected_replies"] = kernels * executes
        result["client_errors"] = errors
        flat = [x for s in samples for x in s]
        result["concurrent"] = summarize(flat) if len(flat) > 1 else {}
        result["executes_per_s"] = round(len(flat) / result["drive_s"], 1)
        # 3. clients gone; kernels shut down.
        t0 = time.monotonic()
        shutdown_kernels(tunnel, ids, batch)
        result["shutdown_s"] = round(time.monotonic() - t0, 1)
    result["peak"] = sampler.peak
    _, kernels_left = rest(tunnel, "GET", "/api/kernels")
    result["kernels_left"] = len(kernels_left)
    result["after"] = settle(pids, baseline, fd_slack, settle_deadline)
    if errors:
        result["runtime_log_problems"] = tunnel.log_problems()
    result["kernel_restarts_so_far"] = tunnel.count_in_log("KernelRestarter: restarting kernel")
    return result
