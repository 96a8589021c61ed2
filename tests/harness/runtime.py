"""Run `jupyter colabremote serve` as a real subprocess, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jupyter_colab_remote.tokens import TokenStore

from .processes import free_port, stop_process


@dataclass
class Runtime:
    """A running runtime: where it listens, a valid token, and where its files are."""

    proc: subprocess.Popen
    port: int
    token: str
    token_file: Path
    runtime_dir: Path
    log_path: Path
    home: Path

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL a user pastes into Colab."""
        return f"http://localhost:{self.port}/?token={self.token}"

    def log(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")


def wait_for_runtime_file(
    runtime_dir: Path, pid: int, proc: subprocess.Popen, deadline: float
) -> dict:
    """Wait (bounded) for the server to write its runtime file, which it does once listening."""
    path = runtime_dir / f"colabremote-{pid}.json"
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"runtime exited early with code {proc.returncode}")
        if path.exists():
            with contextlib.suppress(ValueError):
                return json.loads(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"runtime did not write {path} within {deadline} s")


@contextlib.contextmanager
def run_runtime(
    tmp: Path,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    create_token: bool = True,
    deadline: float = 60.0,
    port: int | None = None,
) -> Iterator[Runtime]:
    """Start `jupyter colabremote serve` on a free loopback port (or `port`: 0 lets the server
    choose); stop it by PID afterwards."""
    home = tmp / "home"
    runtime_dir = tmp / "runtime"
    token_file = tmp / "data" / "colabremote" / "tokens.json"
    root = tmp / "root"
    for d in (home, runtime_dir, root):
        d.mkdir(parents=True, exist_ok=True)
    token = TokenStore(token_file).create("test") if create_token else ""
    port = free_port() if port is None else port
    full_env = {
        **os.environ,
        "HOME": str(home),
        "JUPYTER_RUNTIME_DIR": str(runtime_dir),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        **(env or {}),
    }
    log_path = tmp / "runtime.log"
    args = [
        sys.executable,
        "-m",
        "jupyter_colab_remote",
        "serve",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--ServerApp.root_dir={root}",
        *(extra_args or []),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        info = wait_for_runtime_file(runtime_dir, proc.pid, proc, deadline)
        port = port or int(info["port"])  # 0: the port the server chose
        yield Runtime(proc, port, token, token_file, runtime_dir, log_path, home)
    finally:
        stop_process(proc, group=True)  # and its kernels (its session)
