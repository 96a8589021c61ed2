"""The companion's tunnel against OpenSSH and a direct connection, on a real sshd.

Usage: python -m bench.bench_companion [--n 200] [--mb 256] [--recovery-runs 3] [--outage 8]

Needs root, /usr/sbin/sshd and /usr/bin/ssh (the tests' harness, tests/harness/sshd.py, starts sshd
from a temp config on 127.0.0.1; `ip`/`nsenter` for the recovery part). In one run:

1. start: time from `python -m jupyter_colab_remote start ALIAS --json` to the printed
   (already verified) record: cold (no runtime on the host) and re-attach (runtime running).
2. execute round trip (execute_request -> execute_reply, kernel idle awaited untimed), p50/p99,
   through: the companion's port; OpenSSH `ssh -N -L` (forward only); OpenSSH `ssh -L` with a
   remote command running (sshd turns TCP_NODELAY on only once a session runs a command);
   and directly to the runtime's port (sshd is local, so the runtime is reachable directly).
3. bulk throughput, MB/s: (a) GET of a large file from the runtime's /files/ through the
   companion, OpenSSH and direct; (b) raw TCP to a byte source/sink on the "remote" side
   through the companion's forwarder code (Forwarder + Link + ssh_connect.connect, in a child
   process, since the companion itself only forwards to the runtime), OpenSSH -L with its
   default cipher and with aes128-gcm, and direct.
4. recovery: sshd inside a network namespace; the link is cut (`ip link set DEV down`) for
   --outage seconds and restored; time until the companion notices, and from link-up until
   the same URL answers again.

OpenSSH ignores $HOME, so it gets `-F CONFIG` (IdentityFile, UserKnownHostsFile inside) and
`-o ExitOnForwardFailure=yes`; the companion gets a fake HOME with the same key and
known_hosts. Every process started here is stopped by PID; every wait has a deadline.
Prints a table and, as its last line, one JSON object.
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
import queue  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import paramiko  # noqa: E402
from tornado.httpclient import HTTPRequest  # noqa: E402
from tornado.websocket import websocket_connect  # noqa: E402

from bench.bench_execute_roundtrip import roundtrip, summarize  # noqa: E402
from tests.harness.netns import remote_host_netns  # noqa: E402
from tests.harness.processes import free_port, stop_process  # noqa: E402
from tests.harness.ssh_client import SSHClientFiles  # noqa: E402
from tests.harness.sshd import run_sshd  # noqa: E402

ALIAS = "bench-box"
NS_ALIAS = "bench-ns"
CHUNK = 1 << 20


# -- processes ----------------------------------------------------------------------------------
#: Every companion started, so that a failure anywhere still stops them all (by PID).
STARTED: list[Companion] = []


class Companion:
    """`start ALIAS --port P --json` as a subprocess; stdout/stderr lines collected by threads."""

    def __init__(
        self, env: dict[str, str], alias: str, port: int, extra: tuple[str, ...] = ()
    ) -> None:
        STARTED.append(self)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_colab_remote", "start", alias]
            + ["--port", str(port), "--json", *extra],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True,
        )  # fmt: skip
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.put(line)
        self.stdout.put(None)

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()

    def steps(self) -> dict[str, float]:
        """The timed steps the companion printed (`  label   1.23 s`)."""
        out = {}
        for line in self.stderr().splitlines():
            m = re.match(r"^  (\S.*?)\s+(\d+\.\d+) s$", line)
            if m:
                out[m[1]] = float(m[2])
        return out

    def stderr(self) -> str:
        with self.cond:
            return "\n".join(line for _, line in self.lines)

    def record(self, deadline: float = 120.0) -> tuple[dict, float]:
        """The JSON record and seconds from process start until it was printed."""
        end = time.monotonic() + deadline
        while True:
            try:
                line = self.stdout.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no record within {deadline} s:\n{self.stderr()}") from None
            if line is None:
                raise RuntimeError(f"start exited without a record:\n{self.stderr()}")
            if line.startswith("{"):
                return json.loads(line), time.monotonic() - self.t0

    def wait_line(self, pred: Callable[[str], bool], after: float, deadline: float) -> float:
        """Monotonic time of the first stderr line after `after` matching pred."""
        end = time.monotonic() + deadline
        with self.cond:
            while True:
                for when, line in self.lines:
                    if when >= after and pred(line):
                        return when
                if time.monotonic() >= end:
                    raise TimeoutError(f"no matching stderr line:\n{self.stderr()}")
                self.cond.wait(max(0.01, end - time.monotonic()))

    def stop(self) -> None:
        stop_process(self.proc)


def wait_port(port: int, proc: subprocess.Popen | None, deadline: float = 30.0) -> None:
    """Poll until 127.0.0.1:port accepts a connection (bounded)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {port} after {deadline} s")


