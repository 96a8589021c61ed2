"""What the companion remembers per connection, on this machine, in a 0600 file."""

from __future__ import annotations

import contextlib
import json
import re
import typing as t
from pathlib import Path

import psutil
from jupyter_core.paths import jupyter_data_dir

from ..files import write_private_json


def state_dir() -> Path:
    """<jupyter data dir>/colabremote/connections (0700)."""
    return Path(jupyter_data_dir()) / "colabremote" / "connections"


def key_for(host: str, profile: str) -> str:
    """A file-name-safe key for a host and profile."""
    return re.sub(r"[^A-Za-z0-9_.@-]", "_", f"{host}--{profile}")


def path_for(host: str, profile: str) -> Path:
    """The record's path."""
    return state_dir() / f"{key_for(host, profile)}.json"


def load(host: str, profile: str) -> dict[str, t.Any] | None:
    """The record for this host and profile, if any."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path_for(host, profile).read_text(encoding="utf-8"))
    return None


def save(host: str, profile: str, record: dict[str, t.Any]) -> Path:
    """Write the record atomically with mode 0600.

    It holds the connection's token, which this machine must keep to show the same URL
    on re-attach (the remote stores only its hash), like jupyter_server's own
    runtime files do.
    """
    return write_private_json(path_for(host, profile), record)


def update(host: str, profile: str, /, **changes: t.Any) -> dict[str, t.Any]:
    """Merge changes into the record."""
    record = {**(load(host, profile) or {}), **changes}
    save(host, profile, record)
    return record


def find(host: str | None, profile: str | None) -> dict[str, t.Any] | None:
    """The record of a host (None: this machine) and profile; without a profile, the
    `default` one, else the host's only record."""
    key = host or "local"
    if profile:
        return load(key, profile)
    record = load(key, "default")
    if record is not None:
        return record
    mine = [r for r in all_records() if (r.get("host") or "local") == key and r.get("profile")]
    return mine[0] if len(mine) == 1 else None


def all_records() -> list[dict[str, t.Any]]:
    """Every remembered connection."""
    out = []
    for p in sorted(state_dir().glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(p.read_text(encoding="utf-8")))
    return out


def companion_alive(record: dict[str, t.Any]) -> bool:
    """True if the companion process that wrote the record still runs."""
    pid = record.get("companion_pid")
    if not pid:
        return False
    try:
        p = psutil.Process(int(pid))
        return p.create_time() == record.get("companion_started")
    except (psutil.Error, ValueError):
        return False
