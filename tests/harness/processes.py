"""Processes and ports for tests and benchmarks: the one `free_port` and the one process stopper.

Every wait here has a deadline; processes are signalled by PID (a `Popen` of ours, or psutil
handles of processes found by their parent, environment or namespace), never by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

from jupyter_colab_remote.protocol.runtime_file import port_taken

#: A minimal system PATH (what a login on a plain Debian server gets).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_command(
    argv: list[str], *, timeout: float = 10.0, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess:
    """subprocess.run with a deadline, captured text output, and the command in errors."""
    res = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"{argv} failed ({res.returncode}): {res.stderr.strip()}")
    return res


# ---------------------------------------------------------------------------------------------
# ports


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on host (loopback by default)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether host:port can be bound (as the next `start` would): the product's own check."""
    return not port_taken(port, host)


def tcp_connect(
    host: str,
    port: int,
    *,
    timeout: float = 5.0,
    user_timeout_ms: int | None = None,
    nodelay: bool = True,
) -> socket.socket:
    """A connected TCP socket (for paramiko's `sock=`), optionally with TCP_USER_TIMEOUT."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if user_timeout_ms is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
    return sock


def net_connections(p: psutil.Process, kind: str = "tcp4") -> list:
    """A process's sockets, in its own network namespace (psutil 6 renamed the method)."""
    method = getattr(p, "net_connections", None) or p.connections
    return method(kind)


# ---------------------------------------------------------------------------------------------
# locks


@contextlib.contextmanager
def file_lock(path: Path, deadline: float) -> Iterator[None]:
    """An exclusive flock on path, acquired within deadline seconds (shared across processes)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        end = time.monotonic() + deadline
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise TimeoutError(f"could not lock {path} within {deadline} s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# finding and stopping processes


def is_live(p: psutil.Process) -> bool:
    """True unless the process is gone or a zombie (zombies cannot be killed, only reaped)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def family(pid: int) -> list[psutil.Process]:
    """A process and all its descendants."""
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def wait_gone(procs: Iterable[psutil.Process], deadline: float = 20.0) -> list[psutil.Process]:
    """Wait (bounded, polled at 20 ms) until the processes are gone; the survivors.

    Zombies count as gone (psutil.wait_procs would wait for a non-child zombie until its
    timeout); the caller reaps its own children.
    """
    procs = list(procs)
    end = time.monotonic() + deadline
    while True:
        procs = [p for p in procs if is_live(p)]
        if not procs or time.monotonic() > end:
            return procs
        time.sleep(0.02)


def stop_processes(
    procs: Iterable[psutil.Process], timeout: float = 5.0, sig: int = signal.SIGTERM
) -> list[psutil.Process]:
    """Signal the processes by PID, SIGKILL those alive after timeout; bounded. The survivors."""
    procs = list(procs)
    for s in dict.fromkeys((sig, signal.SIGKILL)):
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(s)
        procs = wait_gone(procs, timeout)
        if not procs:
            break
    return procs


def stop_process(
    proc: subprocess.Popen,
    sig: int = signal.SIGTERM,
    timeout: float = 15.0,
    *,
    group: bool = False,
    tree: bool = False,
) -> int | None:
    """Stop our child `proc` by PID and reap it: `sig`, SIGKILL after `timeout` s; its exit code.

    `group`: afterwards SIGKILL its process group too (what it started in its own session,
    e.g. kernels; needs `start_new_session=True`). `tree`: its descendants, taken before the
    signal, are stopped as well (those that left its group).
    """
    descendants: list[psutil.Process] = []
    if tree:
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(proc.pid).children(recursive=True)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            proc.wait(5)
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    if descendants:
        stop_processes(descendants, timeout=5.0, sig=signal.SIGKILL)
    return proc.returncode


def all_cmdlines() -> dict[int, str]:
    """Every process's command line on this machine (both "sides" of the tests)."""
    out = {}
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            out[p.pid] = "\0".join(p.cmdline())
    return out


def all_environs() -> dict[int, str]:
    """Every process's environment on this machine, as one string each."""
    out = {}
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            out[p.pid] = "\0".join(f"{k}={v}" for k, v in p.environ().items())
    return out