@contextlib.contextmanager
def openssh_forward(
    files: object, local: int, remote: int, *, command: bool = False, cipher: str | None = None
) -> Iterator[subprocess.Popen]:
    """`ssh -F CONFIG -L local:127.0.0.1:remote ALIAS` (-N unless `command`); stopped by PID."""
    argv = [
        "-o", "ExitOnForwardFailure=yes", "-L", f"{local}:127.0.0.1:{remote}",
        *(["-c", cipher] if cipher else []),
    ]  # fmt: skip
    argv = (
        files.ssh_argv(*argv, ALIAS, "sleep 100000")
        if command
        else files.ssh_argv("-N", *argv, ALIAS)
    )
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_port(local, proc)
        yield proc
    finally:
        stop_process(proc)


# -- byte source / sink on the "remote" side ----------------------------------------------------
BYTES_SERVER = r"""
import socket, sys, threading
CHUNK = 1 << 20
buf = memoryview(b"\0" * CHUNK)
def serve(c):
    with c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = b""
        while len(head) < 9:
            d = c.recv(9 - len(head))
            if not d:
                return
            head += d
        n = int.from_bytes(head[1:], "big")
        if head[:1] == b"E":  # echo n-byte messages until the client closes
            rb = bytearray(n)
            while True:
                got = 0
                while got < n:
                    k = c.recv_into(memoryview(rb)[got:], n - got)
                    if not k:
                        return
                    got += k
                c.sendall(rb)
        elif head[:1] == b"D":
            while n > 0:
                k = min(n, CHUNK)
                c.sendall(buf[:k])
                n -= k
        else:
            rb = bytearray(CHUNK)
            while n > 0:
                k = c.recv_into(rb, min(n, CHUNK))
                if not k:
                    return
                n -= k
            c.sendall(b"K")
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def bulk(port: int, nbytes: int, upload: bool) -> float:
    """MB/s of one download (or upload) of nbytes through 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.sendall((b"U" if upload else b"D") + nbytes.to_bytes(8, "big"))
        if upload:
            data = memoryview(b"\0" * CHUNK)
            left = nbytes
            while left > 0:
                k = min(left, CHUNK)
                s.sendall(data[:k])
                left -= k
            if s.recv(1) != b"K":
                raise RuntimeError("sink did not confirm")
        else:
            buf = bytearray(CHUNK)
            left = nbytes
            while left > 0:
                k = s.recv_into(buf, min(left, CHUNK))
                if not k:
                    raise RuntimeError(f"source closed with {left} bytes left")
                left -= k
        return nbytes / (time.perf_counter() - t0) / 1e6


def echo_rtts(port: int, size: int, n: int, warmup: int) -> list[float]:
    """Seconds per round trip of a `size`-byte message echoed through 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"E" + size.to_bytes(8, "big"))
        msg = b"x" * size
        buf = bytearray(size)
        out = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            s.sendall(msg)
            got = 0
            while got < size:
                k = s.recv_into(memoryview(buf)[got:], size - got)
                if not k:
                    raise RuntimeError("echo server closed")
                got += k
            if i >= warmup:
                out.append(time.perf_counter() - t0)
        return out


FORWARDER_CHILD = r"""
import sys, time
from jupyter_colab_remote.companion.forwarder import Forwarder, Link
from jupyter_colab_remote.companion.ssh_connect import connect
from jupyter_colab_remote.companion.ssh_target import resolve
conn = connect(resolve(sys.argv[1]))
conn.run("true")  # as the companion does: a command turns sshd's TCP_NODELAY on
link = Link()
link.set(conn.transport, ("127.0.0.1", int(sys.argv[2])))
fwd = Forwarder(0, link).start()
print(fwd.port, conn.transport.remote_cipher, flush=True)
sys.stdin.read()
fwd.close()
conn.close()
"""


@contextlib.contextmanager
def forwarder_child(env: dict[str, str], remote: int) -> Iterator[tuple[int, str]]:
    """The companion's Forwarder in a child process, forwarding to a remote port."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FORWARDER_CHILD, ALIAS, str(remote)], env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port, cipher = proc.stdout.readline().split()
        yield int(port), cipher
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        stop_process(proc)


