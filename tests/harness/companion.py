"""Run the companion (`python -m jupyter_colab_remote start|stop|...`) as real processes.

Every wait has a deadline; every process started here is stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
from tornado.websocket import websocket_connect

from .kernel_client import execute
from .processes import family, stop_process, stop_processes

#: A start that has to cold-start the runtime takes ~5 s here; leave room for a busy machine.
START_DEADLINE = 90.0


def companion_env(home: Path, tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose HOME is `home`: ~/.ssh there, state and runtime dirs in
    tmp, no SSH agent, no askpass (unless given in extra)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSH_AUTH_SOCK", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY")
        and not k.startswith("JUPYTER_")
    }
    env.update(
        HOME=str(home),
        JUPYTER_DATA_DIR=str(tmp / "local-data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "local-runtime"),
        JUPYTER_CONFIG_DIR=str(tmp / "local-config"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def cli_argv(*args: str, python: str | None = None) -> list[str]:
    """`python -m jupyter_colab_remote ARGS` (this interpreter unless another is given)."""
    return [python or sys.executable, "-m", "jupyter_colab_remote", *args]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60.0, python: str | None = None
) -> subprocess.CompletedProcess:
    """Run a companion command to completion (bounded); no terminal, stdin from /dev/null."""
    proc = subprocess.Popen(
        cli_argv(*args, python=python),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # no controlling terminal: prompts must use SSH_ASKPASS
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        out, err = proc.communicate(timeout=5)
        raise AssertionError(
            f"{args} did not finish within {timeout} s\nstdout: {out}\nstderr: {err}"
        ) from None
    finally:
        stop_process(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def error_line(res: subprocess.CompletedProcess) -> str:
    """The one-line error of a failed command (asserting it is exactly one line)."""
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in lines if line.startswith("jupyter colabremote: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    return errors[0]


class Companion:
    """A running `start` (it stays up, keeping the tunnel): reads its JSON record."""

    def __init__(
        self, args: list[str], env: dict[str, str], log_dir: Path, python: str | None = None
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(log_dir.glob("companion-*.err")))
        self.stderr_path = log_dir / f"companion-{n}.err"
        self.args = args
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cli_argv(*args, python=python),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.record: dict | None = None
        self._out = b""

    @property
    def pid(self) -> int:
        """The companion's PID."""
        return self.proc.pid

    def stderr(self) -> str:
        """Everything the companion wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def read_until(self, marker: bytes, deadline: float = START_DEADLINE) -> str:
        """Stdout up to and including the first line containing `marker` (bounded wait)."""
        assert self.proc.stdout is not None
        end = time.monotonic() + deadline
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while marker not in self._out or not self._out.split(marker, 1)[1].count(b"\n"):
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {marker!r} on stdout within {deadline} s; stderr:\n{self.stderr()}"
                    )
                if not sel.select(min(left, 0.5)):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.proc.wait(10)
                    raise AssertionError(
                        f"companion exited ({self.proc.returncode}) before printing {marker!r};"
                        f" stdout: {self._out!r}; stderr:\n{self.stderr()}"
                    )
                self._out += chunk
        head, tail = self._out.split(marker, 1)
        line_end = tail.index(b"\n") + 1
        text, self._out = head + marker + tail[:line_end], tail[line_end:]
        return text.decode()

    def read_record(self, deadline: float = START_DEADLINE) -> dict:
        """The JSON line `start --json` prints once the chain is verified (bounded wait)."""
        self.record = json.loads(self.read_until(b"{", deadline).splitlines()[-1])
        return self.record

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the companion by PID and reap it; its exit code."""
        rc = stop_process(self.proc, sig, timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return rc


@contextlib.contextmanager
def companion(args: list[str], env: dict[str, str], log_dir: Path, python: str | None = None):
    """A running companion (run by `python`, default this one), stopped by PID on exit."""
    c = Companion(args, env, log_dir, python)
    try:
        yield c
    finally:
        c.stop()


def start_companion(c: Companion, deadline: float = START_DEADLINE) -> dict:
    """Read the record, asserting a clean, well-formed start."""
    record = c.read_record(deadline)
    assert record["url"] == f"http://localhost:{record['local_port']}/?token={token_of(record)}"
    assert "Traceback" not in c.stderr()
    return record


def token_of(record_or_url: dict | str) -> str:
    """The token in a record's (or a) URL."""
    url = record_or_url["url"] if isinstance(record_or_url, dict) else record_or_url
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]


# ---------------------------------------------------------------------------------------------
# using the printed URL as Colab / VS Code would


def api(url: str, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, bytes]:
    """An authenticated REST call through the printed URL (its host, port and token)."""
    parts = urllib.parse.urlsplit(url)
    req = urllib.request.Request(
        f"{parts.scheme}://{parts.netloc}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token_of(url)}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def start_kernel(url: str) -> str:
    """POST /api/kernels through the URL; the new kernel's id."""
    code, body = api(url, "/api/kernels", "POST", {"name": "python3"})
    assert code == 201, (code, body)
    return json.loads(body)["id"]


def run_code(url: str, kernel_id: str, *codes: str, timeout: float = 60.0) -> list[str]:
    """Open the kernel's WebSocket through the URL and run each code; their outputs."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode({"session_id": os.urandom(8).hex(), "token": token_of(url)})
    ws_url = f"ws://{parts.netloc}/api/kernels/{kernel_id}/channels?{query}"

    async def go() -> list[str]:
        ws = await asyncio.wait_for(websocket_connect(ws_url), timeout)
        try:
            return [await execute(ws, code, timeout) for code in codes]
        finally:
            ws.close()

    return asyncio.run(asyncio.wait_for(go(), timeout * (len(codes) + 1)))


# ---------------------------------------------------------------------------------------------
# runtimes a test leaves behind


def runtime_files(runtime_dir: str | Path) -> list[Path]:
    """Runtime records (`colabremote-PID.json`) in a runtime directory."""
    return sorted(Path(runtime_dir).glob("colabremote-*.json"))


def kill_runtimes(runtime_dir: str | Path) -> None:
    """Teardown for local runtimes a test may have left: stop them and their kernels by PID."""
    procs: list[psutil.Process] = []
    for path in runtime_files(runtime_dir):
        with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
            procs += family(int(json.loads(path.read_text())["pid"]))
    stop_processes(procs, timeout=10.0)


def make_askpass(path: Path, password: str, counter: Path) -> Path:
    """An SSH_ASKPASS program that counts its calls in `counter` and prints the password."""
    path.write_text(f"#!/bin/sh\necho asked >> '{counter}'\nprintf '%s\\n' '{password}'\n")
    path.chmod(0o700)
    return path
