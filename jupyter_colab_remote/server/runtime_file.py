"""The runtime file: how the CLI and the companion find a running server (no log scraping)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import typing as t
from pathlib import Path

import psutil
from jupyter_core.paths import jupyter_runtime_dir

PREFIX = "colabremote-"
#: How a runtime's command line names the program (`python -m ...` or the console script).
PROGRAM_NAMES = ("jupyter_colab_remote", "jupyter-colabremote")


def runtime_file_path(pid: int | None = None, runtime_dir: str | None = None) -> Path:
    """The file a server with this pid writes."""
    return Path(runtime_dir or jupyter_runtime_dir()) / f"{PREFIX}{pid or os.getpid()}.json"


def write_runtime_file(info: dict[str, t.Any], runtime_dir: str | None = None) -> Path:
    """Write this process's runtime record (mode 0600, atomically); it holds no token."""
    path = runtime_file_path(runtime_dir=runtime_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, path)
    return path


def remove_runtime_file(runtime_dir: str | None = None) -> None:
    """Remove this process's runtime record."""
    with contextlib.suppress(FileNotFoundError):
        runtime_file_path(runtime_dir=runtime_dir).unlink()


def running_servers(runtime_dir: str | None = None) -> list[dict[str, t.Any]]:
    """Records of servers proven to be alive (see `proven`); stale files are removed."""
    return scan(runtime_dir)[0]


def scan(runtime_dir: str | None = None) -> tuple[list[dict[str, t.Any]], list[dict[str, t.Any]]]:
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
