"""Paths the user typed on the laptop, expanded on the server where they are used."""

from __future__ import annotations

import os


def server_path(path: str) -> str:
    """Expand `~`, `~/x`, `$HOME/x` and `${HOME}/x` here (never on the laptop); absolute."""
    for var in ("${HOME}", "$HOME"):
        if path == var or path.startswith(var + "/"):
            path = "~" + path[len(var) :]
            break
    return os.path.abspath(os.path.expanduser(path))
