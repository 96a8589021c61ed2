"""The runtime file: how the agent and the CLI find a running server (no log scraping).

The extension writes `colabremote-<pid>.json` (0600, atomically, never a token) into
Jupyter's runtime directory once the server listens, and removes it on shutdown; the agent
reads it to re-attach to a profile's runtime, `token` and `status` to find the servers."""

from __future__ import annotations

import contextlib
import json
import os
import typing as t
from pathlib import Path

import psutil
from jupyter_core.paths import jupyter_runtime_dir

from ..files import write_private_json

PREFIX = "colabremote-"


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
    """Records of servers whose process is still alive; stale files are removed."""
    found = []
    for path in sorted(Path(runtime_dir or jupyter_runtime_dir()).glob(f"{PREFIX}*.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if psutil.pid_exists(pid):
            found.append(info)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return found