# -- the runtime through a URL ------------------------------------------------------------------
def api(base: str, token: str, method: str, path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"token {token}"},
        data=None if body is None else json.dumps(body).encode(),
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def fetch_file(port: int, token: str, name: str) -> float:
    """MB/s of GET /files/NAME through 127.0.0.1:port (streamed to nowhere)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/files/{name}", headers={"Authorization": f"token {token}"}
    )
    t0 = time.perf_counter()
    total = 0
    with urllib.request.urlopen(req, timeout=120) as resp:
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            total += len(chunk)
    return total / (time.perf_counter() - t0) / 1e6


async def rtt_samples(port: int, token: str, kernel_id: str, n: int, warmup: int) -> list[float]:
    session = uuid.uuid4().hex
    request = HTTPRequest(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?session_id={session}",
        headers={"Authorization": f"token {token}"}, connect_timeout=10, request_timeout=30,
    )  # fmt: skip
    ws = await websocket_connect(request)
    try:
        sock = ws.protocol.stream.socket  # type: ignore[union-attr]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await roundtrip(ws, "pass", session, 120)
        for _ in range(warmup):
            await roundtrip(ws, "pass", session, 30)
        return [await roundtrip(ws, "pass", session, 30) for _ in range(n)]
    finally:
        ws.close()


# -- the parts ----------------------------------------------------------------------------------
def measure_start(env: dict[str, str], port: int, cold_runs: int, reattach_runs: int) -> dict:
    """Cold and re-attach start times; leaves the last companion running (in "companion")."""
    cold: list[float] = []
    again: list[float] = []
    steps: dict[str, dict[str, float]] = {}
    companion = None
    for i in range(max(1, cold_runs)):
        if companion is not None:
            # `stop` ends the companion (from its state file) and the runtime: next is cold.
            subprocess.run(
                [sys.executable, "-m", "jupyter_colab_remote", "stop", ALIAS], env=env,
                capture_output=True, timeout=60, check=True,
            )  # fmt: skip
            companion.stop()
        companion = Companion(env, ALIAS, port)
        rec, secs = companion.record()
        assert not rec["reattached"], rec
        cold.append(secs)
        steps = steps or {"cold": companion.steps()}
        for _ in range(reattach_runs if i == 0 else 0):
            companion.stop()  # SIGTERM: the tunnel closes, the runtime keeps running
            companion = Companion(env, ALIAS, port)
            rec, secs = companion.record()
            assert rec["reattached"], rec
            again.append(secs)
            steps.setdefault("reattach", companion.steps())
    return {
        "companion": companion,
        "record": rec,
        "cold_s": [round(x, 3) for x in cold],
        "reattach_s": [round(x, 3) for x in again],
        "steps_s": steps,
    }


def measure_recovery(
    tmp: Path, files: object, env: dict, runs: int, outage: float, extra: tuple[str, ...] = ()
) -> dict:
    """sshd in a namespace; cut the link `runs` times; detection and recovery seconds
    (`extra`: more `start` options)."""

    out: dict[str, list[float]] = {"detect_s": [], "url_back_s": [], "reconnected_line_s": []}
    with remote_host_netns() as ns, run_sshd(tmp, netns=ns, name="sshd-ns") as server:
        files.add_host(NS_ALIAS, server)
        files.make_home(Path(env["HOME"]))
        port = free_port()
        c = Companion(env, NS_ALIAS, port, extra)
        try:
            rec, _ = c.record()
            token = urllib.parse.parse_qs(urllib.parse.urlsplit(rec["url"]).query)["token"][0]
            base = f"http://127.0.0.1:{port}"
            for _ in range(runs):
                t_down = time.monotonic()
                ns.link_down()
                try:
                    lost = c.wait_line(lambda s: "lost" in s, t_down, 30)
                    out["detect_s"].append(round(lost - t_down, 2))
                    time.sleep(max(0.0, outage - (time.monotonic() - t_down)))
                finally:
                    ns.link_up()
                t_up = time.monotonic()
                end = t_up + 60
                while time.monotonic() < end:
                    with contextlib.suppress(OSError):
                        req = urllib.request.Request(
                            f"{base}/colabremote/api/status",
                            headers={"Authorization": f"token {token}"},
                        )
                        with urllib.request.urlopen(req, timeout=1.0) as resp:
                            if resp.status == 200:
                                break
                    time.sleep(0.02)
                else:
                    raise TimeoutError("the URL did not answer within 60 s of link-up")
                out["url_back_s"].append(round(time.monotonic() - t_up, 2))
                back = c.wait_line(lambda s: "reconnected" in s, t_down, 60)
                out["reconnected_line_s"].append(round(back - t_up, 2))
                time.sleep(1.0)  # let the new connection settle before the next cut
        finally:
            c.stop()
            subprocess.run(
                [sys.executable, "-m", "jupyter_colab_remote", "stop", NS_ALIAS], env=env,
                capture_output=True, timeout=60,
            )  # fmt: skip
    return out


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 3) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="timed execute round trips per path")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--mb", type=int, default=256, help="MB per raw bulk transfer")
    parser.add_argument("--file-mb", type=int, default=128, help="size of the /files/ file")
    parser.add_argument("--echo-n", type=int, default=2000, help="64-byte echo round trips")
    parser.add_argument("--repeat", type=int, default=3, help="bulk transfers per path (best)")
    parser.add_argument("--cold-runs", type=int, default=2)
    parser.add_argument("--reattach-runs", type=int, default=3)
    parser.add_argument("--recovery-runs", type=int, default=3, help="0 skips the netns part")
    parser.add_argument("--outage", type=float, default=8.0, help="seconds the link is down")
    args = parser.parse_args(argv)
    result: dict[str, object] = {"bench": "companion"}
    try:
        run_all(args, result)
    finally:
        for c in STARTED:
            c.stop()
    print_report(result)
    result.update(python=platform.python_version(), paramiko=paramiko.__version__)
    print(json.dumps(result, sort_keys=True))
    return 0


def run_all(args: argparse.Namespace, result: dict[str, object]) -> None:
    """Everything, inside one temp dir and one loopback sshd (plus the netns one)."""

    with tempfile.TemporaryDirectory(prefix="bench-companion-") as tmpdir:
        tmp = Path(tmpdir)
        files = SSHClientFiles(tmp / "client")
        local = tmp / "local"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTER_", "SSH_")) and k != "DISPLAY"
        }  # no agent, no askpass: only the fake HOME's key
        env.update(
            {
                "HOME": str(tmp / "home"),
                "JUPYTER_DATA_DIR": str(local / "data"),
                "JUPYTER_RUNTIME_DIR": str(local / "runtime"),
                "JUPYTER_CONFIG_DIR": str(local / "config"),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        with run_sshd(tmp, name="sshd") as server:
            files.add_host(ALIAS, server)
            files.make_home(tmp / "home")
            port = free_port()
            started = measure_start(env, port, args.cold_runs, args.reattach_runs)
            companion: Companion = started.pop("companion")
            record = started.pop("record")
            result["start"] = started
            extra: list[subprocess.Popen] = []
            try:
                token = urllib.parse.parse_qs(urllib.parse.urlsplit(record["url"]).query)["token"][
                    0
                ]
                rport = int(record["remote_port"])
                direct = f"http://127.0.0.1:{rport}"
                kernel_id = api(direct, token, "POST", "/api/kernels", {"name": "python3"})["id"]

                # 2. execute round trips
                rtt: dict[str, dict] = {}
                ports = {"direct": rport, "companion": port}
                l_n, l_cmd = free_port(), free_port()
                with (
                    openssh_forward(files, l_n, rport) as _,
                    openssh_forward(files, l_cmd, rport, command=True) as _,
                ):
                    ports["openssh -N -L"] = l_n
                    ports["openssh -L +cmd"] = l_cmd
                    for label, p in ports.items():
                        samples = asyncio.run(rtt_samples(p, token, kernel_id, args.n, args.warmup))
                        rtt[label] = summarize(samples)
                    # 3a. /files/ end-to-end
                    name = "bench-bulk.bin"
                    with open(server.remote_home / name, "wb") as f:
                        for _ in range(args.file_mb):
                            f.write(b"\0" * CHUNK)
                    files_mbs = {
                        label: max(fetch_file(p, token, name) for _ in range(args.repeat))
                        for label, p in ports.items()
                        if label != "openssh -N -L"
                    }
                    (server.remote_home / name).unlink()
                result["rtt_ms"] = rtt

                # 3b. raw TCP
                src = subprocess.Popen(
                    [sys.executable, "-c", BYTES_SERVER], stdout=subprocess.PIPE, text=True,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
                extra.append(src)
                assert src.stdout is not None
                src_port = int(src.stdout.readline())
                nbytes = args.mb * CHUNK
                raw: dict[str, dict[str, float]] = {}

                def measure(label: str, p: int) -> None:
                    bulk(p, 8 * CHUNK, upload=False)  # warm up
                    echo = sorted(echo_rtts(p, 64, args.echo_n, 200))
                    raw[label] = {
                        "down": round(max(bulk(p, nbytes, False) for _ in range(args.repeat)), 1),
                        "up": round(max(bulk(p, nbytes, True) for _ in range(args.repeat)), 1),
                        "echo_p50_us": round(echo[len(echo) // 2] * 1e6, 1),
                        "echo_p99_us": round(echo[int(len(echo) * 0.99)] * 1e6, 1),
                    }

                measure("direct", src_port)
                with forwarder_child(env, src_port) as (fport, cipher):
                    measure(f"companion ({cipher})", fport)
                for cipher in ("chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"):
                    lp = free_port()
                    with openssh_forward(files, lp, src_port, cipher=cipher):
                        measure(f"openssh -L ({cipher.split('@')[0]})", lp)
                result["files_mb_s"] = {k: round(v, 1) for k, v in files_mbs.items()}
                result["raw_mb_s"] = raw
                with contextlib.suppress(Exception):
                    api(direct, token, "DELETE", f"/api/kernels/{kernel_id}")
            finally:
                companion.stop()
                for p in extra:
                    stop_process(p)
                subprocess.run(
                    [sys.executable, "-m", "jupyter_colab_remote", "stop", ALIAS], env=env,
                    capture_output=True, timeout=60,
                )  # fmt: skip
            if args.recovery_runs > 0:
                result["recovery"] = measure_recovery(
                    tmp, files, env, args.recovery_runs, args.outage
                )
                result["outage_s"] = args.outage
        files.close()


def print_report(r: dict) -> None:
    st = r["start"]
    print("start to verified URL (s)")
    print(f"  cold      runs={st['cold_s']}  median {med(st['cold_s']):.2f}")
    print(f"  re-attach runs={st['reattach_s']}  median {med(st['reattach_s']):.2f}")
    for kind, steps in st.get("steps_s", {}).items():
        print(f"  {kind} steps: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    rtt = r["rtt_ms"]
    base = rtt["companion"]["p50_ms"]
    print("\nexecute round trip (ms)        p50      p99     mean   p50 vs companion")
    for label, s in rtt.items():
        print(
            f"  {label:<22} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['mean_ms']:>8.2f}"
            f"   {s['p50_ms'] / base:>6.2f}x"
        )
    f = r["files_mb_s"]
    print("\nGET /files/ (MB/s, best)        MB/s   vs companion")
    for label, v in f.items():
        print(f"  {label:<22} {v:>8.1f}   {v / f['companion']:>6.2f}x")
    raw = r["raw_mb_s"]
    comp = next(v for k, v in raw.items() if k.startswith("companion"))
    print(
        "\nraw TCP                          down MB/s  up MB/s  down vs comp.  echo p50 us  p99 us"
    )
    for label, v in raw.items():
        print(
            f"  {label:<32} {v['down']:>8.1f} {v['up']:>8.1f}   {v['down'] / comp['down']:>8.2f}x"
            f"  {v['echo_p50_us']:>10.0f} {v['echo_p99_us']:>7.0f}"
        )
    if "recovery" in r:
        rec = r["recovery"]
        print(f"\nlink outage of {r['outage_s']:.0f} s (netns), runs={len(rec['detect_s'])}")
        print(f"  detected after the cut   {rec['detect_s']}  median {med(rec['detect_s'])}")
        print(f"  URL answers after up     {rec['url_back_s']}  median {med(rec['url_back_s'])}")
        print(
            f"  'reconnected' after up   {rec['reconnected_line_s']}  "
            f"median {med(rec['reconnected_line_s'])}"
        )


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
