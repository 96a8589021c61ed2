"""The runtime file: how the CLI and the companion find a running server (no log scraping)."""

from __future__ import annotations

import contextlib
import json
import os
import typing as t
from pathlib import Path

import psutil
from jupyter_core.paths import jupyter_runtime_dir

PREFIX = "colabremote-"


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
