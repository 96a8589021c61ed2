"""A real Jupyter Kernel Gateway on loopback (with a token), and a TCP proxy whose link can be
cut, for the gateway tests and the load benchmark. Processes are stopped by PID; every wait
has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil

from .processes import free_port, stop_process


class KernelGateway:
    """`python -m kernel_gateway` on 127.0.0.1:PORT, token in KG_AUTH_TOKEN, kernel listing on.

    `stop()` and `start()` again keep the port and the token (a gateway that went away and
    came back). Its kernels are its children; they end with it.
    """

    def __init__(self, directory: Path, token: str | None = None, port: int | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = token or secrets.token_hex(24)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = directory / "gateway.log"

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The gateway's environment: ours without JUPYTER_*/KG_*, its own dirs and token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER_", "KG_"))}
        env.update(
            HOME=str(self.dir / "home"),
            JUPYTER_RUNTIME_DIR=str(self.dir / "runtime"),
            JUPYTER_DATA_DIR=str(self.dir / "data"),
            JUPYTER_CONFIG_DIR=str(self.dir / "config"),
            KG_AUTH_TOKEN=self.token,  # the gateway reads its token from here
            KG_LIST_KERNELS="True",  # jupyter_server's gateway client lists kernels
        )
        return env

    def argv(self) -> list[str]:
        """The gateway's command line (no secrets on it)."""
        return [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={self.port}",
            "--KernelGatewayApp.port_retries=0",
        ]

    def start(self, deadline: float = 60.0) -> KernelGateway:
        """Start the gateway; return once it answers HTTP (bounded)."""
        (self.dir / "home").mkdir(exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited ({self.proc.returncode}):\n{self.log()}")
            try:
                urllib.request.urlopen(f"{self.url}/api", timeout=1).close()
                return self
            except urllib.error.HTTPError:
                return self  # it answers (401 without the token)
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the gateway did not answer within {deadline} s:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (it shuts its kernels down); SIGKILL to its group and kernels if they linger."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, timeout=timeout, group=True, tree=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kernel_pids(self) -> list[int]:
        """PIDs of the gateway's kernel processes."""
        if self.proc is None:
            return []
        try:
            return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.Error:
            return []

    def api(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        """A request straight to the gateway, with its token."""
        req = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def kernel_gateway(directory: Path, **kwargs: object) -> Iterator[KernelGateway]:
    """A started KernelGateway, stopped by PID afterwards whatever happened."""
    gw = KernelGateway(directory, **kwargs)  # type: ignore[arg-type]
    try:
        yield gw.start()
    finally:
        gw.stop()


class TCPProxy:
    """127.0.0.1:PORT -> target, in a thread. `cut()` closes every connection and the listener
    (new connections are refused, as from a host that went away); `restore()` listens again on
    the same port."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread.start()

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for w in (writer, up_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )  # RST, as a vanished host's connections end
            w.close()
        self.writers.clear()

    def start(self) -> TCPProxy:
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
