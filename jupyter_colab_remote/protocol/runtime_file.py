"""The runtime file: how the agent and the CLI find a running server (no log scraping).

The extension writes `colabremote-<pid>.json` (0600, atomically, never a token) into
Jupyter's runtime directory once the server listens, and removes it on shutdown; the agent
reads it to re-attach to a profile's runtime, `token` and `status` to find the servers."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import typing as t
from pathlib import Path

import psutil
from jupyter_core.paths import jupyter_runtime_dir

from ..files import write_private_json

PREFIX = "colabremote-"
#: How a runtime's command line names the program (`python -m ...` or the console script).
PROGRAM_NAMES = ("jupyter_colab_remote", "jupyter-colabremote")


class RuntimeInfo(t.TypedDict):
    """One runtime file."""

    pid: int
    profile: str
    version: str
    ip: str
    port: int
    base_url: str
    url: str
    root_dir: str
    token_file: str
    #: When the server started (epoch seconds).
    started: float
    #: The process's start time and user: with `pid`, what proves the record is not stale.
    create_time: float
    uid: int
    #: The kernel gateway (protocol.gateway.public_url form), or None for local kernels.
    gateway_url: str | None


def runtime_file_path(pid: int | None = None, runtime_dir: str | None = None) -> Path:
    """The file a server with this pid writes."""
    return Path(runtime_dir or jupyter_runtime_dir()) / f"{PREFIX}{pid or os.getpid()}.json"


def write_runtime_file(info: RuntimeInfo, runtime_dir: str | None = None) -> Path:
    """Write this process's runtime record (mode 0600, atomically); it holds no token."""
    return write_private_json(runtime_file_path(runtime_dir=runtime_dir), info)


def remove_runtime_file(runtime_dir: str | None = None) -> None:
    """Remove this process's runtime record."""
    with contextlib.suppress(FileNotFoundError):
        runtime_file_path(runtime_dir=runtime_dir).unlink()


def running_servers(runtime_dir: str | None = None) -> list[RuntimeInfo]:
    """Records of servers proven to be alive (see `proven`); stale files are removed."""
    return scan(runtime_dir)[0]


def scan(runtime_dir: str | None = None) -> tuple[list[RuntimeInfo], list[RuntimeInfo]]:
    """(live records, stale records); the stale ones' files are removed.

    After a crash, an OOM kill or a reboot a file stays behind, and its pid may now be
    another process, its port another account's server: such a record must never be
    re-attached to, signalled, or sent a token.
    """
    live, stale = [], []
    for path in sorted(Path(runtime_dir or jupyter_runtime_dir()).glob(f"{PREFIX}*.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if proven(info):
            live.append(info)
        else:
            stale.append(info)
            with contextlib.suppress(OSError):
                path.unlink()
    return live, stale


def proven(info: dict[str, t.Any]) -> bool:
    """True if the record's pid is still the runtime that wrote it: same start time, same
    user, a `jupyter_colab_remote serve` command line, and listening on the record's port."""
    try:
        proc = psutil.Process(int(info["pid"]))
        if "create_time" in info and abs(proc.create_time() - float(info["create_time"])) > 0.01:
            return False
        if proc.uids().real != os.getuid() or int(info.get("uid", os.getuid())) != os.getuid():
            return False
        cmdline = proc.cmdline()
        program = " ".join(cmdline[:3])  # python -m jupyter_colab_remote, or the script
        if "serve" not in cmdline or not any(n in program for n in PROGRAM_NAMES):
            return False
        return int(info["port"]) in listening_ports(proc)
    except (psutil.Error, ValueError, KeyError, TypeError):
        return False


def listening_ports(proc: psutil.Process) -> set[int]:
    """The TCP ports a process listens on (psutil 6 renamed connections to net_connections)."""
    connections = getattr(proc, "net_connections", None) or proc.connections
    return {c.laddr.port for c in connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something (anyone's) listens on host:port: a bind attempt tells without privilege."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
